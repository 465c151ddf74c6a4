"""dynopt.jax against optax, one optimizer at a time: an interleaved A/B with more rounds than step_time.py.

    .venv/bin/python benchmarks/jax_ab.py --layouts bcd --optimizers SGD     # the run in benchmarks/README.md
    .venv/bin/python benchmarks/jax_ab.py --fast                             # tiny sizes, 2 rounds

Method: for each layout and optimizer, ``jax.jit(step, donate_argnums=(0, 1))`` of
``step(params, state, grads) -> (optax.apply_updates(params, updates), state)`` for ``dynopt.jax.<name>`` and
the optax transform it reproduces (step_time.py's pairs), compiled ahead of time on the same parameters and
gradients. Then ``--rounds`` rounds, each timing both in a shuffled order (a sample is ``k`` consecutive steps
lasting ``--min-sample`` seconds, then ``block_until_ready``); the median of the per-round ratios dynopt / optax,
and its range. Also prints whether the two compiled programs have the same number of fusions (their HLO).
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_time import FAST_LAYOUTS, LAYOUTS  # noqa: E402

PAIRS = {"SGD": ("sgd", {}), "Momentum": ("sgd", {"momentum": 0.9}), "Nesterov": ("sgd", {"momentum": 0.9, "nesterov": True}),
         "RMSprop": ("rmsprop", {}), "Adam": ("adam", {}), "AdamW": ("adamw", {})}


def compiled_step(transform, params, grads):
    """``jax.jit(step, donate_argnums=(0, 1))`` of ``step(params, state, grads) -> (apply_updates(params, updates),
    state)``, compiled ahead of time: ``(run, compiled)`` with ``run(k)`` the seconds per step over k steps."""
    import jax
    import optax

    def step(p, s, g):
        updates, s = transform.update(g, s, p)
        return optax.apply_updates(p, updates), s

    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, transform.init(params), grads).compile()
    box = [params, transform.init(params)]

    def run(k: int) -> float:
        start = time.perf_counter()
        for _ in range(k):
            box[0], box[1] = compiled(box[0], box[1], grads)
        jax.block_until_ready(box[0])
        return (time.perf_counter() - start) / k

    return run, compiled


def _compiled(transform, shapes):
    import jax.numpy as jnp

    params = [jnp.ones(s, jnp.float32) for s in shapes]
    grads = [jnp.full(s, 1e-3, jnp.float32) for s in shapes]
    run, compiled = compiled_step(transform, params, grads)
    return run, len(re.findall(r" fusion\(", compiled.as_text()))


def main(argv: list[str] | None = None, out=print) -> list[dict]:
    import optax

    import dynopt.jax as dj

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layouts", default="bcd")
    parser.add_argument("--optimizers", default="SGD")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--min-sample", type=float, default=0.1, help="seconds per sample")
    parser.add_argument("--fast", action="store_true", help="tiny sizes, 2 rounds")
    args = parser.parse_args(argv)
    layouts = FAST_LAYOUTS if args.fast else LAYOUTS
    rounds, min_sample = (2, 0.005) if args.fast else (args.rounds, args.min_sample)
    rng = random.Random(0)
    rows = []
    out(f"{rounds} rounds; ratio = median over rounds of dynopt.jax / optax (jit, donated params and state)")
    out("| layout | optimizer | dynopt.jax ms | optax ms | ratio | rounds' ratios min-max | fusions (dynopt / optax) |")
    out("|---|---|---:|---:|---:|---|---|")
    for key in args.layouts:
        label, shapes = layouts[key]
        label = f"{key}: {label}"
        for name in args.optimizers.split(","):
            optax_name, extra = PAIRS[name]
            runs, fusions = {}, {}
            for kind, transform in (("dynopt", getattr(dj, optax_name)(1e-3, **extra)),
                                    ("optax", getattr(optax, optax_name)(1e-3, **extra))):
                runs[kind], fusions[kind] = _compiled(transform, shapes)
                runs[kind](3)
            k = max(1, int(min_sample / max(runs["optax"](3), 1e-7)))
            times: dict[str, list[float]] = {kind: [] for kind in runs}
            ratios = []
            for _ in range(rounds):
                order = list(runs)
                rng.shuffle(order)
                got = {kind: runs[kind](k) for kind in order}
                for kind, value in got.items():
                    times[kind].append(value)
                ratios.append(got["dynopt"] / got["optax"])
            row = {"layout": label, "optimizer": name, "dynopt_ms": 1e3 * statistics.median(times["dynopt"]),
                   "optax_ms": 1e3 * statistics.median(times["optax"]), "ratio": statistics.median(ratios),
                   "min": min(ratios), "max": max(ratios), "fusions": (fusions["dynopt"], fusions["optax"])}
            rows.append(row)
            out(f"| {label} | {name} | {row['dynopt_ms']:.3f} | {row['optax_ms']:.3f} | {row['ratio']:.2f} | "
                f"{row['min']:.2f}-{row['max']:.2f} | {fusions['dynopt']} / {fusions['optax']} |")
    return rows


if __name__ == "__main__":
    main()
