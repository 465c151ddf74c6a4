"""A training step compiled with torch.compile that calls ``opt.step()``: dynopt against torch.optim (issue #15).

    .venv/bin/python benchmarks/compiled_step.py            # the run recorded in benchmarks/README.md
    .venv/bin/python benchmarks/compiled_step.py --fast     # tiny sizes, 2 rounds
    .venv/bin/python benchmarks/compiled_step.py --allocations --rounds 3   # and what each compiled step allocates

Method: for each layout and optimizer, ``torch.compile(lambda: opt.step())`` (inductor, default options)
of a dynopt optimizer built by default (``dynopt.torch.Adam(params, lr=...)``) and of the torch.optim
optimizer it reproduces (its default, the foreach implementation), both with the lr as a 0-dim tensor
(torch's recipe for schedulers without recompiles). Each is stepped once eagerly (state creation), then
compiled and warmed up. Then ``--rounds`` rounds, each timing both in a shuffled order: a sample is ``k``
consecutive compiled steps (k chosen so a sample lasts ``--min-sample`` seconds) divided by k. The table
shows median step times and the median over rounds of the per-round ratio dynopt / torch.optim. Same
parameters (uniform in [0.5, 1.5)) and fixed gradients N(0, 1e-3²) for both, float32, one torch thread.
Compile times are the first compiled call (cold only for the first optimizer in the process).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import dynopt.torch as dt

LAYOUTS = {
    "MLP (4 tensors, 263k)": [(512, 256), (512,), (256, 512), (256,)],
    "one 4M tensor": [(2048, 2048)],
}
LAYOUT_KEYS = {"mlp": "MLP (4 tensors, 263k)", "4m": "one 4M tensor"}
FAST_LAYOUTS = {"tiny MLP (4 tensors)": [(32, 16), (32,), (16, 32), (16,)]}

# dynopt name -> (torch.optim class, its extra arguments): the same method
PAIRS = {
    "SGD": (torch.optim.SGD, {}),
    "Momentum": (torch.optim.SGD, {"momentum": 0.9}),
    "Nesterov": (torch.optim.SGD, {"momentum": 0.9, "nesterov": True}),
    "RMSprop": (torch.optim.RMSprop, {}),
    "Adam": (torch.optim.Adam, {}),
    "AdamW": (torch.optim.AdamW, {}),
}
DYNOPT_ARGS = {"Momentum": {"momentum": 0.9}, "Nesterov": {"momentum": 0.9}}


def make(name: str, kind: str, shapes, lr: float = 1e-3):
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.rand(s, generator=gen) + 0.5) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-3
    lr_tensor = torch.tensor(lr)
    if kind == "dynopt":
        opt = getattr(dt, name)(params, lr=lr_tensor, **DYNOPT_ARGS.get(name, {}))
    else:
        cls, extra = PAIRS[name]
        opt = cls(params, lr=lr_tensor, **extra)
    opt.step()  # creates the state, eagerly
    step = torch.compile(lambda: opt.step())
    start = time.perf_counter()
    step()
    compile_s = time.perf_counter() - start
    for _ in range(3):
        step()
    return step, compile_s


def sample(step, k: int) -> float:
    start = time.perf_counter()
    for _ in range(k):
        step()
    return (time.perf_counter() - start) / k


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--min-sample", type=float, default=0.1, help="seconds per sample")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fast", action="store_true", help="tiny sizes, 2 rounds")
    parser.add_argument("--optimizers", default=",".join(PAIRS))
    parser.add_argument("--layouts", default=",".join(LAYOUT_KEYS), help="comma-separated: " + ", ".join(LAYOUT_KEYS))
    parser.add_argument("--allocations", action="store_true",
                        help="also the memory each compiled step allocates (torch.profiler, profile_memory=True)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    layouts = FAST_LAYOUTS if args.fast else {LAYOUT_KEYS[k]: LAYOUTS[LAYOUT_KEYS[k]] for k in args.layouts.split(",")}
    rounds = 2 if args.fast else args.rounds
    min_sample = 0.01 if args.fast else args.min_sample
    rng = random.Random(0)
    rows = []
    print(f"torch {torch.__version__}, {args.threads} thread(s), {rounds} rounds; ratio = median over rounds of "
          "dynopt / torch.optim, both torch.compile'd")
    print("| layout | optimizer | dynopt ms | torch.optim ms | ratio | rounds' ratios min-max | compile s (dynopt / torch) |")
    print("|---|---|---:|---:|---:|---|---|")
    for layout, shapes in layouts.items():
        for name in args.optimizers.split(","):
            torch._dynamo.reset()
            steps, compile_s = {}, {}
            for kind in ("dynopt", "torch"):
                steps[kind], compile_s[kind] = make(name, kind, shapes)
            once = sample(steps["torch"], 3)
            k = max(1, int(min_sample / max(once, 1e-7)))
            times: dict[str, list[float]] = {"dynopt": [], "torch": []}
            ratios = []
            for _ in range(rounds):
                order = list(steps)
                rng.shuffle(order)
                got = {kind: sample(steps[kind], k) for kind in order}
                for kind, value in got.items():
                    times[kind].append(value)
                ratios.append(got["dynopt"] / got["torch"])
            row = {"layout": layout, "optimizer": name, "dynopt_ms": 1e3 * statistics.median(times["dynopt"]),
                   "torch_ms": 1e3 * statistics.median(times["torch"]), "ratio": statistics.median(ratios),
                   "ratio_min": min(ratios), "ratio_max": max(ratios), "compile_s": compile_s}
            if args.allocations:
                row["largest_allocation_bytes"] = {kind: largest_allocation(steps[kind]) for kind in steps}
            rows.append(row)
            print(f"| {layout} | {name} | {row['dynopt_ms']:.3f} | {row['torch_ms']:.3f} | {row['ratio']:.2f} | "
                  f"{row['ratio_min']:.2f}-{row['ratio_max']:.2f} | {compile_s['dynopt']:.1f} / {compile_s['torch']:.1f} |",
                  flush=True)
    if args.allocations:
        print("\nlargest allocation of 5 compiled steps, bytes (dynopt / torch.optim):")
        for row in rows:
            sizes = row["largest_allocation_bytes"]
            print(f"  {row['layout']} {row['optimizer']}: {sizes['dynopt']} / {sizes['torch']}")
    return rows


def largest_allocation(step) -> int:
    """The largest single allocation (bytes) torch.profiler records over 5 calls of ``step``."""
    with torch.profiler.profile(profile_memory=True) as prof:
        for _ in range(5):
            step()
    return max([event.cpu_memory_usage for event in prof.events()] + [0])


if __name__ == "__main__":
    main()
