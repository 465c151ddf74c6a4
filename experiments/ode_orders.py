"""Measured orders: every optimizer of the zoo against its own ODE (slope 1) and against its modified equation (slope 2).

The toy of the design brief (section C): L(x, y) = ½(x² + 4y²) + ¼x²y² + 0.1x⁴ from θ₀ = (1.5, 1).
For each optimizer the hyperparameters scale with the ODE step h so that the ODE stays fixed
(SGD/EG/RMSprop/Adam: lr = h with (1 − α)/lr, (1 − β_i)/lr fixed; heavy ball and Nesterov:
lr = h², μ = 1 − γh; Su–Boyd–Candès: s = h²; meta step: meta rates ∝ h). The error is the sup
over the steps k ≤ T/h of max|θ_k − θ(k·h)|, against h on a log–log plot; the slope is a
least-squares fit. The specs that state a modified equation (SGD, Momentum, Nesterov, EG) are
also measured against it (Hessian-vector products exact); heavy ball and Nesterov then start
from the buffer b₀ that puts θ₋₁ on the modified solution (see ``matched_buffer``).

Outputs in ``--out``: ``orders.png`` (the order plot, fitted slopes in the legends),
``trajectories.png`` (discrete iterates, ODE and modified flow on the toy at a large h, and the
two errors against time), ``orders.npz`` (every error), ``config.json`` (configuration, fitted
slopes, timing). Deterministic: ``--seed`` seeds the RNGs for uniformity only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter
from tqdm.auto import tqdm

import dynopt
from dynopt import ode
from dynopt.spec import Spec

from . import prepare

NAME = "ode_orders"
THETA0 = np.array([1.5, 1.0])
GAMMA, C1, C2, KAPPA = 1.5, 4.0, 8.0, 2.0
TRACE_RATE = 5.0  # the meta step's trace_decay ρ = 1 − TRACE_RATE·h
# one colour and marker per base optimizer (Okabe–Ito); a meta-step wrapper shares its base's, drawn dashed and open
STYLE = {"SGD": ("#0072B2", "o"), "Momentum": ("#E69F00", "s"), "Nesterov": ("#009E73", "^"), "RMSprop": ("#CC79A7", "D"),
         "Adam": ("#000000", "v"), "EG": ("#D55E00", "P"), "NesterovSBC": ("#56B4E9", "X")}


def style(name: str) -> tuple[str, str, str, str]:
    """(colour, marker, line style, marker face) of an optimizer in the figures."""
    base = name.removeprefix("Meta") if name.removeprefix("Meta") in STYLE else name
    color, marker = STYLE.get(base, ("#999999", "o"))
    meta = base != name
    return color, marker, "--" if meta else "-", "white" if meta else color


def toy_grad(theta: list[np.ndarray]) -> list[np.ndarray]:
    x, y = theta[0]
    return [np.array([x + 0.5 * x * y**2 + 0.4 * x**3, 4 * y + 0.5 * x**2 * y])]


def toy_hessian(theta: np.ndarray) -> np.ndarray:
    x, y = theta
    return np.array([[1 + 0.5 * y**2 + 1.2 * x**2, x * y], [x * y, 4 + 0.5 * x**2]])


def toy_hvp(theta: list[np.ndarray], v: list[np.ndarray]) -> list[np.ndarray]:
    return [toy_hessian(theta[0]) @ v[0]]


def toy_loss(x, y):
    return 0.5 * (x**2 + 4 * y**2) + 0.25 * x**2 * y**2 + 0.1 * x**4


# ----------------------------------------------------------------------------- the ODE scalings


def _momentum(h: float) -> dict:
    return {"lr": h * h, "momentum": 1 - GAMMA * h}


def _meta(base: Spec, scaled: Callable[[float], dict]) -> Callable[[float], dict]:
    def hyper(h: float) -> dict:
        hp = scaled(h)
        step = float(base.time_step(base.namespace(hp)))
        # ρ = 1 − c·h keeps the trace's memory time fixed; s₀ = 1 starts at the base's step
        return {**hp, "meta_lr": KAPPA * step, "gain_lr": KAPPA * step / 2, "trace_decay": 1 - TRACE_RATE * step,
                "initial_scale": 1.0}
    return hyper


def _rmsprop_start(h: float) -> dict:
    g0 = toy_grad([THETA0])[0]
    return {"square_avg": [g0 * g0]}  # the regular start of the coupled flow (v₀ = 0 is singular)


BASE_SCALINGS: dict[str, tuple[Callable[[float], dict], Callable[[float], dict] | None]] = {
    "SGD": (lambda h: {"lr": h}, None),
    "Momentum": (_momentum, None),
    "Nesterov": (_momentum, None),
    "RMSprop": (lambda h: {"lr": h, "alpha": 1 - C1 * h, "eps": 1e-3}, _rmsprop_start),
    "Adam": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - C2 * h), "eps": 1e-3}, None),
    "EG": (lambda h: {"lr": h, "variant": "positive"}, None),
    "NesterovSBC": (lambda h: {"lr": h * h}, None),
    # the torch.optim zoo: the scalings of tests/test_ode.py (see each optimizer's docstring)
    "AdamW": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - C2 * h), "eps": 1e-3, "weight_decay": 0.5}, None),
    "NAdam": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - C2 * h), "eps": 1e-3, "momentum_decay": KAPPA * h}, None),
    "RAdam": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - h / 2), "eps": 1e-3}, None),
    "Adamax": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - h / 2), "eps": 1e-3},
               lambda h: {"exp_inf": [10 * np.abs(toy_grad([THETA0])[0])]}),  # above |g|: the smooth regime
    "Adagrad": (lambda h: {"lr": h**0.5, "initial_accumulator_value": 1.0 / h, "eps": 1e-3}, None),  # clock lr²
    "Adadelta": (lambda h: {"lr": h, "rho": 1 - C1 * h, "eps": 1e-3},
                 lambda h: {"square_avg": [toy_grad([THETA0])[0] ** 2], "acc_delta": [toy_grad([THETA0])[0] ** 2]}),
    "Rprop": (lambda h: {"lr": h, "etas": (1 - h / 2, 1 + h), "step_sizes": (1e-6 * h, 50 * h), "maximize": True}, None),
    "ASGD": (lambda h: {"lr": h, "lambd": 0.5, "t0": 0.3 / h}, None),
    # optax's zoo: the scalings of tests/test_ode.py (T = 0.5 is before the sign flows' first switching surface)
    "Lion": (lambda h: {"lr": h, "betas": (0.9, 1 - C1 * h), "weight_decay": 0.5}, None),
    "AdaBelief": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - C2 * h), "eps": 0.5, "eps_root": 1e-3 * h}, None),
    "Yogi": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - h / 2), "eps": 1e-3},
             lambda h: {"exp_avg_sq": [10 * toy_grad([THETA0])[0] ** 2]}),  # sign(v − g²) = +1: the smooth regime
    "Lamb": (lambda h: {"lr": h, "betas": (1 - C1 * h, 1 - C2 * h), "eps": 1e-3, "weight_decay": 0.5}, None),
    "Lars": (lambda h: {"lr": h * h, "momentum": 1 - GAMMA * h, "weight_decay": 0.1, "trust_coefficient": 1.0}, None),
    # the drift of its SDE, the noise off (its noise: tests/test_optax_noisy_muon.py)
    "NoisySGD": (lambda h: {"lr": h, "eta": 0.0}, None),
}
# Steps that coincide with their flow between sign changes (a constant −lr·sign per step): no error to fit, so they
# are not measured here; tests/test_ode.py checks that they are exact, tests/test_zoo_optax_new.py what converges.
EXACT = {"SignSGD", "Signum"}
# Not measured: Muon orthogonalizes in bfloat16 and takes matrices only; Adafactor's field depends on h itself (its
# step clock t = time/h sets the moments' rate and the relative step): tests/test_ode.py's NOT_MEASURED says why
UNMEASURED = {"Muon", "Adafactor"}


def scaling(spec: Spec) -> tuple[Callable[[float], dict], Callable[[float], dict] | None]:
    """(hyperparameters of h, initial state of h or None) that keep ``spec``'s ODE fixed as h → 0."""
    if spec.name in BASE_SCALINGS:
        return BASE_SCALINGS[spec.name]
    base = spec.name.removeprefix("Meta")
    if base in BASE_SCALINGS:
        hyper, start = BASE_SCALINGS[base]
        return _meta(dynopt.REGISTRY[base], hyper), start
    raise KeyError(f"no ODE scaling for {spec.name}: add it to BASE_SCALINGS")


def matched_buffer(spec: Spec, h: float) -> list[np.ndarray]:
    """The buffer b₀ that puts θ₋₁ = X(−h) on the modified solution through θ₀ with X'(0) = 0.

    m X'' + γX' + [hHX'] + F = 0, m = 1 − γh/2 (bracket: Nesterov) gives X''(0) = −F₀/m and
    X'''(0) = −(γ + [hH])X''(0)/m, so θ₋₁ = θ₀ + (h²/2)X'' − (h³/6)X''' + O(h⁴). Heavy ball:
    θ₀ − θ₋₁ = −lr·b₀. Nesterov (two-step form): θ₀ − θ₋₁ = −lr(F(θ₋₁) + μb₀).
    """
    lr, mu = h * h, 1 - GAMMA * h
    m = 1 - GAMMA * h / 2
    x2 = -toy_grad([THETA0])[0] / m
    damping = GAMMA * np.eye(2) + (h * toy_hessian(THETA0) if spec.name == "Nesterov" else 0)
    previous = THETA0 + h * h / 2 * x2 + h**3 / 6 * (damping @ x2) / m
    if spec.name == "Momentum":
        return [(previous - THETA0) / lr]
    return [-((THETA0 - previous) / lr + toy_grad([previous])[0]) / mu]


# ----------------------------------------------------------------------------- discrete runs


def discrete(spec: Spec, hyper: dict, steps: int, state: dict | None, backend: str) -> np.ndarray:
    """θ_0..θ_steps on ``backend`` from THETA0, with some state variables set (lists of arrays)."""
    path = np.empty((steps + 1, 2))
    path[0] = THETA0
    if backend == "numpy":
        from dynopt._backends.numpy_oracle import OracleState
        from dynopt.numpy import from_spec

        opt = from_spec(spec)(**hyper)
        params = [THETA0.copy()]
        current = opt.init(params)
        if state:
            current = OracleState(0, {**current.values, **state})
        for k in range(1, steps + 1):
            updates, current = opt.update(toy_grad(params), current, params)
            params = [params[0] + updates[0]]
            path[k] = params[0]
    elif backend == "torch":
        import torch

        from dynopt.torch import from_spec

        p = torch.tensor(THETA0, dtype=torch.float64)
        opt = from_spec(spec)([p], **hyper)
        if state:  # a complete state before the first step is used as is
            opt.state[p]["step"] = torch.tensor(0.0)
            for name in spec.state(spec.namespace(hyper)):
                opt.state[p][name] = torch.tensor(state[name][0]) if name in state else torch.zeros_like(p)
            for name, value in spec.scalars(spec.namespace(hyper)).items():
                opt.state[p][name] = torch.tensor(float(value), dtype=torch.float64)
        for k in range(1, steps + 1):
            p.grad = torch.from_numpy(toy_grad([p.detach().numpy()])[0])
            opt.step()
            path[k] = p.detach().numpy()
    elif backend == "jax":
        import jax
        import jax.numpy as jnp

        from dynopt.jax import from_spec
        from dynopt.trajectory import jax_x64

        lr = hyper["lr"]
        rest = {k: v for k, v in hyper.items() if k != "lr"}
        with jax_x64():
            opt = from_spec(spec)(lr, **rest)
            params = [jnp.asarray(THETA0)]
            current = opt.init(params)
            if state:
                current = current._replace(**{k: [jnp.asarray(v[0])] for k, v in state.items()})
            update = jax.jit(opt.update)
            for k in range(1, steps + 1):
                grads = [jnp.asarray(toy_grad([np.asarray(params[0])])[0])]
                updates, current = update(grads, current, params)
                params = [params[0] + updates[0]]
                path[k] = np.asarray(params[0])
    else:
        raise ValueError(f"unknown backend {backend!r}")
    return path


def sup_error(path: np.ndarray, reference: ode.Flow) -> float:
    return float(np.max(np.abs(path - reference.params[0])))


def fit(hs: np.ndarray, errors: np.ndarray) -> tuple[float, float]:
    """Least-squares (slope, intercept) of log(error) against log(h)."""
    slope, intercept = np.polyfit(np.log(hs), np.log(errors), 1)
    return float(slope), float(intercept)


# ----------------------------------------------------------------------------- configuration


@dataclass
class Config:
    """``hs``: the ODE steps h; ``horizon``: T; ``trajectory_h``: the (large) h of the trajectory figure."""

    hs: tuple[float, ...] = (0.04, 0.02, 0.01, 0.005, 0.0025, 0.00125)
    horizon: float = 0.5
    optimizers: tuple[str, ...] = field(default_factory=lambda: tuple(spec.name for spec in dynopt.ZOO
                                                                       if spec.name not in EXACT | UNMEASURED))
    modified: tuple[str, ...] = ("SGD", "Momentum", "Nesterov", "EG")
    trajectory_h: dict[str, float] = field(default_factory=lambda: {"SGD": 0.06, "Momentum": 0.2, "Nesterov": 0.15, "EG": 0.1})
    trajectory_horizon: float = 3.0
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """Three step sizes instead of five."""
        return cls(**{"hs": (0.01, 0.005, 0.0025), **overrides})


@dataclass
class Measured:
    name: str
    hs: np.ndarray
    to_flow: np.ndarray
    to_modified: np.ndarray | None = None
    slope: float = float("nan")
    modified_slope: float | None = None
    fits: dict[str, tuple[float, float]] = field(default_factory=dict)


def measure(cfg: Config, spec: Spec, progress) -> Measured:
    hyper_of, start_of = scaling(spec)
    hs = np.array(cfg.hs)
    to_flow, to_modified = [], []
    for h in hs:
        hyper = hyper_of(h)
        steps = int(round(cfg.horizon / ode.time_step(spec, hyper)))
        start = start_of(h) if start_of else None
        path = discrete(spec, hyper, steps, start, cfg.backend)
        to_flow.append(sup_error(path, ode.flow(spec, hyper, toy_grad, [THETA0], steps, state=start)))
        if spec.name in cfg.modified:
            matched = {"momentum_buffer": matched_buffer(spec, h)} if spec.name in ("Momentum", "Nesterov") else start
            if matched is not start:
                path = discrete(spec, hyper, steps, matched, cfg.backend)
            reference = ode.flow(spec, hyper, toy_grad, [THETA0], steps, modified=True, hvp_fn=toy_hvp)
            to_modified.append(sup_error(path, reference))
        progress.update()
    out = Measured(spec.name, hs, np.array(to_flow))
    out.fits["flow"] = fit(hs, out.to_flow)
    out.slope = out.fits["flow"][0]
    if to_modified:
        out.to_modified = np.array(to_modified)
        out.fits["modified"] = fit(hs, out.to_modified)
        out.modified_slope = out.fits["modified"][0]
    return out


# ----------------------------------------------------------------------------- figures


def order_figure(cfg: Config, results: list[Measured]) -> Figure:
    fig = Figure(figsize=(15, 7.2), layout="constrained")
    left, right = fig.subplots(1, 2)
    hs = np.array(cfg.hs)
    for m in results:
        color, marker, line, face = style(m.name)
        slope, intercept = m.fits["flow"]
        left.loglog(m.hs, m.to_flow, marker, color=color, mfc=face, ms=6)
        left.loglog(m.hs, np.exp(intercept) * m.hs**slope, line, color=color, lw=1.3, marker=marker, mfc=face, ms=6,
                    markevery=[], label=f"{m.name}: {slope:.3f}")
    for m in results:
        if m.to_modified is None:
            continue
        color, marker, _, _ = style(m.name)
        for key, values, line, face, note in (("flow", m.to_flow, ":", "white", "own ODE"),
                                              ("modified", m.to_modified, "-", color, "modified")):
            slope, intercept = m.fits[key]
            right.loglog(m.hs, values, marker, color=color, mfc=face, ms=6)
            right.loglog(m.hs, np.exp(intercept) * m.hs**slope, line, color=color, lw=1.4, marker=marker, mfc=face,
                         markevery=[], label=f"{m.name} vs {note}: {slope:.3f}")
    scale = np.median([m.to_flow[0] for m in results])
    left.loglog(hs, 0.3 * scale * hs / hs[0], ":", color="0.5", lw=1, label="slope 1 (guide)")
    low = min(float(np.min(m.to_modified)) for m in results if m.to_modified is not None)
    right.loglog(hs, 0.3 * low * (hs / hs[-1]) ** 2, "--", color="0.5", lw=1, label="slope 2 (guide)")
    ylabel = f"sup over t_k ≤ {cfg.horizon:g} of max |θ_k − θ(t_k)|"
    left.set(xlabel="ODE step h", ylabel=ylabel, title="Every optimizer against its own ODE (meta-step wrappers dashed, open)")
    right.set(xlabel="ODE step h", ylabel=ylabel, title="Against the modified equation (filled, solid) and the ODE (open, dotted)")
    for ax in (left, right):
        ax.grid(True, which="both", alpha=0.3)
        ax.set_xticks(hs, [f"{h:g}" for h in hs])
        ax.xaxis.set_minor_formatter(NullFormatter())
    left.legend(fontsize="small", ncol=2, loc="lower right", title="fitted slope")
    right.legend(fontsize="small", ncol=1, loc="lower right", title="fitted slope")
    fig.suptitle("Order of convergence to the continuous-time view: least-squares slopes of log error against log h",
                 fontsize="x-large")
    fig.supxlabel(
        f"Toy of ode-view §C: L = ½(x² + 4y²) + ¼x²y² + 0.1x⁴ from (1.5, 1); T = {cfg.horizon:g}; h ∈ {list(cfg.hs)}.\n"
        f"Maps: lr = h (SGD, EG; RMSprop with 1 − α = {C1:g}h; Adam with 1 − β = ({C1:g}h, {C2:g}h)); lr = h², μ = 1 − {GAMMA:g}h "
        f"(Momentum, Nesterov); s = h² (NesterovSBC); meta rates {KAPPA:g}·h, trace_decay 1 − {TRACE_RATE:g}·h on top of the base's map.\n"
        "Modified equations: SGD θ' = −(g + (h/2)Hg); Momentum/Nesterov (1 − γh/2)θ'' + γθ' (+ h∇²Lθ') + ∇L = 0, started with "
        "θ₋₁ on its solution; EG θ' = −θ⊙(g + (h/2)H(θ⊙g)).",
        x=0.01, ha="left", fontsize=9)
    return fig


def trajectory_data(cfg: Config) -> dict[str, dict[str, Any]]:
    """For SGD, Momentum, Nesterov, EG at a large h: iterates, ODE flow and modified flow on t_k."""
    out = {}
    for name, h in cfg.trajectory_h.items():
        spec = dynopt.REGISTRY[name]
        hyper = scaling(spec)[0](h)
        steps = int(round(cfg.trajectory_horizon / ode.time_step(spec, hyper)))
        state = {"momentum_buffer": matched_buffer(spec, h)} if name in ("Momentum", "Nesterov") else None
        path = discrete(spec, hyper, steps, state, cfg.backend)
        flow = ode.flow(spec, hyper, toy_grad, [THETA0], steps)
        modified = ode.flow(spec, hyper, toy_grad, [THETA0], steps, modified=True, hvp_fn=toy_hvp)
        out[name] = {"h": h, "hyper": hyper, "times": flow.times, "iterates": path, "flow": flow.params[0],
                     "modified": modified.params[0],
                     "dense_flow": _refine(flow.times, flow.params[0]), "dense_modified": _refine(flow.times, modified.params[0])}
    return out


def _refine(times: np.ndarray, values: np.ndarray, factor: int = 20) -> np.ndarray:
    """A smooth flow drawn between its samples (cubic spline, for the figure only)."""
    from scipy.interpolate import CubicSpline

    return CubicSpline(times, values, axis=0)(np.linspace(times[0], times[-1], (len(times) - 1) * factor + 1))


def trajectory_figure(cfg: Config, data: dict[str, dict[str, Any]]) -> Figure:
    names = list(data)
    fig = Figure(figsize=(4.6 * len(names) + 0.6, 9.2), layout="constrained")
    axes = fig.subplots(2, len(names), squeeze=False)
    every = np.vstack([np.vstack([d["iterates"], d["flow"]]) for d in data.values()])
    low, high = every.min(axis=0), every.max(axis=0)
    pad = 0.06 * (high - low)
    xs = np.linspace(low[0] - pad[0], high[0] + pad[0], 200)
    ys = np.linspace(low[1] - pad[1], high[1] + pad[1], 200)
    X, Y = np.meshgrid(xs, ys)
    levels = np.geomspace(0.01, float(toy_loss(X, Y).max()), 14)
    for col, name in enumerate(names):
        d = data[name]
        top, bottom = axes[0, col], axes[1, col]
        top.contour(X, Y, toy_loss(X, Y), levels=levels, colors="0.8", linewidths=0.7)
        top.plot(*d["dense_flow"].T, "--", color="#0072B2", lw=1.8, label="ODE flow")
        top.plot(*d["dense_modified"].T, "-", color="#D55E00", lw=1.4, label="modified flow")
        top.plot(*d["iterates"].T, "o", color="black", ms=3.5, label="iterates θ_k")
        top.plot(*d["flow"].T, "x", color="#0072B2", ms=5, label="ODE at t_k")
        top.plot(0, 0, "*", color="0.3", ms=10)
        top.set(xlim=(xs[0], xs[-1]), ylim=(ys[0], ys[-1]), xlabel="x", ylabel="y", aspect="equal")
        knobs = ", ".join(f"{k}={v:.3g}" for k, v in d["hyper"].items() if isinstance(v, float))
        top.set_title(f"{name}: h = {d['h']:g} ({knobs})", fontsize="medium")
        e_flow = np.max(np.abs(d["iterates"] - d["flow"]), axis=1)
        e_mod = np.max(np.abs(d["iterates"] - d["modified"]), axis=1)
        bottom.semilogy(d["times"][1:], e_flow[1:], "--", color="#0072B2", label=f"vs ODE (max {e_flow.max():.1e})")
        bottom.semilogy(d["times"][1:], e_mod[1:], "-", color="#D55E00", label=f"vs modified (max {e_mod.max():.1e})")
        bottom.set(xlabel="ODE time t = k·h", ylabel="max |θ_k − θ(t_k)|")
        bottom.grid(True, which="both", alpha=0.3)
        bottom.legend(fontsize="small", loc="lower right")
    axes[0, 0].legend(fontsize="small", loc="upper left")
    fig.suptitle("Discrete iterates (dots), their ODE (dashed) and their modified equation (solid) at a large step h",
                 fontsize="x-large")
    fig.supxlabel("Momentum and Nesterov start from the buffer matched to the modified equation (θ₋₁ on its solution); "
                  "the modified flows use exact Hessian-vector products.", x=0.01, ha="left", fontsize=9)
    return fig


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> list[Measured]:
    cfg, out = prepare(NAME, __doc__, Config, argv)
    start = time.perf_counter()
    specs = [dynopt.REGISTRY[name] for name in cfg.optimizers]
    results = []
    with tqdm(total=len(specs) * len(cfg.hs) + 1, desc=NAME, unit="run") as progress:
        for spec in specs:
            progress.set_postfix_str(spec.name)
            results.append(measure(cfg, spec, progress))
        trajectories = trajectory_data(cfg)
        progress.update()
    written = [out / "orders.png", out / "trajectories.png", out / "orders.npz", out / "config.json"]
    order_figure(cfg, results).savefig(written[0], dpi=100)
    trajectory_figure(cfg, trajectories).savefig(written[1], dpi=100)
    arrays = {"hs": np.array(cfg.hs)}
    for m in results:
        arrays[f"{m.name}/to_flow"] = m.to_flow
        if m.to_modified is not None:
            arrays[f"{m.name}/to_modified"] = m.to_modified
    for name, d in trajectories.items():
        for key in ("times", "iterates", "flow", "modified"):
            arrays[f"trajectory/{name}/{key}"] = d[key]
    np.savez_compressed(written[2], **arrays)
    seconds = time.perf_counter() - start
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "slopes": {m.name: {"flow": m.slope, **({"modified": m.modified_slope} if m.modified_slope is not None else {})}
                   for m in results},
        "errors": {m.name: {"flow": m.to_flow.tolist(), **({"modified": m.to_modified.tolist()} if m.to_modified is not None else {})}
                   for m in results},
        "seconds": round(seconds, 2),
    }
    written[3].write_text(json.dumps(summary, indent=2))
    print(f"{NAME}: wrote {len(written)} files to {out} in {seconds:.1f} s")
    for m in results:
        extra = f", modified {m.modified_slope:.3f}" if m.modified_slope is not None else ""
        print(f"  {m.name:13s} slope {m.slope:.3f}{extra}")
    return results


if __name__ == "__main__":
    main()
