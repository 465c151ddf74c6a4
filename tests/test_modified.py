"""The ODE view made quantitative: modified equations and limits, with orders *fitted* on log–log
plots of the error against the step size (the way diffrax tests solver order), never read off
a hard-coded figure.

Toy (design brief, section C): L(x, y) = ½(x² + 4y²) + ¼x²y² + 0.1x⁴ from θ₀ = (1.5, 1), whose
Hessian is written out below so that the modified flows use exact Hessian-vector products.
Each expected value is either an exact solution (matrix exponentials, Bessel functions) or the
algebra written next to the test.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from scipy.linalg import expm
from scipy.special import j1

import dynopt
import dynopt.numpy
from dynopt._backends.numpy_oracle import MATH, OracleState
from dynopt.ode import finite_difference_hvp, flow, times
from dynopt.spec import Hyper, Spec, nonnegative

THETA0 = np.array([1.5, 1.0])
HORIZON = 2.0
HS = np.array([0.04, 0.02, 0.01, 0.005])
GAMMA = 1.5  # friction of the heavy-ball ODE


def grad(theta):
    x, y = theta[0]
    return [np.array([x + 0.5 * x * y**2 + 0.4 * x**3, 4 * y + 0.5 * x**2 * y])]


def hessian(theta):
    x, y = theta
    return np.array([[1 + 0.5 * y**2 + 1.2 * x**2, x * y], [x * y, 4 + 0.5 * x**2]])


def hvp(theta, v):
    return [hessian(theta[0]) @ v[0]]


def fitted_slope(steps, errors) -> float:
    """The least-squares slope of log(error) against log(step size)."""
    errors = np.asarray(errors)
    assert np.all(errors > 0) and np.all(np.isfinite(errors)), errors
    return float(np.polyfit(np.log(steps), np.log(errors), 1)[0])


def iterate(spec, hyper, steps, *, theta0=THETA0, state=None, grad_fn=grad, every=False):
    """The NumPy oracle from θ₀ (and optionally a given initial state): the last iterate, or all."""
    opt = dynopt.numpy.from_spec(spec)(**hyper)
    params = [theta0.copy()]
    current = opt.init(params)
    if state:
        current = OracleState(0, {**current.values, **state})
    path = [theta0.copy()]
    for _ in range(steps):
        updates, current = opt.update(grad_fn(params), current, params)
        params = [params[0] + updates[0]]
        path.append(params[0])
    return np.array(path) if every else params[0]


def end_error(x, reference) -> float:
    return float(np.max(np.abs(x - reference.params[0][-1])))


# ------------------------------------------------------------------------------ the fields themselves


A = np.array([[1.0, 0.3], [0.3, 2.5]])


def quad_grad(theta):
    return [A @ theta[0]]


def quad_hvp(theta, v):
    return [A @ v[0]]


def test_sgd_modified_flow_is_the_exact_linear_flow_on_a_quadratic():
    """L = ½θᵀAθ: θ' = −(A + (h/2)A²)θ, solved by expm; with maximize and weight decay λ on
    L = −½θᵀAθ the force is F = (A + λ)θ and J_F = A + λ, so θ' = −(A' + (h/2)A'²)θ with A' = A + λ."""
    h, wd = 0.05, 0.2
    for hyper, loss_grad, matrix in [
        ({"lr": h}, quad_grad, A),
        ({"lr": h, "maximize": True, "weight_decay": wd}, lambda th: [-A @ th[0]], A + wd * np.eye(2)),
    ]:
        sol = flow(dynopt.sgd, hyper, loss_grad, [THETA0], 40, modified=True,
                   hvp_fn=lambda th, v, g=loss_grad: [g([v[0]])[0]])  # linear gradient: H v = ∇L(v)
        exact = np.stack([expm(-(matrix + h / 2 * matrix @ matrix) * t) @ THETA0 for t in sol.times])
        assert np.max(np.abs(sol.params[0] - exact)) < 1e-9


@pytest.mark.parametrize("spec", [dynopt.momentum, dynopt.nesterov], ids=lambda s: s.name)
def test_momentum_modified_flows_are_the_exact_linear_flows_on_a_quadratic(spec):
    """Over (θ, b) with θ' = −h b: (1 − γh/2)θ'' + γθ' (+ hAθ' for Nesterov) + Aθ = 0 reads
    b' = (Aθ − (1 − μ)b − [lr·A b])/(h(1 + μ)/2), a linear system solved by expm."""
    h = 0.1
    lr, mu = h * h, 1 - GAMMA * h
    damping = lr * A if spec is dynopt.nesterov else np.zeros((2, 2))
    scale = 2 / ((1 + mu) * h)
    M = np.block([[np.zeros((2, 2)), -h * np.eye(2)], [scale * A, -scale * ((1 - mu) * np.eye(2) + damping)]])
    b0 = np.array([0.3, -0.2])
    sol = flow(spec, {"lr": lr, "momentum": mu}, quad_grad, [THETA0], 60, state={"momentum_buffer": [b0]},
               modified=True, hvp_fn=quad_hvp)
    y0 = np.concatenate([THETA0, b0])
    exact = np.stack([expm(M * t) @ y0 for t in sol.times])
    assert np.max(np.abs(sol.params[0] - exact[:, :2])) < 1e-9
    assert np.max(np.abs(sol.state["momentum_buffer"][0] - exact[:, 2:])) < 1e-8


def test_finite_difference_hvp_matches_the_exact_hessian():
    fd = finite_difference_hvp(grad)
    rng = np.random.default_rng(0)
    for _ in range(5):
        theta, v = rng.normal(size=2), rng.normal(size=2)
        assert np.allclose(fd([theta], [v])[0], hessian(theta) @ v, rtol=1e-8, atol=1e-9)
    assert np.array_equal(fd([THETA0], [np.zeros(2)])[0], np.zeros(2))
    hyper = {"lr": 0.02}
    exact = flow(dynopt.sgd, hyper, grad, [THETA0], 100, modified=True, hvp_fn=hvp).params[0]
    by_fd = flow(dynopt.sgd, hyper, grad, [THETA0], 100, modified=True).params[0]  # the default
    assert np.max(np.abs(exact - by_fd)) < 1e-9


def test_a_spec_without_a_modified_field_is_refused():
    with pytest.raises(ValueError, match="Adam states no modified equation"):
        flow(dynopt.adam, {"lr": 0.01}, grad, [THETA0], 5, modified=True)


# ------------------------------------------------------------------------------ fitted orders


def test_gd_is_first_order_to_the_gradient_flow_and_second_order_to_the_modified_flow():
    """C1/C2: ‖θ_{T/h} − θ(T)‖ against h, slope 1 ± 0.1 (gradient flow) and 2 ± 0.2 (modified flow
    θ' = −(g + (h/2)Hg) = −∇(L + (h/4)‖∇L‖²))."""
    to_flow, to_modified = [], []
    for h in HS:
        steps = int(round(HORIZON / h))
        x = iterate(dynopt.sgd, {"lr": h}, steps)
        to_flow.append(end_error(x, flow(dynopt.sgd, {"lr": h}, grad, [THETA0], steps)))
        to_modified.append(end_error(x, flow(dynopt.sgd, {"lr": h}, grad, [THETA0], steps, modified=True, hvp_fn=hvp)))
    assert abs(fitted_slope(HS, to_flow) - 1) <= 0.1, to_flow
    assert abs(fitted_slope(HS, to_modified) - 2) <= 0.2, to_modified


def matched_buffer(spec, h, lr, mu):
    """The discrete b₀ that puts θ₋₁ on the modified solution X through θ₀ with X'(0) = 0.

    Modified ODE: m X'' + γX' + [h H X'] + F(X) = 0 with m = 1 − γh/2 (the bracket for
    Nesterov). At t = 0, X' = 0, so X''(0) = −F₀/m and, differentiating once,
    X'''(0) = −(γ + [hH])X''(0)/m. Taylor backwards: θ₋₁ = θ₀ + (h²/2)X'' − (h³/6)X''' + O(h⁴).
    Heavy ball: θ₀ − θ₋₁ = −lr·b₀. Nesterov's two-step form θ_{n+1} − θ_n = μ(θ_n − θ_{n−1})
    − lr[F_n + μ(F_n − F_{n−1})] needs F(θ₋₁) as well: θ₀ − θ₋₁ = −lr(F(θ₋₁) + μb₀).
    """
    m = 1 - GAMMA * h / 2
    f0 = grad([THETA0])[0]
    x2 = -f0 / m
    damping = GAMMA * np.eye(2) + (h * hessian(THETA0) if spec is dynopt.nesterov else 0)
    x3 = -damping @ x2 / m
    previous = THETA0 + h * h / 2 * x2 - h**3 / 6 * x3
    if spec is dynopt.momentum:
        return (previous - THETA0) / lr
    return -((THETA0 - previous) / lr + grad([previous])[0]) / mu


@pytest.mark.parametrize("spec", [dynopt.momentum, dynopt.nesterov], ids=lambda s: s.name)
def test_momentum_orders_with_lr_h2_and_mu_1_minus_gamma_h(spec):
    """C4/C5: lr = h², μ = 1 − γh. From the default start (b₀ = 0, torch's b₁ = g₁) the error to
    the ODE θ'' + γθ' + ∇L = 0 is O(h), and O(h) also to the modified ODE (the start is off by
    O(h) in velocity); with b₀ matched to the modified ODE it is O(h²). For Nesterov the Hessian
    damping h∇²L θ' is necessary: against the heavy-ball modified ODE it stays O(h)."""
    to_ode, default_to_modified, to_modified, to_heavy_ball_modified = [], [], [], []
    for h in HS:
        lr, mu = h * h, 1 - GAMMA * h
        hyper, steps = {"lr": lr, "momentum": mu}, int(round(HORIZON / h))
        assert np.isclose(times(spec, hyper, steps)[-1], HORIZON)
        default = iterate(spec, hyper, steps)
        matched = iterate(spec, hyper, steps, state={"momentum_buffer": [matched_buffer(spec, h, lr, mu)]})
        modified = flow(spec, hyper, grad, [THETA0], steps, modified=True, hvp_fn=hvp)
        to_ode.append(end_error(default, flow(spec, hyper, grad, [THETA0], steps)))
        default_to_modified.append(end_error(default, modified))
        to_modified.append(end_error(matched, modified))
        heavy_ball = flow(dynopt.momentum, hyper, grad, [THETA0], steps, modified=True, hvp_fn=hvp)
        to_heavy_ball_modified.append(end_error(matched, heavy_ball))
    assert abs(fitted_slope(HS, to_ode) - 1) <= 0.1, to_ode
    assert abs(fitted_slope(HS, default_to_modified) - 1) <= 0.1, default_to_modified
    assert abs(fitted_slope(HS, to_modified) - 2) <= 0.2, to_modified
    if spec is dynopt.nesterov:
        assert abs(fitted_slope(HS, to_heavy_ball_modified) - 1) <= 0.1, to_heavy_ball_modified


Q3 = np.array([[2.0, 0.5, 0.1], [0.5, 1.0, 0.3], [0.1, 0.3, 3.0]])
C3 = np.array([0.3, -0.2, 0.1])
THETA3 = np.array([0.5, 0.3, 0.2])


def grad3(theta):
    """∇ of L(θ) = ½θᵀQθ + cᵀθ + ⅛Σθ⁴ in R³ (for the simplex variants, which need ≥ 3 coordinates
    to have more than a 1-D flow: on the toy's 2-coordinate simplex the flow reaches its fixed
    point early and the errors, ~1e-6, are pre-asymptotic)."""
    x = theta[0]
    return [Q3 @ x + C3 + 0.5 * x**3]


def hvp3(theta, v):
    return [Q3 @ v[0] + 1.5 * theta[0] ** 2 * v[0]]


@pytest.mark.parametrize("variant, problem", [
    ("positive", (grad, hvp, THETA0, {})),
    ("signed", (grad, hvp, THETA0, {})),
    ("simplex", (grad3, None, THETA3, {"total": float(THETA3.sum())})),
    ("signed_simplex", (grad3, None, THETA3, {"total": float(np.sum(np.sqrt(THETA3**2 + 4.0)))})),
])
def test_eg_orders_to_its_mirror_flow_and_its_modified_flow(variant, problem):
    """C12: EG → θ' = −θ⊙∇L (and its simplex/signed forms) at O(h); → the dual-coordinate modified
    flow θ' = −θ⊙(F + (h/2)H(θ⊙F)) (and its forms, see dynopt/optimizers/eg.py) at O(h²). The
    simplex variants use dynopt.ode's default finite-difference Hessian-vector product, the others
    the exact Hessian. The signed simplex starts on its simplex (total = Σ(w⁺ + w⁻) of the c = 1 split)."""
    grad_fn, hvp_fn, theta0, extra = problem
    to_flow, to_modified = [], []
    for h in HS:
        hyper, steps = {"lr": h, "variant": variant, **extra}, int(round(HORIZON / h))
        x = iterate(dynopt.eg, hyper, steps, theta0=theta0, grad_fn=grad_fn)
        to_flow.append(end_error(x, flow(dynopt.eg, hyper, grad_fn, [theta0], steps)))
        to_modified.append(end_error(x, flow(dynopt.eg, hyper, grad_fn, [theta0], steps, modified=True, hvp_fn=hvp_fn)))
    assert abs(fitted_slope(HS, to_flow) - 1) <= 0.1, to_flow
    assert abs(fitted_slope(HS, to_modified) - 2) <= 0.2, to_modified


def fast_averaged_flow():
    """θ' = −F ⊘ (|F| + ε) on the clock t = k·lr: RMSprop's limit for α fixed, lr → 0."""
    return Spec(
        name="FastAveragedRMSprop",
        hyperparams=(Hyper("lr", 1e-3, "step", nonnegative), Hyper("eps", 1e-8, "ε", nonnegative)),
        state=lambda hp: (),
        update=lambda o, hp, t, g, p, s: (-hp.lr * g / (o.abs(g) + hp.eps), {}),
        vector_field=lambda o, hp, time, g, p, s: (-g / (o.abs(g) + hp.eps), {}),
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        ode="θ' = −F ⊘ (|F| + ε)", scheme="Euler", hyper_map="h = lr",
    )


@pytest.mark.parametrize("alpha, lrs, start", [
    (0.5, [0.01, 0.005, 0.0025, 0.00125], "zero"),
    (0.9, [0.004, 0.002, 0.001, 0.0005], "g0"),
])
def test_rmsprop_fast_averaging_limit_is_first_order(alpha, lrs, start):
    """C10(a): with α fixed and lr → 0, RMSprop's iterates follow θ' = −F/(|F| + ε) at O(lr),
    measured at T = 0.6, before any gradient component changes sign (checked along the flow and
    the iterates). v₀ = 0 (torch) adds an O(lr) start-up transient; v₀ = g₀² removes it. (For
    α = 0.9 from v₀ = 0 the transient and the averaging lag nearly cancel at O(lr) on this toy, so
    the asymptotic slope only shows at much smaller lr: that case starts from g₀².)"""
    lrs, eps, horizon = np.array(lrs), 1e-8, 0.6
    limit = fast_averaged_flow()
    g0 = grad([THETA0])[0]
    errors = []
    for lr in lrs:
        steps = int(round(horizon / lr))
        state = {"square_avg": [g0 * g0]} if start == "g0" else None
        path = iterate(dynopt.rmsprop, {"lr": lr, "alpha": alpha, "eps": eps}, steps, state=state, every=True)
        reference = flow(limit, {"lr": lr, "eps": eps}, grad, [THETA0], steps)
        for points in (path, reference.params[0]):
            signs = np.sign([grad([p])[0] for p in points])
            assert np.all(signs == np.sign(g0)), "a gradient component changed sign before the horizon"
        errors.append(end_error(path[-1], reference))
    assert abs(fitted_slope(lrs, errors) - 1) <= 0.1, errors


# ------------------------------------------------------------------------------ normalized GD


def polyline_distance(points, polyline):
    """Distance from each point to the polyline (min over its segments)."""
    a, b = polyline[:-1], polyline[1:]
    ab = b - a
    length2 = np.maximum(np.sum(ab * ab, axis=1), 1e-300)
    t = np.clip(np.einsum("pij,ij->pi", points[:, None, :] - a[None], ab) / length2, 0.0, 1.0)
    nearest = a[None] + t[..., None] * ab[None]
    return np.min(np.linalg.norm(points[:, None, :] - nearest, axis=-1), axis=1)


def hausdorff(p, q) -> float:
    """Hausdorff distance between two polylines (vertices to the other polyline, both ways)."""
    return float(max(polyline_distance(p, q).max(), polyline_distance(q, p).max()))


def direction_spec(name, direction):
    """A one-line optimizer θ ← θ − lr·direction(g), with its flow θ' = −direction(g)."""
    return Spec(
        name=name,
        hyperparams=(Hyper("lr", 1e-3, "step", nonnegative),),
        state=lambda hp: (),
        update=lambda o, hp, t, g, p, s: (-hp.lr * direction(o, g), {}),
        vector_field=lambda o, hp, time, g, p, s: (-direction(o, g), {}),
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        ode="θ' = −direction(∇L)", scheme="Euler", hyper_map="h = lr",
    )


def test_normalized_gd_traces_the_gradient_flow_path():
    """C11: θ ← θ − h g/‖g‖ is Euler on θ' = −g/‖g‖, the gradient flow re-parametrized by arc
    length, so its polyline approaches the gradient-flow curve: the Hausdorff distance over the
    first 80% of the curve's length decays with a fitted slope 1 ± 0.1. Sign descent (per-coordinate
    normalization) keeps the endpoint but not the path: its distance stays put."""
    normalized = direction_spec("NormalizedGD", lambda o, g: g / o.norm(g))
    sign = direction_spec("SignGD", lambda o, g: o.sign(g))
    curve = flow(dynopt.sgd, {"lr": 1e-3}, grad, [THETA0], 3000).params[0]  # t ∈ [0, 3]
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(curve, axis=0), axis=1))])
    length = 0.04 * np.floor(0.8 * arc[-1] / 0.04)  # a whole number of every step below
    i = int(np.searchsorted(arc, length))
    end = curve[i - 1] + (length - arc[i - 1]) / (arc[i] - arc[i - 1]) * (curve[i] - curve[i - 1])
    curve = np.vstack([curve[:i], end])
    # the normalized flow is the same curve, parametrized by arc length
    own = flow(normalized, {"lr": 0.01}, grad, [THETA0], int(round(length / 0.01))).params[0]
    assert polyline_distance(own, curve).max() < 1e-6 and np.linalg.norm(own[-1] - end) < 1e-6  # vertices on the curve
    hs = np.array([0.04, 0.02, 0.01, 0.005, 0.0025])
    to_curve, sign_to_curve = [], []
    for h in hs:
        steps = int(round(length / h))
        to_curve.append(hausdorff(iterate(normalized, {"lr": h}, steps, every=True), curve))
        sign_to_curve.append(hausdorff(iterate(sign, {"lr": h}, steps, every=True), curve))
    assert abs(fitted_slope(hs, to_curve) - 1) <= 0.1, to_curve
    assert min(sign_to_curve) > 50 * to_curve[-1] and min(sign_to_curve) > 0.1, sign_to_curve


# ------------------------------------------------------------------------------ Su–Boyd–Candès


def bessel_solution(t, x0, lam):
    """X(t) = x₀·2J₁(√λ t)/(√λ t) solves X'' + (3/t)X' + λX = 0, X(0) = x₀, X'(0) = 0 (→ x₀ at t = 0)."""
    z = np.sqrt(lam)[None, :] * np.asarray(t)[:, None]
    safe = np.where(z > 0, z, 1.0)
    return x0 * np.where(z > 0, 2 * j1(safe) / safe, 1.0)


SBC_LAMBDA = np.array([0.04, 0.01])  # f = 0.02x₁² + 0.005x₂², the figure of Su–Boyd–Candès
SBC_X0 = np.array([1.0, 1.0])


def sbc_grad(theta):
    return [SBC_LAMBDA * theta[0]]


def test_bessel_function_solves_the_sbc_ode():
    """The reference itself: J₁ satisfies z²J₁'' + zJ₁' + (z² − 1)J₁ = 0, hence u = 2J₁(z)/z obeys
    u'' + (3/z)u' + u = 0; checked by finite differences, and u(0) = 1, u'(0) = 0, u''(0) = −1/4."""
    z = np.linspace(0.5, 20, 400)
    d = 1e-4
    u = lambda z: 2 * j1(z) / z  # noqa: E731
    second = (u(z + d) - 2 * u(z) + u(z - d)) / d**2
    first = (u(z + d) - u(z - d)) / (2 * d)
    assert np.max(np.abs(second + 3 / z * first + u(z))) < 1e-6
    small = 1e-3  # u(z) = 1 − z²/8 + O(z⁴): X''(0) = −λx₀/4, the t = 0 limit of the field
    assert abs((u(small) - 1) / small**2 + 1 / 8) < 1e-6


@pytest.mark.parametrize("s", [1.0, 0.01])
def test_sbc_flow_matches_the_bessel_solution(s):
    steps = int(round(100 / np.sqrt(s)))
    sol = flow(dynopt.nesterov_sbc, {"lr": s}, sbc_grad, [SBC_X0], steps)
    assert np.isclose(sol.times[-1], 100.0) and np.isclose(sol.times[1], np.sqrt(s))
    assert np.max(np.abs(sol.params[0] - bessel_solution(sol.times, SBC_X0, SBC_LAMBDA))) < 1e-9


def test_sbc_field_at_t0_is_the_limit():
    """At t = 0 the field returns d'(0) = h·X''(0) = −h F(θ₀)/4, the limit of −(3/t)d − hF along
    the solution d = h X'(t) ≈ h X''(0) t, and θ'(0) = 0."""
    hp = dynopt.nesterov_sbc.namespace({"lr": 0.04})
    h, f0 = 0.2, sbc_grad([SBC_X0])[0]
    at = lambda t, d: dynopt.nesterov_sbc.vector_field(  # noqa: E731
        MATH, hp, t, MATH.tree([f0]), MATH.tree([SBC_X0]), SimpleNamespace(lookahead=MATH.tree([d])))
    d_theta, rates = at(0.0, np.zeros(2))
    assert np.array_equal(d_theta.leaves[0], np.zeros(2))
    assert np.allclose(rates["lookahead"].leaves[0], -h * f0 / 4)
    t = 1e-7
    _, near = at(t, h * (-f0 / 4) * t)
    assert np.allclose(near["lookahead"].leaves[0], -h * f0 / 4, rtol=1e-6)


def sbc_iterates(s, steps):
    """y_k (the parameter) and x_k = y_k − d_k of the Su–Boyd–Candès scheme on the quadratic."""
    opt = dynopt.numpy.nesterov_sbc(s)
    params = [SBC_X0.copy()]
    state = opt.init(params)
    ys, xs = [SBC_X0.copy()], [SBC_X0.copy()]
    for _ in range(steps):
        updates, state = opt.update(sbc_grad(params), state, params)
        params = [params[0] + updates[0]]
        ys.append(params[0])
        xs.append(params[0] - state.values["lookahead"][0])
    return np.array(ys), np.array(xs)


def test_sbc_scheme_is_the_x_y_form():
    """The lookahead state reproduces x_k = y_{k−1} − s∇f(y_{k−1}), y_k = x_k + (k−1)/(k+2)(x_k − x_{k−1})."""
    s, steps = 0.5, 30
    ys, xs = sbc_iterates(s, steps)
    x_prev, y = SBC_X0.copy(), SBC_X0.copy()
    for k in range(1, steps + 1):
        x = y - s * sbc_grad([y])[0]
        y = x + (k - 1) / (k + 2) * (x - x_prev)
        x_prev = x
        assert np.allclose(ys[k], y, rtol=1e-13, atol=1e-15) and np.allclose(xs[k], x, rtol=1e-13, atol=1e-15)


def test_nag_approaches_the_sbc_ode_at_rate_sqrt_s():
    """C7: sup over t = k√s ≤ 100 of ‖x_k − X(k√s)‖ (X the exact Bessel solution) shrinks like
    √s: the fitted slope against s is 1/2 ± 0.1, for x_k and for the parameter y_k alike."""
    ss = np.array([1.0, 0.25, 0.05, 0.01, 0.0025])
    sup_x, sup_y = [], []
    for s in ss:
        steps = int(np.floor(100 / np.sqrt(s)))
        ys, xs = sbc_iterates(s, steps)
        exact = bessel_solution(np.arange(steps + 1) * np.sqrt(s), SBC_X0, SBC_LAMBDA)
        sup_x.append(np.max(np.linalg.norm(xs - exact, axis=1)))
        sup_y.append(np.max(np.linalg.norm(ys - exact, axis=1)))
    assert abs(fitted_slope(ss, sup_x) - 0.5) <= 0.1, sup_x
    assert abs(fitted_slope(ss, sup_y) - 0.5) <= 0.1, sup_y


def test_sbc_rate_and_lyapunov_function_along_the_flow():
    """f(X) − f* ≤ 2‖x₀ − x*‖²/t² and E(t) = t²(f(X) − f*) + 2‖X + tX'/2 − x*‖² is non-increasing."""
    s = 0.01
    sol = flow(dynopt.nesterov_sbc, {"lr": s}, sbc_grad, [SBC_X0], 10_000)
    t, X = sol.times, sol.params[0]
    velocity = sol.state["lookahead"][0] / np.sqrt(s)  # X' = d/h
    gap = 0.5 * np.sum(SBC_LAMBDA * X * X, axis=1)
    assert np.all(gap[1:] <= 2 * np.sum(SBC_X0**2) / t[1:] ** 2)
    energy = t**2 * gap + 2 * np.sum((X + t[:, None] * velocity / 2) ** 2, axis=1)
    assert np.all(np.diff(energy) <= 1e-9 * energy[0])
