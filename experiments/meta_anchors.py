"""Anchors: dynopt's meta step with its defaults against hypergradient descent and optax's learning-rate-free methods.

Every method runs from every initial step size of the same log grid (1e-4 … 1) on the same
minibatches, in one run (JAX, float64, each method one jitted scan vmapped over the grid):

(a) softmax regression on scikit-learn's digits (1797 × 64, standardized), L2 penalty λ/2‖W‖² with
    λ = 1/n, from W = 0, b = 0: the final gap L(θ_N) − L* on the full data (L* by L-BFGS, as in
    ``step_size_insensitivity``);
(b) an MLP 64-32-10 (tanh, weights N(0, 1/fan-in) from ``--seed``, the same λ on its weights): the
    final full-data loss L(θ_N).

Both use minibatches of 64 drawn without replacement within a step (the same sequence, from
``--seed``, for every method) and N = 1000 steps. The methods and what the grid value g sets:

* dynopt ``Meta<base>`` for SGD, Momentum, Nesterov, RMSprop, Adam with the library defaults:
  ``lr = g`` (the scale s adapts from its default s₀);
* SGD-HD and Adam-HD (Baydin et al. 2018): dynopt's ``rule="hd"`` with ``trace_decay=0`` and
  ``initial_scale=1`` (α₀ = g), and the β of the authors' scripts (gbaydin/hypergradient-descent,
  ``run.sh``: β = 1e-3 for SGD-HD, 1e-7 for Adam-HD), i.e. ``meta_lr = β/g²``; dynopt's bounds on
  s stay on (|Δ log s| ≤ ``max_log_step``, ``scale_range``);
* optax.contrib's learning-rate-free methods, each given g where it takes its initial step size,
  every other argument at its default: ``prodigy(estim_lr0=g)`` (its initial estimate d₀ of the
  distance, the first steps' lr), ``dog(init_step=("learning_rate", g))`` (η₀ = g),
  ``dowg(init_estim_sq_dist=g²)`` (r₀ = g, the length of the first step), ``mechanize(adam(1),
  s_init=g)`` (the initial scale of Adam's unit-lr step);
* methods that take an lr but no initial step: ``cocob(learning_rate=g)`` (a multiplier of its step)
  and ``schedule_free_adamw(learning_rate=g)`` (schedule-free, not lr-free; its loss is taken at
  ``schedule_free_eval_params``).

The table (printed and in ``config.json``) gives, per method and problem, the worst and best final
value over the grid and the worst/best ratio; a non-finite final value counts as diverged (inf).
Outputs in ``--out``: ``meta_anchors.png``, ``final_values.npz`` and ``config.json``.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from matplotlib.figure import Figure

from dynopt.plotting import colour

from . import prepare, write_summary
from .step_size_insensitivity import digits

NAME = "meta_anchors"
BAYDIN_BETA = {"SGD-HD": 1e-3, "Adam-HD": 1e-7}  # gbaydin/hypergradient-descent, run.sh (logreg and mlp)
DYNOPT = ["MetaSGD", "MetaMomentum", "MetaNesterov", "MetaRMSprop", "MetaAdam"]
HD = ["SGD-HD", "Adam-HD"]
OPTAX = ["prodigy", "dog", "dowg", "mechanize", "cocob", "schedule_free"]


@dataclass
class Config:
    """The grid, the horizon, the batch and the problems."""

    steps: int = 1000
    batch: int = 64
    grid_size: int = 5
    lr_min: float = 1e-4
    lr_max: float = 1.0
    hidden: int = 32
    problems: tuple[str, ...] = ("softmax", "mlp")
    methods: list[str] = field(default_factory=lambda: DYNOPT + HD + OPTAX)
    backend: str = "jax"  # every method runs in JAX (optax's methods exist only there)
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """A quick configuration: 3 grid points, 100 steps, softmax regression only (compiling dominates)."""
        return cls(**{"grid_size": 3, "steps": 100, "problems": ("softmax",), **overrides})

    def lr_grid(self) -> np.ndarray:
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.grid_size)


def transform(method: str, g) -> Any:
    """The optax transformation of ``method`` at grid value ``g`` (a traced scalar; see the module docstring)."""
    import optax

    import dynopt.jax

    if method in DYNOPT:
        return getattr(dynopt.jax, "meta_" + method.removeprefix("Meta").lower())(g)
    if method in HD:
        factory = dynopt.jax.meta_sgd if method == "SGD-HD" else dynopt.jax.meta_adam
        return factory(g, rule="hd", meta_lr=BAYDIN_BETA[method] / g**2, trace_decay=0.0, initial_scale=1.0)
    contrib = optax.contrib
    return {
        "prodigy": lambda: contrib.prodigy(estim_lr0=g),
        "dog": lambda: contrib.dog(init_step=("learning_rate", g)),
        "dowg": lambda: contrib.dowg(init_estim_sq_dist=g * g),
        "mechanize": lambda: contrib.mechanize(optax.adam(1.0), s_init=g),
        "cocob": lambda: contrib.cocob(learning_rate=g),
        "schedule_free": lambda: contrib.schedule_free_adamw(learning_rate=g),
    }[method]()


def grid_text(method: str) -> str:
    """What the grid value g sets, for the table and the figure."""
    return {"SGD-HD": "α₀ = g, β = 1e-3", "Adam-HD": "α₀ = g, β = 1e-7", "prodigy": "estim_lr0 = g",
            "dog": "η₀ = g", "dowg": "r₀ = g", "mechanize": "s_init = g (adam(1))", "cocob": "learning_rate = g",
            "schedule_free": "adamw lr = g"}.get(method, "lr = g (defaults)")


# ------------------------------------------------------------------------------------- problems


def problem(cfg: Config, name: str) -> tuple[Callable, list[np.ndarray], dict[str, np.ndarray], float]:
    """``(loss(xp, params, x, y), params₀, data, L*)``: L* for softmax regression, 0 (unknown) for the MLP."""
    objective, minimum = digits()
    x, y = objective.consts
    l2 = 1.0 / len(x)
    data = {"x": x, "y": y}
    if name == "softmax":
        def loss(xp, params, xb, yb):
            w, b = params
            z = xb @ w + b
            return _cross_entropy(xp, z, yb) + 0.5 * l2 * xp.sum(w * w)
        return loss, [np.zeros((x.shape[1], 10)), np.zeros(10)], data, minimum
    rng = np.random.default_rng(1000 + cfg.seed)
    init = [rng.normal(size=(x.shape[1], cfg.hidden)) / math.sqrt(x.shape[1]), np.zeros(cfg.hidden),
            rng.normal(size=(cfg.hidden, 10)) / math.sqrt(cfg.hidden), np.zeros(10)]

    def mlp_loss(xp, params, xb, yb):
        w1, b1, w2, b2 = params
        z = xp.tanh(xb @ w1 + b1) @ w2 + b2
        return _cross_entropy(xp, z, yb) + 0.5 * l2 * (xp.sum(w1 * w1) + xp.sum(w2 * w2))
    return mlp_loss, init, data, 0.0


def _cross_entropy(xp, z, y):
    top = z.max(axis=1, keepdims=True)
    return xp.mean(xp.log(xp.sum(xp.exp(z - top), axis=1)) + top[:, 0] - xp.sum(y * z, axis=1))


def batches(cfg: Config, n: int) -> np.ndarray:
    """(steps, batch) example indices, each step's drawn without replacement, from ``--seed``."""
    rng = np.random.default_rng(cfg.seed)
    return np.stack([rng.choice(n, cfg.batch, replace=False) for _ in range(cfg.steps)])


def final_values(cfg: Config, method: str, loss: Callable, init, data, indices) -> np.ndarray:
    """The final full-data loss of ``method`` at every grid value (inf where it is not finite)."""
    import jax
    import jax.numpy as jnp
    import optax

    x, y = jnp.asarray(data["x"]), jnp.asarray(data["y"])

    def one(g):
        tx = transform(method, g)
        params = [jnp.asarray(p) for p in init]

        def step(carry, idx):
            params, state = carry
            grads = jax.grad(lambda p: loss(jnp, p, x[idx], y[idx]))(params)
            updates, state = tx.update(grads, state, params)
            return (optax.apply_updates(params, updates), state), None

        (params, state), _ = jax.lax.scan(step, (params, tx.init(params)), jnp.asarray(indices))
        if method == "schedule_free":
            params = optax.contrib.schedule_free_eval_params(state, params)
        return loss(jnp, params, x, y)

    values = np.asarray(jax.jit(jax.vmap(one))(jnp.asarray(cfg.lr_grid())))
    return np.where(np.isfinite(values), values, np.inf)


def run(cfg: Config) -> dict[str, dict[str, Any]]:
    """``{problem: {"finals": {method: values over the grid}, "minimum": L*, "table": {...}}}``."""
    from dynopt.trajectory import jax_x64

    results = {}
    with jax_x64():
        for name in cfg.problems:
            loss, init, data, minimum = problem(cfg, name)
            indices = batches(cfg, len(data["x"]))
            finals = {m: final_values(cfg, m, loss, init, data, indices) for m in cfg.methods}
            values = {m: (v - minimum if name == "softmax" else v) for m, v in finals.items()}
            results[name] = {"finals": values, "minimum": minimum, "table": {m: summarize(v, cfg.lr_grid()) for m, v in values.items()}}
    return results


def summarize(values: np.ndarray, grid: np.ndarray) -> dict[str, Any]:
    worst, best = int(np.argmax(values)), int(np.argmin(values))
    return {"worst": float(values[worst]), "worst_at": float(grid[worst]), "best": float(values[best]),
            "best_at": float(grid[best]), "ratio": float(values[worst] / values[best]),
            "diverged": int(np.sum(~np.isfinite(values)))}


# ------------------------------------------------------------------------------------- outputs

STYLE = {**{m: ("-", "o") for m in DYNOPT}, **{m: ("--", "s") for m in HD}, **{m: (":", "^") for m in OPTAX}}
TITLES = {"softmax": "softmax regression: final gap L(θ_N) − L*", "mlp": "MLP 64-32-10 (tanh): final loss L(θ_N)"}


def figure(cfg: Config, results: dict[str, dict]) -> Figure:
    grid = cfg.lr_grid()
    fig = Figure(figsize=(7.0 * len(results) + 3.0, 6.4), layout="constrained")
    axes = fig.subplots(1, len(results), squeeze=False).ravel()
    for ax, (name, res) in zip(axes, results.items()):
        finite = np.concatenate([v[np.isfinite(v)] for v in res["finals"].values()])
        top = float(finite.max()) * 3 if finite.size else 10.0
        for i, method in enumerate(cfg.methods):
            values = res["finals"][method]
            ls, marker = STYLE[method]
            ax.plot(grid, np.where(np.isfinite(values), values, top), ls=ls, marker=marker, color=colour(i), lw=1.8, ms=5,
                    label=f"{method} ({grid_text(method)}): worst {res['table'][method]['worst']:.3g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("grid value g: the initial step size each method is given (log)")
        ax.set_ylabel(TITLES[name].split(": ")[1] + " (log; diverged drawn at the top)")
        ax.set_title(TITLES[name], fontsize="medium")
        ax.grid(True, which="major", alpha=0.3)
    axes[-1].legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                    title="method (what g sets): worst over the grid", title_fontsize="small")
    fig.suptitle("Insensitivity to the initial step: dynopt's meta step (defaults, solid), hypergradient descent "
                 "(dashed), optax.contrib (dotted)", fontsize="large")
    fig.supxlabel(f"digits (n = 1797), minibatches of {cfg.batch}, {cfg.steps} steps, λ = 1/n, the same batches "
                  f"for every method; grid {cfg.grid_size} log-spaced values in [{cfg.lr_min:g}, {cfg.lr_max:g}]. "
                  "Every other argument at its library default.", x=0.01, ha="left", fontsize=8.5)
    return fig


def format_table(cfg: Config, results: dict[str, dict]) -> str:
    lines = [f"{'problem':8s} {'method':14s} {'grid value sets':22s} {'worst':>10s} {'at g':>8s} {'best':>10s} {'at g':>8s} {'worst/best':>10s}"]
    for name, res in results.items():
        for method in cfg.methods:
            row = res["table"][method]
            lines.append(f"{name:8s} {method:14s} {grid_text(method):22s} {row['worst']:10.3g} {row['worst_at']:8.0e} "
                         f"{row['best']:10.3g} {row['best_at']:8.0e} {row['ratio']:10.3g}")
    return "\n".join(lines)


def save(cfg: Config, results: dict[str, dict], out: Path, seconds: float) -> list[Path]:
    arrays: dict[str, np.ndarray] = {"lr_grid": cfg.lr_grid()}
    for name, res in results.items():
        arrays[f"{name}/minimum"] = np.array(res["minimum"])
        for method, values in res["finals"].items():
            arrays[f"{name}/{method}"] = values
    np.savez_compressed(out / "final_values.npz", **arrays)
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "grid_value_sets": {m: grid_text(m) for m in cfg.methods},
        "baydin_beta": BAYDIN_BETA,
        "problems": {name: {"title": TITLES[name], "minimum": res["minimum"], "table": res["table"]} for name, res in results.items()},
        "seconds": round(seconds, 2),
    }
    return [*write_summary(out, summary, NAME, figure(cfg, results)), out / "final_values.npz"]


def main(argv: list[str] | None = None) -> dict[str, dict]:
    cfg, out = prepare(NAME, __doc__, Config, argv)
    cfg.backend = "jax"  # whatever --backend says: optax's methods exist only in JAX
    start = time.perf_counter()
    results = run(cfg)
    written = save(cfg, results, out, time.perf_counter() - start)
    print(f"{NAME}: wrote {len(written)} files to {out} in {time.perf_counter() - start:.1f} s")
    print(format_table(cfg, results))
    return results


if __name__ == "__main__":
    main()
