"""The anchors experiment runs in fast mode and writes what it promises; its runner agrees with dynopt's
NumPy oracle on the same minibatches, and each anchor is configured as its docstring says."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from experiments import meta_anchors
from experiments.__main__ import EXPERIMENTS, GALLERY

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def anchors(tmp_path_factory):
    out = tmp_path_factory.mktemp("anchors")
    return out, meta_anchors.main(["--fast", "--out", str(out)]), meta_anchors.Config.fast()


def test_registered_with_a_gallery_figure():
    assert "meta_anchors" in EXPERIMENTS and GALLERY["meta_anchors"] == ["meta_anchors.png"]


def test_writes_figure_values_and_table(anchors):
    out, results, cfg = anchors
    with Image.open(out / "meta_anchors.png") as image:
        assert image.format == "PNG" and min(image.size) > 300
    data = np.load(out / "final_values.npz")
    assert np.allclose(data["lr_grid"], np.logspace(-4, 0, cfg.grid_size))
    summary = json.loads((out / "config.json").read_text())
    assert summary["config"]["backend"] == "jax" and summary["baydin_beta"] == {"SGD-HD": 1e-3, "Adam-HD": 1e-7}
    methods = set(meta_anchors.DYNOPT + meta_anchors.HD + meta_anchors.OPTAX)
    assert len(methods) == 13 and set(cfg.methods) == methods
    for name in cfg.problems:
        table = summary["problems"][name]["table"]
        assert set(table) == methods
        for method, row in table.items():
            values = data[f"{name}/{method}"]
            assert values.shape == (cfg.grid_size,)
            assert row["worst"] == pytest.approx(np.max(values)) and row["best"] == pytest.approx(np.min(values))
            assert row["ratio"] == pytest.approx(np.max(values) / np.min(values))


def softmax_gradient(x, y, l2, params, idx):
    w, b = params
    z = x[idx] @ w + b
    p = np.exp(z - z.max(axis=1, keepdims=True))
    residual = (p / p.sum(axis=1, keepdims=True) - y[idx]) / len(idx)
    return [x[idx].T @ residual + l2 * w, residual.sum(axis=0)]


@pytest.mark.parametrize("method, oracle", [("MetaAdam", lambda g: __import__("dynopt.numpy").numpy.meta_adam(g)),
                                            ("SGD-HD", lambda g: __import__("dynopt.numpy").numpy.meta_sgd(
                                                g, rule="hd", meta_lr=1e-3 / g**2, trace_decay=0.0, initial_scale=1.0))])
def test_runner_equals_the_numpy_oracle_on_the_same_batches(anchors, method, oracle):
    """The experiment's JAX runner (batches, loss, gradient, L*) against dynopt's NumPy oracle stepped here
    with the analytic gradient of softmax regression, at every grid value."""
    out, results, cfg = anchors
    loss, init, data, minimum = meta_anchors.problem(cfg, "softmax")
    x, y = data["x"], data["y"]
    indices = meta_anchors.batches(cfg, len(x))
    for g, got in zip(cfg.lr_grid(), results["softmax"]["finals"][method]):
        opt = oracle(float(g))
        params = [p.copy() for p in init]
        state = opt.init(params)
        for idx in indices:
            updates, state = opt.update(softmax_gradient(x, y, 1.0 / len(x), params, idx), state, params)
            params = [p + u for p, u in zip(params, updates)]
        expected = float(loss(np, params, x, y)) - minimum
        assert got == pytest.approx(expected, rel=1e-9), (method, g)


def test_each_anchor_gets_the_grid_value_where_its_docstring_says():
    """Read back from each method's initial state (optax.contrib's own state fields)."""
    import jax.numpy as jnp

    g = 0.25
    init = {m: meta_anchors.transform(m, g).init([jnp.zeros(3)]) for m in meta_anchors.DYNOPT + meta_anchors.HD + meta_anchors.OPTAX}
    assert float(init["prodigy"].estim_lr) == g  # d₀
    assert float(init["dowg"][1].estim_sq_dist) == g * g  # r₀²
    assert np.all(np.asarray(init["mechanize"].s) == g)  # s_init
    assert not bool(init["dog"][1].max_dist)  # η₀ is the first step's lr (init_step "learning_rate")
    for method in meta_anchors.HD:
        assert float(init[method].scale) == 1.0  # α₀ = g·s₀ with s₀ = 1
    for method in meta_anchors.DYNOPT:
        assert float(init[method].scale) == meta_anchors_defaults(method)["initial_scale"]


def meta_anchors_defaults(method):
    import dynopt

    return dynopt.REGISTRY[method].defaults
