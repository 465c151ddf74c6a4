"""The experiments run end to end in fast mode and write what they promise."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import zoo_trajectories
from experiments.__main__ import EXPERIMENTS

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def zoo_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    results = zoo_trajectories.main(["--fast", "--out", str(out)])
    return out, results, zoo_trajectories.Config.fast()


def test_zoo_writes_figures_gif_data_and_config(zoo_output):
    out, _, cfg = zoo_output
    for name in (*cfg.losses, "loss_vs_time"):
        with Image.open(out / f"{name}.png") as image:
            assert image.format == "PNG" and min(image.size) > 300
    with Image.open(out / f"race_{cfg.race_loss}.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames > 10
    data = np.load(out / "trajectories.npz")
    for name in cfg.losses:
        for optimizer in cfg.optimizers:
            assert data[f"{name}/{optimizer}/iterates"].shape == (cfg.steps + 1, 2)
            assert data[f"{name}/{optimizer}/tuning_final_losses"].shape == (cfg.grid_size,)
            assert f"{name}/{optimizer}/flow_iterates" in data


def test_zoo_tuning_is_fair_and_picks_the_best_lr(zoo_output):
    out, results, cfg = zoo_output
    summary = json.loads((out / "config.json").read_text())
    grid = summary["budget"]["lr_grid"]
    assert len(grid) == cfg.grid_size == summary["budget"]["runs_per_optimizer"]
    assert summary["budget"]["horizon_steps"] == cfg.steps
    data = np.load(out / "trajectories.npz")
    for name in cfg.losses:
        assert set(summary["chosen"][name]) == set(cfg.optimizers)
        for optimizer, chosen in summary["chosen"][name].items():
            finals = data[f"{name}/{optimizer}/tuning_final_losses"]
            assert chosen["hyper"]["lr"] == pytest.approx(grid[int(np.argmin(finals))])
            assert chosen["final_loss"] == pytest.approx(np.min(finals), rel=1e-12, abs=1e-300)
            for key, value in cfg.fixed[optimizer].items():
                assert chosen["hyper"][key] == (list(value) if isinstance(value, tuple) else value)
    traj = results["quadratic"][0]
    assert traj.steps == cfg.steps and traj.flow_iterates is not None


def test_every_listed_experiment_has_a_config_and_a_main():
    for name in EXPERIMENTS:
        module = importlib.import_module(f"experiments.{name}")
        assert callable(module.main) and hasattr(module, "Config")
