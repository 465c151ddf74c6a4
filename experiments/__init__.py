"""Reproducible experiments: one module per experiment, each with a ``Config`` and ``main(argv)``.

Every experiment accepts ``--fast`` (a smaller run for tests and CI), ``--out DIR`` (default
``results/<experiment name>``), ``--backend {numpy,torch,jax}`` and ``--seed``.
``python -m experiments`` runs all of them (see ``experiments/__main__.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["base_parser", "prepare", "seed_everything", "use_headless_matplotlib"]


def base_parser(name: str, description: str) -> argparse.ArgumentParser:
    """The flags every experiment shares."""
    parser = argparse.ArgumentParser(prog=f"python -m experiments.{name}", description=description)
    parser.add_argument("--fast", action="store_true", help="a smaller, quicker run (tests, CI)")
    parser.add_argument("--out", default=os.path.join("results", name), help="output directory (default: %(default)s)")
    parser.add_argument("--backend", choices=("numpy", "torch", "jax"), default="numpy", help="optimizer backend")
    parser.add_argument("--seed", type=int, default=0, help="seed of Python, NumPy (and torch when used) RNGs")
    return parser


def seed_everything(seed: int, backend: str = "numpy") -> None:
    """Seed every RNG an experiment may touch (torch only when it is the backend)."""
    random.seed(seed)
    np.random.seed(seed)
    if backend == "torch":
        import torch

        torch.manual_seed(seed)


def use_headless_matplotlib() -> None:
    """Select the Agg backend when there is no display and no backend was asked for."""
    if "MPLBACKEND" not in os.environ and not os.environ.get("DISPLAY"):
        import matplotlib

        matplotlib.use("Agg")


def write_summary(out: Path, summary: dict, name: str, figure: Any = None) -> list[Path]:
    """Write ``config.json`` (the run's parameters and results) and, if given, the figure as
    ``<name>.png`` at 100 dpi; return the paths written, the figure first."""
    written = []
    if figure is not None:
        written.append(out / f"{name}.png")
        figure.savefig(written[0], dpi=100)
    (out / "config.json").write_text(json.dumps(summary, indent=2))
    return written + [out / "config.json"]


def prepare(name: str, doc: str, config: Any, argv: list[str] | None) -> tuple[Any, Path]:
    """Parse the shared flags, seed the RNGs, pick the matplotlib backend, build the config
    (``config.fast(...)`` with ``--fast``) and create the output folder."""
    args = base_parser(name, doc.splitlines()[0]).parse_args(argv)
    use_headless_matplotlib()
    seed_everything(args.seed, args.backend)
    cfg = (config.fast if args.fast else config)(backend=args.backend, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    return cfg, out
