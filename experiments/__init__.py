"""Reproducible experiments: one module per experiment, each with a ``Config`` and ``main(argv)``.

Every experiment accepts ``--fast`` (a smaller run for tests and CI), ``--out DIR`` (default
``results/<experiment name>``), ``--backend {numpy,torch,jax}`` and ``--seed``.
``python -m experiments`` runs all of them (see ``experiments/__main__.py``).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["base_parser", "prepare", "seed_everything", "use_headless_matplotlib", "shrink_png"]


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


def shrink_png(src: Path, dest: Path, max_width: int = 1000, max_bytes: int = 120_000) -> int:
    """Write a small copy of the figure ``src`` to ``dest`` and return its size in bytes.

    The copy is at most ``max_width`` pixels wide (Lanczos resampling, aspect kept), reduced to a
    256-colour palette (octree, which keeps the few saturated line colours of a plot; no dithering)
    and saved as an optimized PNG with no metadata, so the same figure gives the same bytes. If it is still over ``max_bytes`` the
    width shrinks by a fifth until it fits; ValueError if it cannot fit at 200 pixels.
    """
    from PIL import Image

    if max_width < 200 or max_bytes <= 0:
        raise ValueError(f"shrink_png: max_width must be >= 200 and max_bytes > 0, got max_width={max_width!r}, max_bytes={max_bytes!r}")
    with Image.open(src) as opened:
        image = opened.convert("RGB")
    width = min(max_width, image.width)
    while True:
        height = max(1, round(image.height * width / image.width))
        small = image if width == image.width else image.resize((width, height), Image.LANCZOS)
        small = small.quantize(colors=256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=True)
        if buffer.tell() <= max_bytes:
            break
        if width <= 200:
            raise ValueError(f"shrink_png: {src} does not fit in max_bytes={max_bytes} even at 200 pixels wide")
        width = max(200, int(width * 0.8))
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, dest)  # a reader never sees half a file
    return buffer.tell()


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
