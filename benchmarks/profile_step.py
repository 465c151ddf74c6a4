"""Where the time of one ``dynopt.torch`` step goes (issue #6, the analysis behind ``step_time.py``).

    .venv/bin/python benchmarks/profile_step.py                    # layouts b and c, Adam and SGD
    .venv/bin/python benchmarks/profile_step.py --layouts a --optimizers MetaAdam

For each (layout, optimizer) and each of dynopt.torch (reference path flat=False, default flat path,
fused=True) and torch.optim foreach:

* wall time per step (median of ``--steps`` steps after warm-up) and minor page faults per step
  (``getrusage``): a fresh allocation of more than glibc's mmap threshold (at most 32 MiB, adapted
  upwards after frees) is a new mapping whose every 4 KiB page faults on first touch;
* number of ATen kernels, allocations and bytes allocated per step (``torch.profiler``,
  ``profile_memory=True``), and the ten ops with the most self CPU time;
* the Python-side split (``cProfile``): time inside torch kernels called from Python vs everything
  else (building trees, bucketing in ``_plan``, reading step counters, dict lookups).
"""

from __future__ import annotations

import argparse
import cProfile
import math
import pstats
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.step_time import LAYOUTS, _entries, _quiet_stderr_fd, make_init, torch_params  # noqa: E402


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def profile_one(label, opt, steps, out):
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        opt.step()
    times, faults = [], []
    for _ in range(steps):
        f0, t0 = minor_faults(), time.perf_counter()
        opt.step()
        times.append(time.perf_counter() - t0)
        faults.append(minor_faults() - f0)
    with _quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        opt.step()
    allocations, allocated, stack = 0, 0, list(prof.profiler.kineto_results.experimental_event_tree())
    kernels = 0
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation and event.extra_fields.alloc_size > 0:
            allocations += 1
            allocated += event.extra_fields.alloc_size
        elif event.tag == _EventType.TorchOp and event.name.startswith("aten::"):
            kernels += 1
        stack.extend(event.children)
    pr = cProfile.Profile()
    pr.enable()
    opt.step()
    pr.disable()
    stats = pstats.Stats(pr)
    total = sum(v[2] for v in stats.stats.values())  # self time of every function
    in_torch = sum(v[2] for (file, _, name), v in stats.stats.items()
                   if file == "~" and ("torch" in name or "Tensor" in name or "method" in name))
    out(f"  {label:<10} {statistics.median(times) * 1e3:8.2f} ms/step  {statistics.median(faults):8.0f} page faults/step  "
        f"{kernels:6d} aten ops  {allocations:6d} allocations  {allocated / 1e6:8.1f} MB allocated  "
        f"cProfile: {in_torch * 1e3:.1f} ms in torch built-ins, {(total - in_torch) * 1e3:.1f} ms other Python")
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=40)
    return table, stats


def main(argv=None):
    import torch

    import dynopt.torch as dt

    parser = argparse.ArgumentParser()
    parser.add_argument("--layouts", default="bc")
    parser.add_argument("--optimizers", default="SGD,Adam")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tables", action="store_true", help="print the torch.profiler op tables and the cProfile top 15")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    entries = {e.name: e for e in _entries()}
    for layout in args.layouts:
        title, shapes = LAYOUTS[layout]
        init, grads = make_init(shapes)
        print(f"\nlayout {layout}: {title}, {len(shapes)} tensors, {sum(math.prod(s) for s in shapes) / 1e6:.1f}M elements")
        for name in args.optimizers.split(","):
            entry = entries[name]
            cls = getattr(dt, name)
            print(f" {name}")
            variants = [("dynopt flat=False", cls(torch_params(init, grads), **entry.kwargs, flat=False)),
                        ("dynopt", cls(torch_params(init, grads), **entry.kwargs)),
                        ("dynopt fused", cls(torch_params(init, grads), **entry.kwargs, fused=True))]
            if entry.torch_ref is not None:
                variants.append(("foreach", entry.torch_ref(torch_params(init, grads), foreach=True)))
            for label, opt in variants:
                table, stats = profile_one(label, opt, args.steps, print)
                if args.tables:
                    print(table)
                    stats.sort_stats("tottime").print_stats(15)
            del variants


if __name__ == "__main__":
    main()
