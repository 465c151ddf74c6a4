"""Schemes as data and dynopt.discretize: validation, declared vs fitted orders, every ODE × scheme pair
on every backend, closures and grad_fn, and the zoo's own schemes recovered from its statements.

Expected values come from: the classical order conditions and stability polynomials (algebra written
here), the reference flow ``dynopt.ode.flow`` (DOP853 at tight tolerances) for fitted orders, the
NumPy oracle for cross-backend agreement, and torch.optim for the zoo's own schemes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt import schemes
from dynopt.ode import flow

A = np.array([[3.0, 0.5, 0.0], [0.5, 1.0, 0.2], [0.0, 0.2, 0.5]])
C = np.array([1.0, -0.5, 0.25])
THETA0 = np.array([1.5, -2.0, 0.7])


def quad_grad(ps):
    return [A @ (ps[0] - C)]


def quartic_grad(ps):
    """∇ of Σ(θ − c)⁴/4 + ½(θ − c)ᵀA(θ − c): a non-linear field, so that orders are not those of a linear ODE."""
    d = ps[0] - C
    return [d**3 + A @ d]


POSITIVE0 = np.array([0.2, 0.3, 0.5])


def run_numpy(spec, hyper, grad, theta0, steps):
    opt = dynopt.numpy.from_spec(spec)(**hyper)
    params = [np.array(theta0, dtype=np.float64)]
    state = opt.init(params)
    for _ in range(steps):
        updates, state = opt.update(grad(params), state, params, grad_fn=grad)
        params = [p + u for p, u in zip(params, updates)]
    return params[0], state


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "a, b, c, error, words",
    [
        (((0, 0), (1, 0)), (0.5, 0.6), (0, 1), ValueError, "sum to 1"),
        (((0, 0), (1, 0)), (0.5, 0.5), (0, 0.5), ValueError, "c[1] = 0.5 must equal the sum of row 1"),
        (((0, 1), (1, 0)), (0.5, 0.5), (1, 1), ValueError, "implicit"),
        (((0.5,),), (1,), (0.5,), ValueError, "implicit"),
        (((0, 0), (1, 0)), (0.5, 0.5, 0.0), (0, 1), ValueError, "c has 2 entries, b has 3"),
        (((0, 0),), (0.5, 0.5), (0, 1), ValueError, "a has 1 rows"),
        ((), (), (), ValueError, "b is empty"),
        (((0, 0), (1, 0)), ("x", 0.5), (0, 1), TypeError, "b must be a sequence of real numbers"),
        (((0, 0), (float("nan"), 0)), (0.5, 0.5), (0, 1), ValueError, "must be finite"),
        (((0, 0), (1, 0, 0)), (0.5, 0.5), (0, 1), ValueError, "more than 2 stages"),
    ],
)
def test_an_invalid_tableau_is_refused_with_what_is_wrong(a, b, c, error, words):
    with pytest.raises(error, match="Invalid Butcher tableau") as info:
        schemes.ExplicitRK(a, b, c)
    assert words in str(info.value)


def test_orders_come_from_the_tableau():
    """Butcher's order conditions: Euler 1, Heun and midpoint 2, Kutta's third-order method 3, RK4 and
    the 3/8 rule 4; a consistent tableau with the wrong second-order weights is order 1."""
    assert schemes.Euler().order == 1
    assert schemes.Heun().order == 2
    assert schemes.Midpoint().order == 2
    assert schemes.RK4().order == 4
    kutta3 = schemes.ExplicitRK(((0, 0, 0), (0.5, 0, 0), (-1, 2, 0)), (1 / 6, 2 / 3, 1 / 6), (0, 0.5, 1))
    assert kutta3.order == 3
    three_eighths = schemes.ExplicitRK(((0, 0, 0, 0), (1 / 3, 0, 0, 0), (-1 / 3, 1, 0, 0), (1, -1, 1, 0)),
                                       (1 / 8, 3 / 8, 3 / 8, 1 / 8), (0, 1 / 3, 2 / 3, 1))
    assert three_eighths.order == 4
    assert schemes.ExplicitRK(((0, 0), (1, 0)), (0.7, 0.3), (0, 1)).order == 1
    assert schemes.SemiImplicitEuler().order == 1 and schemes.Lookahead().order == 1 and schemes.Leapfrog().order == 2
    assert (schemes.Euler().gradient_calls, schemes.Heun().gradient_calls, schemes.RK4().gradient_calls) == (1, 2, 4)
    assert schemes.Leapfrog().gradient_calls == 2 and schemes.SemiImplicitEuler().gradient_calls == 1
    assert schemes.SemiImplicitEuler(("param", "momentum_buffer")).gradient_calls == 2


def test_stability_polynomials_are_the_truncated_exponential():
    """For an explicit method of order p = s ≤ 4, R(z) = Σ_{k≤s} z^k/k! (algebra: it matches e^z to order p)."""
    for scheme, s in ((schemes.Euler(), 1), (schemes.Heun(), 2), (schemes.RK4(), 4)):
        expected = tuple(1 / math.factorial(k) for k in range(s + 1))
        assert np.allclose(scheme.stability(1.0 + 0j), sum(expected))
        assert np.allclose(schemes.stability_polynomial(scheme).coefficients, expected)


def test_splitting_arguments_are_checked():
    with pytest.raises(TypeError, match="Invalid blocks value"):
        schemes.SemiImplicitEuler("param")
    with pytest.raises(TypeError, match="Invalid blocks value"):
        schemes.SemiImplicitEuler([1, 2])
    with pytest.raises(ValueError, match="Invalid velocity value"):
        schemes.Leapfrog(("param",))
    with pytest.raises(ValueError, match="Invalid fraction value: 0"):
        schemes.Splitting((schemes.SubStep(("param",), 0),))
    with pytest.raises(ValueError, match="Leapfrog: the statement has no variable 'param'"):
        run_numpy(dynopt.discretize(dynopt.eg, schemes.Leapfrog()), {"lr": 0.01, "variant": "signed"}, quad_grad, THETA0, 1)
    with pytest.raises(ValueError, match="no variable 'velocity'"):
        run_numpy(dynopt.discretize(dynopt.momentum, schemes.SemiImplicitEuler(("velocity", "param"))), {"lr": 0.01},
                  quad_grad, THETA0, 1)


def test_discretize_refuses_what_is_not_a_statement_or_a_scheme():
    with pytest.raises(TypeError, match="MetaSGD is not written as an ODE statement"):
        dynopt.discretize(dynopt.meta_sgd, schemes.Heun())
    with pytest.raises(TypeError, match="NesterovSBC is not written as an ODE statement"):
        dynopt.discretize(dynopt.nesterov_sbc, schemes.Heun())
    with pytest.raises(TypeError, match="Invalid scheme value: 'Heun'"):
        dynopt.discretize(dynopt.sgd, "Heun")


# ----------------------------------------------------------------------------- the zoo's own schemes


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "rmsprop", "adam", "eg"])
def test_the_zoo_is_its_statement_stepped_by_its_scheme(name):
    """``discretize(spec, spec.discretization)`` reproduces the spec itself exactly (same statement, same scheme)."""
    spec = getattr(dynopt, name)
    assert spec.statement is not None and spec.discretization is not None
    again = dynopt.discretize(spec, spec.discretization)
    theta0 = POSITIVE0 if name == "eg" else THETA0
    hyper = {"lr": 0.05}
    mine, _ = run_numpy(spec, hyper, quartic_grad, theta0, 20)
    derived, _ = run_numpy(again, hyper, quartic_grad, theta0, 20)
    assert np.array_equal(mine, derived)


def test_nesterov_is_heavy_ball_with_the_lookahead_scheme_and_matches_torch():
    """The heavy-ball statement with Lookahead() is torch.optim.SGD(nesterov=True), with the same buffer."""
    spec = dynopt.discretize(dynopt.momentum, schemes.Lookahead())
    w = torch.nn.Parameter(torch.tensor(THETA0))
    ref = torch.nn.Parameter(torch.tensor(THETA0))
    mine = dynopt.torch.from_spec(spec)([w], lr=0.05, momentum=0.8)
    theirs = torch.optim.SGD([ref], lr=0.05, momentum=0.8, nesterov=True)
    for _ in range(30):
        for p, opt in ((w, mine), (ref, theirs)):
            p.grad = torch.tensor(quartic_grad([p.detach().numpy()])[0])
            opt.step()
    assert torch.allclose(w, ref, rtol=0, atol=1e-12)
    assert torch.allclose(mine.state[w]["momentum_buffer"], theirs.state[ref]["momentum_buffer"], rtol=0, atol=1e-12)


def test_block_order_of_semi_implicit_euler():
    """Blocks in the statement's order equal the default; θ first is another method (symplectic Euler
    "B"), which reads the gradient at the moved θ: b ← μb + F(θ_new), algebra written here."""
    hyper = {"lr": 0.04, "momentum": 0.7}
    default, _ = run_numpy(dynopt.momentum, hyper, quad_grad, THETA0, 10)
    same, _ = run_numpy(dynopt.discretize(dynopt.momentum, schemes.SemiImplicitEuler(("momentum_buffer", "param"))),
                        hyper, quad_grad, THETA0, 10)
    assert np.allclose(default, same, rtol=0, atol=1e-14)
    theta, b = THETA0.copy(), np.zeros(3)
    for _ in range(10):
        theta = theta - 0.04 * b
        b = 0.7 * b + A @ (theta - C)
    other, state = run_numpy(dynopt.discretize(dynopt.momentum, schemes.SemiImplicitEuler(("param", "momentum_buffer"))),
                             hyper, quad_grad, THETA0, 10)
    assert np.allclose(other, theta, rtol=0, atol=1e-13)
    assert np.allclose(state.values["momentum_buffer"][0], b, rtol=0, atol=1e-13)


def test_heun_is_the_explicit_trapezoid_written_out():
    """SGD's ODE with Heun: θ + (h/2)(−∇L(θ) − ∇L(θ − h∇L(θ))), written here from the definition."""
    theta = THETA0.copy()
    lr = 0.1
    for _ in range(15):
        k1 = -lr * quartic_grad([theta])[0]
        k2 = -lr * quartic_grad([theta + k1])[0]
        theta = theta + (k1 + k2) / 2
    mine, _ = run_numpy(dynopt.discretize(dynopt.sgd, schemes.Heun()), {"lr": lr}, quartic_grad, THETA0, 15)
    assert np.allclose(mine, theta, rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- fitted orders


def _fitted_order(spec, scheme, grad, theta0, make_hyper, hs, time):
    errors = []
    for h in hs:
        hyper = make_hyper(h)
        steps = int(round(time / h))
        reference = flow(spec, hyper, grad, [theta0], steps, rtol=1e-13, atol=1e-15).params[0][-1]
        theta, _ = run_numpy(dynopt.discretize(spec, scheme), hyper, grad, theta0, steps)
        errors.append(np.max(np.abs(theta - reference)))
    slope = np.polyfit(np.log(hs), np.log(errors), 1)[0]
    return slope, errors


GRADIENT_FLOW = (dynopt.sgd, lambda h: {"lr": h})
HEAVY_BALL = (dynopt.momentum, lambda h: {"lr": h * h, "momentum": 1 - 1.5 * h})  # γ = 1.5 fixed as h → 0


@pytest.mark.parametrize("ode", ["gradient flow", "heavy ball"])
@pytest.mark.parametrize("scheme", [schemes.Euler(), schemes.Heun(), schemes.Midpoint(), schemes.RK4(), schemes.Leapfrog(),
                                    schemes.SemiImplicitEuler()], ids=lambda s: s.name)
def test_fitted_order_matches_the_declared_order(ode, scheme):
    """Error at a fixed ODE time against the reference flow, for h halving four times: the fitted slope
    is the scheme's declared order (±0.25). Leapfrog on the gradient flow (no velocity) is Euler."""
    spec, make_hyper = GRADIENT_FLOW if ode == "gradient flow" else HEAVY_BALL
    expected = 1 if (scheme.name == "Leapfrog" and ode == "gradient flow") else scheme.order
    hs = [0.2 / 2**k for k in range(4)]
    slope, errors = _fitted_order(spec, scheme, quartic_grad, THETA0 * 0.5, make_hyper, hs, time=2.0)
    assert abs(slope - expected) < 0.25, (slope, errors)


def test_eg_with_rk4_in_mirror_coordinates_is_fourth_order_and_stays_on_the_simplex():
    """The replicator ODE (EG simplex) stepped by RK4 in log coordinates, then projected: order 4 against
    the reference flow, and every iterate on the simplex with positive entries."""
    spec = dynopt.eg

    def make_hyper(h):
        return {"lr": h, "variant": "simplex"}

    slope, errors = _fitted_order(spec, schemes.RK4(), quartic_grad, POSITIVE0, make_hyper, [0.4 / 2**k for k in range(4)], 2.0)
    assert abs(slope - 4) < 0.3, (slope, errors)
    theta, _ = run_numpy(dynopt.discretize(spec, schemes.RK4()), make_hyper(0.5), quartic_grad, POSITIVE0, 20)
    assert np.isclose(theta.sum(), 1.0, atol=1e-14) and np.all(theta > 0)


# ----------------------------------------------------------------------------- every pair on every backend


PAIRS = [
    (base, scheme)
    for base in ("sgd", "momentum", "nesterov", "rmsprop", "adam", "eg_signed_simplex")
    for scheme in (schemes.Euler(), schemes.Heun(), schemes.RK4(), schemes.SemiImplicitEuler(), schemes.Lookahead(),
                   schemes.Leapfrog(), schemes.Euler(mirror=False))
    if not (base.startswith("eg") and scheme.name == "Leapfrog")  # leapfrog needs θ as a position variable
]


def _base(name):
    if name == "eg_signed_simplex":
        return dynopt.eg, {"variant": "signed_simplex", "total": 5.0, "init_scale": 0.5}
    if name == "rmsprop":
        return dynopt.rmsprop, {"momentum": 0.5, "centered": True, "eps": 0.1}  # explicit schemes read v₀ = 0
    return getattr(dynopt, name), {}


def _torch_run(spec, hyper, steps, flat=True, fused=None, scheduler=None):
    w = torch.nn.Parameter(torch.tensor(THETA0 * 0.5))
    opt = dynopt.torch.from_spec(spec)([w], **hyper, flat=flat, fused=fused)
    At, Ct = torch.tensor(A), torch.tensor(C)
    calls = []

    def closure():
        calls.append(1)
        opt.zero_grad()
        d = w - Ct
        loss = (d**4).sum() / 4 + 0.5 * d @ At @ d
        loss.backward()
        return loss

    sched = scheduler(opt) if scheduler else None
    for _ in range(steps):
        opt.step(closure)
        if sched:
            sched.step()
    return w.detach().numpy(), opt, len(calls)


def _jax_run(spec, hyper, steps):
    lr = hyper.pop("lr")
    opt = dynopt.jax.from_spec(spec)(lr, **hyper)
    At, Ct = jnp.asarray(A), jnp.asarray(C)

    def grad_fn(q):
        d = q - Ct
        return d**3 + At @ d

    params = jnp.asarray(THETA0 * 0.5)
    state = opt.init(params)
    update = jax.jit(lambda g, s, p: opt.update(g, s, p, grad_fn=grad_fn))
    for _ in range(steps):
        updates, state = update(grad_fn(params), state, params)
        params = optax.apply_updates(params, updates)
    return np.asarray(params)


@pytest.mark.parametrize("base, scheme", PAIRS, ids=lambda x: getattr(x, "name", None) or str(x))
def test_every_ode_and_scheme_pair_agrees_on_every_backend(base, scheme):
    """NumPy oracle, torch (the reference path, flat=False, and the default flat path; multi-stage schemes
    step every bucket in lockstep on both) and JAX agree to 1e-12 after 12 steps."""
    spec, extra = _base(base)
    spec = dynopt.discretize(spec, scheme)
    hyper = {"lr": 0.03, **extra}
    expected, _ = run_numpy(spec, hyper, quartic_grad, THETA0 * 0.5, 12)
    assert np.all(np.isfinite(expected))
    for flat in (False, True):
        got, _, calls = _torch_run(spec, dict(hyper), 12, flat=flat)
        assert np.allclose(got, expected, rtol=0, atol=1e-12), flat
    assert np.allclose(_jax_run(spec, dict(hyper), 12), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("scheme, calls", [(schemes.Heun(), 2), (schemes.RK4(), 4), (schemes.Leapfrog(), 2)],
                         ids=lambda x: getattr(x, "name", str(x)))
def test_torch_calls_the_closure_once_per_gradient_and_restores_nothing_else(scheme, calls):
    """step(closure) evaluates the closure gradient_calls times per step; the parameters end at the scheme's
    result (the NumPy oracle's), and the first call happens at the current parameters."""
    spec = dynopt.discretize(dynopt.momentum, scheme)
    got, opt, n = _torch_run(spec, {"lr": 0.02}, 5)
    assert n == 5 * calls
    expected, _ = run_numpy(spec, {"lr": 0.02}, quartic_grad, THETA0 * 0.5, 5)
    assert np.allclose(got, expected, rtol=0, atol=1e-13)


def test_a_missing_closure_or_grad_fn_raises_and_changes_nothing():
    spec = dynopt.discretize(dynopt.adam, schemes.Heun())
    w = torch.nn.Parameter(torch.tensor(THETA0))
    opt = dynopt.torch.from_spec(spec)([w], lr=0.1)
    w.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"takes 2 gradients per step \(scheme Heun\): call step\(closure\)"):
        opt.step()
    assert torch.equal(w.detach(), torch.tensor(THETA0)) and len(opt.state) == 0
    jopt = dynopt.jax.from_spec(spec)(0.1)
    params = jnp.asarray(THETA0)
    state = jopt.init(params)
    with pytest.raises(ValueError, match=r"missing: grad_fn"):
        jopt.update(params, state, params)
    with pytest.raises(ValueError, match=r"missing: params and grad_fn"):
        jopt.update(params, state)
    nopt = dynopt.numpy.from_spec(spec)(0.1)
    nstate = nopt.init([THETA0])
    with pytest.raises(ValueError, match="needs the gradient at an intermediate point"):
        nopt.update([THETA0], nstate, [THETA0])


def test_schemes_compose_with_schedulers_skip_nonfinite_and_inject_hyperparams():
    """A torch lr_scheduler drives a Heun step like any other (equal to the oracle run with the same
    per-step lr); inject_hyperparams and optax schedules do the same in JAX."""
    spec = dynopt.discretize(dynopt.momentum, schemes.Heun())
    lrs = [0.05 * 0.9**k for k in range(8)]
    got, _, _ = _torch_run(spec, {"lr": 0.05}, 8, scheduler=lambda o: torch.optim.lr_scheduler.ExponentialLR(o, 0.9))
    theta = [THETA0 * 0.5]
    nopt = dynopt.numpy.from_spec(spec)(lambda count: lrs[count])
    state = nopt.init(theta)
    for _ in range(8):
        u, state = nopt.update(quartic_grad(theta), state, theta, grad_fn=quartic_grad)
        theta = [theta[0] + u[0]]
    assert np.allclose(got, theta[0], rtol=0, atol=1e-12)
    def schedule(count):
        return 0.05 * jnp.power(0.9, jnp.asarray(count, jnp.float64))

    injected = optax.inject_hyperparams(dynopt.jax.from_spec(spec), hyperparam_dtype=jnp.float64)(
        learning_rate=schedule, momentum=0.9)
    params = jnp.asarray(THETA0 * 0.5)
    state = injected.init(params)
    At, Ct = jnp.asarray(A), jnp.asarray(C)

    def grad_fn(q):
        return (q - Ct) ** 3 + At @ (q - Ct)

    for _ in range(8):
        u, state = injected.update(grad_fn(params), state, params, grad_fn=grad_fn)
        params = params + u
    assert np.allclose(np.asarray(params), theta[0], rtol=0, atol=1e-12)
    # skip_nonfinite: a non-finite gradient at a stage point skips the whole step
    w = torch.nn.Parameter(torch.tensor(THETA0))
    opt = dynopt.torch.from_spec(spec)([w], lr=0.05, skip_nonfinite=True)
    count = []

    def bad_second_stage():
        count.append(1)
        opt.zero_grad()
        loss = (w**2).sum() * (float("nan") if len(count) == 2 else 1.0)
        loss.backward()
        return loss

    opt.step(bad_second_stage)
    assert torch.equal(w.detach(), torch.tensor(THETA0)) and len(opt.state) == 0


def test_torch_multi_stage_steps_every_param_group_in_lockstep():
    """Two param groups with different learning rates: one closure call per stage for both, each group
    stepped from the common stage point (equal to the NumPy oracle on the joint problem, group by group)."""
    spec = dynopt.discretize(dynopt.sgd, schemes.RK4())
    a = torch.nn.Parameter(torch.tensor(THETA0[:2]))
    b = torch.nn.Parameter(torch.tensor(THETA0[2:]))
    opt = dynopt.torch.from_spec(spec)([{"params": [a]}, {"params": [b], "lr": 0.05}], lr=0.1)
    At, Ct = torch.tensor(A), torch.tensor(C)

    def closure():
        opt.zero_grad()
        d = torch.cat([a, b]) - Ct
        loss = (d**4).sum() / 4 + 0.5 * d @ At @ d
        loss.backward()
        return loss

    theta = THETA0.copy()
    h = np.array([0.1, 0.1, 0.05])
    for _ in range(6):
        opt.step(closure)
        f = lambda x: -h * quartic_grad([x])[0]  # noqa: E731 - RK4 with a per-coordinate step, written out
        k1 = f(theta)
        k2 = f(theta + k1 / 2)
        k3 = f(theta + k2 / 2)
        k4 = f(theta + k3)
        theta = theta + (k1 + 2 * k2 + 2 * k3 + k4) / 6
    assert np.allclose(torch.cat([a, b]).detach().numpy(), theta, rtol=0, atol=1e-13)


def test_lr_zero_moves_nothing_with_any_scheme():
    """lr = 0 (h = √lr = 0 for heavy ball) is an ordinary step: nothing divides by h."""
    for scheme in (schemes.Heun(), schemes.RK4(), schemes.Leapfrog(), schemes.Lookahead()):
        theta, _ = run_numpy(dynopt.discretize(dynopt.momentum, scheme), {"lr": 0.0}, quartic_grad, THETA0, 3)
        assert np.array_equal(theta, THETA0)
        got, _, _ = _torch_run(dynopt.discretize(dynopt.momentum, scheme), {"lr": 0.0}, 3)
        assert np.array_equal(got, THETA0 * 0.5)


def test_readme_scheme_tables_are_generated_from_the_code():
    from pathlib import Path

    from dynopt.docs import ode_scheme_table, scheme_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert scheme_table() in readme and ode_scheme_table() in readme, "run `python -m dynopt.docs` and paste the tables"


@pytest.mark.parametrize("base, scheme", [("momentum", schemes.Heun()), ("adam", schemes.RK4()), ("sgd", schemes.Lookahead()),
                                          ("eg_signed_simplex", schemes.Heun())], ids=lambda x: getattr(x, "name", x))
def test_fused_path_runs_discretized_specs(base, scheme):
    """fused=True: one-gradient schemes compile as any spec; multi-stage schemes run their stages eagerly on the
    flat buckets (a compiled kernel cannot call the closure); both equal the NumPy oracle to 1e-12."""
    spec, extra = _base(base)
    spec = dynopt.discretize(spec, scheme)
    hyper = {"lr": 0.03, **extra}
    expected, _ = run_numpy(spec, hyper, quartic_grad, THETA0 * 0.5, 6)
    got, _, _ = _torch_run(spec, dict(hyper), 6, flat=True, fused=True)
    assert np.allclose(got, expected, rtol=0, atol=1e-12)


def test_multi_stage_on_the_flat_path_with_several_buckets():
    """Gathered buckets (small tensors) and two param groups: the flat path's lockstep stages equal the reference path."""
    spec = dynopt.discretize(dynopt.momentum, schemes.RK4())
    results = []
    for flat in (False, True):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 1)).double()
        opt = dynopt.torch.from_spec(spec)([{"params": model[0].parameters()}, {"params": model[2].parameters(), "lr": 0.02}],
                                           lr=0.05, flat=flat)
        x = torch.linspace(-1, 1, 20, dtype=torch.float64).reshape(5, 4)
        y = torch.sin(x.sum(1, keepdim=True))

        def closure(opt=opt, model=model, x=x, y=y):
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        for _ in range(5):
            opt.step(closure)
        results.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*results):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


def test_the_optimizer_says_which_path_ran_and_why():
    """``opt.execution`` names the path of the last step and, for the reference path, the reason."""
    w = torch.nn.Parameter(torch.tensor(THETA0))
    opt = dynopt.torch.Momentum([w], lr=0.1)
    w.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert opt.execution.path == "reference" and "first step" in opt.execution.reason
    opt.step()
    assert opt.execution.path == "flat"
    guarded = dynopt.torch.Momentum([w], lr=0.1, skip_nonfinite=True)
    guarded.step()
    guarded.step()
    assert (guarded.execution.path, guarded.execution.reason) == ("reference", "skip_nonfinite=True")


def test_a_derived_optimizers_checkpoint_loads_only_into_the_same_derivation():
    """discretize and accumulate mark their torch param groups (scheme, soft_batch, embedded): a checkpoint of the
    base does not load into a derived optimizer, nor a derived one's into the base or another derivation
    (ValueError naming the flags, nothing changed); the same derivation loads and continues exactly as the
    uninterrupted run (the expectation: that run itself)."""
    derived = {
        "Momentum": dynopt.momentum,
        "MomentumHeun": dynopt.discretize(dynopt.momentum, schemes.Heun()),
        "MomentumAccumulated2": dynopt.accumulate(dynopt.momentum, 2),
        "MomentumEmbedded2": dynopt.accumulate(dynopt.momentum, 2, embed=True),
    }
    classes = {name: dynopt.torch.from_spec(spec) for name, spec in derived.items()}

    def run(cls, steps, w=None, saved=None):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64)) if w is None else w
        opt = cls([w], lr=0.1, momentum=0.9)
        if saved is not None:
            opt.load_state_dict(saved)

        def closure():
            opt.zero_grad()
            loss = (w**4).sum()
            loss.backward()
            return loss

        for _ in range(steps):
            opt.step(closure)
        return w, opt

    for source, source_cls in classes.items():
        w, opt = run(source_cls, 3)
        saved = opt.state_dict()
        for target, target_cls in classes.items():
            if target == source:
                resumed, _ = run(target_cls, 3, torch.nn.Parameter(w.detach().clone()), saved)
                straight, _ = run(target_cls, 6)
                assert torch.equal(resumed, straight)
                continue
            fresh = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
            other = target_cls([fresh], lr=0.1, momentum=0.9)
            with pytest.raises(ValueError, match=r"load_state_dict: param group 0 has .*(scheme|soft_batch|embedded)="
                                                 r".*, but " + target + " means"):
                other.load_state_dict(saved)
            assert other.state_dict()["state"] == {}
    base_saved = run(classes["Momentum"], 2)[1].state_dict()
    with pytest.raises(ValueError, match=r"scheme=unset \(the base optimizer\), but MomentumHeun means scheme='Heun'"):
        classes["MomentumHeun"]([torch.nn.Parameter(torch.ones(2, dtype=torch.float64))], lr=0.1).load_state_dict(base_saved)


def _meta_heun_by_hand(lr, steps, meta_lr=0.07, rho=0.97, s0=0.01, shrink=2.0, brake=0.5, delta=0.5):
    """The meta step (rule "eg", README's "Meta-learned step size") over Heun, written out: Heun's two stages at the
    effective step lr·s, with s updated first from the hypergradient cosines against the trace D and the last step u
    (both per unit of s), log s ← log s − γ·cos − (γ↓ − γ)·((max(cos, cos_u) − c₀)₊/(1 − c₀))², growth ≤ δ."""
    theta, s = THETA0 * 0.5, s0
    u = D = np.zeros(3)
    for _ in range(steps):
        g = quartic_grad([theta])[0]
        ng = np.linalg.norm(g)
        cos_d, cos_u = g @ D / (ng * np.linalg.norm(D) + 1e-30), g @ u / (ng * np.linalg.norm(u) + 1e-30)
        over = max(max(cos_d, cos_u) - brake, 0.0) / (1 - brake)
        s *= math.exp(min(-meta_lr * cos_d - (shrink - meta_lr) * over**2, delta))
        k1 = -lr * s * g
        k2 = -lr * s * quartic_grad([theta + k1])[0]
        step = (k1 + k2) / 2
        theta = theta + step
        u = step / s
        D = rho * D + u
    return theta, s


def test_the_meta_step_wraps_a_multi_stage_scheme_on_every_backend():
    """meta_step(discretize(sgd, Heun())): the stages at the effective step lr·s, on NumPy, JAX (grad_fn=) and
    torch (step(closure), reference and flat paths), equal to the rule written out by hand above (1e-12)."""
    spec = dynopt.meta_step(dynopt.discretize(dynopt.sgd, schemes.Heun()))
    assert spec.gradient_calls == 2 and spec.name == "MetaSGDHeun"
    want, scale = _meta_heun_by_hand(0.3, 12)
    assert scale != 0.01  # the scale did adapt
    theta = [THETA0 * 0.5]
    nopt = dynopt.numpy.from_spec(spec)(0.3)
    state = nopt.init(theta)
    for _ in range(12):
        u, state = nopt.update(quartic_grad(theta), state, theta, grad_fn=quartic_grad)
        theta = [theta[0] + u[0]]
    np.testing.assert_allclose(theta[0], want, rtol=0, atol=1e-12)
    assert float(state.values["scale"]) == pytest.approx(scale, rel=1e-12)
    for flat in (False, True):
        got, opt, calls = _torch_run(spec, {"lr": 0.3}, 12, flat=flat)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
        assert calls == 24 and float(opt.global_scalars()["scale"]) == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(_jax_run(spec, {"lr": 0.3}, 12), want, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match=r"gain_lr=0.1, but per-coordinate gains need a base with one gradient"):
        gained = dynopt.numpy.from_spec(spec)(0.3, gain_lr=0.1)
        gained.update(quartic_grad(theta), gained.init(theta), theta, grad_fn=quartic_grad)
