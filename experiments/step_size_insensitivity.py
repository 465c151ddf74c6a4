"""Step-size insensitivity: final loss against the initial lr for SGD, Momentum, RMSprop and their meta versions.

Each base optimizer and its meta-adapted version (``MetaSGD``, ``MetaMomentum``, ``MetaRMSprop``:
the base step scaled by a global s learned online, effective lr = lr·s) runs from the
same start for a fixed number of steps at every initial lr of the same log grid (1e-4 … 1), on

(a) an ill-conditioned quadratic L(θ) = ½θᵀAθ in 20 dimensions, eigenvalues log-spaced in
    [1, 100] (condition number 100), rotated by a random orthogonal matrix (``--seed``); the start
    θ₀ ~ N(0, I) comes from the same seed. SGD is stable for lr < 2/100, and its best constant lr
    2/(1 + 100) ≈ 0.02 sits at the log-centre of the grid: two decades of too-small and two of
    too-large steps;
(b) multinomial logistic regression on scikit-learn's bundled digits (1797 × 64, standardized),
    full batch, from W = 0, b = 0, with the L2 penalty λ/2‖W‖², λ = 1/n (scikit-learn's default
    ``C = 1``). Without it the training set is separable, the loss has no minimizer and its
    infimum 0 is approached ever more slowly; the final loss would measure only how far a run got
    along an unbounded path. With it, L* > 0 exists (computed by L-BFGS, drawn dash-dotted).

The gradient is analytic in NumPy; with ``--backend torch`` or ``jax`` it comes from that
framework's autograd of the same formula (and the optimizer is ``dynopt.torch``/``dynopt.jax``).

The meta versions run with the library defaults (``Config.meta`` is empty: rule "eg", γ = 0.07,
the trace ρ = 0.97, s₀ = 0.01; all of them are written on the figure and in ``config.json``).
Under "eg", log s grows by at most γ per step, so from s₀ = 0.01 s needs at least
ln(10⁴·100)/γ ≈ 200 steps to cross the four decades of the grid and the warm-up: 40 % of the
500-step quadratic horizon and 66 % of the 300-step digits one. (Until issue 13 this experiment set
γ = 0.05 with s₀ = 1 and ρ = 0, because the default γ = 0.02 of then needed 460 steps.) The
experiment ``meta_anchors`` runs every wrapper, minibatches and the anchors users pick instead.

Divergence, stated explicitly: a run *diverged* when its final loss is non-finite or above its
initial loss L(θ₀) (it ended worse than it started). The table gives, per optimizer, the number of
diverged runs and two worst/best ratios of the final loss over the grid: "capped", where a
diverged run counts as L(θ₀) (every grid point enters), and "finite", over the runs that did not
diverge only. The figure draws diverged runs above the L(θ₀) line, one row per optimizer
(× base, + meta).

Outputs in ``--out``: ``step_size_insensitivity.png``, ``final_losses.npz`` (every final loss)
and ``config.json`` (the configuration, the budget and the table). The runners here
(:class:`Objective`, :func:`optimize`) are shared with the other meta/EG experiments.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm.auto import tqdm

from dynopt import REGISTRY
from dynopt.plotting import colour

from . import prepare, write_summary

NAME = "step_size_insensitivity"

# --------------------------------------------------------------------------------------------
# A differentiable objective written once, and one optimizer run on any backend
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # hashed by identity: a key of the jitted-runner cache
class Objective:
    """An objective for :func:`optimize`, the same formula on NumPy, torch and JAX.

    ``loss(xp, params, consts, batch)`` is written with operators, ``xp.sum``/``xp.exp``/``xp.log``
    (``xp`` is ``numpy``, ``torch`` or ``jax.numpy``); torch and JAX differentiate it.
    ``grad(params, consts, batch)`` is its analytic gradient in NumPy. ``consts`` are constant
    arrays, ``batches`` per-step arrays (leading axis = step; ``batch`` is then the step's slice,
    else ``()``). ``metric(xp, params, consts, batch)``, when given, is recorded before every step.
    """

    loss: Callable
    grad: Callable
    init: tuple[np.ndarray, ...]
    consts: tuple[np.ndarray, ...] = ()
    batches: tuple[np.ndarray, ...] = ()
    metric: Callable | None = None

    def value(self, params) -> float:
        """L at ``params`` (NumPy, full batch: objectives without ``batches`` only)."""
        with np.errstate(all="ignore"):
            return float(self.loss(np, [np.asarray(p) for p in params], self.consts, ()))


@dataclass
class Run:
    """One run: final parameters (NaN after an overflow), s_t after step t = 1..steps (1 for
    optimizers without a meta scale) and the metric before step t (None without a metric)."""

    params: list[np.ndarray]
    scales: np.ndarray
    metrics: np.ndarray | None


def logsumexp_rows(xp, z):
    """log Σ_j exp z_ij for each row i, stable, on NumPy, torch or jax.numpy."""
    if getattr(xp, "__name__", "") == "torch":
        return xp.logsumexp(z, dim=1)
    top = z.max(axis=1, keepdims=True)
    return xp.log(xp.sum(xp.exp(z - top), axis=1)) + top[:, 0]


def meta_hyper(meta: dict[str, Any], optimizer: str = "MetaSGD") -> dict[str, Any]:
    """Every hyperparameter the meta wrapper adds, at its current default unless ``meta`` sets it:
    what actually runs, for figures and config files (the defaults live in the spec, not here)."""
    spec, base = REGISTRY[optimizer], REGISTRY[optimizer.removeprefix("Meta")]
    own = {h.name for h in base.hyperparams}
    return {**{k: v for k, v in spec.defaults.items() if k not in own}, **meta}


def hyper_text(hyper: dict[str, Any], skip: tuple[str, ...] = ("gain_range",)) -> str:
    """``k=v, …`` for a figure (strings quoted, tuples as (a, b))."""
    return ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in hyper.items() if k not in skip)


def optimize(optimizer: str, hyper: dict[str, Any], objective: Objective, steps: int, backend: str = "numpy",
             schedule: Callable | None = None) -> Run:
    """Run the registry optimizer ``optimizer`` (``"MetaSGD"``) with ``hyper`` (``lr`` included) for ``steps`` steps.

    ``schedule(xp, k)``, when given, multiplies ``lr`` at step k + 1 (k steps done), as a NumPy
    callable lr, a ``LambdaLR`` in torch and an optax schedule in JAX. Everything is float64.
    """
    runner = {"numpy": _optimize_numpy, "torch": _optimize_torch, "jax": _optimize_jax}[backend]
    return runner(REGISTRY[optimizer], dict(hyper), objective, steps, schedule)


def _finite(arrays) -> bool:
    return all(bool(np.all(np.isfinite(a))) for a in arrays)


def _optimize_numpy(spec, hyper, objective, steps, schedule) -> Run:
    import dynopt.numpy

    lr = hyper.pop("lr")
    opt = getattr(dynopt.numpy, spec.jax_name)((lambda k: lr * schedule(np, k)) if schedule else lr, **hyper)
    params = [np.array(p, dtype=np.float64) for p in objective.init]
    state = opt.init(params)
    scales = np.full(steps, np.nan)
    metrics = []
    with np.errstate(all="ignore"):
        for t in range(steps):
            batch = tuple(b[t] for b in objective.batches)
            if objective.metric is not None:
                metrics.append(objective.metric(np, params, objective.consts, batch))
            updates, state = opt.update(objective.grad(params, objective.consts, batch), state, params)
            params = [p + u for p, u in zip(params, updates)]
            scales[t] = state.values.get("scale", 1.0)
            if not _finite(params):
                params = [np.full_like(p, np.nan) for p in params]
                break
    return Run(params, scales, _stack(metrics, steps))


def _stack(metrics: list, steps: int) -> np.ndarray | None:
    """The recorded metrics, NaN-padded to ``steps`` rows after an early stop."""
    if not metrics:
        return None
    first = np.asarray(metrics[0], dtype=np.float64)
    out = np.full((steps, *first.shape), np.nan)
    out[: len(metrics)] = np.asarray(metrics, dtype=np.float64)
    return out


def _optimize_torch(spec, hyper, objective, steps, schedule) -> Run:
    import torch

    import dynopt.torch

    torch.set_num_threads(1)
    params = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in objective.init]
    consts = tuple(torch.as_tensor(c, dtype=torch.float64) for c in objective.consts)
    opt = getattr(dynopt.torch, spec.name)(params, **hyper)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: float(schedule(np, k))) if schedule else None
    scales = np.full(steps, np.nan)
    metrics = []
    for t in range(steps):
        batch = tuple(torch.as_tensor(b[t], dtype=torch.float64) for b in objective.batches)
        if objective.metric is not None:
            with torch.no_grad():
                metrics.append(objective.metric(torch, params, consts, batch).numpy())
        opt.zero_grad()
        objective.loss(torch, params, consts, batch).backward()
        opt.step()
        scales[t] = float(opt.global_scalars().get("scale", 1.0))
        if sched is not None:
            sched.step()
        if not _finite([p.detach().numpy() for p in params]):
            return Run([np.full(p.shape, np.nan) for p in params], scales, _stack(metrics, steps))
    return Run([p.detach().numpy().copy() for p in params], scales, _stack(metrics, steps))


@functools.lru_cache(maxsize=64)
def _jax_runner(name: str, rest: tuple, objective: Objective, steps: int, schedule: Callable | None):
    """A jitted ``(lr, params₀, consts, batches) -> (params, scales, metrics)``; lr is traced."""
    import jax
    import jax.numpy as jnp

    import dynopt
    import dynopt.jax

    # the spec itself, with its own (torch) hyperparameter names as `rest` has them; dynopt.jax.<name> speaks optax
    spec = next((s for s in dynopt.REGISTRY.values() if s.jax_name == name), None)
    factory = dynopt.jax.from_spec(spec) if spec is not None else getattr(dynopt.jax, name)

    @jax.jit
    def iterate(lr, params0, consts, batches):
        opt = factory((lambda count: lr * schedule(jnp, count)) if schedule else lr, **dict(rest))

        def step(carry, batch):
            params, state = carry
            batch = tuple(batch) if batch is not None else ()
            metric = objective.metric(jnp, params, consts, batch) if objective.metric is not None else jnp.zeros(())
            grads = jax.grad(lambda p: objective.loss(jnp, p, consts, batch))(params)
            updates, state = opt.update(grads, state, params)
            params = [p + u for p, u in zip(params, updates)]
            return (params, state), (getattr(state, "scale", jnp.ones(())), metric)

        xs = tuple(batches) if batches else None
        (params, _), (scales, metrics) = jax.lax.scan(step, (params0, opt.init(params0)), xs, length=steps)
        return params, scales, metrics

    return iterate


def _optimize_jax(spec, hyper, objective, steps, schedule) -> Run:
    import jax.numpy as jnp

    from dynopt.trajectory import jax_x64

    lr = hyper.pop("lr")
    rest = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in hyper.items()))
    with jax_x64():
        params0 = [jnp.asarray(p, dtype=jnp.float64) for p in objective.init]
        consts = tuple(jnp.asarray(c, dtype=jnp.float64) for c in objective.consts)
        batches = tuple(jnp.asarray(b[:steps], dtype=jnp.float64) for b in objective.batches)
        runner = _jax_runner(spec.jax_name, rest, objective, steps, schedule)
        params, scales, metrics = runner(jnp.float64(lr), params0, consts, batches)
    params = [np.asarray(p) for p in params]
    if not _finite(params):
        params = [np.full_like(p, np.nan) for p in params]
    return Run(params, np.asarray(scales), np.asarray(metrics) if objective.metric is not None else None)


# --------------------------------------------------------------------------------------------
# The two problems
# --------------------------------------------------------------------------------------------


def _quadratic_loss(xp, params, consts, batch):
    (theta,), (a,) = params, consts
    return 0.5 * xp.sum(theta * (a @ theta))


def _quadratic_grad(params, consts, batch):
    return [consts[0] @ params[0]]


def quadratic(dim: int = 20, condition: float = 100.0, seed: int = 0) -> Objective:
    """½θᵀAθ with eigenvalues log-spaced in [1, condition], a random rotation and θ₀ ~ N(0, I) from ``seed``."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
    a = (rotation * np.logspace(0.0, math.log10(condition), dim)) @ rotation.T
    a = (a + a.T) / 2
    return Objective(_quadratic_loss, _quadratic_grad, (rng.normal(size=dim),), (a,))


def _digits_logits(params, x):
    w, b = params
    return x @ w + b


def _make_digits_loss(l2: float):
    def loss(xp, params, consts, batch):
        x, y = consts
        z = _digits_logits(params, x)
        n = x.shape[0]
        return xp.sum(logsumexp_rows(xp, z)) / n - xp.sum(y * z) / n + 0.5 * l2 * xp.sum(params[0] * params[0])

    def grad(params, consts, batch):
        x, y = consts
        z = _digits_logits(params, x)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        residual = (p / p.sum(axis=1, keepdims=True) - y) / x.shape[0]
        return [x.T @ residual + l2 * params[0], residual.sum(axis=0)]

    return loss, grad


def digits(l2: float | None = None) -> tuple[Objective, float]:
    """Softmax regression on the standardized digits (λ = 1/n when ``l2`` is None) and its L* (L-BFGS)."""
    from scipy.optimize import minimize
    from sklearn.datasets import load_digits
    from threadpoolctl import threadpool_limits

    x, labels = load_digits(return_X_y=True)
    std = x.std(axis=0)
    x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    y = np.eye(10)[labels]
    l2 = 1.0 / len(x) if l2 is None else l2
    loss, grad = _make_digits_loss(l2)
    objective = Objective(loss, grad, (np.zeros((x.shape[1], 10)), np.zeros(10)), (x, y))
    shapes = [p.shape for p in objective.init]

    def flat(v):
        params = [v[: x.shape[1] * 10].reshape(shapes[0]), v[x.shape[1] * 10:]]
        return objective.value(params), np.concatenate([g.ravel() for g in grad(params, objective.consts, ())])

    with threadpool_limits(1):  # small matrices, 2 shared cores: one BLAS thread is faster
        best = minimize(flat, np.zeros(x.shape[1] * 10 + 10), jac=True, method="L-BFGS-B",
                        options={"maxiter": 10_000, "gtol": 1e-10, "ftol": 1e-15})
    return objective, float(best.fun)


# --------------------------------------------------------------------------------------------
# The experiment
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    """What to run: the shared lr grid, the horizons, the fixed hyperparameters and the meta ones."""

    problems: tuple[str, ...] = ("quadratic", "digits")
    bases: tuple[str, ...] = ("SGD", "Momentum", "RMSprop")
    fixed: dict[str, dict] = field(
        default_factory=lambda: {"SGD": {}, "Momentum": {"momentum": 0.9}, "RMSprop": {"alpha": 0.99, "eps": 1e-8}}
    )
    meta: dict[str, Any] = field(default_factory=dict)  # empty: the library defaults
    steps: dict[str, int] = field(default_factory=lambda: {"quadratic": 500, "digits": 300})
    grid_size: int = 13
    lr_min: float = 1e-4
    lr_max: float = 1.0
    dim: int = 20
    condition: float = 100.0
    l2: float | None = None  # digits' L2 penalty; None: 1/n, scikit-learn's default C = 1
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """A quick configuration: one lr per decade, digits for 150 steps (too short for s to cross the grid)."""
        return cls(**{"grid_size": 5, "steps": {"quadratic": 500, "digits": 150}, **overrides})

    def lr_grid(self) -> np.ndarray:
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.grid_size)

    def optimizers(self) -> list[str]:
        return [*self.bases, *(f"Meta{b}" for b in self.bases)]

    def hyper(self, optimizer: str, lr: float) -> dict[str, Any]:
        base = optimizer.removeprefix("Meta")
        return {"lr": float(lr), **self.fixed[base], **(self.meta if optimizer != base else {})}

    def budget_text(self) -> str:
        fixed = "; ".join(f"{n} " + ", ".join(f"{k}={v}" for k, v in hp.items()) for n, hp in self.fixed.items() if hp)
        horizons = ", ".join(f"{self.steps[p]} steps ({p})" for p in self.problems)
        meta = hyper_text(meta_hyper(self.meta))
        return (
            f"Every optimizer runs at the same {self.grid_size} log-spaced initial lrs in [{self.lr_min:.0e}, {self.lr_max:.0e}]; "
            f"horizon {horizons}; fixed: {fixed}.\n"
            f"Meta versions: Meta<base>({meta}); effective lr = lr·s, s adapted online from s₀.\n"
            "Diverged = final loss non-finite or > L(θ₀): drawn above L(θ₀), one row per optimizer (× base, + meta), and counted as L(θ₀) in worst/best."
        )


def build_problem(cfg: Config, name: str) -> tuple[Objective, float, str]:
    """The objective, its minimum L* and a title."""
    if name == "quadratic":
        return quadratic(cfg.dim, cfg.condition, cfg.seed), 0.0, f"quadratic, d={cfg.dim}, condition number {cfg.condition:g}"
    if name == "digits":
        objective, best = digits(cfg.l2)
        l2 = cfg.l2 if cfg.l2 is not None else 1.0 / objective.consts[0].shape[0]
        return objective, best, f"softmax regression, digits (n=1797, 64 features), λ={l2:.2g}"
    raise ValueError(f"unknown problem {name!r}")


def summarize(finals: np.ndarray, initial: float, grid: np.ndarray) -> dict[str, Any]:
    """Diverged count and worst/best ratios of one optimizer's final losses over the lr grid."""
    diverged = ~np.isfinite(finals) | (finals > initial)
    capped = np.where(diverged, initial, finals)
    kept = finals[~diverged]
    best = int(np.argmin(capped))
    return {
        "best_lr": float(grid[best]),
        "best_loss": float(capped[best]),
        "worst_loss_capped": float(capped.max()),
        "ratio_capped": float(capped.max() / capped.min()),
        "ratio_finite": float(kept.max() / kept.min()) if kept.size else None,
        "diverged": int(diverged.sum()),
        "diverged_lrs": [float(v) for v in grid[diverged]],
    }


def run_problem(cfg: Config, name: str, progress=None) -> dict[str, Any]:
    """Final losses and the table of one problem: ``{"finals", "table", "initial", "minimum", "title"}``."""
    from threadpoolctl import threadpool_limits

    objective, minimum, title = build_problem(cfg, name)
    initial = objective.value(objective.init)
    progress = progress if progress is not None else tqdm(disable=True)
    finals, table = {}, {}
    with threadpool_limits(1):  # digits' matrices are small and the machine has 2 shared cores
        for optimizer in cfg.optimizers():
            progress.set_postfix_str(f"{name}/{optimizer}")
            values = []
            for lr in cfg.lr_grid():
                run = optimize(optimizer, cfg.hyper(optimizer, lr), objective, cfg.steps[name], cfg.backend)
                value = objective.value(run.params)
                values.append(value if math.isfinite(value) else math.inf)
                progress.update()
            finals[optimizer] = np.array(values)
            table[optimizer] = summarize(finals[optimizer], initial, cfg.lr_grid())
    return {"finals": finals, "table": table, "initial": initial, "minimum": minimum, "title": title}


def figure(cfg: Config, results: dict[str, dict]) -> Figure:
    """One log-log panel per problem: final loss against initial lr, bases solid, meta versions dashed."""
    grid = cfg.lr_grid()
    fig = Figure(figsize=(6.8 * len(results) + 1.6, 6.6), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False).ravel()
    for ax, (name, res) in zip(axes, results.items()):
        finite = np.concatenate([f[np.isfinite(f) & (f <= res["initial"])] for f in res["finals"].values()])
        span = math.log10(res["initial"] / finite.min()) if finite.size else 1.0
        row_of = {o: res["initial"] * 10 ** ((0.06 + 0.035 * j) * span) for j, o in enumerate(cfg.optimizers())}  # diverged runs
        any_diverged = False
        for i, base in enumerate(cfg.bases):
            for optimizer, kind in ((base, "base"), (f"Meta{base}", "meta")):
                finals, row = res["finals"][optimizer], res["table"][optimizer]
                diverged = ~np.isfinite(finals) | (finals > res["initial"])
                any_diverged |= bool(diverged.any())
                label = f"{optimizer}: {row['ratio_capped']:.1e} [{row['diverged']}]"
                ax.plot(grid, np.where(diverged, np.nan, finals), color=colour(i), ls="-" if kind == "base" else "--",
                        marker="o" if kind == "base" else "s", mfc=colour(i) if kind == "base" else "white",
                        ms=5, lw=1.8, label=label)
                ax.plot(grid[diverged], np.full(diverged.sum(), row_of[optimizer]), ls="none", marker="x" if kind == "base" else "+",
                        ms=9, mew=2, color=colour(i))
        ax.axhline(res["initial"], color="0.4", lw=1, ls=":")
        ax.annotate("L(θ₀)", (1.0, res["initial"]), xycoords=("axes fraction", "data"), xytext=(-3, 2),
                    textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.3")
        if res["minimum"] > 0:
            ax.axhline(res["minimum"], color="0.4", lw=1, ls="-.")
            ax.annotate("L* (L-BFGS)", (1.0, res["minimum"]), xycoords=("axes fraction", "data"), xytext=(-3, -2),
                        textcoords="offset points", ha="right", va="top", fontsize=8, color="0.3")
            ax.set_ylim(bottom=res["minimum"] * 0.85)
        ax.set_xscale("log")
        ax.set_yscale("log")
        if any_diverged:
            ax.set_ylim(top=res["initial"] * 10 ** ((0.06 + 0.035 * len(row_of)) * span))
        ax.set_xlabel("initial learning rate lr (log)")
        ax.set_ylabel(f"final loss L(θ_N), N = {cfg.steps[name]} (log)")
        ax.set_title(res["title"], fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=len(cfg.bases), fontsize="small", title="worst/best final loss over the grid (diverged = L(θ₀)) [number diverged]",
                  title_fontsize="small")
    fig.suptitle("Final loss against the initial learning rate: base optimizers (solid) and their meta-adapted "
                 f"step sizes (dashed, library defaults: rule {meta_hyper(cfg.meta)['rule']!r}, γ = {meta_hyper(cfg.meta)['meta_lr']})",
                 fontsize="large")
    fig.legend(handles=[Line2D([], [], ls="none", marker="x", ms=8, mew=2, color="0.2", label="diverged, base"),
                        Line2D([], [], ls="none", marker="+", ms=9, mew=2, color="0.2", label="diverged, meta")],
               loc="outside right upper", fontsize="small")
    fig.supxlabel(cfg.budget_text(), x=0.01, ha="left", fontsize=8.5)
    return fig


def format_table(cfg: Config, results: dict[str, dict]) -> str:
    lines = [f"{'':47s} {'worst/best final loss':^25s}",
             f"{'problem':10s} {'optimizer':13s} {'best lr':>8s} {'best loss':>10s} {'worst loss':>10s} {'capped':>11s} "
             f"{'finite only':>13s} {'diverged':>8s}"]
    for name, res in results.items():
        for optimizer in cfg.optimizers():
            row = res["table"][optimizer]
            finite = f"{row['ratio_finite']:.2e}" if row["ratio_finite"] is not None else "-"
            lines.append(f"{name:10s} {optimizer:13s} {row['best_lr']:8.1e} {row['best_loss']:10.3e} {row['worst_loss_capped']:10.3e} "
                         f"{row['ratio_capped']:11.2e} {finite:>13s} {row['diverged']:5d}/{cfg.grid_size}")
    return "\n".join(lines)


def save(cfg: Config, results: dict[str, dict], out: Path, seconds: float) -> list[Path]:
    arrays: dict[str, np.ndarray] = {"lr_grid": cfg.lr_grid()}
    for name, res in results.items():
        arrays[f"{name}/initial_loss"] = np.array(res["initial"])
        arrays[f"{name}/minimum"] = np.array(res["minimum"])
        for optimizer, finals in res["finals"].items():
            arrays[f"{name}/{optimizer}/final_losses"] = finals
    np.savez_compressed(out / "final_losses.npz", **arrays)
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "meta_hyperparameters": meta_hyper(cfg.meta),  # every meta hyperparameter, defaults included
        "budget": {
            "lr_grid": cfg.lr_grid().tolist(),
            "runs_per_optimizer": cfg.grid_size,
            "horizon_steps": dict(cfg.steps),
            "diverged": "final loss non-finite or above the initial loss L(θ₀)",
            "ratio_capped": "max/min of the final loss over the whole grid, a diverged run counted as L(θ₀)",
            "ratio_finite": "max/min over the runs that did not diverge (null if all diverged)",
        },
        "problems": {name: {"title": res["title"], "initial_loss": res["initial"], "minimum": res["minimum"],
                            "table": res["table"]} for name, res in results.items()},
        "seconds": round(seconds, 2),
    }
    return [*write_summary(out, summary, NAME, figure(cfg, results)), out / "final_losses.npz"]


def main(argv: list[str] | None = None) -> dict[str, dict]:
    cfg, out = prepare(NAME, __doc__, Config, argv)

    start = time.perf_counter()
    results: dict[str, dict] = {}
    total = len(cfg.problems) * len(cfg.optimizers()) * cfg.grid_size
    with tqdm(total=total, desc=NAME, unit="run") as progress:
        for name in cfg.problems:
            results[name] = run_problem(cfg, name, progress)
    written = save(cfg, results, out, time.perf_counter() - start)
    print(f"{NAME}: wrote {len(written)} files to {out} in {time.perf_counter() - start:.1f} s")
    print(format_table(cfg, results))
    return results


if __name__ == "__main__":
    main()
