"""Trajectories: the three backends agree, the iterates approach the flow as lr → 0, divergence is contained,
EG stays on the simplex, and the recorded step sizes are the ones the optimizer took."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
import torch

import dynopt
from dynopt import ode
from dynopt.losses import LOSSES
from dynopt.trajectory import BACKENDS, DIVERGED_NORM, run

torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parents[1]

# The five zoo optimizers with learning rates at which 60 steps on Rosenbrock stay bounded.
ZOO = {
    "SGD": {"lr": 1e-3},
    "Momentum": {"lr": 1e-3, "momentum": 0.9},
    "Nesterov": {"lr": 1e-3, "momentum": 0.9},
    "RMSprop": {"lr": 1e-2, "alpha": 0.9},
    "Adam": {"lr": 5e-2, "betas": (0.8, 0.99)},
}


@pytest.mark.parametrize("name", ZOO)
def test_backends_give_the_same_iterates(name):
    runs = {b: run(name, ZOO[name], "rosenbrock", 60, with_flow=False, backend=b) for b in BACKENDS}
    reference = runs["numpy"].iterates
    assert np.all(np.isfinite(reference)) and runs["numpy"].diverged_at is None
    assert np.linalg.norm(reference[-1] - reference[0]) > 1e-2, "the run should move"
    for backend in ("torch", "jax"):
        assert runs[backend].backend == backend
        # rtol as asked; atol at round-off scale for coordinates that pass near 0
        np.testing.assert_allclose(runs[backend].iterates, reference, rtol=1e-10, atol=1e-13, err_msg=backend)
        np.testing.assert_allclose(runs[backend].losses, runs["numpy"].losses, rtol=1e-9, atol=1e-13, err_msg=backend)


def test_numpy_backend_is_the_oracle_step_by_step():
    """Three steps of dynopt.numpy by hand equal the trajectory's first rows."""
    loss, hyper = LOSSES["beale"], ZOO["Adam"]
    opt = dynopt.numpy.adam(**hyper)
    theta = np.array(loss.start, dtype=np.float64)
    state = opt.init([theta])
    expected = [theta]
    for _ in range(3):
        (update,), state = opt.update([loss.grad_np(theta)], state, [theta])
        theta = theta + update
        expected.append(theta)
    np.testing.assert_array_equal(run("Adam", hyper, loss, 3, with_flow=False).iterates, np.array(expected))


@pytest.mark.parametrize("name", ZOO)
def test_times_come_from_the_ode_module_and_the_flow_starts_at_the_start(name):
    traj = run(name, ZOO[name], "quadratic", 20)
    np.testing.assert_array_equal(traj.times, ode.times(dynopt.REGISTRY[name], ZOO[name], 20))
    np.testing.assert_array_equal(traj.flow_times, traj.times)
    np.testing.assert_array_equal(traj.flow_iterates[0], LOSSES["quadratic"].start)
    assert traj.iterates.shape == traj.flow_iterates.shape == (21, 2)
    np.testing.assert_allclose(traj.flow_losses, [LOSSES["quadratic"].value_np(p) for p in traj.flow_iterates], rtol=1e-14)


def test_sgd_tracks_its_flow_closer_with_a_smaller_lr():
    """Same ODE horizon, lr 10x smaller: forward Euler is order 1 (dynopt.optimizers.sgd), so the error shrinks ~10x."""
    horizon, errors = 5.0, {}
    for lr in (0.01, 0.1):
        steps = int(round(horizon / ode.time_step(dynopt.sgd, {"lr": lr})))
        traj = run("SGD", {"lr": lr}, "quadratic", steps)
        assert traj.times[-1] == pytest.approx(horizon)
        errors[lr] = np.max(np.linalg.norm(traj.iterates - traj.flow_iterates, axis=1))
    assert errors[0.01] < errors[0.1]
    assert 0.05 < errors[0.01] / errors[0.1] < 0.2, errors


@pytest.mark.parametrize("backend", BACKENDS)
def test_divergence_is_stopped_and_nan_padded(backend):
    traj = run("SGD", {"lr": 1.0}, "rosenbrock", 50, backend=backend, with_flow=False)
    k = traj.diverged_at
    assert k is not None and 0 < k < 50
    assert np.all(np.isfinite(traj.iterates[:k])) and np.all(np.linalg.norm(traj.iterates[:k], axis=1) <= DIVERGED_NORM)
    assert np.all(np.isnan(traj.iterates[k:])) and np.all(np.isnan(traj.losses[k:]))
    assert traj.final_loss == np.inf
    # step k (entry k − 1), the one that left the ball, is recorded; later steps were not taken
    np.testing.assert_array_equal(traj.step_sizes[:k], 1.0)
    assert np.all(np.isnan(traj.step_sizes[k:]))


# ----------------------------------------------------------------------------- EG on the simplex

SIMPLEX_EG = {"lr": 0.5, "variant": "simplex"}


def on_simplex(points: np.ndarray, atol: float = 1e-12) -> None:
    assert np.all(points > 0)
    np.testing.assert_allclose(points.sum(axis=1), 1.0, rtol=0, atol=atol)


def test_eg_on_the_simplex_loss_agrees_across_backends_and_stays_on_the_simplex():
    loss = LOSSES["portfolio"]
    runs = {b: run("EG", SIMPLEX_EG, loss, 80, backend=b, with_flow=b == "numpy") for b in BACKENDS}
    reference = runs["numpy"]
    assert reference.iterates.shape == (81, 3) and reference.diverged_at is None
    on_simplex(reference.iterates)
    on_simplex(reference.flow_iterates, atol=1e-7)  # the replicator flow keeps Σw too, to the solver's rtol 1e-10 × t
    for backend in ("torch", "jax"):
        np.testing.assert_allclose(runs[backend].iterates, reference.iterates, rtol=1e-10, atol=1e-13, err_msg=backend)
    start, end = (np.linalg.norm(reference.iterates[i] - loss.minimizers[0]) for i in (0, -1))
    assert end < 1e-3 * start, (start, end)
    np.testing.assert_allclose(reference.losses, [loss.value_np(w) for w in reference.iterates], rtol=1e-14)
    assert np.all(np.diff(reference.losses) <= 1e-15), "EG on a convex loss with this lr decreases L"


def test_eg_on_the_simplex_tracks_its_replicator_flow_closer_with_a_smaller_lr():
    """Same ODE horizon, lr 10x smaller: EG is Euler in log coordinates, order 1 (dynopt.optimizers.eg)."""
    horizon, errors = 4.0, {}
    for lr in (0.02, 0.2):
        hyper = {**SIMPLEX_EG, "lr": lr}
        steps = int(round(horizon / ode.time_step(dynopt.eg, hyper)))
        traj = run("EG", hyper, "portfolio", steps)
        assert traj.times[-1] == pytest.approx(horizon)
        errors[lr] = np.max(np.linalg.norm(traj.iterates - traj.flow_iterates, axis=1))
    assert 0.05 < errors[0.02] / errors[0.2] < 0.2, errors


def test_an_unconstrained_optimizer_leaves_the_simplex():
    """The contrast: SGD on the same loss follows −∇L in R³, and Σw drifts from 1."""
    traj = run("SGD", {"lr": 0.1}, "portfolio", 50, with_flow=False)
    assert np.max(np.abs(traj.iterates.sum(axis=1) - 1)) > 0.1


# ----------------------------------------------------------------------------- step sizes

META = {"lr": 1e-2, "meta_lr": 0.05}


@pytest.mark.parametrize("name", ZOO)
def test_fixed_step_optimizers_record_their_lr(name):
    traj = run(name, ZOO[name], "rosenbrock", 20, with_flow=False, backend="numpy")
    assert traj.step_sizes.shape == (20,)
    np.testing.assert_array_equal(traj.step_sizes, ZOO[name]["lr"])


@pytest.mark.parametrize("name, hyper", [("MetaSGD", META), ("MetaMomentum", {**META, "lr": 1e-3, "momentum": 0.9})])
def test_meta_step_sizes_agree_across_backends(name, hyper):
    runs = {b: run(name, hyper, "quadratic", 120, with_flow=False, backend=b) for b in BACKENDS}
    reference = runs["numpy"].step_sizes
    assert reference.shape == (120,) and np.all(np.isfinite(reference))
    s0 = dynopt.REGISTRY[name].defaults["initial_scale"]  # the first step is s₀ times the base's (issue 13: s₀ = 0.01)
    assert reference[0] == hyper["lr"] * s0, "the first step is s₀ times the base's"
    assert reference.max() > 10 * reference[0], "from a too-small lr the scale should grow"
    for backend in ("torch", "jax"):
        np.testing.assert_allclose(runs[backend].step_sizes, reference, rtol=1e-12, err_msg=backend)
        np.testing.assert_allclose(runs[backend].iterates, runs["numpy"].iterates, rtol=1e-10, atol=1e-13, err_msg=backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_meta_sgd_step_sizes_are_the_steps_taken(backend):
    """For MetaSGD without gains, θ_k − θ_{k−1} = −(lr·s_k)∇L(θ_{k−1}): the recorded size is ‖Δθ‖/‖∇L‖."""
    loss = LOSSES["quadratic"]
    traj = run("MetaSGD", META, loss, 60, with_flow=False, backend=backend)
    grads = np.array([loss.grad_np(theta) for theta in traj.iterates[:-1]])
    measured = np.linalg.norm(np.diff(traj.iterates, axis=0), axis=1) / np.linalg.norm(grads, axis=1)
    np.testing.assert_allclose(traj.step_sizes, measured, rtol=1e-9)
    assert np.ptp(np.log(traj.step_sizes)) > 1.0, "the step size should change over the run"


def test_a_stable_run_reports_its_final_loss():
    traj = run("SGD", {"lr": 1e-3}, "rosenbrock", 10, with_flow=False)
    assert traj.diverged_at is None and traj.final_loss == traj.losses[-1] < traj.losses[0]


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        run("SGD", {"lr": 0.1}, "quadratic", 3, backend="tensorflow")


def test_importing_trajectory_losses_and_plotting_imports_neither_torch_nor_jax():
    code = "import sys, dynopt.trajectory, dynopt.losses, dynopt.plotting; print(sorted({m.split('.')[0] for m in sys.modules}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert "'torch'" not in out and "'jax'" not in out and "'optax'" not in out
