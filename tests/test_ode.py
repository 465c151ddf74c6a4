"""The continuous side: the reference solver against exact flows, and the measured order at
which each optimizer's iterates converge to its own ODE (slopes fitted, never asserted from a
hard-coded figure)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import expm

import dynopt
import dynopt.numpy
from dynopt._backends.numpy_oracle import OracleState
from dynopt.ode import flow, times

A = np.array([[1.0, 0.3], [0.3, 2.5]])
THETA0 = np.array([1.0, -0.5])


def quad_grad(theta):
    return [A @ theta[0]]


def test_gradient_flow_matches_matrix_exponential():
    hyper = {"lr": 0.01}
    sol = flow(dynopt.sgd, hyper, quad_grad, [THETA0], 300)
    exact = np.stack([expm(-A * t) @ THETA0 for t in times(dynopt.sgd, hyper, 300)])
    assert np.max(np.abs(sol.params[0] - exact)) < 1e-9


def test_heavy_ball_flow_matches_matrix_exponential():
    """In buffer units: θ' = −h b, b' = (Aθ − (1 − μ) b)/h, a linear system solved exactly by expm."""
    lr, mu = 0.01, 0.85
    h = np.sqrt(lr)
    M = np.block([[np.zeros((2, 2)), -h * np.eye(2)], [A / h, -(1 - mu) / h * np.eye(2)]])
    sol = flow(dynopt.momentum, {"lr": lr, "momentum": mu}, quad_grad, [THETA0], 200)
    y0 = np.concatenate([THETA0, np.zeros(2)])
    exact = np.stack([expm(M * t) @ y0 for t in sol.times])
    assert np.max(np.abs(sol.params[0] - exact[:, :2])) < 1e-9
    assert np.max(np.abs(sol.state["momentum_buffer"][0] - exact[:, 2:])) < 1e-8


def nonlinear_grad(theta):
    """∇ of L(x, y) = ½(x² + 4y²) + ¼x²y² + 0.1x⁴ (the toy of the design brief, section C)."""
    x, y = theta[0]
    return [np.array([x + 0.5 * x * y**2 + 0.4 * x**3, 4 * y + 0.5 * x**2 * y])]


# How each optimizer's hyperparameters scale with the ODE step h so that the ODE stays fixed,
# and the initial state that makes the ODE start regular (None: the optimizer's own start).
GAMMA, C1, C2, KAPPA = 1.5, 4.0, 8.0, 2.0
THETA0 = np.array([1.5, 1.0])
SIGNED_TOTAL = float(np.sum(np.sqrt(THETA0**2 + 4.0)))  # Σ(w⁺ + w⁻) of the split with c = 1
BASE_CASES = {
    "SGD": [("", lambda h: {"lr": h}, None)],
    "Momentum": [("", lambda h: {"lr": h * h, "momentum": 1 - GAMMA * h}, None)],
    "Nesterov": [("", lambda h: {"lr": h * h, "momentum": 1 - GAMMA * h}, None)],
    "RMSprop": [("", lambda h: {"lr": h, "alpha": 1 - C1 * h, "eps": 1e-3}, lambda g: {"square_avg": [g * g]})],
    "Adam": [("", lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - C2 * h), "eps": 1e-3}, None)],
    "EG": [
        ("positive", lambda h: {"lr": h, "variant": "positive"}, None),
        ("simplex", lambda h: {"lr": h, "variant": "simplex", "total": float(THETA0.sum())}, None),
        ("signed", lambda h: {"lr": h, "variant": "signed"}, None),
        ("signed_simplex", lambda h: {"lr": h, "variant": "signed_simplex", "total": SIGNED_TOTAL}, None),
    ],
}


def meta_cases(base_name):
    """The meta-step: meta rates γ = κ·h keep (log s)' = −(γ/h) cos(…) fixed as h → 0."""
    cases = []
    for label, scaled, start in BASE_CASES[base_name]:
        def hyper(h, scaled=scaled, base=dynopt.REGISTRY[base_name]):
            hp = scaled(h)
            step = base.time_step(base.namespace(hp))
            return {**hp, "meta_lr": KAPPA * step, "shrink_lr": 5 * KAPPA * step, "gain_lr": KAPPA * step / 2}
        cases.append((label + "eg-gains", hyper, start))
    return cases


SCALING = dict(BASE_CASES)
SCALING |= {f"Meta{name}": meta_cases(name) for name in ("SGD", "Momentum", "Nesterov", "RMSprop", "Adam")}
SCALING["NesterovSBC"] = [("", lambda h: {"lr": h * h}, None)]  # s = h²: the ODE clock is t = k·√s
CASES = [pytest.param(spec, *case, id=f"{spec.name}-{case[0]}" if case[0] else spec.name)
         for spec in dynopt.REGISTRY.values() for case in SCALING.get(spec.name, [("missing", None, None)])]


@pytest.mark.parametrize("spec, label, scaled, initial_state", CASES)
def test_iterates_converge_to_the_flow_at_first_order(spec, label, scaled, initial_state):
    assert scaled is not None, f"add the ODE scaling of {spec.name} to SCALING"
    horizon = 1.0
    g0 = nonlinear_grad([THETA0])[0]
    hs = np.array([0.02, 0.01, 0.005, 0.0025])
    errors = []
    for h in hs:
        hyper = scaled(h)
        opt = dynopt.numpy.from_spec(spec)(**hyper)
        steps = int(round(horizon / opt.time_step()))
        start = initial_state(g0) if initial_state else None
        state = opt.init([THETA0])
        if start:
            state = OracleState(0, {**state.values, **start})
        params = [THETA0.copy()]
        for _ in range(steps):
            updates, state = opt.update(nonlinear_grad(params), state, params)
            params = [params[0] + updates[0]]
        reference = flow(spec, hyper, nonlinear_grad, [THETA0], steps, state=start)
        errors.append(np.max(np.abs(params[0] - reference.params[0][-1])))
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    assert 0.85 <= slope <= 1.15, f"{spec.name} {label}: fitted order {slope:.3f}, errors {errors}"
