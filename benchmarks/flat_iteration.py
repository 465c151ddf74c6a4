"""A whole training iteration on 2000 tensors: what the flat-parameter mode costs and saves outside the step.

    .venv/bin/python benchmarks/flat_iteration.py            # the run recorded in benchmarks/README.md
    .venv/bin/python benchmarks/flat_iteration.py --fast     # tiny sizes, 2 rounds (the smoke test)

``step_time.py`` times ``opt.step()`` alone. Flattened parameters also change ``zero_grad()`` and
``backward()``: autograd accumulates into the flat gradient buffer in place instead of handing over a fresh
gradient, and with ``reattach_grads=True`` (the default) a Python hook per parameter runs in every backward
(it gives a gradient that ``zero_grad(set_to_none=True)`` set to None its zeroed view of the buffer). This
script times the three phases of an iteration separately:

* ``zero``: ``opt.zero_grad()`` (set_to_none=True, torch's default) or, where said, ``handle.zero_grad()``;
* ``backward``: the forward ``loss = cat(p_i * c_i).sum()`` and ``loss.backward()``, one AccumulateGrad per
  parameter (the per-parameter cost of a real model's backward, without its compute);
* ``step``: ``opt.step()``.

Variants (same parameters, constants ``c_i`` and hyperparameters; float32; one torch thread):

* ``torch fused``: ``torch.optim`` with ``fused=True`` on ordinary parameters;
* ``dynopt fused``: ``dynopt.torch`` with ``fused=True`` on ordinary parameters (gathered flat buckets);
* ``flat fused, hooks``: flattened with the defaults, ``opt.zero_grad()``;
* ``flat fused, no hooks``: ``flatten_parameters(..., reattach_grads=False)``, ``handle.zero_grad()``.

Each round runs every variant once, in a shuffled order; a sample is ``k`` consecutive iterations
(k after warm-up so a sample lasts ``--min-sample`` s) and each phase's time is its share of the
sample. The table shows medians over rounds, and the median per-round ratio of the iteration to torch
fused's.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

import dynopt.torch as dt

# dynopt name -> (torch.optim class, extra arguments)
PAIRS = {"Momentum": (torch.optim.SGD, {"momentum": 0.9}), "Adam": (torch.optim.Adam, {})}


class Variant:
    def __init__(self, label, params, consts, opt, zero):
        self.label, self.params, self.consts, self.opt, self.zero = label, params, consts, opt, zero
        self.samples = {"zero": [], "backward": [], "step": [], "total": []}

    def iteration(self, times):
        t0 = time.perf_counter()
        self.zero()
        t1 = time.perf_counter()
        torch.cat([x.view(-1) for x in torch._foreach_mul(self.params, self.consts)]).sum().backward()
        t2 = time.perf_counter()
        self.opt.step()
        t3 = time.perf_counter()
        times[0] += t1 - t0
        times[1] += t2 - t1
        times[2] += t3 - t2

    def sample(self, k):
        times = [0.0, 0.0, 0.0]
        for _ in range(k):
            self.iteration(times)
        for name, value in zip(("zero", "backward", "step"), times):
            self.samples[name].append(value / k)
        self.samples["total"].append(sum(times) / k)


def build(name, n, d, seed=0):
    cls, extra = PAIRS[name]
    gen = torch.Generator().manual_seed(seed)
    init = [torch.rand(d, generator=gen) + 0.5 for _ in range(n)]
    consts = [torch.randn(d, generator=gen) * 1e-3 for _ in range(n)]
    kw = {"lr": 1e-3}

    def params():
        return [torch.nn.Parameter(x.clone()) for x in init]

    variants = []
    ps = params()
    opt = cls(ps, fused=True, **kw, **extra)
    variants.append(Variant("torch fused", ps, consts, opt, opt.zero_grad))
    ps = params()
    opt = getattr(dt, name)(ps, fused=True, **kw)
    variants.append(Variant("dynopt fused", ps, consts, opt, opt.zero_grad))
    ps = params()
    dt.flatten_parameters(ps)
    opt = getattr(dt, name)(ps, fused=True, **kw)
    variants.append(Variant("flat fused, hooks", ps, consts, opt, opt.zero_grad))
    ps = params()
    handle = dt.flatten_parameters(ps, reattach_grads=False)
    opt = getattr(dt, name)(ps, fused=True, **kw)
    variants.append(Variant("flat fused, no hooks", ps, consts, opt, handle.zero_grad))
    return variants


def run(name, n, d, rounds, min_sample, warmup=3):
    variants = build(name, n, d)
    ks = {}
    for v in variants:
        times = [0.0, 0.0, 0.0]
        for _ in range(warmup):
            v.iteration(times)
        start = time.perf_counter()
        v.iteration(times)
        ks[v.label] = max(1, min(50, int(min_sample / max(time.perf_counter() - start, 1e-6))))
    for v in variants:  # a flat plan must have been reached: the comparison is about the mode, not a fallback
        if v.label.startswith("flat"):
            assert v.opt.execution.direct == n, (v.label, v.opt.execution)
    order = list(variants)
    for _ in range(rounds):
        random.shuffle(order)
        for v in order:
            v.sample(ks[v.label])
    ref = variants[0].samples["total"]
    rows = []
    for v in variants:
        med = {key: statistics.median(values) * 1e3 for key, values in v.samples.items()}
        ratio = statistics.median(a / b for a, b in zip(v.samples["total"], ref))
        step_ratio = statistics.median(a / b for a, b in zip(v.samples["step"], variants[0].samples["step"]))
        rows.append((name, v.label, med, ratio, step_ratio, ks[v.label]))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--fast", action="store_true", help="tiny sizes, 2 rounds (smoke test)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--tensors", type=int, default=2000)
    parser.add_argument("--numel", type=int, default=1000)
    parser.add_argument("--min-sample", type=float, default=0.3)
    parser.add_argument("--optimizers", default="Momentum,Adam")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    random.seed(0)
    n, d, rounds, min_sample = args.tensors, args.numel, args.rounds, args.min_sample
    if args.fast:
        n, d, rounds, min_sample = 20, 10, 2, 0.01
    print(f"# whole iteration on {n} x {d} float32 (torch {torch.__version__}, 1 thread, {rounds} rounds)\n")
    print("| optimizer | variant | zero ms | backward ms | step ms | iteration ms | step / torch fused | "
          "iteration / torch fused |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rows = []
    for name in args.optimizers.split(","):
        for row in run(name, n, d, rounds, min_sample):
            name_, label, med, ratio, step_ratio, _k = row
            print(f"| {name_} | {label} | {med['zero']:.2f} | {med['backward']:.2f} | {med['step']:.2f} | "
                  f"{med['total']:.2f} | {step_ratio:.2f} | {ratio:.2f} |", flush=True)
            rows.append(row)
    return rows


if __name__ == "__main__":
    main()
