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

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from dynopt import REGISTRY
from dynopt.losses import LOSSES
from dynopt.trajectory import Trajectory, run

from . import base_parser, seed_everything, use_headless_matplotlib

NAME = "zoo_trajectories"


@dataclass
class Config:
    """What to run. ``lr_min``/``lr_max``/``grid_size`` define the shared lr grid (the budget)."""

    losses: tuple[str, ...] = ("quadratic", "rosenbrock", "himmelblau", "saddle", "beale", "rastrigin")
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
            f"log-spaced values in [{self.lr_min:.0e}, {self.lr_max:.3g}], horizon {self.steps} steps.\n"
            f"Fixed: {fixed}. Solid: iterates; dashed: ODE flow at the same times t_k = k·h."
        )


def tune(cfg: Config, loss: str, optimizer: str, progress) -> tuple[Trajectory, np.ndarray]:
    """The best run over the lr grid (by final loss) and the final loss of every grid point."""
    spec = REGISTRY[optimizer]
    finals = []
    for lr in cfg.lr_grid():
        traj = run(spec, {"lr": float(lr), **cfg.fixed[optimizer]}, loss, cfg.steps, with_flow=False, backend=cfg.backend)
        finals.append(traj.final_loss)
        progress.update()
    finals = np.array(finals)
    best = float(cfg.lr_grid()[int(np.argmin(finals))])
    chosen = run(spec, {"lr": best, **cfg.fixed[optimizer]}, loss, cfg.steps, with_flow=True, backend=cfg.backend)
    progress.update()
    return chosen, finals


def save_figures(cfg: Config, results: dict[str, list[Trajectory]], out: Path) -> list[Path]:
    from matplotlib.figure import Figure

    from dynopt.plotting import contour_trajectories, loss_curves, race_animation

    written = []
    for name, trajs in results.items():
        fig = contour_trajectories(LOSSES[name], trajs)
        fig.text(0.01, 0.0, cfg.budget_text(), fontsize=7.5, va="bottom", ha="left", wrap=True)
        fig.get_layout_engine().set(rect=(0, 0.07, 1, 0.93))
        written.append(out / f"{name}.png")
        fig.savefig(written[-1], dpi=110)

    cols = 2 if len(results) <= 4 else 3
    rows = math.ceil(len(results) / cols)
    fig = Figure(figsize=(5.2 * cols, 3.8 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax, (name, trajs) in zip(axes, results.items()):
        loss_curves(trajs, x="time", loss=LOSSES[name], ax=ax, legend=False, title=LOSSES[name].title)
    for ax in axes[len(results):]:
        ax.set_visible(False)
    first = next(iter(results.values()))
    handles = axes[0].get_legend_handles_labels()[0]
    from matplotlib.lines import Line2D

    names = [t.name for t in first] + ["ODE flow (dashed)"]
    handles = handles[: len(first)] + [Line2D([], [], color="0.2", ls="--")]
    fig.legend(handles, names, loc="outside upper center", ncols=len(names), fontsize="small")
    fig.suptitle("Loss gap L − L* against ODE time, tuned lr per optimizer and loss")
    fig.text(0.01, 0.0, cfg.budget_text(), fontsize=7.5, va="bottom", ha="left")
    fig.get_layout_engine().set(rect=(0, 0.05, 1, 0.95))
    written.append(out / "loss_vs_time.png")
    fig.savefig(written[-1], dpi=110)

    if cfg.race_loss in results:
        written.append(race_animation(LOSSES[cfg.race_loss], results[cfg.race_loss], out / f"race_{cfg.race_loss}.gif"))
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
                "final_loss": traj.final_loss,
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
            "criterion": "lowest loss at the final step (diverged = +inf)",
        },
        "chosen": chosen,
        "seconds": round(seconds, 2),
    }
    (out / "config.json").write_text(json.dumps(summary, indent=2, default=float))
    return [out / "trajectories.npz", out / "config.json"]


def main(argv: list[str] | None = None) -> dict[str, list[Trajectory]]:
    args = base_parser(NAME, __doc__.splitlines()[0]).parse_args(argv)
    use_headless_matplotlib()
    seed_everything(args.seed, args.backend)
    cfg = (Config.fast if args.fast else Config)(backend=args.backend, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

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
