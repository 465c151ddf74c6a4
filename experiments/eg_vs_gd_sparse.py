"""Kivinen–Warmuth: online EG± beats online GD on sparse targets, GD wins on dense ones.

Online linear regression, one example per step: x_t ∈ {−1, +1}^n uniform (n = 128), the
prediction ŷ_t = w_t·x_t is made before y_t = w*·x_t + 0.01·ε_t is revealed, and the learner takes
one step on ½(ŷ_t − y_t)². w* has k nonzero entries ±1/k (random support and signs), so ‖w*‖₁ = 1
for every k while ‖w*‖₂² = 1/k. The score is the cumulative squared loss Σ_t (ŷ_t − y_t)² after
T = 1000 steps, against k = 1 … n.

* GD: ``SGD`` from w = 0 (Widrow–Hoff).
* EG±: ``EG(variant="signed_simplex", total=U)`` with U = 1 = ‖w*‖₁, from w = 0 (all 2n weights
  w± equal to U/2n after the first normalization). This is Kivinen and Warmuth's EG± with the
  bound U on the comparator's ℓ1 norm that their analysis assumes known; "signed" (EGU±) would
  trade U for an init_scale whose right value depends on k, a second knob GD does not have.
  Each problem is one row of a (rows × n) parameter and the normalization runs along
  ``axis=1``, so every row is an independent EG± learner.

Equal budget: each method gets the same log-spaced lr grid (31 values in [1e-4, 1e2], 5 per decade); for each
k, the lr with the lowest mean cumulative loss on 4 tuning streams (seeds ``--seed`` + 1000 …) is
kept, and the reported score is the mean over 4 separate evaluation streams (seeds ``--seed`` …)
at that lr. All k of one stream share the inputs x_t. The crossover is where the mean scores of
GD and EG± cross (geometric interpolation between the two grid values of k around it). For
reference the figure marks k = n/ln(2n), where the bound terms ‖w*‖₂²·max‖x‖₂² = n/k (GD) and
U²·max‖x‖∞²·ln(2n) = ln 2n (EG±) are equal, constants aside.

Outputs in ``--out``: ``eg_vs_gd_sparse.png``, ``scores.npz`` (scores per k, seed and lr) and
``config.json`` (configuration, budget, chosen lrs, scores and the crossover).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from dynopt.plotting import colour

from . import prepare, write_summary
from .step_size_insensitivity import Objective, optimize

NAME = "eg_vs_gd_sparse"
TUNING_OFFSET = 1000  # tuning streams use seeds seed + 1000 + i, evaluation streams seed + i


@dataclass
class Config:
    """The stream (n, T, noise, the k grid), the lr grid and the number of streams."""

    n: int = 128
    steps: int = 1000
    noise: float = 0.01
    ks: tuple[int, ...] = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128)
    streams: int = 4  # per role: tuning and evaluation
    grid_size: int = 31
    lr_min: float = 1e-4
    lr_max: float = 1e2
    eg: dict[str, Any] = field(default_factory=lambda: {"variant": "signed_simplex", "total": 1.0, "axis": 1})
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """A quick configuration: n = 64, T = 500, 7 values of k, 2 streams, one lr per decade."""
        return cls(**{"n": 64, "steps": 500, "ks": (1, 2, 4, 8, 16, 32, 64), "streams": 2, "grid_size": 7, **overrides})

    def lr_grid(self) -> np.ndarray:
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.grid_size)

    def methods(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {"GD": ("SGD", {}), "EG±": ("EG", dict(self.eg))}

    def budget_text(self) -> str:
        grid = f"{self.grid_size} log-spaced lrs in [{self.lr_min:.0e}, {self.lr_max:.0e}]"
        eg = ", ".join(f"{k}={v!r}" if isinstance(v, str) else f"{k}={v}" for k, v in self.eg.items())
        return (
            f"Online regression, n = {self.n}, x ∈ {{±1}}^n, y = w*·x + {self.noise}·ε, w* with k entries ±1/k (‖w*‖₁ = 1), "
            f"T = {self.steps} steps, one example per step, from w = 0; the noise alone costs T·σ² = {self.steps * self.noise**2:.2g}.\n"
            f"Equal budget: per k, each method keeps the best of the same {grid} on {self.streams} tuning streams; "
            f"scores are the mean over {self.streams} other streams (band: min–max).\n"
            f"GD = SGD; EG± = EG({eg}), U = ‖w*‖₁. Cumulative loss Σ(ŷ_t − y_t)², ŷ_t predicted before y_t is revealed."
        )


def _loss(xp, params, consts, batch):
    (w,), (assign,), (x, y) = params, consts, batch
    residual = xp.sum(w * (assign @ x), axis=1) - y
    return 0.5 * xp.sum(residual * residual)


def _grad(params, consts, batch):
    (w,), (assign,), (x, y) = params, consts, batch
    rows = assign @ x
    return [(np.sum(w * rows, axis=1) - y)[:, None] * rows]


def _online_loss(xp, params, consts, batch):
    (w,), (assign,), (x, y) = params, consts, batch
    residual = xp.sum(w * (assign @ x), axis=1) - y
    return residual * residual


def streams(cfg: Config, seeds: list[int]) -> tuple[Objective, np.ndarray]:
    """Rows (k, stream) as one :class:`Objective` (metric: per-row squared loss before each step)
    and the rows' targets. Row r = i·len(ks) + j is k = ks[j] on stream seeds[i]."""
    rows, n, width = len(seeds) * len(cfg.ks), cfg.n, len(cfg.ks)
    targets = np.zeros((rows, n))
    x = np.empty((cfg.steps, len(seeds), n))
    y = np.empty((cfg.steps, rows))
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        block = slice(i * width, (i + 1) * width)
        for j, k in enumerate(cfg.ks):
            support = rng.choice(n, size=k, replace=False)
            targets[i * width + j, support] = rng.choice([-1.0, 1.0], size=k) / k
        x[:, i] = rng.choice([-1.0, 1.0], size=(cfg.steps, n))
        y[:, block] = x[:, i] @ targets[block].T + cfg.noise * rng.normal(size=(cfg.steps, width))
    assign = np.repeat(np.eye(len(seeds)), width, axis=0)  # row -> its stream's inputs
    objective = Objective(_loss, _grad, (np.zeros((rows, n)),), (assign,), (x, y), metric=_online_loss)
    return objective, targets


def cumulative_losses(cfg: Config, objective: Objective, method: str, progress=None) -> np.ndarray:
    """(grid_size, streams, ks) cumulative squared loss at T, +inf where a run overflowed."""
    optimizer, hyper = cfg.methods()[method]
    out = []
    for lr in cfg.lr_grid():
        run = optimize(optimizer, {"lr": float(lr), **hyper}, objective, cfg.steps, cfg.backend)
        with np.errstate(all="ignore"):  # a diverged run's losses overflow (torch, JAX) or are NaN (NumPy)
            total = run.metrics.sum(axis=0)
        out.append(np.where(np.isfinite(total), total, np.inf).reshape(-1, len(cfg.ks)))
        if progress is not None:
            progress.update()
    return np.array(out)


def crossover(ks: np.ndarray, gd: np.ndarray, eg: np.ndarray) -> dict[str, Any]:
    """Where log(GD/EG) changes sign along k (first change: ``k``; every change: ``all``)."""
    gap = np.log(gd) - np.log(eg)  # > 0: EG± better
    changes = []
    for j in range(len(ks) - 1):
        if gap[j] > 0 >= gap[j + 1] or gap[j] <= 0 < gap[j + 1]:
            t = gap[j] / (gap[j] - gap[j + 1])
            changes.append({"between": [int(ks[j]), int(ks[j + 1])],
                            "k": float(math.exp(math.log(ks[j]) + t * (math.log(ks[j + 1]) - math.log(ks[j])))),
                            "eg_better_below": bool(gap[j] > 0)})
    first = changes[0] if changes else None
    return {"k": first["k"] if first else None, "between": first["between"] if first else None, "all": changes,
            "eg_better_at_k_min": bool(gap[0] > 0), "gd_better_at_k_max": bool(gap[-1] < 0)}


def run(cfg: Config, progress=None) -> dict[str, Any]:
    """Tune on the tuning streams, score on the evaluation streams; returns every array and the summary."""
    tune, _ = streams(cfg, [cfg.seed + TUNING_OFFSET + i for i in range(cfg.streams)])
    evaluate, _ = streams(cfg, [cfg.seed + i for i in range(cfg.streams)])
    grid, ks = cfg.lr_grid(), np.array(cfg.ks)
    results: dict[str, Any] = {"tuning": {}, "evaluation": {}, "chosen_lr": {}, "scores": {}}
    for method in cfg.methods():
        tuning = cumulative_losses(cfg, tune, method, progress)  # (grid, streams, ks)
        best = np.argmin(tuning.mean(axis=1), axis=0)  # per k; ties go to the smaller lr
        evaluation = cumulative_losses(cfg, evaluate, method, progress)
        results["tuning"][method] = tuning
        results["evaluation"][method] = evaluation
        results["chosen_lr"][method] = grid[best]
        results["scores"][method] = evaluation[best, :, np.arange(len(ks))].T  # (streams, ks)
    gd, eg = (results["scores"][m].mean(axis=0) for m in ("GD", "EG±"))
    results["crossover"] = crossover(ks, gd, eg)
    results["noise_floor"] = float(cfg.steps * cfg.noise**2)
    return results


def figure(cfg: Config, results: dict[str, Any]) -> Figure:
    ks = np.array(cfg.ks)
    fig = Figure(figsize=(13.0, 5.8), layout="constrained")
    ax, ax_lr = fig.subplots(1, 2, width_ratios=(3, 2))
    for i, method in enumerate(cfg.methods()):
        scores = results["scores"][method]
        ax.plot(ks, scores.mean(axis=0), color=colour(i), marker="os"[i], lw=2, label=f"{method} (mean of {cfg.streams} streams)")
        ax.fill_between(ks, scores.min(axis=0), scores.max(axis=0), color=colour(i), alpha=0.2, lw=0)
        ax_lr.plot(ks, results["chosen_lr"][method], color=colour(i), marker="os"[i], lw=1.5, label=method)
    reference = cfg.n / math.log(2 * cfg.n)
    ax.axvline(reference, color="0.5", ls=":", lw=1.2, label=f"k = n/ln(2n) ≈ {reference:.1f} (bounds cross)")
    cross = results["crossover"]
    if cross["k"] is not None:
        ax.axvline(cross["k"], color="0.15", ls="--", lw=1.2, label=f"measured crossover k ≈ {cross['k']:.1f}")
    for axis in (ax, ax_lr):
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xticks(ks, [str(k) for k in ks], fontsize=8)
        axis.minorticks_off()
        axis.set_xlabel("number of nonzero entries k of w* (log)")
        axis.grid(True, which="major", alpha=0.3)
    ax.set_ylabel(f"cumulative squared loss at T = {cfg.steps} (log)")
    ax.set_title(f"Online regression, n = {cfg.n}: sparse targets favour EG±, dense ones GD", fontsize="medium")
    ax.legend(fontsize="small", loc="upper right")
    grid = cfg.lr_grid()
    ax_lr.set_ylim(grid[0] / 2, grid[-1] * 2)
    for edge in (grid[0], grid[-1]):
        ax_lr.axhline(edge, color="0.6", lw=0.8, ls=":")
    ax_lr.set_ylabel("tuned lr (dotted: ends of the grid)")
    ax_lr.set_title("lr chosen on the tuning streams", fontsize="medium")
    ax_lr.legend(fontsize="small")
    fig.suptitle("Exponentiated gradient (EG±) against gradient descent (Kivinen & Warmuth 1997)", fontsize="large")
    fig.supxlabel(cfg.budget_text(), x=0.01, ha="left", fontsize=8.5)
    return fig


def format_table(cfg: Config, results: dict[str, Any]) -> str:
    lines = [f"{'k':>4s} {'GD lr':>8s} {'GD loss':>9s} {'EG± lr':>8s} {'EG± loss':>9s}  better"]
    gd, eg = results["scores"]["GD"].mean(axis=0), results["scores"]["EG±"].mean(axis=0)
    for j, k in enumerate(cfg.ks):
        lines.append(f"{k:4d} {results['chosen_lr']['GD'][j]:8.2g} {gd[j]:9.3f} {results['chosen_lr']['EG±'][j]:8.2g} "
                     f"{eg[j]:9.3f}  {'EG±' if eg[j] < gd[j] else 'GD'}")
    cross = results["crossover"]
    if cross["k"] is not None:
        lines.append(f"crossover: k ≈ {cross['k']:.1f} (between k = {cross['between'][0]} and {cross['between'][1]}; "
                     f"{len(cross['all'])} sign change(s)); n/ln(2n) = {cfg.n / math.log(2 * cfg.n):.1f}")
    else:
        lines.append("crossover: none on this k grid")
    return "\n".join(lines)


def save(cfg: Config, results: dict[str, Any], out: Path, seconds: float) -> list[Path]:
    arrays: dict[str, np.ndarray] = {"ks": np.array(cfg.ks), "lr_grid": cfg.lr_grid()}
    for method in cfg.methods():
        arrays[f"{method}/scores"] = results["scores"][method]
        arrays[f"{method}/chosen_lr"] = results["chosen_lr"][method]
        arrays[f"{method}/tuning"] = results["tuning"][method]
        arrays[f"{method}/evaluation"] = results["evaluation"][method]
    np.savez_compressed(out / "scores.npz", **arrays)
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "methods": {m: {"optimizer": o, "hyper": h} for m, (o, h) in cfg.methods().items()},
        "budget": {
            "lr_grid": cfg.lr_grid().tolist(),
            "runs_per_method_and_k": cfg.grid_size,
            "tuning_seeds": [cfg.seed + TUNING_OFFSET + i for i in range(cfg.streams)],
            "evaluation_seeds": [cfg.seed + i for i in range(cfg.streams)],
            "criterion": "per k, lowest mean cumulative loss at T on the tuning streams (ties: smaller lr)",
            "score": "Σ_t (ŷ_t − y_t)², ŷ_t = w_t·x_t before the update, mean over the evaluation streams",
        },
        "chosen_lr": {m: dict(zip(map(str, cfg.ks), v.tolist())) for m, v in results["chosen_lr"].items()},
        "scores": {m: dict(zip(map(str, cfg.ks), v.mean(axis=0).tolist())) for m, v in results["scores"].items()},
        "crossover": results["crossover"],
        "bound_crossover_n_over_ln_2n": cfg.n / math.log(2 * cfg.n),
        "noise_floor": results["noise_floor"],
        "seconds": round(seconds, 2),
    }
    return [*write_summary(out, summary, NAME, figure(cfg, results)), out / "scores.npz"]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, out = prepare(NAME, __doc__, Config, argv)

    start = time.perf_counter()
    with tqdm(total=2 * len(cfg.methods()) * cfg.grid_size, desc=NAME, unit="run") as progress:
        results = run(cfg, progress)
    written = save(cfg, results, out, time.perf_counter() - start)
    print(f"{NAME}: wrote {len(written)} files to {out} in {time.perf_counter() - start:.1f} s")
    print(format_table(cfg, results))
    return results


if __name__ == "__main__":
    main()
