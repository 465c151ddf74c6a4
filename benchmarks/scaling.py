"""How the step time scales: with the number of parameters, and with the number of tensors (issue #6).

    .venv/bin/python benchmarks/scaling.py                       # Adam, both scans, writes results/scaling.{json,png}
    .venv/bin/python benchmarks/scaling.py --optimizer Momentum  # SGD with momentum 0.9
    .venv/bin/python benchmarks/scaling.py --fast                # tiny sizes: the smoke test

Two scans, float32, one thread (torch) and single-threaded XLA, lr 1e-3, parameters in [0.5, 1.5)
and fixed gradients N(0, 1e-3²) as in ``step_time.py``:

* **total size**: one tensor of 1e3 … 1e8 elements (per-element cost, then memory bandwidth);
* **tensor count**: a fixed total of 2²² elements split into 1 … 4096 equal tensors (per-tensor
  overhead). JAX variants stop at ``--jax-max-leaves`` leaves (XLA's compile time grows quickly
  with the leaf count; see ``step_time.py``).

Variants: dynopt.torch as built by default (flat buckets after the first step), dynopt.torch with
``fused=True``, torch.optim foreach and fused, dynopt.jax and optax (jit, donated buffers). At each
point every variant is warmed up (3 steps; dynopt's fused kernels compile at the second step and
are reused across sizes), then timed in ``--rounds`` interleaved rounds of ``k`` steps (k chosen so
that a sample lasts ≥ 20 ms); the plot shows medians. Absolute times on a shared 2-core machine are
noisy; the shape of the curves is the point.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_time import JaxRunner, _entries, _jax_tx, _setup_threads, make_init, torch_params  # noqa: E402

LABELS = ["dynopt", "dynopt fused", "torch foreach", "torch fused", "dynopt.jax", "optax"]


def variants(entry, shapes, jax_ok: bool) -> dict:
    import dynopt.torch as dt

    init, grads = make_init(shapes)
    cls = getattr(dt, entry.name)
    out = {"dynopt": cls(torch_params(init, grads), **entry.kwargs).step,
           "dynopt fused": cls(torch_params(init, grads), **entry.kwargs, fused=True).step,
           "torch foreach": entry.torch_ref(torch_params(init, grads), foreach=True).step,
           "torch fused": entry.torch_ref(torch_params(init, grads), fused=True).step}
    if jax_ok:
        p_np, g_np = [x.numpy() for x in init], [g.numpy() for g in grads]
        for label, reference in (("dynopt.jax", False), ("optax", True)):
            runner = JaxRunner(_jax_tx(entry, reference), p_np, g_np)

            def step(runner=runner):
                runner.step()
                runner.sync()

            out[label] = step
    return out


def time_point(steps: dict, rounds: int, min_sample: float) -> dict[str, float]:
    ks = {}
    for label, step in steps.items():
        for _ in range(3):
            step()
        start = time.perf_counter()
        step()
        ks[label] = max(1, int(min_sample / max(time.perf_counter() - start, 1e-9)) + 1)
    samples: dict[str, list[float]] = {label: [] for label in steps}
    order = list(steps)
    rng = random.Random(0)
    for _ in range(rounds):
        rng.shuffle(order)
        for label in order:
            start = time.perf_counter()
            for _ in range(ks[label]):
                steps[label]()
            samples[label].append((time.perf_counter() - start) / ks[label])
    return {label: statistics.median(v) for label, v in samples.items()}


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dynopt.plotting import OKABE_ITO as PALETTE

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, scan, xlabel in ((axes[0], "size", "parameters (one tensor)"),
                             (axes[1], "count", f"tensors (total {result['count_total']:,} parameters)")):
        points = result[scan]
        for i, label in enumerate(LABELS):
            xs = [p["x"] for p in points if label in p["ms"]]
            ys = [p["ms"][label] for p in points if label in p["ms"]]
            if xs:
                ax.plot(xs, ys, marker="o", ms=3, color=PALETTE[i % len(PALETTE)], label=label,
                        ls="--" if "jax" in label or label == "optax" else "-")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms per step (median)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['optimizer']} step time, float32, 1 thread — {result['machine']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None, out=print) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--optimizer", default="Adam", choices=["SGD", "Momentum", "Nesterov", "Adam"])
    parser.add_argument("--fast", action="store_true", help="tiny sizes, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--jax-max-leaves", type=int, default=512)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scaling"), help="path prefix of .json/.png")
    args = parser.parse_args(argv)
    _setup_threads(1)
    import platform

    import torch

    torch.set_num_threads(1)
    rounds = args.rounds or (2 if args.fast else 5)
    min_sample = 0.002 if args.fast else 0.02
    sizes = [10**k for k in range(3, 6 if args.fast else 9)]
    total = 1 << (12 if args.fast else 22)
    counts = [1, 4, 16] if args.fast else [1, 16, 256, 4096]
    entry = {e.name: e for e in _entries()}[args.optimizer]
    result = {"optimizer": args.optimizer, "machine": f"{platform.machine()}, torch {torch.__version__}",
              "count_total": total, "size": [], "count": []}
    started = time.perf_counter()
    for scan, xs in (("size", sizes), ("count", counts)):
        for x in xs:
            shapes = [(x,)] if scan == "size" else [(total // x,)] * x
            ms = {k: v * 1e3 for k, v in time_point(variants(entry, shapes, scan == "size" or x <= args.jax_max_leaves),
                                                   rounds, min_sample).items()}
            result[scan].append({"x": x, "ms": ms})
            out(f"{scan} {x:>11,}: " + "  ".join(f"{k} {v:.3g}" for k, v in ms.items()))
    result["elapsed_s"] = time.perf_counter() - started
    prefix = Path(args.out)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot(result, prefix.with_suffix(".png"))
    out(f"wrote {prefix.with_suffix('.json')} and {prefix.with_suffix('.png')} in {result['elapsed_s']:.0f} s")
    return result


if __name__ == "__main__":
    main()
