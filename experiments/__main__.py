"""Run every experiment: ``python -m experiments [--fast] [--out DIR] [--backend B] [--seed S]``.

Each experiment writes to ``DIR/<experiment name>``. Add a new experiment module to
``EXPERIMENTS`` to include it.

The figures README shows (``GALLERY``) are also copied, downscaled to small PNGs, to
``docs/gallery/``, which is committed so that README renders on the repository page. A full run
with the default backend and seed refreshes them; ``--fast``, another ``--backend`` or ``--seed``,
and ``--no-gallery`` leave them alone; ``--gallery DIR`` writes them to DIR in any run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from pathlib import Path

from . import shrink_png

GALLERY_DIR = Path(__file__).resolve().parents[1] / "docs" / "gallery"
EXPERIMENTS = ["zoo_trajectories", "step_size_insensitivity", "distribution_shift", "eg_vs_gd_sparse", "ode_orders", "classic_figures",
               "ode_claims", "heun_digits", "meta_anchors"]
# experiment -> the figures of its output folder that README shows; copied to docs/gallery/<figure>
GALLERY = {
    "zoo_trajectories": ["rosenbrock.png"],
    "step_size_insensitivity": ["step_size_insensitivity.png"],
    "distribution_shift": ["distribution_shift.png"],
    "eg_vs_gd_sparse": ["eg_vs_gd_sparse.png"],
    "ode_orders": ["orders.png"],
    "ode_claims": ["schemes.png", "heun_igr.png", "momentum_limits.png", "stability.png", "implicit_bias.png"],
    "heun_digits": ["heun_digits.png"],
    "meta_anchors": ["meta_anchors.png"],
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="quick versions of every experiment")
    parser.add_argument("--out", default="results", help="root output directory (default: %(default)s)")
    parser.add_argument("--backend", choices=("numpy", "torch", "jax"), default="numpy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run only these experiments")
    copies = parser.add_mutually_exclusive_group()
    copies.add_argument("--gallery", type=Path, help="copy README's figures, downscaled, here "
                        "(default: docs/gallery/ in a full run with the default backend and seed)")
    copies.add_argument("--no-gallery", action="store_true", help="do not refresh the gallery copies")
    args = parser.parse_args(argv)
    gallery = gallery_dir(args)
    for name in args.only or EXPERIMENTS:
        start = time.perf_counter()
        module = importlib.import_module(f"experiments.{name}")
        forwarded = ["--out", os.path.join(args.out, name), "--backend", args.backend, "--seed", str(args.seed)]
        module.main(forwarded + (["--fast"] if args.fast else []))
        for figure in GALLERY.get(name, []) if gallery is not None else []:
            size = shrink_png(Path(args.out, name, figure), gallery / figure)
            print(f"[{name}] gallery copy {gallery / figure} ({size / 1000:.0f} kB)")
        print(f"[{name}] done in {time.perf_counter() - start:.1f} s")


def gallery_dir(args: argparse.Namespace) -> Path | None:
    """Where the gallery copies go: ``--gallery``, else docs/gallery/ for a full default run, else nowhere."""
    if args.gallery is not None or args.no_gallery:
        return args.gallery
    if args.fast or args.backend != "numpy" or args.seed != 0:
        print("docs/gallery/ is not refreshed (only by a full run with --backend numpy --seed 0)")
        return None
    return GALLERY_DIR


if __name__ == "__main__":
    main()
