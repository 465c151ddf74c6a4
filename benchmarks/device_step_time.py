"""Optimizer step time on an accelerator: dynopt.torch against torch.optim foreach and fused (issue #15).

    python benchmarks/device_step_time.py --device cuda            # the GPU table (benchmarks/gpu_check.sh)
    python benchmarks/device_step_time.py --device cpu --fast      # tiny sizes: the smoke test

The layouts and optimizers are those of ``step_time.py`` (one 16M tensor, ResNet-18's 62 shapes, 2000 tensors of
1000), in float32 or ``--dtype bfloat16``. Variants: dynopt.torch by default (flat buckets after the first step),
dynopt.torch ``fused=True`` (compiled kernels: Triton on CUDA), torch.optim foreach and, where torch.optim has one,
fused. Method as in ``step_time.py``: every variant of an optimizer runs once per round in a shuffled order; a
sample is k consecutive steps ended by a device synchronisation (k chosen after warm-up so that a sample lasts
``--min-sample`` seconds), divided by k; the table shows median times and the medians of per-round ratios. Same
parameters (uniform in [0.5, 1.5)) and fixed gradients (N(0, 1e-3²)) for everyone, lr = 1e-3, other
hyperparameters at their defaults. No timing is asserted anywhere: this script prints.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_time import FAST_LAYOUTS, LAYOUTS, _entries  # noqa: E402

OPTIMIZERS = ("SGD", "Momentum", "Nesterov", "RMSprop", "Adam", "AdamW")
REFERENCES = ("foreach", "fused")


def variants(entry, shapes, device, dtype, out: Callable[[str], Any] = print) -> dict[str, Callable[[], Any]]:
    """label -> one optimizer step, each on its own copy of the same parameters and gradients."""
    import torch

    import dynopt.torch as dt

    gen = torch.Generator().manual_seed(0)
    init = [(torch.rand(s, generator=gen) + 0.5).to(device, dtype) for s in shapes]
    grads = [(torch.randn(s, generator=gen) * 1e-3).to(device, dtype) for s in shapes]

    def params():
        ps = [torch.nn.Parameter(x.clone()) for x in init]
        for p, g in zip(ps, grads):
            p.grad = g
        return ps

    made = {"dynopt": getattr(dt, entry.name)(params(), **entry.kwargs),
            "dynopt-fused": getattr(dt, entry.name)(params(), **entry.kwargs, fused=True),
            "foreach": entry.torch_ref(params(), foreach=True)}
    try:
        made["fused"] = entry.torch_ref(params(), fused=True)
        made["fused"].step()
    except (RuntimeError, ValueError, TypeError) as error:  # no fused kernel for this optimizer, dtype or device
        made.pop("fused", None)
        out(f"  torch.optim fused {entry.name}: not available ({str(error).splitlines()[0][:80]})")
    return {label: opt.step for label, opt in made.items()}


def measure(steps: dict[str, Callable[[], Any]], sync: Callable[[], Any], rounds: int, min_sample: float, max_k: int):
    ks = {}
    for label, step in steps.items():  # warm-up: state creation, the fused path's compile at step 2
        for _ in range(3):
            step()
        sync()
        start = time.perf_counter()
        step()
        sync()
        ks[label] = max(1, min(max_k, int(min_sample / max(time.perf_counter() - start, 1e-7))))
    samples = {label: [] for label in steps}
    for _ in range(rounds):
        order = list(steps)
        random.shuffle(order)
        for label in order:
            sync()
            start = time.perf_counter()
            for _ in range(ks[label]):
                steps[label]()
            sync()
            samples[label].append((time.perf_counter() - start) / ks[label])
    return samples


def ratio(samples, a, b) -> float:
    if a not in samples or b not in samples:
        return float("nan")
    return statistics.median(x / y for x, y in zip(samples[a], samples[b]))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--fast", action="store_true", help="tiny sizes, 2 rounds (smoke test)")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--layouts", default="abcd")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--min-sample", type=float)
    parser.add_argument("--max-k", type=int, default=200)
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (2 if args.fast else 7)
    args.min_sample = args.min_sample or (0.002 if args.fast else 0.05)
    return args


def main(argv: list[str] | None = None, out: Callable[[str], Any] = print) -> list[dict]:
    import torch

    args = parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no CUDA device")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out(f"device {name}, torch {torch.__version__}, {args.dtype}, {args.rounds} rounds")
    layouts = FAST_LAYOUTS if args.fast else LAYOUTS
    entries = {e.name: e for e in _entries()}
    rows = []
    out("| layout | optimizer | dynopt ms | fused ms | foreach ms | torch fused ms | dynopt/foreach | fused/foreach "
        "| dynopt/torch fused | fused/torch fused |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for key in args.layouts:
        title, shapes = layouts[key]
        for opt_name in args.optimizers.split(","):
            samples = measure(variants(entries[opt_name], shapes, device, dtype, out), sync, args.rounds, args.min_sample,
                              args.max_k)
            ms = {label: 1e3 * statistics.median(v) for label, v in samples.items()}
            row = {"layout": f"{key}: {title}", "optimizer": opt_name, **{f"{k}_ms": v for k, v in ms.items()},
                   **{f"{a}/{b}": ratio(samples, a, b) for a in ("dynopt", "dynopt-fused") for b in REFERENCES}}
            rows.append(row)
            cells = [ms.get(k, float("nan")) for k in ("dynopt", "dynopt-fused", "foreach", "fused")]
            cells += [row[f"{a}/{b}"] for b in REFERENCES for a in ("dynopt", "dynopt-fused")]
            out(f"| {row['layout']} | {opt_name} | " + " | ".join(f"{c:.3f}" if i < 4 else f"{c:.2f}"
                                                             for i, c in enumerate(cells)) + " |")
    return rows


if __name__ == "__main__":
    main()
