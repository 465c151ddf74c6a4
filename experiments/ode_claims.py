"""The remaining claims of the ODE view (design brief §C), each measured with dynopt's own optimizers.

1. ``schemes.png`` (orders of the schemes): ``dynopt.discretize(spec, scheme)`` with Euler, Heun,
   Kutta's RK3 (a user tableau, ``ExplicitRK(a, b, c)``) and RK4 on the brief's toy
   L = ½(x² + 4y²) + ¼x²y² + 0.1x⁴ from (1.5, 1), for the gradient flow (``dynopt.sgd``, lr = h)
   and the heavy-ball ODE θ'' + γθ' + ∇L = 0 (``dynopt.momentum``, lr = h², μ = 1 − γh). The error
   is the sup over t_k ≤ T of max|θ_k − θ(t_k)| against ``dynopt.ode.flow`` (DOP853, rtol 1e-13);
   the order is the least-squares slope of log error against log h.
2. ``heun_igr.png`` (C3): on Barrett–Dherin's L(a, b) = ½(y − abx)² (the problem of
   ``classic_figures``), GD's final a² + b² falls with h (its modified loss L + (h/4)‖∇L‖²
   prefers flat minima) while Heun's stays at the gradient flow's: Heun has no O(h) term in its
   modified equation. Also both distances to the gradient flow against h (slopes 1 and 2).
3. ``momentum_limits.png`` (C6, C8): heavy ball's two limits. (a, b) γ = (1 − μ)/√lr fixed: loss
   curves collapse on t = k√lr onto the ODE's, not on t = k·lr. (c) μ fixed: they collapse on
   t = k·lr/(1 − μ) onto the gradient flow's. (d) μ = 0.9 fixed, lr = h → 0: the iterates follow
   θ' = −∇L/(1 − μ) on the clock t = k·lr at O(h) (torch's start b₁ = g₁), and the flow of the
   modified loss L + h(1 + μ)/(4(1 − μ)²)‖∇L‖² at O(h²) from the matched start
   b₀ = g₀/(1 − μ) + h∇²L g₀/(1 − μ)³ (see ``matched_buffer``); the naive coefficient h/(4(1 − μ))
   stays O(h).
4. ``stability.png`` (C9): the largest stable lr·λ on L = λθ²/2, found with the optimizers
   themselves: every coordinate of one parameter vector is its own quadratic λ_iθ_i²/2, so one run
   of ``sweep_steps`` steps tests ``sweep_points`` values of lr·λ at once, and each of
   ``sweep_rounds`` rounds narrows the bracket around the first diverging value (a multi-point
   bisection). A coordinate diverges when its largest |θ| over the last 20 steps exceeds that over
   the 20 steps ending halfway (for a linear recursion, a ratio ρ^{N/2} with ρ the spectral
   radius). Formulas: GD 2, heavy ball 2(1 + μ), torch's Nesterov 2(1 + μ)/(1 + 2μ), and for a
   Runge–Kutta scheme the first z > 0 with |R(−z)| = 1, R the stability polynomial of its tableau
   (Heun 2, RK3 2.513, RK4 2.785). The figure draws each scheme's region |R(−w)| ≤ 1 in the complex
   lr·λ plane.
5. ``implicit_bias.png`` (C13): underdetermined least squares ½‖Aθ − b‖² (A: 40 × 100 Gaussian,
   b = Aθ* with θ* 4-sparse). GD from 0 ends at the minimum-ℓ2 solution A⁺b; EGU±
   (``dynopt.eg``, variant "signed", init_scale c) from 0 ends at the minimizer of the hyperbolic
   entropy Σ θ_i arcsinh(θ_i/2c) − √(θ_i² + 4c²) on Aθ = b (computed here by Newton's method on
   its dual; its mirror map arcsinh(θ/2c) stays in the row space of A along the iterates), which
   tends to the minimum-ℓ1 solution (``scipy.optimize.linprog``) as c → 0 and to A⁺b as c → ∞.

Outputs in ``--out``: the five PNGs, ``claims.npz`` (every measured curve) and ``config.json``
(configuration, fitted slopes, thresholds, norms, timing). ``--backend`` (numpy, torch or jax)
runs the stability sweeps; the other parts use the NumPy oracle. ``--seed`` draws the
least-squares problem.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter
from scipy.integrate import solve_ivp
from scipy.optimize import linprog
from tqdm.auto import tqdm

import dynopt
import dynopt.numpy
from dynopt import ode, schemes

from . import classic_figures, prepare, write_summary
from .ode_orders import THETA0, toy_grad, toy_hessian, toy_loss

NAME = "ode_claims"
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000", "#999999")
REFERENCE = {"rtol": 1e-13, "atol": 1e-15}  # tolerances of every reference flow here


def rk3_kutta() -> schemes.ExplicitRK:
    """Kutta's third-order method, given as a user tableau."""
    return schemes.ExplicitRK(((0, 0, 0), (0.5, 0, 0), (-1, 2, 0)), (1 / 6, 2 / 3, 1 / 6), (0, 0.5, 1), name="RK3")


SCHEMES: dict[str, Callable[[], schemes.ExplicitRK]] = {"Euler": schemes.Euler, "Heun": schemes.Heun, "RK3": rk3_kutta,
                                                        "RK4": schemes.RK4}
SCHEME_COLORS = dict(zip(SCHEMES, OKABE_ITO))


def fit(xs, ys) -> tuple[float, float]:
    """Least-squares (slope, intercept) of log y against log x."""
    slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(slope), float(intercept)


@dataclass
class Config:
    # 1. orders of the schemes
    order_hs: tuple[float, ...] = (0.05, 0.025, 0.0125, 0.00625)
    order_horizon: float = 1.0
    order_gamma: float = 1.5
    schemes: tuple[str, ...] = ("Euler", "Heun", "RK3", "RK4")
    # 2. C3: Heun on Barrett–Dherin's toy (start, x and y of classic_figures)
    igr_final_h: tuple[float, ...] = tuple(float(h) for h in np.geomspace(0.005, 0.2, 8))
    igr_horizon: float = 10.0  # both methods have settled on the valley ab = y/x by then
    igr_fit_max_h: float = 0.05  # the shrinkage of a² + b² is fitted over h ≤ this
    igr_path_h: float = 0.2
    igr_order_h: tuple[float, ...] = (0.04, 0.02, 0.01, 0.005)
    igr_order_horizon: float = 1.0
    # 3. C6 and C8: heavy ball's limits
    fixed_mu: float = 0.9
    c6_horizon: float = 0.2
    c6_hs: tuple[float, ...] = (1e-4, 5e-5, 2.5e-5, 1.25e-5)
    c8_gamma: float = 1.0
    c8_lrs: tuple[float, ...] = (0.04, 0.01, 0.0025, 0.000625)
    c8_horizon: float = 10.0
    c8_mu_lrs: tuple[float, ...] = (1e-3, 3e-4, 1e-4, 3e-5)
    c8_mu_horizon: float = 3.0
    # 4. C9: stability thresholds
    stability_mu: float = 0.9
    threshold_mus: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9, 0.99)
    sweep_lr: float = 0.1
    sweep_max: float = 5.0
    sweep_steps: int = 1000
    sweep_points: int = 400
    sweep_rounds: int = 3
    # 5. C13: implicit bias
    ls_rows: int = 40
    ls_cols: int = 100
    ls_nonzeros: int = 4
    gd_steps: int = 500
    eg_scales: tuple[float, ...] = (1e-8, 1e-6, 1e-4, 1e-2, 1.0, 10.0)
    eg_lr: float = 0.3  # divided by 1 + 2c: near θ = 0 the EGU± flow is GD with step 2c·lr
    eg_steps: int = 8000  # for c < 1e-3; a quarter of it above
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """Three step sizes per fit, a shorter C6 horizon, two μ per threshold curve, fewer scales, a smaller sweep."""
        return cls(**{"order_hs": (0.05, 0.025, 0.0125), "igr_final_h": (0.005, 0.0125, 0.03, 0.2), "igr_order_h": (0.02, 0.01, 0.005),
                      "c6_hs": (1e-4, 5e-5, 2.5e-5), "c6_horizon": 0.1, "c8_lrs": (0.04, 0.01, 0.0025),
                      "c8_mu_lrs": (1e-3, 1e-4), "threshold_mus": (0.0, 0.9), "sweep_points": 200, "sweep_steps": 400,
                      "eg_scales": (1e-8, 1e-2, 10.0), **overrides})


# ----------------------------------------------------------------------------- runs on the NumPy oracle


def numpy_path(spec, hyper: dict, grad_fn, theta0: np.ndarray, steps: int, *, state: dict | None = None,
               stages: bool = False) -> np.ndarray:
    """θ_0..θ_steps of ``spec`` on the NumPy oracle, some state variables set first (lists of arrays).

    ``stages``: the spec is a multi-stage scheme and gets ``grad_fn`` for its intermediate points.
    """
    opt = dynopt.numpy.from_spec(spec)(**hyper)
    params = [np.array(theta0, dtype=np.float64)]
    current = opt.init(params)
    if state:
        current = current._replace(values={**current.values, **state})
    extra = {"grad_fn": grad_fn} if stages else {}
    path = np.empty((steps + 1, *np.shape(theta0)))
    path[0] = theta0
    for k in range(1, steps + 1):
        updates, current = opt.update(grad_fn(params), current, params, **extra)
        params = [params[0] + updates[0]]
        path[k] = params[0]
    return path


def sup_error(path: np.ndarray, reference: np.ndarray) -> float:
    return float(np.max(np.abs(path - reference)))


# ----------------------------------------------------------------------------- 1. orders of the schemes


def order_data(cfg: Config, progress) -> dict:
    """Sup errors of discretize(sgd | momentum, scheme) against the zoo's own flow, per h."""
    gamma = cfg.order_gamma
    odes = {"gradient flow": (dynopt.sgd, lambda h: {"lr": h}),
            "heavy ball": (dynopt.momentum, lambda h: {"lr": h * h, "momentum": 1 - gamma * h})}
    hs = np.array(cfg.order_hs)
    out: dict[str, Any] = {"hs": hs, "errors": {}, "fits": {}, "declared": {}}
    for ode_name, (base, hyper_of) in odes.items():
        for name in cfg.schemes:
            scheme = SCHEMES[name]()
            spec = dynopt.discretize(base, scheme)
            errors = []
            for h in hs:
                hyper = hyper_of(h)
                steps = int(round(cfg.order_horizon / ode.time_step(base, hyper)))
                path = numpy_path(spec, hyper, toy_grad, THETA0, steps, stages=scheme.stages > 1)
                reference = ode.flow(base, hyper, toy_grad, [THETA0], steps, **REFERENCE).params[0]
                errors.append(sup_error(path, reference))
            out["errors"][ode_name, name] = np.array(errors)
            out["fits"][ode_name, name] = fit(hs, errors)
            out["declared"][name] = scheme.order
            progress.update()
    return out


def order_figure(cfg: Config, d: dict) -> Figure:
    fig = Figure(figsize=(15, 6.4), layout="constrained")
    axes = fig.subplots(1, 2)
    hs = d["hs"]
    markers = dict(zip(SCHEMES, "osD^"))
    for ax, ode_name in zip(axes, ("gradient flow", "heavy ball")):
        for i, name in enumerate(cfg.schemes):
            errors = d["errors"][ode_name, name]
            slope, intercept = d["fits"][ode_name, name]
            color = OKABE_ITO[i]
            ax.loglog(hs, errors, markers[name], color=color, ms=7)
            ax.loglog(hs, np.exp(intercept) * hs**slope, "-", color=color, lw=1.4,
                      label=f"{name} (order {d['declared'][name]}): fitted slope {slope:.3f}")
        ax.set_xticks(hs, [f"{h:g}" for h in hs])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="lower right")
        ax.set(xlabel="ODE step h", ylabel=f"sup over t_k ≤ {cfg.order_horizon:g} of max |θ_k − θ(t_k)|")
    axes[0].set_title("Gradient flow θ' = −∇L: dynopt.discretize(dynopt.sgd, scheme), lr = h")
    axes[1].set_title(f"Heavy ball θ'' + γθ' + ∇L = 0, γ = {cfg.order_gamma:g}: discretize(dynopt.momentum, scheme), "
                      "lr = h², μ = 1 − γh", fontsize="medium")
    fig.suptitle("Schemes as data: the fitted order of each Runge–Kutta scheme matches its tableau", fontsize="x-large")
    fig.supxlabel("Toy of ode-view §C: L = ½(x² + 4y²) + ¼x²y² + 0.1x⁴ from (1.5, 1). Reference: dynopt.ode.flow of the "
                  "zoo spec (DOP853, rtol 1e-13). RK3 is Kutta's tableau passed to ExplicitRK(a, b, c).",
                  x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- 2. C3: Heun has no implicit regularization


def heun_igr_data(cfg: Config, progress) -> dict:
    classic = classic_figures.Config()
    grad, _, _ = classic_figures.igr_problem(classic)
    start = np.array(classic.igr_start)
    heun = dynopt.discretize(dynopt.sgd, schemes.Heun())
    horizon = cfg.igr_horizon

    def path(method: str, h: float, steps: int) -> np.ndarray:
        spec = heun if method == "Heun" else dynopt.sgd
        return numpy_path(spec, {"lr": h}, grad, start, steps, stages=method == "Heun")

    flow_h = 0.01
    gradient_flow = ode.flow(dynopt.sgd, {"lr": flow_h}, grad, [start], int(round(horizon / flow_h)), **REFERENCE).params[0]
    paths = {m: path(m, cfg.igr_path_h, int(round(horizon / cfg.igr_path_h))) for m in ("GD", "Heun")}
    final = {"GD": [], "Heun": []}
    for h in cfg.igr_final_h:
        steps = int(round(horizon / h))
        for method in final:
            final[method].append(float(np.sum(path(method, h, steps)[-1] ** 2)))
        progress.update()
    distance = {"GD": [], "Heun": []}
    for h in cfg.igr_order_h:
        steps = int(round(cfg.igr_order_horizon / h))
        reference = ode.flow(dynopt.sgd, {"lr": h}, grad, [start], steps, **REFERENCE).params[0]
        for method in distance:
            distance[method].append(sup_error(path(method, h, steps), reference))
    hs, final_h = np.array(cfg.igr_order_h), np.array(cfg.igr_final_h)
    final_flow = float(np.sum(gradient_flow[-1] ** 2))
    shrinkage = {m: final_flow - np.array(v) for m, v in final.items()}
    small = final_h <= cfg.igr_fit_max_h
    return {"classic": classic, "gradient_flow": gradient_flow, "paths": paths, "final_h": final_h,
            "final": {m: np.array(v) for m, v in final.items()}, "final_flow": final_flow, "shrinkage": shrinkage,
            "shrinkage_fits": {m: fit(final_h[small], v[small]) for m, v in shrinkage.items()},
            "order_h": hs, "distance": {m: np.array(v) for m, v in distance.items()},
            "fits": {m: fit(hs, v) for m, v in distance.items()}}


def heun_igr_figure(cfg: Config, d: dict) -> Figure:
    classic = d["classic"]
    _, _, loss = classic_figures.igr_problem(classic)
    fig = Figure(figsize=(15, 11), layout="constrained")
    (plane, final), (shrink, order) = fig.subplots(2, 2)
    colors = {"GD": OKABE_ITO[0], "Heun": OKABE_ITO[4]}
    every = np.vstack([d["gradient_flow"], *d["paths"].values()])
    low, high = every.min(axis=0), every.max(axis=0)
    pad = 0.12 * (high - low).max()
    a = np.linspace(low[0] - pad, high[0] + pad, 300)
    bb = np.linspace(max(low[1] - pad, 0.0), high[1] + pad, 300)
    A, B = np.meshgrid(a, bb)
    plane.contourf(A, B, np.log10(loss(A, B) + 1e-3), levels=20, cmap="Greys", alpha=0.45)
    hyperbola = np.linspace(max(a[0], 0.2), a[-1], 200)
    plane.plot(hyperbola, classic.igr_y / (classic.igr_x * hyperbola), color="0.35", lw=1, label="minima: ab = y/x")
    plane.plot(*d["gradient_flow"].T, color="black", lw=2.2, label=f"gradient flow: ends at a² + b² = {d['final_flow']:.3f}")
    for method, p in d["paths"].items():
        plane.plot(*p.T, "-o", color=colors[method], ms=2.5, lw=0.8,
                   label=f"{method}, h = {cfg.igr_path_h:g}: ends at a² + b² = {np.sum(p[-1] ** 2):.3f}")
    plane.set(xlim=(a[0], a[-1]), ylim=(bb[0], bb[-1]), xlabel="a", ylabel="b",
              title=f"Paths at h = {cfg.igr_path_h:g} (the minima: the hyperbola ab = y/x)")
    for method, values in d["final"].items():
        final.semilogx(d["final_h"], values, "-o", color=colors[method], label=method)
    final.axhline(d["final_flow"], color="black", lw=1.5, label=f"gradient flow ({d['final_flow']:.3f})")
    final.set(xlabel="step size h", ylabel=f"a² + b² at t = {cfg.igr_horizon:g} (sharpness / x²)",
              title="Final a² + b²: GD's falls with h, Heun's stays")
    h = d["final_h"]
    small = h <= cfg.igr_fit_max_h
    for method, values in d["shrinkage"].items():
        slope, intercept = d["shrinkage_fits"][method]
        shrink.loglog(h, values, "o", color=colors[method])
        shrink.loglog(h[small], np.exp(intercept) * h[small] ** slope, "-", color=colors[method],
                      label=f"{method}: fitted slope {slope:.2f} (h ≤ {cfg.igr_fit_max_h:g})")
    shrink.set(xlabel="step size h", ylabel="(a² + b²)_flow − (a² + b²)_final",
               title="The flattening: O(h) for GD, higher order for Heun")
    hs = d["order_h"]
    for method, values in d["distance"].items():
        slope, intercept = d["fits"][method]
        order.loglog(hs, values, "o", color=colors[method])
        order.loglog(hs, np.exp(intercept) * hs**slope, "-", color=colors[method], label=f"{method}: fitted slope {slope:.3f}")
    order.set_xticks(hs, [f"{h:g}" for h in hs])
    order.xaxis.set_minor_formatter(NullFormatter())
    order.set(xlabel="step size h", ylabel=f"sup over t ≤ {cfg.igr_order_horizon:g} of max |θ_k − θ(kh)|",
              title="Distance to the gradient flow: GD O(h), Heun O(h²)")
    for ax in (plane, final, shrink, order):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="upper left" if ax is plane else "best")
    fig.suptitle(f"Heun has no implicit gradient regularization: L(a, b) = ½(y − abx)², x = {classic.igr_x:g}, "
                 f"y = {classic.igr_y:g}, start {classic.igr_start}", fontsize="x-large")
    fig.supxlabel("The minima ab = y/x have Hessian eigenvalue x²(a² + b²). GD's modified loss is L + (h/4)‖∇L‖², an "
                  "O(h) push towards flat minima (smaller a² + b²);\nHeun, dynopt.discretize(dynopt.sgd, "
                  "dynopt.schemes.Heun()), follows the gradient flow to O(h²).", x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- 3. C6 and C8: heavy ball's limits


def matched_buffer(mu: float, h: float) -> np.ndarray:
    """b₀ that starts heavy ball (lr = h, μ fixed) on the slow manifold of its modified flow.

    The modified flow θ' = f = −(g + h(1 + μ)/(2(1 − μ)²)Hg)/(1 − μ) gives
    θ₁ − θ₀ = hf + (h²/2)f'f + O(h³) = −h·b₁, so b₁ = g/(1 − μ) + hμHg/(1 − μ)³ + O(h²) and
    b₀ = (b₁ − g)/μ = g/(1 − μ) + hHg/(1 − μ)³ + O(h²), at θ₀.
    """
    g = toy_grad([THETA0])[0]
    return g / (1 - mu) + h * toy_hessian(THETA0) @ g / (1 - mu) ** 3


def slow_flow(mu: float, coefficient: float, times: np.ndarray) -> np.ndarray:
    """θ' = −∇(L + c‖∇L‖²)/(1 − μ) = −(g + 2cHg)/(1 − μ) from THETA0, sampled at ``times``."""

    def rhs(_, theta):
        g = toy_grad([theta])[0]
        return -(g + 2 * coefficient * toy_hessian(theta) @ g) / (1 - mu)

    return solve_ivp(rhs, (0, times[-1]), THETA0, t_eval=times, method="DOP853", **REFERENCE).y.T


def c6_data(cfg: Config, progress) -> dict:
    mu, hs = cfg.fixed_mu, np.array(cfg.c6_hs)
    errors = {key: [] for key in ("flow", "modified", "naive", "modified_default")}
    for h in hs:
        steps = int(round(cfg.c6_horizon / h))
        times = np.arange(steps + 1) * h
        default = numpy_path(dynopt.momentum, {"lr": h, "momentum": mu}, toy_grad, THETA0, steps)
        matched = numpy_path(dynopt.momentum, {"lr": h, "momentum": mu}, toy_grad, THETA0, steps,
                             state={"momentum_buffer": [matched_buffer(mu, h)]})
        modified = slow_flow(mu, h * (1 + mu) / (4 * (1 - mu) ** 2), times)
        errors["flow"].append(sup_error(default, slow_flow(mu, 0.0, times)))
        errors["modified"].append(sup_error(matched, modified))
        errors["naive"].append(sup_error(matched, slow_flow(mu, h / (4 * (1 - mu)), times)))
        errors["modified_default"].append(sup_error(default, modified))
        progress.update()
    return {"hs": hs, "errors": {k: np.array(v) for k, v in errors.items()}, "fits": {k: fit(hs, v) for k, v in errors.items()}}


def c8_data(cfg: Config, progress) -> dict:
    """Loss curves of heavy ball at several lr: γ = (1 − μ)/√lr fixed, then μ fixed."""
    gamma, mu = cfg.c8_gamma, cfg.fixed_mu
    out: dict[str, Any] = {"gamma": {}, "mu": {}}
    for lr in cfg.c8_lrs:
        hyper = {"lr": lr, "momentum": 1 - gamma * np.sqrt(lr)}
        steps = int(round(cfg.c8_horizon / np.sqrt(lr)))
        path = numpy_path(dynopt.momentum, hyper, toy_grad, THETA0, steps)
        flow = ode.flow(dynopt.momentum, hyper, toy_grad, [THETA0], steps, **REFERENCE)
        k = np.arange(steps + 1)
        loss = toy_loss(*path.T)
        # the ODE's loss at the right time k√lr (= flow.times) and at the wrong time k·lr
        wrong = np.array([np.interp(k * lr, flow.times, flow.params[0][:, i]) for i in range(2)]).T
        out["gamma"][lr] = {"k": k, "loss": loss, "gap": float(np.max(np.abs(loss - toy_loss(*flow.params[0].T)))),
                            "gap_wrong_clock": float(np.max(np.abs(loss - toy_loss(*wrong.T))))}
        progress.update()
    fine = {"lr": 1e-6, "momentum": 1 - gamma * 1e-3}
    reference = ode.flow(dynopt.momentum, fine, toy_grad, [THETA0], int(round(cfg.c8_horizon / 1e-3)), **REFERENCE)
    out["gamma_reference"] = (reference.times, toy_loss(*reference.params[0].T))
    for lr in cfg.c8_mu_lrs:
        clock = lr / (1 - mu)  # gradient-flow time per step
        steps = int(round(cfg.c8_mu_horizon / clock))
        path = numpy_path(dynopt.momentum, {"lr": lr, "momentum": mu}, toy_grad, THETA0, steps)
        flow = ode.flow(dynopt.sgd, {"lr": clock}, toy_grad, [THETA0], steps, **REFERENCE)
        k = np.arange(steps + 1)
        loss = toy_loss(*flow.params[0].T)
        wrong = np.array([np.interp(k * np.sqrt(lr), flow.times, flow.params[0][:, i]) for i in range(2)]).T
        out["mu"][lr] = {"k": k, "loss": toy_loss(*path.T), "gap": float(np.max(np.abs(toy_loss(*path.T) - loss))),
                         "gap_wrong_clock": float(np.max(np.abs(toy_loss(*path.T) - toy_loss(*wrong.T))))}
        progress.update()
    fine_flow = ode.flow(dynopt.sgd, {"lr": 0.005}, toy_grad, [THETA0], int(round(cfg.c8_mu_horizon / 0.005)), **REFERENCE)
    out["mu_reference"] = (fine_flow.times, toy_loss(*fine_flow.params[0].T))
    lrs = np.array(cfg.c8_lrs)
    out["gamma_fit"] = fit(np.sqrt(lrs), [out["gamma"][lr]["gap"] for lr in cfg.c8_lrs])
    out["mu_fit"] = fit(np.array(cfg.c8_mu_lrs), [out["mu"][lr]["gap"] for lr in cfg.c8_mu_lrs])
    return out


def momentum_figure(cfg: Config, c6: dict, c8: dict) -> Figure:
    fig = Figure(figsize=(15, 11), layout="constrained")
    (right_clock, wrong_clock), (fixed_mu, orders) = fig.subplots(2, 2)
    gamma, mu = cfg.c8_gamma, cfg.fixed_mu
    for i, (lr, r) in enumerate(c8["gamma"].items()):
        label = f"lr = {lr:g}, μ = {1 - gamma * np.sqrt(lr):.4g}"
        right_clock.semilogy(r["k"] * np.sqrt(lr), r["loss"], "-", color=OKABE_ITO[i], lw=1.3, label=label)
        wrong_clock.loglog(r["k"][1:] * lr, r["loss"][1:], "-", color=OKABE_ITO[i], lw=1.3, label=label)
    t, loss = c8["gamma_reference"]
    right_clock.semilogy(t, loss, "--", color="black", lw=1.6, label="ODE θ'' + γθ' + ∇L = 0")
    right_clock.set(xlabel="t = k·√lr", ylabel="L(θ_k)", title=f"(1 − μ)/√lr = γ = {gamma:g} fixed: collapse on t = k√lr")
    wrong_clock.set(xlabel="t = k·lr (log scale)", ylabel="L(θ_k)", title="The same runs on t = k·lr: no collapse")
    for i, (lr, r) in enumerate(c8["mu"].items()):
        fixed_mu.semilogy(r["k"] * lr / (1 - mu), r["loss"], "-", color=OKABE_ITO[i], lw=1.3, label=f"lr = {lr:g}")
    t, loss = c8["mu_reference"]
    fixed_mu.semilogy(t, loss, "--", color="black", lw=1.6, label="gradient flow θ' = −∇L")
    fixed_mu.set(xlabel="t = k·lr/(1 − μ)", ylabel="L(θ_k)", title=f"μ = {mu:g} fixed: collapse on t = k·lr/(1 − μ)")
    hs = c6["hs"]
    series = (("flow", "torch start b₁ = g₁ vs θ' = −∇L/(1 − μ)", OKABE_ITO[0], "o", "-"),
              ("modified_default", "torch start vs modified loss", OKABE_ITO[5], "v", ":"),
              ("naive", "matched start vs naive coefficient h/(4(1 − μ))", OKABE_ITO[1], "s", "--"),
              ("modified", "matched start vs L + h(1+μ)/(4(1−μ)²)‖∇L‖²", OKABE_ITO[4], "D", "-"))
    for key, label, color, marker, line in series:
        slope, intercept = c6["fits"][key]
        orders.loglog(hs, c6["errors"][key], marker, color=color)
        orders.loglog(hs, np.exp(intercept) * hs**slope, line, color=color, label=f"{label}: {slope:.3f}")
    orders.set_xticks(hs, [f"{h:g}" for h in hs])
    orders.xaxis.set_minor_formatter(NullFormatter())
    orders.set(xlabel="lr = h (μ fixed)", ylabel=f"sup over t = k·lr ≤ {cfg.c6_horizon:g} of max |θ_k − θ(t)|",
               title=f"μ = {mu:g}, lr → 0: fitted slopes")
    for ax in (right_clock, wrong_clock, fixed_mu, orders):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="lower right" if ax is orders else "lower left")
    fig.suptitle("Heavy ball has two limits: lr = h², μ = 1 − γh (a damped oscillator on t = k√lr)\nand μ fixed, "
                 "lr → 0 (the gradient flow, sped up by 1/(1 − μ), on t = k·lr)", fontsize="x-large")
    fig.supxlabel("Toy of ode-view §C from (1.5, 1); dynopt.momentum on the NumPy oracle (torch's first buffer "
                  "b₁ = g₁). Matched start: b₀ = g₀/(1 − μ) + h∇²L g₀/(1 − μ)³, the slow manifold of the modified flow.",
                  x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- 4. C9: stability thresholds


def _diverged(history: np.ndarray, window: int = 20) -> np.ndarray:
    """Per coordinate: does max |θ| over the last ``window`` steps exceed that over the window ending halfway?"""
    n = len(history)
    with np.errstate(invalid="ignore", over="ignore"):
        late = np.max(np.abs(history[n - window :]), axis=0)
        middle = np.max(np.abs(history[n // 2 - window : n // 2]), axis=0)
        return ~np.isfinite(late) | (late > middle)


def run_quadratics(spec, hyper: dict, lam: np.ndarray, steps: int, backend: str, stages: bool) -> np.ndarray:
    """|θ_k| (k = 1..steps) of ``spec`` on Σ λ_iθ_i²/2 from θ = 1, one coordinate per λ_i, on ``backend``."""
    lr = hyper["lr"]
    rest = {k: v for k, v in hyper.items() if k != "lr"}
    history = np.empty((steps, len(lam)))
    if backend == "numpy":
        def grad(params):
            return [lam * params[0]]

        opt = dynopt.numpy.from_spec(spec)(lr, **rest)
        params = [np.ones_like(lam)]
        state = opt.init(params)
        extra = {"grad_fn": grad} if stages else {}
        with np.errstate(over="ignore", invalid="ignore"):
            for k in range(steps):
                updates, state = opt.update(grad(params), state, params, **extra)
                params = [params[0] + updates[0]]
                history[k] = params[0]
    elif backend == "torch":
        import torch

        from dynopt.torch import from_spec as torch_from_spec

        weights = torch.from_numpy(lam)
        p = torch.nn.Parameter(torch.ones(len(lam), dtype=torch.float64))
        opt = torch_from_spec(spec)([p], lr=lr, **rest)

        def closure():
            opt.zero_grad()
            loss = 0.5 * (weights * p * p).sum()
            loss.backward()
            return loss

        for k in range(steps):
            opt.step(closure)
            history[k] = p.detach().numpy()
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        from dynopt.jax import from_spec as jax_from_spec
        from dynopt.trajectory import jax_x64

        with jax_x64():
            weights = jnp.asarray(lam)

            def grad(params):
                return [weights * params[0]]

            opt = jax_from_spec(spec)(lr, **rest)
            extra = {"grad_fn": grad} if stages else {}

            @jax.jit
            def step(params, state):
                updates, state = opt.update(grad(params), state, params, **extra)
                return [params[0] + updates[0]], state

            params = [jnp.ones(len(lam))]
            state = opt.init(params)
            for k in range(steps):
                params, state = step(params, state)
                history[k] = np.asarray(params[0])
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return history


def measure_threshold(cfg: Config, spec, hyper: dict, stages: bool, backend: str) -> dict:
    """The first diverging lr·λ, bracketed by ``sweep_rounds`` rounds of ``sweep_points`` values each."""
    low, high = 0.0, cfg.sweep_max
    first = None
    for _ in range(cfg.sweep_rounds):
        z = np.linspace(low, high, cfg.sweep_points)
        diverged = _diverged(run_quadratics(spec, hyper, z / hyper["lr"], cfg.sweep_steps, backend, stages))
        if first is None:
            first = (z, diverged)
        if diverged[0] or not diverged.any():
            raise RuntimeError(f"{spec.name}: no stable-to-divergent transition in lr·λ ∈ [{low}, {high}]")
        i = int(np.argmax(diverged))
        low, high = z[i - 1], z[i]
    return {"threshold": float(0.5 * (low + high)), "bracket": (float(low), float(high)), "grid": first[0],
            "diverged": first[1]}


def rk_threshold(scheme: schemes.ExplicitRK) -> float:
    """The first z > 0 with |R(−z)| = 1 (real axis), from the tableau's stability polynomial."""
    coefficients = np.array(schemes.stability_polynomial(scheme).coefficients)
    signed = coefficients * (-1.0) ** np.arange(len(coefficients))  # R(−z) as a polynomial in z
    roots = []
    for target in (1.0, -1.0):
        poly = signed.copy()
        poly[0] -= target
        found = np.roots(poly[::-1])
        roots += [r.real for r in found if abs(r.imag) < 1e-9 and r.real > 1e-9]
    return float(min(roots))


def stability_cases(cfg: Config) -> list[dict]:
    """Name, spec, hyperparameters (lr = sweep_lr), formula and whether it is multi-stage."""
    mu = cfg.stability_mu
    cases = [{"name": "GD (SGD)", "spec": dynopt.sgd, "hyper": {}, "formula": 2.0, "stages": False,
              "color": SCHEME_COLORS["Euler"]},
             {"name": f"heavy ball μ = {mu:g}", "spec": dynopt.momentum, "hyper": {"momentum": mu},
              "formula": 2 * (1 + mu), "stages": False, "color": OKABE_ITO[5]},
             {"name": f"Nesterov (torch) μ = {mu:g}", "spec": dynopt.nesterov, "hyper": {"momentum": mu},
              "formula": 2 * (1 + mu) / (1 + 2 * mu), "stages": False, "color": OKABE_ITO[6]}]
    for name in ("Heun", "RK3", "RK4"):
        scheme = SCHEMES[name]()
        cases.append({"name": f"{name} on the gradient flow", "spec": dynopt.discretize(dynopt.sgd, scheme), "hyper": {},
                      "formula": rk_threshold(scheme), "stages": True, "scheme": name, "color": SCHEME_COLORS[name]})
    for case in cases:
        case["hyper"] = {"lr": cfg.sweep_lr, **case["hyper"]}
    return cases


def stability_data(cfg: Config, progress) -> dict:
    cases = stability_cases(cfg)
    for case in cases:
        case.update(measure_threshold(cfg, case["spec"], case["hyper"], case["stages"], cfg.backend))
        progress.update()
    curves = {}
    for name, spec, formula in (("heavy ball", dynopt.momentum, lambda m: 2 * (1 + m)),
                                ("Nesterov (torch)", dynopt.nesterov, lambda m: 2 * (1 + m) / (1 + 2 * m))):
        measured = []
        for m in cfg.threshold_mus:
            if name.startswith("Nesterov") and m == 0:
                measured.append(float("nan"))  # Nesterov needs μ > 0 (torch's rule); μ = 0 is GD
                continue
            measured.append(measure_threshold(cfg, spec, {"lr": cfg.sweep_lr, "momentum": m}, False, cfg.backend)["threshold"])
            progress.update()
        curves[name] = {"mus": np.array(cfg.threshold_mus), "measured": np.array(measured), "formula": formula}
    return {"cases": cases, "curves": curves}


def stability_figure(cfg: Config, d: dict) -> Figure:
    fig = Figure(figsize=(15, 12), layout="constrained")
    panels = fig.subplot_mosaic([["plane", "versus"], ["axis", "axis"]], height_ratios=[1.25, 1])
    plane, axis, versus = panels["plane"], panels["axis"], panels["versus"]
    x = np.linspace(-0.6, 3.2, 500)
    y = np.linspace(-3.1, 3.1, 500)
    X, Y = np.meshgrid(x, y)
    W = X + 1j * Y
    handles = []
    for name, color in SCHEME_COLORS.items():
        scheme = SCHEMES[name]()
        modulus = np.abs(schemes.stability_polynomial(scheme)(-W))
        plane.contourf(X, Y, modulus, levels=[0, 1], colors=[color], alpha=0.12)
        plane.contour(X, Y, modulus, levels=[1], colors=[color], linewidths=1.8)
        handles.append(Line2D([], [], color=color, lw=1.8, label=f"{name}: |R(−w)| ≤ 1, real edge {rk_threshold(scheme):.4f}"))
    for case in d["cases"]:
        if "scheme" in case or case["spec"] is dynopt.sgd:
            plane.plot(case["threshold"], 0, "o", color=case["color"], mec="black", ms=7)
    handles.append(Line2D([], [], ls="", marker="o", color="0.6", mec="black",
                          label="measured edge (SGD = Euler, Heun, RK3, RK4)"))
    plane.axhline(0, color="0.4", lw=0.7)
    plane.axvline(0, color="0.4", lw=0.7)
    plane.set(xlabel="Re(lr·λ)", ylabel="Im(lr·λ)", aspect="equal", xlim=(x[0], x[-1]), ylim=(y[0], y[-1]),
              title="Linear stability regions of the Runge–Kutta schemes")
    plane.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    cases = d["cases"]
    for row, case in enumerate(cases):
        grid, diverged = case["grid"], case["diverged"]
        stable = grid[~diverged]
        axis.plot(stable, np.full_like(stable, row), "s", color=case["color"], ms=2.5)
        axis.plot(case["formula"], row, "|", color="black", ms=18, mew=2)
        axis.text(cfg.sweep_max + 0.1, row, f"measured {case['threshold']:.6f}\nformula    {case['formula']:.6f}",
                  va="center", fontsize="small", family="monospace")
    axis.set_yticks(range(len(cases)), [c["name"] for c in cases])
    axis.invert_yaxis()
    axis.set_xlim(0, cfg.sweep_max + 2.4)
    axis.set(xlabel="lr·λ (real)", title="Stable lr·λ of each optimizer (squares: first sweep), formula edge (bar)")
    for name, curve in d["curves"].items():
        color = OKABE_ITO[5] if name == "heavy ball" else OKABE_ITO[6]
        mus = np.linspace(0, max(curve["mus"]), 200)
        versus.plot(mus, curve["formula"](mus), "-", color=color, lw=1.4,
                    label=f"{name}: " + ("2(1 + μ)" if name == "heavy ball" else "2(1 + μ)/(1 + 2μ)"))
        versus.plot(curve["mus"], curve["measured"], "o", color=color, mec="black", label=f"{name}: measured")
    versus.axhline(2, color=SCHEME_COLORS["Euler"], ls=":", label="GD: 2")
    versus.set(xlabel="momentum μ", ylabel="largest stable lr·λ", title="Thresholds against μ")
    for ax in (plane, axis, versus):
        ax.grid(True, alpha=0.3)
    versus.legend(fontsize="small")
    fig.suptitle("Stability on quadratics L = λθ²/2: formula against the first diverging lr·λ of the real optimizer",
                 fontsize="x-large")
    fig.supxlabel(f"Backend: {cfg.backend}. Each coordinate of one parameter vector is its own quadratic, so one run of "
                  f"{cfg.sweep_steps} steps tests {cfg.sweep_points} values of lr·λ; {cfg.sweep_rounds} rounds narrow the "
                  "bracket.\nDiverged: max|θ| over the last 20 steps above that over the 20 steps ending halfway. "
                  "Regions are drawn in w = lr·λ: the test equation is θ' = −λθ,\nso one step multiplies θ by R(−w), "
                  "R the stability polynomial of the tableau (dynopt.schemes.stability_polynomial).",
                  x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- 5. C13: implicit bias


def least_squares(cfg: Config) -> dict:
    rng = np.random.default_rng(cfg.seed)
    m, n, k = cfg.ls_rows, cfg.ls_cols, cfg.ls_nonzeros
    A = rng.normal(size=(m, n)) / np.sqrt(m)
    truth = np.zeros(n)
    support = rng.choice(n, k, replace=False)
    truth[support] = rng.choice([-1.0, 1.0], k) * rng.uniform(0.5, 1.5, k)
    return {"A": A, "b": A @ truth, "truth": truth}


def min_l1(A: np.ndarray, b: np.ndarray) -> np.ndarray:
    """argmin ‖θ‖₁ s.t. Aθ = b as the LP min Σ(u + v), A(u − v) = b, u, v ≥ 0 (HiGHS)."""
    n = A.shape[1]
    result = linprog(np.ones(2 * n), A_eq=np.hstack([A, -A]), b_eq=b, bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"linprog failed: {result.message}")
    return result.x[:n] - result.x[n:]


def hyperbolic_minimizer(A: np.ndarray, b: np.ndarray, c: float) -> np.ndarray:
    """argmin Σ θ_i arcsinh(θ_i/2c) − √(θ_i² + 4c²) s.t. Aθ = b: θ = 2c·sinh(Aᵀν), Newton on the dual in ν."""
    nu = np.zeros(A.shape[0])

    def dual(v):  # convex; its gradient is A·θ(v) − b
        return float(np.sum(2 * c * np.cosh(np.clip(A.T @ v, -700, 700))) - v @ b)

    for _ in range(200):
        z = A.T @ nu
        residual = A @ (2 * c * np.sinh(z)) - b
        if np.linalg.norm(residual) < 1e-13 * (1 + np.linalg.norm(b)):
            break
        direction = np.linalg.solve((A * (2 * c * np.cosh(z))) @ A.T, -residual)
        step = 1.0
        while dual(nu + step * direction) > dual(nu) + 1e-4 * step * (residual @ direction) and step > 1e-12:
            step /= 2
        nu = nu + step * direction
    return 2 * c * np.sinh(A.T @ nu)


def implicit_bias_data(cfg: Config, progress) -> dict:
    problem = least_squares(cfg)
    A, b = problem["A"], problem["b"]

    def grad(params):
        return [A.T @ (A @ params[0] - b)]

    l2 = np.linalg.pinv(A) @ b
    l1 = min_l1(A, b)
    lr_gd = 1.0 / np.linalg.norm(A, 2) ** 2
    gd = numpy_path(dynopt.sgd, {"lr": lr_gd}, grad, np.zeros(cfg.ls_cols), cfg.gd_steps)[-1]
    progress.update()
    eg = []
    for c in cfg.eg_scales:
        steps = cfg.eg_steps if c < 1e-3 else cfg.eg_steps // 4
        hyper = {"lr": cfg.eg_lr / (1 + 2 * c), "variant": "signed", "init_scale": c}
        theta = numpy_path(dynopt.eg, hyper, grad, np.zeros(cfg.ls_cols), steps)[-1]
        predicted = hyperbolic_minimizer(A, b, c)
        eg.append({"c": c, "steps": steps, "lr": hyper["lr"], "theta": theta, "predicted": predicted,
                   "residual": float(np.linalg.norm(A @ theta - b)), "l1": float(np.abs(theta).sum()),
                   "l2": float(np.linalg.norm(theta)), "to_l1": float(np.max(np.abs(theta - l1))),
                   "to_l2": float(np.max(np.abs(theta - l2))), "to_predicted": float(np.max(np.abs(theta - predicted))),
                   "predicted_l1": float(np.abs(predicted).sum()), "support": int(np.sum(np.abs(theta) > 1e-3))})
        progress.update()
    return {**problem, "l2_solution": l2, "l1_solution": l1, "gd": gd, "gd_lr": lr_gd, "eg": eg,
            "gd_to_l2": float(np.max(np.abs(gd - l2))), "gd_residual": float(np.linalg.norm(A @ gd - b)),
            "l1_norms": {"min_l1": float(np.abs(l1).sum()), "min_l2": float(np.abs(l2).sum()), "gd": float(np.abs(gd).sum()),
                         "truth": float(np.abs(problem["truth"]).sum())}}


def implicit_bias_figure(cfg: Config, d: dict) -> Figure:
    fig = Figure(figsize=(15, 11), layout="constrained")
    panels = fig.subplot_mosaic([["coef", "coef"], ["norms", "sorted"]])
    coef, norms, sorted_ax = panels["coef"], panels["norms"], panels["sorted"]
    n = cfg.ls_cols
    idx = np.arange(n)
    smallest = d["eg"][0]
    coef.vlines(idx, 0, d["gd"], color=OKABE_ITO[0], lw=1.2, label=f"GD from 0 (ℓ1 = {d['l1_norms']['gd']:.2f})")
    shown = np.abs(smallest["theta"]) > 1e-3
    coef.plot(idx[shown], smallest["theta"][shown], "o", color=OKABE_ITO[4], ms=9,
              label=f"EGU± c = {smallest['c']:g}: its {shown.sum()} entries above 1e-3 (ℓ1 = {smallest['l1']:.4f})")
    support = np.abs(d["l1_solution"]) > 1e-9
    coef.plot(idx[support], d["l1_solution"][support], "x", color="black", ms=9, mew=2,
              label=f"min ℓ1 (linprog): its {support.sum()} nonzeros (ℓ1 = {d['l1_norms']['min_l1']:.4f})")
    coef.axhline(0, color="0.4", lw=0.7)
    coef.set(xlabel="coordinate i", ylabel="θ_i", title=f"Solutions of Aθ = b ({cfg.ls_rows} equations, {n} unknowns)")
    cs = np.array([e["c"] for e in d["eg"]])
    norms.semilogx(cs, [e["l1"] for e in d["eg"]], "o", color=OKABE_ITO[4], ms=7, label="EGU± (measured)")
    grid = np.geomspace(cs.min(), cs.max(), 25)
    theory = [np.abs(hyperbolic_minimizer(d["A"], d["b"], c)).sum() for c in grid]
    norms.semilogx(grid, theory, "-", color=OKABE_ITO[4], lw=1.2, label="hyperbolic-entropy minimizer")
    norms.axhline(d["l1_norms"]["min_l1"], color="black", ls="--", label="min ℓ1 (linprog)")
    norms.axhline(d["l1_norms"]["min_l2"], color=OKABE_ITO[0], ls="--", label="min ℓ2 (A⁺b)")
    norms.set(xlabel="EGU± initial scale c (w⁺ = w⁻ = c at θ = 0)", ylabel="‖θ_final‖₁",
              title="From the ℓ1 solution (small c) to the ℓ2 solution (large c)")
    for i, e in enumerate(d["eg"]):
        sorted_ax.semilogy(np.arange(1, n + 1), np.sort(np.abs(e["theta"]))[::-1], "-", color=OKABE_ITO[i % 7], lw=1.2,
                           label=f"EGU± c = {e['c']:g}")
    sorted_ax.semilogy(np.arange(1, n + 1), np.sort(np.abs(d["gd"]))[::-1], "--", color="black", lw=1.6, label="GD")
    sorted_ax.set(xlabel="rank", ylabel="|θ_i| sorted", ylim=(1e-8, 3), title="Sparsity: sorted magnitudes")
    for ax in (coef, norms, sorted_ax):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Implicit bias of the mirror map: GD finds the minimum-ℓ2 interpolant,\nEGU± from a small scale a "
                 "sparse one near minimum ℓ1", fontsize="x-large")
    fig.supxlabel(f"A: {cfg.ls_rows}×{n} Gaussian/√{cfg.ls_rows}, b = Aθ* with θ* {cfg.ls_nonzeros}-sparse; both "
                  f"start at θ = 0. GD: lr = 1/‖A‖², {cfg.gd_steps} steps.\nEGU±: dynopt.eg(variant='signed', init_scale=c), "
                  f"lr = {cfg.eg_lr:g}/(1 + 2c), {cfg.eg_steps} steps for c < 1e-3, {cfg.eg_steps // 4} above.",
                  x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    cfg, out = prepare(NAME, __doc__, Config, argv)
    start = time.perf_counter()
    thresholds = 6 + 2 * len(cfg.threshold_mus) - (0.0 in cfg.threshold_mus)
    total = (2 * len(cfg.schemes) + len(cfg.igr_final_h) + len(cfg.c6_hs) + len(cfg.c8_lrs) + len(cfg.c8_mu_lrs)
             + thresholds + 1 + len(cfg.eg_scales))
    with tqdm(total=total, desc=NAME, unit="run") as progress:
        progress.set_postfix_str("orders")
        orders = order_data(cfg, progress)
        progress.set_postfix_str("Heun IGR")
        igr = heun_igr_data(cfg, progress)
        progress.set_postfix_str("heavy ball limits")
        c6 = c6_data(cfg, progress)
        c8 = c8_data(cfg, progress)
        progress.set_postfix_str("stability")
        stability = stability_data(cfg, progress)
        progress.set_postfix_str("implicit bias")
        bias = implicit_bias_data(cfg, progress)
    figures = {"schemes": order_figure(cfg, orders), "heun_igr": heun_igr_figure(cfg, igr),
               "momentum_limits": momentum_figure(cfg, c6, c8), "stability": stability_figure(cfg, stability),
               "implicit_bias": implicit_bias_figure(cfg, bias)}
    for name, figure in figures.items():
        figure.savefig(out / f"{name}.png", dpi=100)
    arrays = {"orders/hs": orders["hs"], "c3/final_h": igr["final_h"], "c3/order_h": igr["order_h"], "c6/hs": c6["hs"],
              "c13/A": bias["A"], "c13/b": bias["b"], "c13/gd": bias["gd"], "c13/min_l1": bias["l1_solution"],
              "c13/min_l2": bias["l2_solution"], "c13/eg": np.array([e["theta"] for e in bias["eg"]]),
              "c13/eg_scales": np.array(cfg.eg_scales)}
    for (ode_name, scheme), errors in orders["errors"].items():
        arrays[f"orders/{ode_name}/{scheme}"] = errors
    for method in ("GD", "Heun"):
        arrays[f"c3/final/{method}"] = igr["final"][method]
        arrays[f"c3/distance/{method}"] = igr["distance"][method]
    for key, errors in c6["errors"].items():
        arrays[f"c6/{key}"] = errors
    for family in ("gamma", "mu"):
        for lr, r in c8[family].items():
            arrays[f"c8/{family}/lr={lr:g}/loss"] = r["loss"]
    for case in stability["cases"]:
        arrays[f"c9/{case['name']}/grid"] = case["grid"]
        arrays[f"c9/{case['name']}/diverged"] = case["diverged"]
    np.savez_compressed(out / "claims.npz", **arrays)
    seconds = time.perf_counter() - start
    config = asdict(cfg)
    summary = {
        "experiment": NAME,
        "config": config,
        "orders": {f"{ode_name}/{scheme}": {"declared": orders["declared"][scheme], "slope": fitted[0],
                                            "errors": orders["errors"][ode_name, scheme].tolist()}
                   for (ode_name, scheme), fitted in orders["fits"].items()},
        "c3_heun_igr": {"final_h": igr["final_h"].tolist(), "final_a2_plus_b2": {m: v.tolist() for m, v in igr["final"].items()},
                        "gradient_flow": igr["final_flow"],
                        "shrinkage_slope": {m: f[0] for m, f in igr["shrinkage_fits"].items()},
                        "slope_to_gradient_flow": {m: f[0] for m, f in igr["fits"].items()}},
        "c6_fixed_momentum": {"mu": cfg.fixed_mu, "slopes": {k: f[0] for k, f in c6["fits"].items()},
                              "errors": {k: v.tolist() for k, v in c6["errors"].items()}},
        "c8_clocks": {"gamma_fixed": {f"{lr:g}": {k: r[k] for k in ("gap", "gap_wrong_clock")} for lr, r in c8["gamma"].items()},
                      "gamma_fixed_slope_in_sqrt_lr": c8["gamma_fit"][0],
                      "mu_fixed": {f"{lr:g}": {k: r[k] for k in ("gap", "gap_wrong_clock")} for lr, r in c8["mu"].items()},
                      "mu_fixed_slope_in_lr": c8["mu_fit"][0]},
        "c9_thresholds": {case["name"]: {"measured": case["threshold"], "bracket": case["bracket"], "formula": case["formula"]}
                          for case in stability["cases"]},
        "c9_threshold_vs_mu": {name: {"mu": curve["mus"].tolist(),
                                      "measured": [None if np.isnan(m) else m for m in curve["measured"].tolist()],
                                      "formula": [float(curve["formula"](m)) for m in curve["mus"]]}
                               for name, curve in stability["curves"].items()},
        "c13_implicit_bias": {"gd_to_min_l2": bias["gd_to_l2"], "gd_residual": bias["gd_residual"],
                              "l1_norms": bias["l1_norms"],
                              "eg": [{k: v for k, v in e.items() if k not in ("theta", "predicted")} for e in bias["eg"]]},
        "seconds": round(seconds, 2),
    }
    write_summary(out, summary, NAME)
    print(f"{NAME}: wrote {len(figures) + 2} files to {out} in {seconds:.1f} s")
    for key in ("orders", "c3_heun_igr", "c6_fixed_momentum", "c9_thresholds"):
        print(f"  {key}: {summary[key] if key != 'orders' else {k: round(v['slope'], 3) for k, v in summary[key].items()}}")
    return summary


if __name__ == "__main__":
    main()
