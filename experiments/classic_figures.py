"""Classic figures of the ODE view: Su–Boyd–Candès's NAG vs its ODE, Barrett–Dherin's implicit gradient regularization, the path kernel.

1. ``sbc.png`` (Su, Boyd, Candès 2016, Fig. 1): f = 0.02x₁² + 0.005x₂² from (1, 1); NAG with the
   (k − 1)/(k + 2) momentum for s = 1, 0.25, 0.05 at t = k√s against the exact ODE solution
   X(t) = x₀·2J₁(√λ t)/(√λ t) of X'' + (3/t)X' + ∇f = 0; f − f* with the bound 2‖x₀‖²/t²; and
   the sup error over t ≤ 100 against s with its fitted slope.
2. ``igr.png`` (Barrett & Dherin 2021): L(a, b) = ½(y − abx)² with x = y = 1. Gradient flow keeps
   a² − b²; GD with a larger h ends at a flatter minimum (smaller a² + b², the sharpness of the
   minimum being x²(a² + b²)), as the modified flow −∇(L + (h/4)‖∇L‖²) predicts for small h.
   Also the distance of GD to each flow against h, with fitted slopes.
3. ``path_kernel.png`` (Domingos 2020, Su's "SGD ≈ SVM?"): a tanh MLP (1 → 16 → 1) trained by GD
   on 20 points; f_T(x) is rebuilt as f₀(x) − lr Σ_t Σ_i ℓ'_{i,t} K_t(x, x_i) with the tangent
   kernel K_t = ⟨∇_θ f(x), ∇_θ f(x_i)⟩ at θ_t. The error is O(lr) (fitted), and round-off when the
   model is linear in its trainable parameters (first layer frozen). The coefficients
   a_i(x) = −Σ_t K_t ℓ'_{i,t} / Σ_t K_t depend on x: not an SVM.

Outputs in ``--out``: the three PNGs, ``classic.npz`` (every curve), ``config.json`` (the
configuration, fitted slopes, timing). ``--seed`` draws the path-kernel data and initialization.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from scipy.special import j1
from tqdm.auto import tqdm

import dynopt
from dynopt import ode
from dynopt.numpy import nesterov_sbc, sgd

from . import prepare

NAME = "classic_figures"
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#D55E00", "#56B4E9", "#000000")


def fit(xs, ys) -> tuple[float, float]:
    """Least-squares (slope, intercept) of log y against log x."""
    slope, intercept = np.polyfit(np.log(xs), np.log(ys), 1)
    return float(slope), float(intercept)


@dataclass
class Config:
    # Su–Boyd–Candès
    sbc_lambda: tuple[float, float] = (0.04, 0.01)      # f = ½(λ₁x₁² + λ₂x₂²) = 0.02x₁² + 0.005x₂²
    sbc_x0: tuple[float, float] = (1.0, 1.0)
    sbc_s: tuple[float, ...] = (1.0, 0.25, 0.05)
    sbc_horizon: float = 100.0
    sbc_error_s: tuple[float, ...] = (1.0, 0.25, 0.05, 0.01, 0.0025)
    # Barrett–Dherin
    igr_start: tuple[float, float] = (2.5, 1.5)
    igr_x: float = 1.0
    igr_y: float = 1.0
    igr_path_h: tuple[float, ...] = (0.02, 0.1, 0.2)
    igr_final_h: tuple[float, ...] = tuple(float(h) for h in np.geomspace(0.005, 0.25, 12))
    igr_horizon: float = 40.0
    igr_order_h: tuple[float, ...] = (0.04, 0.02, 0.01, 0.005, 0.0025)
    igr_order_horizon: float = 1.0
    # path kernel
    pk_points: int = 20
    pk_width: int = 16
    pk_lrs: tuple[float, ...] = (0.1, 0.05, 0.025, 0.0125, 0.00625)
    pk_horizon: float = 20.0
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """Fewer step sizes everywhere."""
        return cls(**{"sbc_error_s": (1.0, 0.25, 0.05, 0.01), "igr_final_h": (0.005, 0.02, 0.05, 0.1, 0.2),
                      "igr_order_h": (0.02, 0.01, 0.005), "pk_lrs": (0.1, 0.05, 0.025), **overrides})


# ----------------------------------------------------------------------------- 1. Su–Boyd–Candès


def bessel(t: np.ndarray, x0: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """X(t) = x₀·2J₁(√λ t)/(√λ t) per coordinate (1 at t = 0)."""
    z = np.sqrt(lam)[None, :] * np.asarray(t, dtype=float)[:, None]
    safe = np.where(z > 0, z, 1.0)
    return x0 * np.where(z > 0, 2 * j1(safe) / safe, 1.0)


def sbc_run(cfg: Config, s: float) -> dict[str, np.ndarray]:
    lam, x0 = np.array(cfg.sbc_lambda), np.array(cfg.sbc_x0)
    steps = int(np.floor(cfg.sbc_horizon / np.sqrt(s)))
    opt = nesterov_sbc(s)
    params = [x0.copy()]
    state = opt.init(params)
    ys, xs = [x0.copy()], [x0.copy()]
    for _ in range(steps):
        updates, state = opt.update([lam * params[0]], state, params)
        params = [params[0] + updates[0]]
        ys.append(params[0])
        xs.append(params[0] - state.values["lookahead"][0])  # x_k = y_k − d_k
    t = np.arange(steps + 1) * np.sqrt(s)
    return {"t": t, "x": np.array(xs), "y": np.array(ys), "exact": bessel(t, x0, lam)}


def sbc_data(cfg: Config, progress) -> dict:
    runs = {}
    for s in sorted(set(cfg.sbc_s) | set(cfg.sbc_error_s), reverse=True):
        runs[s] = sbc_run(cfg, s)
        progress.update()
    lam, x0 = np.array(cfg.sbc_lambda), np.array(cfg.sbc_x0)
    fine = np.linspace(0, cfg.sbc_horizon, 4001)
    check = ode.flow(dynopt.nesterov_sbc, {"lr": 0.01}, lambda th: [lam * th[0]], [x0], int(cfg.sbc_horizon / 0.1))
    flow_vs_bessel = float(np.max(np.abs(check.params[0] - bessel(check.times, x0, lam))))
    errors_s = np.array(cfg.sbc_error_s)
    sup_x = np.array([np.max(np.linalg.norm(runs[s]["x"] - runs[s]["exact"], axis=1)) for s in cfg.sbc_error_s])
    sup_y = np.array([np.max(np.linalg.norm(runs[s]["y"] - runs[s]["exact"], axis=1)) for s in cfg.sbc_error_s])
    return {"runs": runs, "fine_t": fine, "fine": bessel(fine, x0, lam), "flow_vs_bessel": flow_vs_bessel,
            "error_s": errors_s, "sup_x": sup_x, "sup_y": sup_y, "fit_x": fit(errors_s, sup_x), "fit_y": fit(errors_s, sup_y)}


def sbc_figure(cfg: Config, d: dict) -> Figure:
    lam, x0 = np.array(cfg.sbc_lambda), np.array(cfg.sbc_x0)
    fig = Figure(figsize=(19, 5.4), layout="constrained")
    plane, coord, gap, err = fig.subplots(1, 4)
    colors = dict(zip(cfg.sbc_s, OKABE_ITO[1:]))
    plane.plot(*d["fine"].T, color="black", lw=2, label="ODE (exact Bessel solution)")
    for s in cfg.sbc_s:
        r = d["runs"][s]
        plane.plot(*r["x"].T, "-o", color=colors[s], ms=2.5, lw=0.8, label=f"NAG x_k, s = {s:g}")
        coord.plot(r["t"], r["x"][:, 0], "o", color=colors[s], ms=2.5, label=f"s = {s:g}")
        f = 0.5 * np.sum(lam * r["x"] ** 2, axis=1)
        gap.semilogy(r["t"][1:], f[1:], "-", color=colors[s], lw=1, label=f"s = {s:g}")
    coord.plot(d["fine_t"], d["fine"][:, 0], color="black", lw=1.6, label="ODE")
    f_exact = 0.5 * np.sum(lam * d["fine"] ** 2, axis=1)
    gap.semilogy(d["fine_t"][1:], f_exact[1:], color="black", lw=1.6, label="ODE")
    bound = 2 * np.sum(x0**2) / d["fine_t"][1:] ** 2
    gap.semilogy(d["fine_t"][1:], bound, "--", color="0.5", label="2‖x₀ − x*‖²/t²")
    plane.set(xlabel="x₁", ylabel="x₂", title="Trajectories in the plane", aspect="equal")
    coord.set(xlabel="t = k√s", ylabel="x₁", title="First coordinate against ODE time")
    gap.set(xlabel="t = k√s", ylabel="f − f*", title="f − f* and the O(1/t²) bound", ylim=(1e-6, 1.0))
    slope_x, icpt_x = d["fit_x"]
    slope_y, icpt_y = d["fit_y"]
    s = d["error_s"]
    err.loglog(s, d["sup_x"], "o", color=OKABE_ITO[0], label=f"x_k: fitted slope {slope_x:.3f}")
    err.loglog(s, np.exp(icpt_x) * s**slope_x, "-", color=OKABE_ITO[0])
    err.loglog(s, d["sup_y"], "s", color=OKABE_ITO[4], label=f"y_k (the parameter): {slope_y:.3f}")
    err.loglog(s, np.exp(icpt_y) * s**slope_y, "-", color=OKABE_ITO[4])
    err.set(xlabel="step size s", ylabel="sup over t ≤ 100 of ‖x_k − X(k√s)‖", title="Convergence to the ODE: ~√s")
    for ax in (plane, coord, gap, err):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Su–Boyd–Candès: NAG with momentum (k−1)/(k+2) approaches X'' + (3/t)X' + ∇f = 0 as s → 0 "
                 "(f = 0.02x₁² + 0.005x₂², x₀ = (1, 1))", fontsize="x-large")
    fig.supxlabel(f"ODE: X(t) = x₀·2J₁(√λ t)/(√λ t) per coordinate (λ = {cfg.sbc_lambda}); dynopt.ode.flow of NesterovSBC "
                  f"matches it to {d['flow_vs_bessel']:.1e}. NAG: x_k = y_{{k−1}} − s∇f(y_{{k−1}}), "
                  "y_k = x_k + (k−1)/(k+2)(x_k − x_{k−1}), drawn at t = k√s.", x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- 2. Barrett–Dherin


def igr_problem(cfg: Config):
    x, y = cfg.igr_x, cfg.igr_y

    def grad(theta):
        a, b = theta[0]
        r = y - a * b * x
        return [np.array([-r * b * x, -r * a * x])]

    def hvp(theta, v):
        a, b = theta[0]
        r = y - a * b * x
        off = -r * x + a * b * x * x
        return [np.array([[b * b * x * x, off], [off, a * a * x * x]]) @ v[0]]

    def loss(a, b):
        return 0.5 * (y - a * b * x) ** 2

    return grad, hvp, loss


def gd_path(grad, start: np.ndarray, h: float, steps: int) -> np.ndarray:
    opt = sgd(h)
    params = [start.copy()]
    state = opt.init(params)
    path = [start.copy()]
    for _ in range(steps):
        updates, state = opt.update(grad(params), state, params)
        params = [params[0] + updates[0]]
        path.append(params[0])
    return np.array(path)


def igr_data(cfg: Config, progress) -> dict:
    grad, hvp, _ = igr_problem(cfg)
    start = np.array(cfg.igr_start)
    paths = {}
    for h in cfg.igr_path_h:
        steps = int(round(cfg.igr_horizon / h))
        paths[h] = {
            "gd": gd_path(grad, start, h, steps),
            "modified": ode.flow(dynopt.sgd, {"lr": h}, grad, [start], steps, modified=True, hvp_fn=hvp).params[0],
        }
        progress.update()
    gradient_flow = ode.flow(dynopt.sgd, {"lr": 0.01}, grad, [start], int(round(cfg.igr_horizon / 0.01))).params[0]
    final_gd, final_modified = [], []
    for h in cfg.igr_final_h:
        steps = int(round(cfg.igr_horizon / h))
        final_gd.append(np.sum(gd_path(grad, start, h, steps)[-1] ** 2))
        end = ode.flow(dynopt.sgd, {"lr": h}, grad, [start], steps, modified=True, hvp_fn=hvp).params[0][-1]
        final_modified.append(np.sum(end**2))
        progress.update()
    to_flow, to_modified = [], []
    for h in cfg.igr_order_h:
        steps = int(round(cfg.igr_order_horizon / h))
        path = gd_path(grad, start, h, steps)
        to_flow.append(np.max(np.abs(path - ode.flow(dynopt.sgd, {"lr": h}, grad, [start], steps).params[0])))
        modified = ode.flow(dynopt.sgd, {"lr": h}, grad, [start], steps, modified=True, hvp_fn=hvp).params[0]
        to_modified.append(np.max(np.abs(path - modified)))
    hs = np.array(cfg.igr_order_h)
    return {"paths": paths, "gradient_flow": gradient_flow, "final_h": np.array(cfg.igr_final_h),
            "final_gd": np.array(final_gd), "final_modified": np.array(final_modified),
            "final_flow": float(np.sum(gradient_flow[-1] ** 2)), "order_h": hs,
            "to_flow": np.array(to_flow), "to_modified": np.array(to_modified),
            "fit_flow": fit(hs, np.array(to_flow)), "fit_modified": fit(hs, np.array(to_modified))}


def igr_figure(cfg: Config, d: dict) -> Figure:
    _, _, loss = igr_problem(cfg)
    fig = Figure(figsize=(18, 5.8), layout="constrained")
    plane, final, order = fig.subplots(1, 3)
    a = np.linspace(0.0, 3.0, 300)
    A, B = np.meshgrid(a, a)
    plane.contourf(A, B, np.log10(loss(A, B) + 1e-3), levels=20, cmap="Greys", alpha=0.45)
    hyperbola = np.linspace(0.34, 3.0, 200)
    plane.plot(hyperbola, cfg.igr_y / (cfg.igr_x * hyperbola), color="0.35", lw=1, label="minima: ab = y/x")
    plane.plot(*d["gradient_flow"].T, color="black", lw=2.2, label="gradient flow (a² − b² conserved)")
    for h, color in zip(cfg.igr_path_h, OKABE_ITO[1:]):
        p = d["paths"][h]
        plane.plot(*p["gd"].T, "-o", color=color, ms=2.5, lw=0.8, label=f"GD h = {h:g}: ends at a² + b² = {np.sum(p['gd'][-1] ** 2):.2f}")
        plane.plot(*p["modified"].T, "--", color=color, lw=1.6)
    every = np.vstack([d["gradient_flow"]] + [p["gd"] for p in d["paths"].values()])
    low, high = every.min(axis=0), every.max(axis=0)
    pad = 0.12 * (high - low).max()
    plane.set(xlim=(low[0] - pad, high[0] + pad), ylim=(max(low[1] - pad, 0.0), high[1] + pad), xlabel="a", ylabel="b",
              title="GD (dots), its modified flow (dashed), the gradient flow (black)")
    final.semilogx(d["final_h"], d["final_gd"], "o", color=OKABE_ITO[0], label="GD")
    final.semilogx(d["final_h"], d["final_modified"], "-", color=OKABE_ITO[4], label="modified flow −∇(L + (h/4)‖∇L‖²)")
    final.axhline(d["final_flow"], color="black", lw=1.5, label=f"gradient flow ({d['final_flow']:.3f})")
    final.axhline(2 * cfg.igr_y / cfg.igr_x, color="0.5", ls=":", label="flattest: a = b")
    final.set(xlabel="step size h", ylabel=f"a² + b² at t = {cfg.igr_horizon:g} (sharpness / x²)",
              title="Larger h ends at a flatter minimum")
    hs = d["order_h"]
    for key, values, color, label in (("fit_flow", d["to_flow"], OKABE_ITO[0], "vs gradient flow"),
                                       ("fit_modified", d["to_modified"], OKABE_ITO[4], "vs modified flow")):
        slope, intercept = d[key]
        order.loglog(hs, values, "o", color=color)
        order.loglog(hs, np.exp(intercept) * hs**slope, "-", color=color, label=f"{label}: fitted slope {slope:.3f}")
    order.set(xlabel="step size h", ylabel=f"sup over t ≤ {cfg.igr_order_horizon:g} of max |θ_k − θ(kh)|",
              title="GD is O(h) from the flow, O(h²) from the modified flow")
    order.set_xticks(hs, [f"{h:g}" for h in hs])
    order.xaxis.set_minor_formatter(NullFormatter())
    for ax in (plane, final, order):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small", loc="lower right" if ax is plane else "best")
    fig.suptitle(f"Implicit gradient regularization (Barrett & Dherin): L(a, b) = ½(y − abx)², x = {cfg.igr_x:g}, "
                 f"y = {cfg.igr_y:g}, start {cfg.igr_start}", fontsize="x-large")
    fig.supxlabel("The minima ab = y/x have Hessian eigenvalue x²(a² + b²): a smaller a² + b² is a flatter minimum. "
                  "The modified flow explains the trend at small h; at large h GD's first steps overshoot and "
                  "higher-order terms take over.", x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- 3. path kernel


class TinyMLP:
    """f(x) = w₂ᵀtanh(W₁x + b₁) + b₂ on scalar inputs; parameters [W₁, b₁, w₂, b₂] (float64)."""

    def __init__(self, width: int, rng: np.random.Generator):
        self.width = width
        self.initial = [rng.normal(size=width), 0.5 * rng.normal(size=width), rng.normal(size=width) / np.sqrt(width), np.array(0.0)]

    @staticmethod
    def value(p, x):
        return np.tanh(np.outer(x, p[0]) + p[1]) @ p[2] + p[3]

    @staticmethod
    def jacobian(p, x):
        """∇_θ f(x) for every x: shape (len(x), number of parameters)."""
        z = np.tanh(np.outer(x, p[0]) + p[1])
        d = (1 - z * z) * p[2]
        return np.hstack([d * x[:, None], d, z, np.ones((len(x), 1))])


def path_kernel_run(cfg: Config, lr: float, linear: bool, rng_seed: int) -> dict:
    """GD on the mean squared error for T/lr steps, with the path-kernel reconstruction alongside."""
    rng = np.random.default_rng(rng_seed)
    n = cfg.pk_points
    x_train = np.sort(rng.uniform(-2, 2, n))
    y_train = np.sin(2 * x_train) + 0.1 * rng.normal(size=n)
    x_test = np.linspace(-2.5, 2.5, 61)
    model = TinyMLP(cfg.pk_width, rng)
    w = cfg.pk_width
    trainable = np.ones(3 * w + 1, dtype=bool)
    if linear:
        trainable[: 2 * w] = False  # frozen first layer: f is linear in (w₂, b₂)
    params = [p.copy() for p in model.initial]
    opt = sgd(lr)
    state = opt.init(params)
    f0 = model.value(params, x_test)
    reconstruction = f0.copy()
    kernel_sum = np.zeros((len(x_test), n))
    weighted_sum = np.zeros((len(x_test), n))
    for _ in range(int(round(cfg.pk_horizon / lr))):
        residual = (model.value(params, x_train) - y_train) / n          # ℓ'_i of L = (1/2n)Σ(f − y)²
        j_train = model.jacobian(params, x_train) * trainable
        j_test = model.jacobian(params, x_test) * trainable
        kernel = j_test @ j_train.T                                     # K_t(x, x_i) at θ_t
        reconstruction -= lr * kernel @ residual
        kernel_sum += kernel
        weighted_sum += kernel * residual[None, :]
        g = j_train.T @ residual
        grads = [g[:w], g[w : 2 * w], g[2 * w : 3 * w], np.array(g[-1])]
        updates, state = opt.update(grads, state, params)
        params = [p + u for p, u in zip(params, updates)]
    f_end = model.value(params, x_test)
    with np.errstate(all="ignore"):
        coefficients = -weighted_sum / kernel_sum  # a_i(x) of Domingos (per unit of 1/n)
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "f0": f0, "f_end": f_end,
            "reconstruction": reconstruction, "error": float(np.max(np.abs(f_end - reconstruction))),
            "coefficients": coefficients}


def path_kernel_data(cfg: Config, progress) -> dict:
    lrs = np.array(cfg.pk_lrs)
    nonlinear, linear = [], []
    for lr in lrs:
        nonlinear.append(path_kernel_run(cfg, lr, False, cfg.seed))
        linear.append(path_kernel_run(cfg, lr, True, cfg.seed))
        progress.update()
    errors = np.array([r["error"] for r in nonlinear])
    return {"lrs": lrs, "runs": nonlinear, "linear_errors": np.array([r["error"] for r in linear]), "errors": errors,
            "fit": fit(lrs, errors)}


def path_kernel_figure(cfg: Config, d: dict) -> Figure:
    fig = Figure(figsize=(18, 5.4), layout="constrained")
    fn, err, coef = fig.subplots(1, 3)
    r = d["runs"][-1]
    fn.plot(r["x_train"], r["y_train"], "o", color="black", ms=4, label="training data")
    fn.plot(r["x_test"], r["f0"], ":", color="0.5", label="f₀ (initial network)")
    fn.plot(r["x_test"], r["f_end"], "-", color=OKABE_ITO[0], lw=2, label=f"f_T trained (lr = {d['lrs'][-1]:g})")
    fn.plot(r["x_test"], r["reconstruction"], "--", color=OKABE_ITO[4], lw=1.6, label="f₀ − lr Σ_t Σ_i ℓ'_{i,t} K_t(x, x_i)")
    fn.set(xlabel="x", ylabel="f(x)", title=f"A tanh MLP 1→{cfg.pk_width}→1 and its path-kernel reconstruction")
    slope, intercept = d["fit"]
    lrs = d["lrs"]
    err.loglog(lrs, d["errors"], "o", color=OKABE_ITO[0])
    err.loglog(lrs, np.exp(intercept) * lrs**slope, "-", color=OKABE_ITO[0], label=f"MLP: fitted slope {slope:.3f}")
    floor = np.maximum(d["linear_errors"], 1e-17)
    err.loglog(lrs, floor, "s", color=OKABE_ITO[2], label=f"linear in θ (frozen first layer): ≤ {floor.max():.1e}")
    err.set(xlabel="learning rate (T = lr·steps fixed)", ylabel="max |f_T(x) − reconstruction|",
            title="Reconstruction error: O(lr), exact for linear models")
    for i, color in zip(np.linspace(0, cfg.pk_points - 1, 4).astype(int), OKABE_ITO):
        coef.plot(r["x_test"], r["coefficients"][:, i], color=color, label=f"a_i(x), i = {i} (x_i = {r['x_train'][i]:.2f})")
        coef.axvline(r["x_train"][i], color=color, ls=":", lw=0.8)
    coef.set(xlabel="x", ylabel="a_i(x) = −Σ_t K_t ℓ'_i / Σ_t K_t",
             title="The coefficients a_i(x) depend on x: not quite an SVM")
    for ax in (fn, err, coef):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("Every model trained by GD is approximately a kernel machine with the path kernel (Domingos 2020; Su)",
                 fontsize="x-large")
    fig.supxlabel(f"{cfg.pk_points} points y = sin 2x + noise, mean squared error, GD for ODE time T = {cfg.pk_horizon:g}; "
                  "K_t(x, x') = ⟨∇_θ f_t(x), ∇_θ f_t(x')⟩ at the iterate before each step. The spikes of a_i(x) sit where "
                  "Σ_t K_t(x, x_i) crosses 0.", x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict:
    cfg, out = prepare(NAME, __doc__, Config, argv)
    start = time.perf_counter()
    total = len(set(cfg.sbc_s) | set(cfg.sbc_error_s)) + len(cfg.igr_path_h) + len(cfg.igr_final_h) + len(cfg.pk_lrs)
    with tqdm(total=total, desc=NAME, unit="run") as progress:
        sbc = sbc_data(cfg, progress)
        igr = igr_data(cfg, progress)
        kernel = path_kernel_data(cfg, progress)
    written = [out / "sbc.png", out / "igr.png", out / "path_kernel.png", out / "classic.npz", out / "config.json"]
    sbc_figure(cfg, sbc).savefig(written[0], dpi=100)
    igr_figure(cfg, igr).savefig(written[1], dpi=100)
    path_kernel_figure(cfg, kernel).savefig(written[2], dpi=100)
    arrays = {"sbc/error_s": sbc["error_s"], "sbc/sup_x": sbc["sup_x"], "sbc/sup_y": sbc["sup_y"],
              "igr/final_h": igr["final_h"], "igr/final_gd": igr["final_gd"], "igr/final_modified": igr["final_modified"],
              "igr/order_h": igr["order_h"], "igr/to_flow": igr["to_flow"], "igr/to_modified": igr["to_modified"],
              "igr/gradient_flow": igr["gradient_flow"], "path_kernel/lrs": kernel["lrs"],
              "path_kernel/errors": kernel["errors"], "path_kernel/linear_errors": kernel["linear_errors"]}
    for s in cfg.sbc_s:
        for key in ("t", "x", "y", "exact"):
            arrays[f"sbc/s={s:g}/{key}"] = sbc["runs"][s][key]
    for h in cfg.igr_path_h:
        for key in ("gd", "modified"):
            arrays[f"igr/h={h:g}/{key}"] = igr["paths"][h][key]
    np.savez_compressed(written[3], **arrays)
    seconds = time.perf_counter() - start
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "fits": {
            "sbc_sup_error_vs_s": {"x_k": sbc["fit_x"][0], "y_k": sbc["fit_y"][0]},
            "sbc_flow_vs_bessel": sbc["flow_vs_bessel"],
            "igr_gd_vs_gradient_flow": igr["fit_flow"][0],
            "igr_gd_vs_modified_flow": igr["fit_modified"][0],
            "igr_final_a2_plus_b2": {"h": igr["final_h"].tolist(), "gd": igr["final_gd"].tolist(),
                                     "modified": igr["final_modified"].tolist(), "gradient_flow": igr["final_flow"]},
            "path_kernel_error_vs_lr": kernel["fit"][0],
            "path_kernel_linear_max_error": float(kernel["linear_errors"].max()),
        },
        "seconds": round(seconds, 2),
    }
    written[4].write_text(json.dumps(summary, indent=2))
    print(f"{NAME}: wrote {len(written)} files to {out} in {seconds:.1f} s")
    for key, value in summary["fits"].items():
        print(f"  {key}: {value}")
    return summary


if __name__ == "__main__":
    main()
