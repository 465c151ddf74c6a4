"""The zoo on toy losses: SGD, Momentum, Nesterov, RMSprop and Adam, fairly tuned, with their ODE flows.

Fair tuning: every optimizer gets the same budget, the same log-spaced grid of learning rates,
and keeps the lr whose final loss after the same number of steps is lowest (a diverged run
counts as +inf). The other hyperparameters are fixed and stated on every figure. The chosen
runs are drawn over the loss contours with their reference ODE flows (dashed), on the same
time grid t_k = k·h (:func:`dynopt.ode.times`).

Outputs in ``--out``: ``<loss>.png`` per loss, ``loss_vs_time.png``, ``race_<loss>.gif``,
``trajectories.npz`` (every chosen path, its flow, and the tuning table) and ``config.json``
(the configuration, the budget and the chosen hyperparameters). The runs are deterministic
(fixed starts, exact gradients); ``--seed`` seeds the RNGs anyway, for uniformity.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from tqdm.auto import tqdm

from dynopt import REGISTRY
from dynopt.losses import LOSSES
from dynopt.plotting import colour, contour_trajectories, legend_extras, loss_curves, race_animation
from dynopt.trajectory import Trajectory, run

from . import prepare, write_summary

NAME = "zoo_trajectories"


@dataclass
class Config:
    """What to run. ``lr_min``/``lr_max``/``grid_size`` define the shared lr grid (the budget).

    Rastrigin is in :data:`dynopt.losses.LOSSES` but not here: with final-loss tuning a chaotic
    large-lr SGD run wins by luck, and the figure says nothing about the ODE view.
    """

    losses: tuple[str, ...] = ("quadratic", "rosenbrock", "himmelblau", "saddle", "beale")
    optimizers: tuple[str, ...] = ("SGD", "Momentum", "Nesterov", "RMSprop", "Adam")
    steps: int = 300
    grid_size: int = 16
    lr_min: float = 1e-4
    lr_max: float = 10**0.5
    fixed: dict[str, dict] = field(
        default_factory=lambda: {
            "SGD": {},
            "Momentum": {"momentum": 0.9},
            "Nesterov": {"momentum": 0.9},
            "RMSprop": {"alpha": 0.99, "eps": 1e-8},
            "Adam": {"betas": (0.9, 0.999), "eps": 1e-8},
        }
    )
    race_loss: str = "rosenbrock"
    backend: str = "numpy"
    seed: int = 0

    @classmethod
    def fast(cls, **overrides) -> "Config":
        """A quick configuration: four losses, 8 learning rates, 150 steps."""
        return cls(**{"losses": ("quadratic", "rosenbrock", "himmelblau", "saddle"), "steps": 150, "grid_size": 8, **overrides})

    def lr_grid(self) -> np.ndarray:
        return np.logspace(math.log10(self.lr_min), math.log10(self.lr_max), self.grid_size)

    def budget_text(self) -> str:
        fixed = "; ".join(f"{name} " + ", ".join(f"{k}={v}" for k, v in hp.items()) for name, hp in self.fixed.items() if hp)
        return (
            f"Fair tuning: each optimizer picks the lr with the lowest final loss from the same {self.grid_size} "
            f"log-spaced values in [{self.lr_min:.0e}, {self.lr_max:.3g}], horizon {self.steps} steps (diverged = +inf).\n"
            f"Fixed: {fixed}.\nSolid: discrete iterates; dashed: the spec's ODE flow sampled at the same times t_k = k·h."
        )


def tune(cfg: Config, loss: str, optimizer: str, progress) -> tuple[Trajectory, np.ndarray]:
    """The best run over the lr grid (by final loss) and the final loss of every grid point."""
    spec, grid = REGISTRY[optimizer], cfg.lr_grid()
    finals = []
    for lr in grid:
        traj = run(spec, {"lr": float(lr), **cfg.fixed[optimizer]}, loss, cfg.steps, with_flow=False, backend=cfg.backend)
        finals.append(traj.final_loss)
        progress.update()
    finals = np.array(finals)
    best = float(grid[int(np.argmin(finals))])  # ties go to the smaller lr
    chosen = run(spec, {"lr": best, **cfg.fixed[optimizer]}, loss, cfg.steps, with_flow=True, backend=cfg.backend)
    progress.update()
    return chosen, finals


def _legend_handles(trajs: list[Trajectory], colors: list[str]) -> list[Line2D]:
    handles = [Line2D([], [], color=c, lw=2, label=t.name) for t, c in zip(trajs, colors, strict=True)]
    return handles + legend_extras(True)


def trajectory_figure(cfg: Config, name: str, trajs: list[Trajectory]) -> Figure:
    """All tuned paths on one panel, then one panel per optimizer with its ODE flow."""
    loss, colors = LOSSES[name], [colour(i) for i in range(len(trajs))]
    cols = 3
    rows = math.ceil((len(trajs) + 1) / cols)
    fig = Figure(figsize=(5.0 * cols + 1.8, 4.3 * rows + 1.0), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    contour_trajectories(loss, trajs, ax=axes[0], show_flow=False, legend=False, colors=colors,
                         title="all optimizers (iterates only)")
    for ax, traj, color in zip(axes[1:], trajs, colors, strict=False):  # spare axes are hidden
        note = f", diverged at step {traj.diverged_at}" if traj.diverged_at is not None else ""
        title = f"{traj.name}: lr={traj.hyper['lr']:.3g}, h={traj.times[1]:.3g}, t_end={traj.times[-1]:.3g}{note}"
        contour_trajectories(loss, [traj], ax=ax, legend=False, colors=[color], title=title)
    for ax in axes[len(trajs) + 1:]:
        ax.set_visible(False)
    fig.legend(handles=_legend_handles(trajs, colors), loc="outside right upper")
    fig.suptitle(f"{loss.title}: tuned discrete iterates (solid) and their ODE flows (dashed)", fontsize="x-large")
    _footnote(fig, cfg)
    return fig


def loss_figure(cfg: Config, results: dict[str, list[Trajectory]]) -> Figure:
    """L − L* against ODE time, one panel per loss."""
    cols = 2 if len(results) <= 4 else 3
    rows = math.ceil(len(results) / cols)
    fig = Figure(figsize=(5.5 * cols + 1.5, 3.9 * rows + 1.2), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, trajs) in zip(axes, results.items(), strict=False):  # spare axes are hidden
        loss_curves(trajs, x="time", loss=LOSSES[name], ax=ax, legend=False, title=LOSSES[name].title)
    for ax in axes[len(results):]:
        ax.set_visible(False)
    first = next(iter(results.values()))
    colors = [colour(i) for i in range(len(first))]
    handles = [Line2D([], [], color=c, lw=2, label=t.name) for t, c in zip(first, colors, strict=True)]
    handles.append(Line2D([], [], color="0.2", ls="--", label="ODE flow"))
    fig.legend(handles=handles, loc="outside right upper")
    fig.suptitle("Loss gap against ODE time t = k·h, lr tuned per optimizer and loss", fontsize="x-large")
    _footnote(fig, cfg)
    return fig


def _footnote(fig: Figure, cfg: Config) -> None:
    fig.supxlabel(cfg.budget_text(), x=0.01, ha="left", fontsize=9)


def save_figures(cfg: Config, results: dict[str, list[Trajectory]], out: Path) -> list[Path]:
    written = []
    for name, trajs in results.items():
        written.append(out / f"{name}.png")
        trajectory_figure(cfg, name, trajs).savefig(written[-1], dpi=100)
    written.append(out / "loss_vs_time.png")
    loss_figure(cfg, results).savefig(written[-1], dpi=100)
    if cfg.race_loss in results:
        colors = [colour(i) for i in range(len(results[cfg.race_loss]))]
        written.append(race_animation(LOSSES[cfg.race_loss], results[cfg.race_loss], out / f"race_{cfg.race_loss}.gif", colors=colors))
    return written


def save_data(cfg: Config, results: dict, finals: dict, out: Path, seconds: float) -> list[Path]:
    arrays: dict[str, np.ndarray] = {"lr_grid": cfg.lr_grid()}
    chosen: dict[str, dict] = {}
    for name, trajs in results.items():
        chosen[name] = {}
        for traj in trajs:
            key = f"{name}/{traj.name}"
            arrays[f"{key}/iterates"] = traj.iterates
            arrays[f"{key}/losses"] = traj.losses
            arrays[f"{key}/times"] = traj.times
            arrays[f"{key}/tuning_final_losses"] = finals[name][traj.name]
            if traj.flow_iterates is not None:
                arrays[f"{key}/flow_iterates"] = traj.flow_iterates
                arrays[f"{key}/flow_times"] = traj.flow_times
            chosen[name][traj.name] = {
                "hyper": {k: list(v) if isinstance(v, tuple) else v for k, v in traj.hyper.items()},
                "final_loss": traj.final_loss if math.isfinite(traj.final_loss) else None,  # None: diverged
                "diverged_at": traj.diverged_at,
                "ode_time_per_step": float(traj.times[1]) if traj.steps else 0.0,
                "flow_available": traj.flow_iterates is not None,
            }
    np.savez_compressed(out / "trajectories.npz", **arrays)
    summary = {
        "experiment": NAME,
        "config": asdict(cfg),
        "budget": {
            "lr_grid": cfg.lr_grid().tolist(),
            "runs_per_optimizer": cfg.grid_size,
            "horizon_steps": cfg.steps,
            "criterion": "lowest loss at the final step (diverged = +inf; ties go to the smaller lr)",
        },
        "chosen": chosen,
        "seconds": round(seconds, 2),
    }
    return [*write_summary(out, summary, NAME), out / "trajectories.npz"]


def main(argv: list[str] | None = None) -> dict[str, list[Trajectory]]:
    cfg, out = prepare(NAME, __doc__, Config, argv)

    start = time.perf_counter()
    results: dict[str, list[Trajectory]] = {}
    finals: dict[str, dict[str, np.ndarray]] = {}
    total = len(cfg.losses) * len(cfg.optimizers) * (cfg.grid_size + 1)
    with tqdm(total=total, desc=NAME, unit="run") as progress:
        for name in cfg.losses:
            results[name], finals[name] = [], {}
            for optimizer in cfg.optimizers:
                progress.set_postfix_str(f"{name}/{optimizer}")
                traj, finals[name][optimizer] = tune(cfg, name, optimizer, progress)
                results[name].append(traj)
    written = save_figures(cfg, results, out) + save_data(cfg, results, finals, out, time.perf_counter() - start)
    print(f"{NAME}: wrote {len(written)} files to {out} in {time.perf_counter() - start:.1f} s")
    for name, trajs in results.items():
        print(f"  {name:10s} " + "  ".join(f"{t.name} lr={t.hyper['lr']:.2g} L={t.final_loss:.2e}" for t in trajs))
    return results


if __name__ == "__main__":
    main()
