"""Distribution shift: after the target of a streaming regression jumps, a meta-learned step size grows again.

Linear regression in d = 20 dimensions on a stream of minibatches (16 examples per step, x ~ N(0, I),
y = w*·x + 0.5·ε, all drawn from ``--seed``). The true weights w* (each ~ N(0, I/d), so ‖w*‖ ≈ 1)
switch to new ones halfway. Four optimizers start from w = 0 with the same lr = 0.01:

* SGD at the fixed lr;
* SGD with a cosine schedule lr_k = lr·(1 + cos(πk/T))/2 over the whole run (it has decayed to
  lr/2 at the switch and cannot know that the problem changed);
* MetaSGD, rule "hd" (Baydin et al.'s hypergradient descent, α_t = α_{t−1} + β g_t·g_{t−1}), with
  Baydin's β = 1e-3 for SGD-HD, i.e. ``meta_lr`` = β/lr² = 10 in dynopt's units, and Baydin's
  one-step hypergradient from α₀ = lr (``trace_decay=0``, ``initial_scale=1``);
* MetaSGD with the library defaults (rule "eg": exponentiated gradient on the scale, cosine
  alignment against the trace of the steps, s₀ = 0.01, so its first ~100 steps are a warm-up).

The other meta hyperparameters keep their defaults (all of them are written on the figure and in
``config.json``). The first panel is the population
excess risk ½‖w − w*‖² (= E[½(x·w − y)²] − σ²/2 for x ~ N(0, I)) against the target in force; the
second the effective step lr_k·s_k of each step (s = 1 without a meta scale). The table (printed
and in ``config.json``) gives the effective step of the last step before the switch, and the
minimum and maximum over the 100 steps after it: whether an adapted step grows again once
consecutive gradients align with the new target, which no schedule can do.

Outputs in ``--out``: ``distribution_shift.png``, ``curves.npz`` (excess risk and effective step
per step and method) and ``config.json``.
"""

from __future__ import annotations

import functools
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from dynopt.plotting import colour

from . import prepare, write_summary
from .step_size_insensitivity import Objective, hyper_text, meta_hyper, optimize

NAME = "distribution_shift"


@dataclass
class Config:
    """The stream (dimension, batch, noise, length, switch) and the optimizers' settings."""

    dim: int = 20
    batch: int = 16
    noise: float = 0.5
    steps: int = 1000
    switch: int = 500  # steps 1..switch see the first target, the rest the second
    window: int = 100  # steps after the switch over which the re-growth is measured
    lr: float = 0.01
    hd_beta: float = 1e-3  # Baydin's β; dynopt's meta_lr for rule "hd" is β / lr²
    eg_meta_lr: float | None = None  # None: the library default
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """A quick configuration: 600 steps, switch at 300 (after the eg warm-up from s₀)."""
        return cls(**{"steps": 600, "switch": 300, **overrides})

    def methods(self) -> dict[str, tuple[str, dict[str, Any], bool]]:
        """label -> (optimizer, hyperparameters, cosine schedule?)."""
        return {
            "SGD, fixed lr": ("SGD", {"lr": self.lr}, False),
            "SGD, cosine schedule": ("SGD", {"lr": self.lr}, True),
            "MetaSGD, rule 'hd'": ("MetaSGD", {"lr": self.lr, "rule": "hd", "meta_lr": self.hd_beta / self.lr**2,
                                               "trace_decay": 0.0, "initial_scale": 1.0}, False),
            "MetaSGD, rule 'eg'": ("MetaSGD", {"lr": self.lr, "rule": "eg",
                                               **({} if self.eg_meta_lr is None else {"meta_lr": self.eg_meta_lr})}, False),
        }

    def budget_text(self) -> str:
        lines = [
            f"Stream: d = {self.dim}, minibatch {self.batch}, x ~ N(0, I), y = w*·x + {self.noise}·ε, w* ~ N(0, I/d) switching "
            f"after step {self.switch} of {self.steps}; seed {self.seed}; every optimizer starts at w = 0 with lr = {self.lr}.",
            f"Cosine: lr·(1 + cos(πk/{self.steps}))/2. MetaSGD 'hd': meta_lr = β/lr² (Baydin's β = {self.hd_beta:g}), s₀ = 1. "
            f"Shaded: the {self.window} steps after the switch.",
        ]
        for label, (optimizer, hyper, _) in self.methods().items():
            if optimizer == "MetaSGD":  # every meta hyperparameter that applies, defaults included
                skip = ("gain_range",) if hyper["rule"] == "eg" else ("gain_range", "shrink_lr")
                lines.append(f"{label}: {hyper_text(meta_hyper({k: v for k, v in hyper.items() if k != 'lr'}), skip)}")
        return "\n".join(lines)


def cosine(xp, k, total: int):
    """The cosine schedule's factor after k steps of ``total``."""
    return 0.5 * (1.0 + xp.cos(math.pi * k / total))


def _loss(xp, params, consts, batch):
    (w,), (x, y, _) = params, batch
    residual = x @ w - y
    return 0.5 * xp.sum(residual * residual) / x.shape[0]


def _grad(params, consts, batch):
    (w,), (x, y, _) = params, batch
    return [x.T @ (x @ w - y) / x.shape[0]]


def _excess(xp, params, consts, batch):
    (w,), (_, _, target) = params, batch
    return 0.5 * xp.sum((w - target) * (w - target))


def stream(cfg: Config) -> tuple[Objective, np.ndarray]:
    """The minibatch stream as an :class:`Objective` (metric: excess risk) and the two targets."""
    rng = np.random.default_rng(cfg.seed)
    targets = rng.normal(size=(2, cfg.dim)) / math.sqrt(cfg.dim)
    per_step = targets[(np.arange(cfg.steps) >= cfg.switch).astype(int)]
    x = rng.normal(size=(cfg.steps, cfg.batch, cfg.dim))
    y = np.einsum("tbd,td->tb", x, per_step) + cfg.noise * rng.normal(size=(cfg.steps, cfg.batch))
    return Objective(_loss, _grad, (np.zeros(cfg.dim),), batches=(x, y, per_step), metric=_excess), targets


def run(cfg: Config, progress=None) -> dict[str, dict[str, np.ndarray]]:
    """Per method: ``excess`` (before each step) and ``step`` (the effective step lr_k·s_k of each step)."""
    objective, _ = stream(cfg)
    factor = cosine(np, np.arange(cfg.steps), cfg.steps)
    schedule = functools.partial(cosine, total=cfg.steps)
    curves = {}
    for label, (optimizer, hyper, scheduled) in cfg.methods().items():
        result = optimize(optimizer, hyper, objective, cfg.steps, cfg.backend, schedule=schedule if scheduled else None)
        lrs = hyper["lr"] * (factor if scheduled else np.ones(cfg.steps))
        curves[label] = {"excess": result.metrics, "step": lrs * result.scales}
        if progress is not None:
            progress.update()
    return curves


def regrowth(cfg: Config, curves: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, float]]:
    """Effective step of the last step before the switch, and its min and max over the window after it."""
    table = {}
    for label, c in curves.items():
        before = float(c["step"][cfg.switch - 1])  # step number `switch`, the last one on the old target
        after = c["step"][cfg.switch: cfg.switch + cfg.window]
        table[label] = {
            "step_before_switch": before,
            "min_after_switch": float(after.min()),
            "max_after_switch": float(after.max()),
            "max_after_over_before": float(after.max() / before),
            "excess_before_switch": float(c["excess"][cfg.switch - 1]),
            "excess_at_end": float(c["excess"][-1]),
        }
    return table


def figure(cfg: Config, curves: dict[str, dict[str, np.ndarray]]) -> Figure:
    fig = Figure(figsize=(11.5, 8.4), layout="constrained")
    ax_loss, ax_step = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    steps = np.arange(cfg.steps)
    for i, (label, c) in enumerate(curves.items()):
        ax_loss.plot(steps, c["excess"], color=colour(i), lw=1.2, alpha=0.9, label=label)
        ax_step.plot(steps + 1, c["step"], color=colour(i), lw=1.8, label=label)
    for ax in (ax_loss, ax_step):
        ax.axvline(cfg.switch, color="0.25", ls="--", lw=1.2)
        ax.axvspan(cfg.switch, cfg.switch + cfg.window, color="0.85", alpha=0.5, lw=0)
        ax.set_yscale("log")
        ax.grid(True, which="major", alpha=0.3)
    ax_loss.annotate("target switches", (cfg.switch, 1.0), xycoords=("data", "axes fraction"), xytext=(4, -4),
                     textcoords="offset points", va="top", fontsize=9)
    ax_loss.set_ylabel("excess risk ½‖w − w*‖² (log)")
    ax_loss.set_title("Population excess risk against the target in force", fontsize="medium")
    adapted = min(float(curves[label]["step"].min()) for label, (_, _, scheduled) in cfg.methods().items() if not scheduled)
    ax_step.set_ylim(bottom=min(cfg.lr / 5, adapted / 2))  # every unscheduled step fits; the cosine one may leave
    if curves_min(curves) < ax_step.get_ylim()[0]:
        ax_step.text(0.01, 0.03, f"the cosine step leaves the panel and reaches {curves_min(curves):.0e} at the last step",
                     transform=ax_step.transAxes, ha="left", va="bottom", fontsize=8, color="0.3")
    ax_step.set_ylabel("effective step lr_k·s_k (log)")
    ax_step.set_xlabel("step k")
    ax_step.set_title("Effective step size", fontsize="medium")
    ax_loss.legend(loc="lower left", fontsize="small")
    fig.suptitle("Distribution shift: excess risk and effective step before and after the target switches", fontsize="large")
    fig.supxlabel(cfg.budget_text(), x=0.01, ha="left", fontsize=8.5)
    return fig


def curves_min(curves: dict[str, dict[str, np.ndarray]]) -> float:
    return float(min(c["step"].min() for c in curves.values()))


def format_table(cfg: Config, table: dict[str, dict[str, float]]) -> str:
    lines = [f"{'method':22s} {'step before':>11s} {f'min +{cfg.window}':>10s} {f'max +{cfg.window}':>10s} "
             f"{'max/before':>10s} {'excess before':>13s} {'excess end':>10s}"]
    for label, row in table.items():
        lines.append(f"{label:22s} {row['step_before_switch']:11.3e} {row['min_after_switch']:10.3e} "
                     f"{row['max_after_switch']:10.3e} {row['max_after_over_before']:10.3f} "
                     f"{row['excess_before_switch']:13.2e} {row['excess_at_end']:10.2e}")
    return "\n".join(lines)


def save(cfg: Config, curves: dict, table: dict, out: Path, seconds: float) -> list[Path]:
    arrays = {"step": np.arange(cfg.steps)}
    for label, c in curves.items():
        arrays[f"{label}/excess"] = c["excess"]
        arrays[f"{label}/effective_step"] = c["step"]
    np.savez_compressed(out / "curves.npz", **arrays)
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "methods": {label: {"optimizer": o, "cosine_schedule": s,
                            "hyper": {**h, **(meta_hyper(h) if o.startswith("Meta") else {})}}  # defaults included
                    for label, (o, h, s) in cfg.methods().items()},
        "definitions": {
            "effective_step": "lr_k·s_k of step k (s = 1 without a meta scale)",
            "step_before_switch": f"the effective step of step {cfg.switch}, the last on the first target",
            "min/max_after_switch": f"over steps {cfg.switch + 1}..{cfg.switch + cfg.window}",
            "excess": "½‖w − w*‖² before the step, w* the target in force",
        },
        "regrowth": table,
        "seconds": round(seconds, 2),
    }
    return [*write_summary(out, summary, NAME, figure(cfg, curves)), out / "curves.npz"]


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    cfg, out = prepare(NAME, __doc__, Config, argv)

    start = time.perf_counter()
    with tqdm(total=len(cfg.methods()), desc=NAME, unit="run") as progress:
        curves = run(cfg, progress)
    table = regrowth(cfg, curves)
    written = save(cfg, curves, table, out, time.perf_counter() - start)
    print(f"{NAME}: wrote {len(written)} files to {out} in {time.perf_counter() - start:.1f} s")
    print(format_table(cfg, table))
    return table


if __name__ == "__main__":
    main()
