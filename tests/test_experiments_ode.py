"""The ODE-view experiments run end to end in fast mode and write what they promise."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

import dynopt
from experiments import classic_figures, ode_orders
from experiments.__main__ import EXPERIMENTS

torch.set_num_threads(1)


def assert_png(path: pathlib.Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 300


@pytest.fixture(scope="module")
def orders_output(tmp_path_factory):
    out = tmp_path_factory.mktemp("ode_orders")
    return out, ode_orders.main(["--fast", "--out", str(out)]), ode_orders.Config.fast()


def test_ode_orders_covers_the_zoo_and_writes_its_files(orders_output):
    out, results, cfg = orders_output
    for name in ("orders.png", "trajectories.png"):
        assert_png(out / name)
    assert {m.name for m in results} == ({spec.name for spec in dynopt.ZOO} - ode_orders.EXACT  # exact: tests/test_ode.py
                                         - ode_orders.UNMEASURED)
    summary = json.loads((out / "config.json").read_text())
    data = np.load(out / "orders.npz")
    assert list(data["hs"]) == list(cfg.hs)
    for m in results:
        assert summary["slopes"][m.name]["flow"] == pytest.approx(m.slope)
        assert data[f"{m.name}/to_flow"].shape == (len(cfg.hs),)
        # the slope in the summary is the least-squares fit of the saved errors
        assert m.slope == pytest.approx(np.polyfit(np.log(cfg.hs), np.log(data[f"{m.name}/to_flow"]), 1)[0])
    assert {name for name, s in summary["slopes"].items() if "modified" in s} == set(cfg.modified)


def test_ode_orders_measures_first_and_second_order(orders_output):
    """Even with three step sizes: every optimizer is first order to its ODE, the modified ones second order."""
    _, results, _ = orders_output
    for m in results:
        assert 0.8 <= m.slope <= 1.3, (m.name, m.slope)
        if m.modified_slope is not None:
            assert 1.8 <= m.modified_slope <= 2.2, (m.name, m.modified_slope)
            assert np.all(m.to_modified < m.to_flow)


def test_ode_orders_torch_backend_gives_the_same_errors(tmp_path):
    """The discrete runs may come from torch (matched start buffers included): same errors as the oracle."""
    cfg = ode_orders.Config(hs=(0.02, 0.01), optimizers=("Momentum", "NesterovSBC"), backend="torch")
    reference = ode_orders.Config(hs=(0.02, 0.01), optimizers=("Momentum", "NesterovSBC"))

    class Progress:
        def update(self):
            pass

    for name in cfg.optimizers:
        mine = ode_orders.measure(cfg, dynopt.REGISTRY[name], Progress())
        theirs = ode_orders.measure(reference, dynopt.REGISTRY[name], Progress())
        np.testing.assert_allclose(mine.to_flow, theirs.to_flow, rtol=1e-9)
        if theirs.to_modified is not None:
            np.testing.assert_allclose(mine.to_modified, theirs.to_modified, rtol=1e-9)


def test_classic_figures_write_their_files_and_fits(tmp_path):
    summary = classic_figures.main(["--fast", "--out", str(tmp_path)])
    for name in ("sbc.png", "igr.png", "path_kernel.png"):
        assert_png(tmp_path / name)
    assert json.loads((tmp_path / "config.json").read_text())["fits"] == summary["fits"]
    fits = summary["fits"]
    assert abs(fits["sbc_sup_error_vs_s"]["x_k"] - 0.5) < 0.1
    assert fits["sbc_flow_vs_bessel"] < 1e-9
    assert abs(fits["igr_gd_vs_gradient_flow"] - 1) < 0.15 and abs(fits["igr_gd_vs_modified_flow"] - 2) < 0.2
    finals = fits["igr_final_a2_plus_b2"]
    assert np.all(np.diff(finals["gd"]) < 0), "a larger h must end at a flatter minimum (smaller a² + b²)"
    assert max(finals["gd"]) < finals["gradient_flow"]
    assert fits["path_kernel_linear_max_error"] < 1e-10
    assert 0.8 < fits["path_kernel_error_vs_lr"] < 1.3
    data = np.load(tmp_path / "classic.npz")
    assert data["sbc/s=1/x"].shape[1] == 2 and "igr/h=0.2/gd" in data


def test_both_experiments_are_registered():
    assert {"ode_orders", "classic_figures"} <= set(EXPERIMENTS)
