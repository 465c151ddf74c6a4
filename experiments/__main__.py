"""Run every experiment: ``python -m experiments [--fast] [--out DIR] [--backend B] [--seed S]``.

Each experiment writes to ``DIR/<experiment name>``. Add a new experiment module to
``EXPERIMENTS`` to include it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time

EXPERIMENTS = ["zoo_trajectories", "step_size_insensitivity", "distribution_shift", "eg_vs_gd_sparse", "ode_orders", "classic_figures"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments", description=__doc__.splitlines()[0])
    parser.add_argument("--fast", action="store_true", help="quick versions of every experiment")
    parser.add_argument("--out", default="results", help="root output directory (default: %(default)s)")
    parser.add_argument("--backend", choices=("numpy", "torch", "jax"), default="numpy")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", choices=EXPERIMENTS, help="run only these experiments")
    args = parser.parse_args(argv)
    for name in args.only or EXPERIMENTS:
        start = time.perf_counter()
        module = importlib.import_module(f"experiments.{name}")
        forwarded = ["--out", os.path.join(args.out, name), "--backend", args.backend, "--seed", str(args.seed)]
        module.main(forwarded + (["--fast"] if args.fast else []))
        print(f"[{name}] done in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
