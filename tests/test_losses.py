"""The toy losses: analytic gradients against autodiff, stated minimizers against the values.

The minimizers and minima are those stated (with their sources) in :mod:`dynopt.losses`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from dynopt.losses import LOSSES, ToyLoss
from dynopt.trajectory import jax_x64

torch.set_num_threads(1)

NAMES = sorted(LOSSES)


def random_points(loss: ToyLoss, n: int = 8, seed: int = 0) -> np.ndarray:
    """Points drawn uniformly in the loss's plotting window."""
    rng = np.random.default_rng(seed)
    (x0, x1), (y0, y1) = loss.bounds
    return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])


def assert_relative(actual, expected, rtol: float = 1e-10) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    error = np.linalg.norm(actual - expected)
    assert error <= rtol * np.linalg.norm(expected), f"{actual} vs {expected}: relative error {error / np.linalg.norm(expected):.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_jax_grad(name):
    loss = LOSSES[name]
    with jax_x64():
        grad = jax.grad(lambda p: loss.value(jnp, p[0], p[1]))
        for point in random_points(loss):
            autodiff = grad(jnp.asarray(point))
            assert autodiff.dtype == jnp.float64
            gx, gy = loss.grad(jnp, jnp.asarray(point[0]), jnp.asarray(point[1]))
            assert_relative([gx, gy], autodiff)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_torch_autograd(name):
    loss = LOSSES[name]
    for point in random_points(loss, seed=1):
        p = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        loss.value(torch, p[0], p[1]).backward()
        with torch.no_grad():
            gx, gy = loss.grad(torch, p[0], p[1])
        assert_relative([gx.item(), gy.item()], p.grad.numpy())


@pytest.mark.parametrize("name", NAMES)
def test_numpy_helpers_agree_with_the_namespace_functions(name):
    loss = LOSSES[name]
    points = random_points(loss, seed=2)
    values = loss.value(np, points[:, 0], points[:, 1])  # vectorised over a batch of points
    for point, value in zip(points, values, strict=True):
        assert loss.value_np(point) == pytest.approx(value, rel=1e-15)
        assert loss.grad_np(point).shape == (2,) and loss.grad_np(point).dtype == np.float64
        assert_relative(loss.grad_np(point), loss.grad(np, point[0], point[1]), rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_stated_minimizers_are_stationary_with_the_stated_minimum(name):
    loss = LOSSES[name]
    for point in loss.minimizers:
        assert np.linalg.norm(loss.grad_np(point)) < 1e-9, point
        assert loss.value_np(point) == pytest.approx(loss.minimum, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_stated_minimizers_are_local_minima(name):
    """Positive definite Hessian (central differences of the analytic gradient)."""
    loss, eps = LOSSES[name], 1e-5
    for point in np.array(loss.minimizers):
        hessian = np.column_stack([(loss.grad_np(point + eps * e) - loss.grad_np(point - eps * e)) / (2 * eps) for e in np.eye(2)])
        assert np.all(np.linalg.eigvalsh((hessian + hessian.T) / 2) > 1e-3), (point, hessian)


@pytest.mark.parametrize("name", NAMES)
def test_stated_minimum_is_the_lowest_value_in_the_window(name):
    loss = LOSSES[name]
    (x0, x1), (y0, y1) = loss.bounds
    xs, ys = np.meshgrid(np.linspace(x0, x1, 401), np.linspace(y0, y1, 401))
    assert np.min(loss.value(np, xs, ys)) >= loss.minimum - 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_start_and_minimizers_lie_in_the_plotting_window(name):
    loss = LOSSES[name]
    (x0, x1), (y0, y1) = loss.bounds
    for x, y in (loss.start, *loss.minimizers):
        assert x0 <= x <= x1 and y0 <= y <= y1
    assert np.linalg.norm(loss.grad_np(loss.start)) > 1e-3, "a start at a stationary point would not move"
