"""The toy losses: analytic gradients against autodiff, stated minimizers against the values.

The minimizers and minima are those stated (with their sources) in :mod:`dynopt.losses`; the
simplex loss's stated minimizer is also recomputed here by an independent method (SLSQP with
the simplex constraint, from scipy.optimize).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from dynopt.losses import LOSSES, ToyLoss
from dynopt.trajectory import jax_x64

torch.set_num_threads(1)

NAMES = sorted(LOSSES)
SIMPLEX = sorted(name for name, loss in LOSSES.items() if loss.simplex)


def random_points(loss: ToyLoss, n: int = 8, seed: int = 0) -> np.ndarray:
    """Points θ of shape (n, d): uniform in the plotting window, or on and near the simplex."""
    rng = np.random.default_rng(seed)
    if loss.simplex:  # Dirichlet points on the simplex, half of them moved off it (L is defined on R³)
        points = rng.dirichlet(np.ones(loss.dim), n)
        return points + np.where(np.arange(n)[:, None] % 2, rng.normal(scale=0.3, size=points.shape), 0.0)
    (x0, x1), (y0, y1) = loss.bounds
    return np.column_stack([rng.uniform(x0, x1, n), rng.uniform(y0, y1, n)])


def plane_gradient(loss: ToyLoss, point) -> np.ndarray:
    """The gradient of L ∘ lift in plane coordinates: (g₁ − g₃, g₂ − g₃) on the simplex (chain rule)."""
    g = loss.grad_np(loss.lift(*np.asarray(point, dtype=np.float64)))
    return g[:2] - g[2] if loss.simplex else g


def test_every_loss_has_the_dimension_of_its_picture():
    for loss in LOSSES.values():
        assert loss.dim == (3 if loss.simplex else 2)
        assert all(len(point) == loss.dim for point in loss.minimizers)
    assert SIMPLEX, "a simplex loss for EG is expected"


def assert_relative(actual, expected, rtol: float = 1e-10) -> None:
    actual, expected = np.asarray(actual, dtype=np.float64), np.asarray(expected, dtype=np.float64)
    error = np.linalg.norm(actual - expected)
    assert error <= rtol * np.linalg.norm(expected), f"{actual} vs {expected}: relative error {error / np.linalg.norm(expected):.2e}"


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_jax_grad(name):
    loss = LOSSES[name]
    with jax_x64():
        grad = jax.grad(lambda p: loss.value(jnp, *(p[i] for i in range(loss.dim))))
        for point in random_points(loss):
            autodiff = grad(jnp.asarray(point))
            assert autodiff.dtype == jnp.float64 and autodiff.shape == (loss.dim,)
            analytic = loss.grad(jnp, *(jnp.asarray(c) for c in point))
            assert_relative(analytic, autodiff)


@pytest.mark.parametrize("name", NAMES)
def test_gradient_matches_torch_autograd(name):
    loss = LOSSES[name]
    for point in random_points(loss, seed=1):
        p = torch.tensor(point, dtype=torch.float64, requires_grad=True)
        loss.value(torch, *p.unbind()).backward()
        with torch.no_grad():
            analytic = loss.grad(torch, *p.unbind())
        assert len(analytic) == loss.dim
        assert_relative([g.item() for g in analytic], p.grad.numpy())


@pytest.mark.parametrize("name", NAMES)
def test_numpy_helpers_agree_with_the_namespace_functions(name):
    loss = LOSSES[name]
    points = random_points(loss, seed=2)
    values = loss.values(points)  # vectorised over a batch of points
    assert values.shape == (len(points),)
    for point, value in zip(points, values, strict=True):
        assert loss.value_np(point) == pytest.approx(value, rel=1e-15)
        assert loss.value_np(point) == pytest.approx(loss.value(np, *point), rel=1e-15)
        assert loss.grad_np(point).shape == (loss.dim,) and loss.grad_np(point).dtype == np.float64
        assert_relative(loss.grad_np(point), loss.grad(np, *point), rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_plane_helpers_lift_and_project_are_inverse(name):
    loss = LOSSES[name]
    (x0, x1), (y0, y1) = loss.bounds
    rng = np.random.default_rng(3)
    x, y = rng.uniform(x0, x1, 20), rng.uniform(y0, y1, 20)
    lifted = np.column_stack(loss.lift(x, y))
    np.testing.assert_array_equal(loss.project(lifted), np.column_stack([x, y]))
    np.testing.assert_array_equal(loss.plane_value(np, x, y), loss.values(lifted))
    if loss.simplex:
        np.testing.assert_allclose(lifted.sum(axis=1), 1.0, rtol=0, atol=1e-15)
        np.testing.assert_array_equal(loss.inside(x, y), np.all(lifted >= 0, axis=1))
    else:
        assert loss.inside(x, y).all()


@pytest.mark.parametrize("name", NAMES)
def test_stated_minimizers_are_stationary_with_the_stated_minimum(name):
    """∇L = 0, or on the simplex the KKT condition of an interior point: ∇L ∥ (1, 1, 1)."""
    loss = LOSSES[name]
    for point in loss.minimizers:
        assert np.linalg.norm(plane_gradient(loss, loss.project(np.array(point)))) < 1e-9, point
        if not loss.simplex:
            assert np.linalg.norm(loss.grad_np(point)) < 1e-9, point
        assert loss.value_np(point) == pytest.approx(loss.minimum, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_stated_minimizers_are_local_minima(name):
    """Positive definite Hessian of L in the plane (central differences of the analytic gradient)."""
    loss, eps = LOSSES[name], 1e-5
    for point in loss.project(np.array(loss.minimizers)):
        hessian = np.column_stack([(plane_gradient(loss, point + eps * e) - plane_gradient(loss, point - eps * e)) / (2 * eps)
                                   for e in np.eye(2)])
        assert np.all(np.linalg.eigvalsh((hessian + hessian.T) / 2) > 1e-3), (point, hessian)


@pytest.mark.parametrize("name", NAMES)
def test_stated_minimum_is_the_lowest_value_in_the_window(name):
    """Over the admissible part of the window (the simplex triangle for a simplex loss)."""
    loss = LOSSES[name]
    (x0, x1), (y0, y1) = loss.bounds
    xs, ys = np.meshgrid(np.linspace(x0, x1, 401), np.linspace(y0, y1, 401))
    inside = loss.inside(xs, ys)
    assert inside.mean() > 0.3
    assert np.min(loss.plane_value(np, xs, ys)[inside]) >= loss.minimum - 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_start_and_minimizers_lie_in_the_plotting_window(name):
    loss = LOSSES[name]
    (x0, x1), (y0, y1) = loss.bounds
    for x, y in loss.project(np.array([loss.start, *loss.minimizers])):
        assert x0 <= x <= x1 and y0 <= y <= y1 and loss.inside(x, y)
    assert np.linalg.norm(plane_gradient(loss, loss.project(np.array(loss.start)))) > 1e-3, "a stationary start would not move"


@pytest.mark.parametrize("name", SIMPLEX)
def test_simplex_points_are_on_the_open_simplex(name):
    """EG's simplex variant needs a positive start summing to 1; the minimizer is interior."""
    loss = LOSSES[name]
    for point in (loss.start, *loss.minimizers):
        assert min(point) > 0 and sum(point) == pytest.approx(1.0, abs=1e-15)


@pytest.mark.parametrize("name", SIMPLEX)
def test_simplex_minimizer_agrees_with_constrained_slsqp(name):
    """Independent check: scipy's SLSQP with w ≥ 0 and Σw = 1, from several starts, finds the stated point."""
    loss = LOSSES[name]
    for start in np.random.default_rng(4).dirichlet(np.ones(3), 4):
        result = minimize(loss.value_np, start, jac=loss.grad_np, method="SLSQP", bounds=[(0.0, 1.0)] * 3,
                          constraints=[{"type": "eq", "fun": lambda w: np.sum(w) - 1.0, "jac": lambda w: np.ones(3)}],
                          options={"ftol": 1e-15, "maxiter": 500})
        assert result.success, result.message
        np.testing.assert_allclose(result.x, loss.minimizers[0], atol=1e-7)
        assert result.fun == pytest.approx(loss.minimum, abs=1e-12)


@pytest.mark.parametrize("name", SIMPLEX)
def test_simplex_constraint_is_active(name):
    """The unconstrained minimizer is not the stated one, so the simplex matters (L decreases off it)."""
    loss = LOSSES[name]
    w = np.array(loss.minimizers[0])
    assert np.linalg.norm(loss.grad_np(w)) > 1e-2
    assert loss.value_np(w - 1e-3 * loss.grad_np(w)) < loss.minimum
