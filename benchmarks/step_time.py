"""Optimizer step time of dynopt against torch.optim, optax and the memory-bandwidth bound (issue #6).

    .venv/bin/python benchmarks/step_time.py            # the full run (~8 min on 2 cores)
    .venv/bin/python benchmarks/step_time.py --quick    # fewer rounds, no torch.compile (~2-3 min)
    .venv/bin/python benchmarks/step_time.py --fast     # tiny sizes, 2 rounds: the smoke test

Method
------
* One process. Optimizers are measured in *comparison groups* ({SGD, EG, MetaSGD}, {Momentum},
  {Nesterov}, {RMSprop}, {Adam, MetaAdam}); within a group every variant (dynopt.torch as built by
  default, i.e. on flat buckets after the first step; dynopt.torch with ``fused=True``, its
  compiled kernels; the same two on parameters flattened by ``dynopt.torch.flatten_parameters``, the
  flat-parameter mode, stepped in place without gather or scatter; torch.optim for-loop / foreach /
  fused / torch.compile'd; dynopt.jax; optax) runs once per round, in a shuffled order, ``rounds`` times.
  A sample is ``k`` consecutive steps (k chosen after warm-up so that a sample lasts
  ``--min-sample`` seconds) divided by k. Ratios are computed per round and the table shows their
  median; times are medians over rounds.
* Flat-parameter variants get copies of the same gradients in their flat gradient buffer (as after a
  ``backward()`` into flattened parameters); their table compares them with torch.optim's fused step.
* Same data for everyone: parameters uniform in [0.5, 1.5) (positive, so EG "positive" applies),
  fixed gradients N(0, 1e-3²), float32. torch variants share the gradient tensors; JAX variants
  get the same values as jax arrays. Hyperparameters are the defaults except lr = 1e-3 everywhere.
* torch threads: ``--threads`` (default 1), set with ``torch.set_num_threads``. JAX/XLA: the
  flags ``--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1`` when threads == 1
  (set only if jax was not imported before, as under pytest; the header says which).
* JAX: ``jax.jit(step, donate_argnums=(0, 1)).lower(...).compile()`` of
  ``step(params, state, grads) -> (optax.apply_updates(params, updates), state)``, the same
  wrapper for dynopt.jax and optax; ``block_until_ready`` ends each sample.
* dynopt ``fused=True``: its kernels are traced and compiled at the second step (the first creates
  the state) and cached per process, so each layout's in-process warm-up may reuse kernels of an
  earlier layout. The cold cost is measured in a child process with a fresh inductor cache: the
  first two steps of every optimizer on layout (c) (``--fused-probe``).
* torch.compile: ``torch.compile(lambda: opt.step())`` of the foreach torch.optim optimizer.
  A cold compile can take minutes (2000 tensors: >3 min on this machine), so compile times are
  first measured in a child process under a time cap (``--compile-cap``, and ``--compile-budget``
  for all of them together) with a fresh inductor cache; a configuration that compiled there is
  compiled again in this process (cache hit) and timed with the others; one that did not is
  skipped with the reason printed. JAX compiles of layouts with more than ``--jax-probe-leaves``
  leaves go through the same kind of probe (XLA compile time grows fast with the leaf count).
* Bandwidth bound. Each round also times two streaming kernels on 64 MB float32 buffers,
  ``a.add_(b)`` (12 B/element) and ``a.copy_(b)`` (8 B/element); the higher rate is the
  machine's bandwidth B. An optimizer moves, per element and step, at least

      bytes = itemsize · (1 + 2 + 2·S + R)

  reading the gradient (1), reading and writing the parameter (2), reading and writing each of
  its S parameter-shaped state tensors (2·S), and, for a spec with tree-wide reductions, the
  R parameter-shaped tensors the reduction pass reads before the update can start (the meta
  step: gradient, previous step and step trace, R = 3). S comes from the dynopt spec: SGD 12 B,
  Momentum / Nesterov / RMSprop 20 B, Adam 28 B, EG 12 B, MetaSGD 40 B, MetaAdam 56 B (float32;
  with trace_decay=0 the meta step keeps no trace: 28 B and 44 B).
  bound = bytes · numel / B. Layouts (b) and (c) fit partly in the 32 MB L3 cache, so a kernel
  can beat this DRAM bound there (ratio < 1). Two caveats: the meta step without gains can fold
  its dot products into the pass that writes the new previous step and trace and apply s·u in a
  second pass, which needs 4 B/element less (MetaSGD 36 B, MetaAdam 52 B: still >= 3.0x and
  >= 1.86x its base; 24 B and 40 B, 2.0x and 1.43x, with trace_decay=0); and EG's expm1 is compute-bound on one core (torch.expm1 over 16M floats: ~13 ms
  against ~4 ms for a multiply), so EG cannot reach this bound with one thread.
* Peak memory per step (torch): allocations of the CPU allocator during one step, recorded by
  ``torch.profiler`` with ``profile_memory=True``; the table shows the peak of the running sum of
  allocations minus frees from the start of the step (transient memory on top of params, grads and
  state). dynopt's flat path also *holds* buffers between steps (its pool of temporaries, gathered
  gradients), shown separately. RSS is not used: glibc keeps freed memory and returns it by pages, so RSS deltas
  neither see transient peaks nor are per-step. JAX: the compiled executable's
  ``memory_analysis().temp_size_in_bytes``.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import queue
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# --------------------------------------------------------------------------------------- layouts

# torchvision.models.resnet18().parameters(), in order: 62 tensors, 11,689,512 elements.
RESNET18_SHAPES: list[tuple[int, ...]] = [
    (64, 3, 7, 7), (64,), (64,),                                                  # conv1, bn1
    (64, 64, 3, 3), (64,), (64,), (64, 64, 3, 3), (64,), (64,),                   # layer1.0
    (64, 64, 3, 3), (64,), (64,), (64, 64, 3, 3), (64,), (64,),                   # layer1.1
    (128, 64, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,),            # layer2.0
    (128, 64, 1, 1), (128,), (128,),                                              # layer2.0.downsample
    (128, 128, 3, 3), (128,), (128,), (128, 128, 3, 3), (128,), (128,),           # layer2.1
    (256, 128, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,),           # layer3.0
    (256, 128, 1, 1), (256,), (256,),                                             # layer3.0.downsample
    (256, 256, 3, 3), (256,), (256,), (256, 256, 3, 3), (256,), (256,),           # layer3.1
    (512, 256, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,),           # layer4.0
    (512, 256, 1, 1), (512,), (512,),                                             # layer4.0.downsample
    (512, 512, 3, 3), (512,), (512,), (512, 512, 3, 3), (512,), (512,),           # layer4.1
    (1000, 512), (1000,),                                                         # fc
]
assert len(RESNET18_SHAPES) == 62 and sum(math.prod(s) for s in RESNET18_SHAPES) == 11_689_512


def _shrink(shape: tuple[int, ...], factor: int) -> tuple[int, ...]:
    return tuple(max(1, d // factor) if d >= 64 else d for d in shape)


LAYOUTS: dict[str, tuple[str, list[tuple[int, ...]]]] = {
    "a": ("1 x 16M", [(16_000_000,)]),
    "b": ("ResNet-18 (62 tensors, 11.7M)", RESNET18_SHAPES),
    "c": ("2000 x 1000", [(1000,)] * 2000),
    "d": ("MLP 784-128-10 (4 tensors, 101,770)", [(128, 784), (128,), (10, 128), (10,)]),  # issue 15's tiny model
}
FAST_LAYOUTS: dict[str, tuple[str, list[tuple[int, ...]]]] = {
    "a": ("1 x 64K", [(65_536,)]),
    "b": ("ResNet-18 shapes / 16 (62 tensors)", [_shrink(s, 16) for s in RESNET18_SHAPES]),
    "c": ("200 x 100", [(100,)] * 200),
    "d": ("MLP 256-64-10 (4 tensors)", [(64, 256), (64,), (10, 64), (10,)]),
}

# ------------------------------------------------------------------------------------ optimizers

LR = 1e-3


@dataclass(frozen=True)
class Entry:
    """One optimizer row: the dynopt class/factory and the references it is compared with."""

    name: str  # the dynopt.torch class name
    kwargs: dict
    torch_ref: Callable | None = None  # (params, **impl) -> torch.optim optimizer; impl: foreach/fused flags
    optax_ref: Callable | None = None  # () -> optax transformation
    base: str | None = None  # no reference anywhere: compare with dynopt's own base optimizer


def _entries() -> list[Entry]:
    import optax
    import torch

    return [
        Entry("SGD", {"lr": LR}, lambda p, **i: torch.optim.SGD(p, lr=LR, **i), lambda: optax.sgd(LR)),
        Entry("Momentum", {"lr": LR, "momentum": 0.9}, lambda p, **i: torch.optim.SGD(p, lr=LR, momentum=0.9, **i),
              lambda: optax.sgd(LR, momentum=0.9)),
        Entry("Nesterov", {"lr": LR, "momentum": 0.9},
              lambda p, **i: torch.optim.SGD(p, lr=LR, momentum=0.9, nesterov=True, **i),
              lambda: optax.sgd(LR, momentum=0.9, nesterov=True)),
        Entry("RMSprop", {"lr": LR}, lambda p, **i: torch.optim.RMSprop(p, lr=LR, alpha=0.99, eps=1e-8, **i),
              lambda: optax.rmsprop(LR, decay=0.99, eps=1e-8, eps_in_sqrt=False)),
        Entry("Adam", {"lr": LR}, lambda p, **i: torch.optim.Adam(p, lr=LR, **i), lambda: optax.adam(LR)),
        Entry("AdamW", {"lr": LR, "weight_decay": 1e-2}, lambda p, **i: torch.optim.AdamW(p, lr=LR, weight_decay=1e-2, **i),
              lambda: optax.adamw(LR, weight_decay=1e-2)),
        Entry("EG", {"lr": LR, "variant": "positive"}, base="SGD"),
        Entry("MetaSGD", {"lr": LR}, base="SGD"),
        Entry("MetaAdam", {"lr": LR}, base="Adam"),
    ]


GROUPS = [("SGD", "EG", "MetaSGD"), ("Momentum",), ("Nesterov",), ("RMSprop",), ("Adam", "MetaAdam"), ("AdamW",)]
ORDER = ["SGD", "Momentum", "Nesterov", "RMSprop", "Adam", "AdamW", "EG", "MetaSGD", "MetaAdam"]
TORCH_IMPLS = {"for-loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}
# dynopt-flatp: the same optimizers on parameters flattened by dynopt.torch.flatten_parameters (flat-parameter mode)
TORCH_LABELS = ["dynopt", "dynopt-fused", "dynopt-flatp", "dynopt-flatp-fused", "for-loop", "foreach", "fused", "compiled"]


def bytes_per_element(entry: Entry, itemsize: int = 4) -> int:
    """itemsize · (1 + 2 + 2·S + R): read g, read+write p, read+write each state tensor, reduction reads."""
    import dynopt

    spec = dynopt.REGISTRY[entry.name]
    hp = spec.namespace(entry.kwargs)
    state_tensors = len(spec.state(hp))
    # the meta step's reduction pass reads the gradient, the previous step and (trace_decay > 0) the step trace
    reduction_reads = 1 + sum(n in ("previous_direction", "step_trace") for n in spec.state(hp)) if spec.reductions is not None else 0
    return itemsize * (1 + 2 + 2 * state_tensors + reduction_reads)


# ------------------------------------------------------------------------------------------ data


def make_init(shapes, seed=0):
    import torch

    gen = torch.Generator().manual_seed(seed)
    params = [torch.rand(s, generator=gen) + 0.5 for s in shapes]
    grads = [torch.randn(s, generator=gen) * 1e-3 for s in shapes]
    return params, grads


def torch_params(init, grads):
    import torch

    params = [torch.nn.Parameter(x.clone()) for x in init]
    for p, g in zip(params, grads):
        p.grad = g
    return params


def flat_params(init, grads):
    """``torch_params`` flattened by ``dynopt.torch.flatten_parameters``: parameters and gradients (copies of
    ``grads``) are views of one flat buffer each, as a model flattened before training has them."""
    import dynopt.torch as dt

    params = torch_params(init, grads)
    dt.flatten_parameters(params)
    return params


# -------------------------------------------------------------------------------------- variants


@dataclass
class Variant:
    label: str  # "dynopt", "dynopt-fused", "for-loop", "foreach", "fused", "compiled", "dynopt.jax", "optax", "bandwidth"
    optimizer: str
    step: Callable[[], Any]
    sync: Callable[[], Any] | None = None
    opt: Any = None
    k: int = 1
    samples: list[float] = field(default_factory=list)
    faults: list[float] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def sample(self, k: int) -> float:
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        for _ in range(k):
            self.step()
        if self.sync is not None:
            self.sync()
        elapsed = time.perf_counter() - start
        self.faults.append((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / k)
        return elapsed / k


class JaxRunner:
    """``params, state = compiled(params, state, grads)`` with params and state donated.

    ``one_d``: the prototype of a generic backend change, the update computed on 1-D views of
    every leaf (``reshape`` is free under jit; XLA's CPU loops vectorize poorly over a short minor
    dimension such as the 3x3 of a convolution kernel). The state then has 1-D leaves."""

    def __init__(self, tx, params_np, grads_np, one_d: bool = False):
        import jax
        import jax.numpy as jnp
        import optax

        def step(params, state, grads):
            if not one_d:
                updates, state = tx.update(grads, state, params)
                return optax.apply_updates(params, updates), state
            flat = [p.reshape(-1) for p in params]
            updates, state = tx.update([g.reshape(-1) for g in grads], state, flat)
            return [new.reshape(p.shape) for new, p in zip(optax.apply_updates(flat, updates), params)], state

        self.params = [jnp.asarray(x, dtype=jnp.float32) for x in params_np]
        self.grads = [jnp.asarray(x, dtype=jnp.float32) for x in grads_np]
        self.state = tx.init([p.reshape(-1) for p in self.params] if one_d else self.params)
        start = time.perf_counter()
        self.compiled = jax.jit(step, donate_argnums=(0, 1)).lower(self.params, self.state, self.grads).compile()
        self.compile_s = time.perf_counter() - start
        analysis = self.compiled.memory_analysis()
        self.temp_bytes = getattr(analysis, "temp_size_in_bytes", float("nan")) if analysis is not None else float("nan")
        self._jax = jax

    def step(self):
        self.params, self.state = self.compiled(self.params, self.state, self.grads)

    def sync(self):
        self._jax.block_until_ready((self.params, self.state))


def bandwidth_variant(numel: int) -> Variant:
    """Streaming kernels; the sample is bytes/s of the faster of in-place add and copy."""
    import torch

    a, b = torch.rand(numel), torch.rand(numel)
    nbytes = numel * a.element_size()

    def rate() -> float:
        best = 0.0
        for kernel, moved in ((lambda: a.add_(b, alpha=1e-9), 3 * nbytes), (lambda: a.copy_(b), 2 * nbytes)):
            start = time.perf_counter()
            kernel()
            kernel()
            best = max(best, 2 * moved / (time.perf_counter() - start))
        return best

    rate()
    return Variant("bandwidth", "-", rate)


# ------------------------------------------------------------------------------ compile probes


def _jax_cache(directory: str) -> None:
    """A persistent XLA compilation cache shared by the probe children and this process."""
    import jax

    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


def _probe_main(request: dict) -> None:
    """Child process: compile each item, print one JSON line per item (stdout), as soon as done."""
    _setup_threads(request["threads"])
    if request.get("jax_cache"):
        _jax_cache(request["jax_cache"])
    layouts = FAST_LAYOUTS if request["fast"] else LAYOUTS
    shapes = layouts[request["layout"]][1]
    init, grads = make_init(shapes)
    entries = {e.name: e for e in _entries()}
    for name in request["items"]:
        entry = entries.get(name)
        start = time.perf_counter()
        if request["kind"] == "torch":
            variant = make_compiled(entry, init, grads)
            result = {"item": name, **variant.info}
        elif request["kind"] == "dynopt-fused":
            import dynopt.torch as dt

            opt = getattr(dt, name)(torch_params(init, grads), **entry.kwargs, fused=True)
            opt.step()  # creates the state (reference path)
            first = time.perf_counter() - start
            opt.step()  # traces and compiles the kernels
            result = {"item": name, "first_step_s": first, "second_step_s": time.perf_counter() - start - first}
        else:
            entry = entries[name.split("@")[0]]
            runner = JaxRunner(_jax_tx(entry, name.endswith("@optax")), [x.numpy() for x in init], [g.numpy() for g in grads])
            result = {"item": name, "compile_s": runner.compile_s}
        result["wall_s"] = time.perf_counter() - start
        print("PROBE " + json.dumps(result), flush=True)


def _pump(stream, lines: queue.Queue) -> None:
    for line in stream:
        lines.put(line)
    lines.put(None)


def run_probes(kind: str, layout: str, items: list[str], cap: float, budget: list[float], args) -> dict[str, dict]:
    """Compile ``items`` in child processes, each under ``cap`` seconds and all under ``budget[0]``.

    Returns item -> {"ok": True, ...child measurements} or {"ok": False, "reason": ...}."""
    results: dict[str, dict] = {}
    pending = list(items)
    while pending:
        if budget[0] <= 1:
            for item in pending:
                results[item] = {"ok": False, "reason": "compile budget spent"}
            break
        request = {"kind": kind, "layout": layout, "items": pending, "fast": args.fast, "threads": args.threads,
                   "jax_cache": getattr(args, "jax_cache", None)}
        child = subprocess.Popen([sys.executable, __file__, "--probe", json.dumps(request)], stdout=subprocess.PIPE,
                                 stderr=subprocess.DEVNULL, text=True, cwd=ROOT, start_new_session=True)
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=_pump, args=(child.stdout, lines), daemon=True).start()
        started = time.perf_counter()
        item_start = started
        current = pending[0]
        while True:
            limit = min(cap - (time.perf_counter() - item_start), budget[0] - (time.perf_counter() - started))
            try:
                line = lines.get(timeout=max(limit, 0.01))
            except queue.Empty:
                os.killpg(child.pid, 9)  # the child's own process group, started above
                child.wait()
                reason = f"no compile within the {cap:.0f} s cap" if limit <= budget[0] - (time.perf_counter() - started) \
                    else "compile budget spent"
                results[current] = {"ok": False, "reason": reason, "waited_s": time.perf_counter() - item_start}
                pending.remove(current)
                break
            if line is None:  # the child ended
                child.wait()
                if current in pending:
                    results[current] = {"ok": False, "reason": f"compile failed in the child (exit {child.returncode})"}
                    pending.remove(current)
                break
            if line.startswith("PROBE "):
                result = json.loads(line[6:])
                results[result["item"]] = {"ok": True, **result}
                pending.remove(result["item"])
                item_start = time.perf_counter()
                if not pending:
                    child.wait()
                    break
                current = pending[0]
        budget[0] -= time.perf_counter() - started
    return results


# ----------------------------------------------------------------------------- variant builders


def _jax_tx(entry: Entry, reference: bool):
    import dynopt
    import dynopt.jax as dj

    if reference:
        return entry.optax_ref()
    spec = dynopt.REGISTRY[entry.name]
    kwargs = dict(entry.kwargs)
    return dj.from_spec(spec)(kwargs.pop("lr"), **kwargs)  # the spec itself: entry.kwargs has its (torch) names


def make_compiled(entry: Entry, init, grads) -> Variant:
    """torch.compile of the foreach torch.optim step; info: first call and warm-up seconds."""
    import torch

    torch._dynamo.reset()
    opt = entry.torch_ref(torch_params(init, grads), foreach=True)
    compiled = torch.compile(lambda: opt.step())
    start = time.perf_counter()
    compiled()
    first = time.perf_counter() - start
    for _ in range(2):
        compiled()
    return Variant("compiled", entry.name, compiled, opt=opt,
                   info={"first_step_s": first, "warmup_s": time.perf_counter() - start})


def _fused_available(entry: Entry) -> str | None:
    """None if torch.optim has a fused CPU kernel for this optimizer, else the reason."""
    import torch

    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4)
    try:
        entry.torch_ref([p], fused=True).step()
    except (TypeError, RuntimeError, ValueError) as err:
        return f"{type(err).__name__}: {str(err).splitlines()[0][:70]}"
    return None


# --------------------------------------------------------------------------------------- running


def _setup_threads(threads: int) -> dict:
    note = {}
    if "jax" not in sys.modules and threads == 1:
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flags).strip()
        note["xla"] = flags
    else:
        note["xla"] = "XLA defaults (jax was imported before the benchmark)" if "jax" in sys.modules else "XLA defaults"
    import torch

    note["torch_threads_before"] = torch.get_num_threads()
    torch.set_num_threads(threads)
    return note


@contextlib.contextmanager
def _quiet_stderr_fd():
    """Silence the profiler's C++ start/stop lines on file descriptor 2."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def profile_peak(step: Callable[[], Any]) -> float:
    """Peak bytes allocated (allocations minus frees, running sum) by the CPU allocator during one call."""
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile

    with _quiet_stderr_fd(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        step()
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        event = stack.pop()
        if event.tag == _EventType.Allocation:
            events.append((event.start_time_ns, event.extra_fields.alloc_size))
        stack.extend(event.children)
    events.sort()
    current = peak = 0
    for _, size in events:
        current += size
        peak = max(peak, current)
    return float(peak)


def run_group(layout: str, names: tuple[str, ...], shapes, entries, args, probes, log) -> dict:
    """Build every variant of one comparison group, time them in interleaved rounds; per-variant samples."""
    import torch

    import dynopt.torch as dt

    init, grads = make_init(shapes)
    variants: list[Variant] = []
    notes: dict[str, str] = {}
    torch._dynamo.reset()
    for name in names:
        entry = entries[name]
        cls = getattr(dt, name)
        kw = dict(entry.kwargs)
        opt = cls(torch_params(init, grads), **kw)
        variants.append(Variant("dynopt", name, opt.step, opt=opt))
        fused = cls(torch_params(init, grads), **kw, fused=True)
        variants.append(Variant("dynopt-fused", name, fused.step, opt=fused))
        for label, options in (("dynopt-flatp", {}), ("dynopt-flatp-fused", {"fused": True})):
            flat = cls(flat_params(init, grads), **kw, **options)
            variants.append(Variant(label, name, flat.step, opt=flat))
        if entry.torch_ref is not None:
            for impl, flags in TORCH_IMPLS.items():
                if impl == "fused":
                    why = _fused_available(entry)
                    if why is not None:
                        notes[f"{name} fused"] = f"n/a ({why})"
                        continue
                ref = entry.torch_ref(torch_params(init, grads), **flags)
                variants.append(Variant(impl, name, ref.step, opt=ref))
            probe = probes.get(("torch", layout, name))
            if probe is not None and probe["ok"]:
                compiled = make_compiled(entry, init, grads)
                compiled.info.update(cold_first_step_s=probe["first_step_s"], cold_warmup_s=probe["warmup_s"])
                variants.append(compiled)
            elif probe is not None:
                notes[f"{name} compiled"] = f"skipped: {probe['reason']}"
            else:
                notes[f"{name} compiled"] = "skipped: " + args.compile_skip_reason
        if not args.no_jax:
            p_np, g_np = [x.numpy() for x in init], [g.numpy() for g in grads]
            jax_variants = [("dynopt.jax", False, False), ("optax", True, False)]
            if any(len(s) > 1 for s in shapes):
                jax_variants.append(("jax 1-D", False, True))
            for label, reference, one_d in jax_variants:
                if reference and entry.optax_ref is None:
                    continue
                key = ("jax", layout, name + ("@optax" if reference else ""))
                probe = probes.get(key)
                if probe is not None and not probe["ok"]:
                    notes[f"{name} {label}"] = f"skipped: {probe['reason']}"
                    continue
                runner = JaxRunner(_jax_tx(entry, reference), p_np, g_np, one_d=one_d)
                info = {"compile_s": probe["compile_s"] if probe and not one_d else runner.compile_s,
                        "temp_bytes": runner.temp_bytes}
                variants.append(Variant(label, name, runner.step, runner.sync, opt=runner, info=info))
    bandwidth = bandwidth_variant(args.bandwidth_numel)

    # warm-up (state creation, first calls), then choose k per variant
    for v in variants:
        for _ in range(args.warmup):
            v.step()
        if v.sync:
            v.sync()
        t = v.sample(1)
        v.k = max(1, min(args.max_k, math.ceil(args.min_sample / max(t, 1e-9))))
    for v in variants:
        if v.label == "compiled":
            v.info["frames"] = _dynamo_frames()
    rng = random.Random(zlib.crc32(repr((layout, names)).encode()))
    for _ in range(args.rounds):
        order = variants + [bandwidth]
        rng.shuffle(order)
        for v in order:
            v.samples.append(v.sample(v.k) if v is not bandwidth else v.step())
    for v in variants:
        if v.label == "compiled":
            v.info["recompiled_during_timing"] = _dynamo_frames() != v.info.get("frames")
        if v.label in TORCH_LABELS:
            v.info["peak_bytes"] = profile_peak(v.step)
            if v.label.startswith("dynopt"):
                plan = getattr(v.opt, "_flat", None)
                v.info["held_bytes"] = plan.held_bytes() if plan is not None else 0
                v.info["flat"] = plan is not None
                v.info["direct"] = getattr(v.opt.execution, "direct", 0)  # parameters stepped in place (flat parameters)
    log(f"  {layout} {'/'.join(names)}: " + ", ".join(f"{v.optimizer}:{v.label} {statistics.median(v.samples) * 1e3:.2f}"
                                                      for v in variants))
    out = {"variants": variants, "bandwidth": bandwidth.samples, "notes": notes}
    del init, grads
    return out


def _dynamo_frames() -> int:
    try:
        from torch._dynamo.utils import counters

        return int(sum(counters["frames"].values()))
    except Exception:  # pragma: no cover - private API
        return -1


# ------------------------------------------------------------------------------------ reporting


def _median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def summarize(layout: str, numel: int, groups: list[dict], entries) -> tuple[list[dict], list[dict], list[dict]]:
    torch_rows, jax_rows, mem_rows = [], [], []
    found = {(v.optimizer, v.label): (v, g) for g in groups for v in g["variants"]}
    notes = {k: v for g in groups for k, v in g["notes"].items()}
    for name in ORDER:
        entry = entries[name]
        if (name, "dynopt") not in found:
            continue
        dyn, group = found[(name, "dynopt")]
        fused = found[(name, "dynopt-fused")][0]
        bw = group["bandwidth"]
        nbytes = bytes_per_element(entry) * numel
        bounds = [nbytes / rate for rate in bw]
        if entry.base is None:
            refs = [found[(name, impl)][0] for impl in ("for-loop", "foreach", "fused", "compiled") if (name, impl) in found]
            best = min(refs, key=lambda v: statistics.median(v.samples))
            best_label, fused_ref = f"torch {best.label}", best
        else:
            best, fused_ref = found[(entry.base, "dynopt")][0], found[(entry.base, "dynopt-fused")][0]
            best_label = f"dynopt {entry.base}"
        row = {
            "layout": layout, "optimizer": name,
            "dynopt_ms": statistics.median(dyn.samples) * 1e3,
            "fused_ms": statistics.median(fused.samples) * 1e3,
            "ref": best_label, "ref_ms": statistics.median(best.samples) * 1e3,
            "dynopt_vs_ref": _median_ratio(dyn.samples, best.samples),
            "fused_vs_ref": _median_ratio(fused.samples, fused_ref.samples),
            "bound_ms": statistics.median(bounds) * 1e3,
            "dynopt_vs_bound": _median_ratio(dyn.samples, bounds),
            "fused_vs_bound": _median_ratio(fused.samples, bounds),
            "ref_vs_bound": _median_ratio(best.samples, bounds),
            "bytes_per_element": bytes_per_element(entry),
            "all_ms": {v.label: statistics.median(v.samples) * 1e3 for (n, _), (v, _) in found.items() if n == name},
            "k": {v.label: v.k for (n, _), (v, _) in found.items() if n == name},
            "faults": {v.label: statistics.median(v.faults) for (n, _), (v, _) in found.items() if n == name and v.faults},
            "notes": {k.split(" ", 1)[1]: v for k, v in notes.items() if k.split(" ", 1)[0] == name},
        }
        # flat-parameter mode: against torch.optim's fused step (where it has one) and the best reference;
        # EG and Meta* rows against their base on flat parameters
        flatp, flatp_fused = found[(name, "dynopt-flatp")][0], found[(name, "dynopt-flatp-fused")][0]
        torch_fused = found.get((name, "fused"), (None,))[0]
        flatp_refs = (best, best) if entry.base is None else \
            (found[(entry.base, "dynopt-flatp")][0], found[(entry.base, "dynopt-flatp-fused")][0])
        nan = float("nan")
        row.update({
            "flatp_ms": statistics.median(flatp.samples) * 1e3,
            "flatp_fused_ms": statistics.median(flatp_fused.samples) * 1e3,
            "flatp_ref": best_label if entry.base is None else f"dynopt {entry.base} (flat parameters)",
            "flatp_vs_ref": _median_ratio(flatp.samples, flatp_refs[0].samples),
            "flatp_fused_vs_ref": _median_ratio(flatp_fused.samples, flatp_refs[1].samples),
            "torch_fused_ms": statistics.median(torch_fused.samples) * 1e3 if torch_fused else nan,
            "flatp_vs_torch_fused": _median_ratio(flatp.samples, torch_fused.samples) if torch_fused else nan,
            "flatp_fused_vs_torch_fused": _median_ratio(flatp_fused.samples, torch_fused.samples) if torch_fused else nan,
            "flatp_direct": (flatp.info.get("direct"), flatp_fused.info.get("direct")),
            "direct": (dyn.info.get("direct"), fused.info.get("direct")),
        })
        foreach = found.get((name, "foreach"), (None,))[0]
        row.update({  # issue 15's targets: the default path against torch.optim foreach, fused=True against the default
            "dynopt_vs_foreach": _median_ratio(dyn.samples, foreach.samples) if foreach else nan,
            "fused_vs_dynopt": _median_ratio(fused.samples, dyn.samples),
        })
        if (name, "compiled") in found:
            row["compile"] = found[(name, "compiled")][0].info
        torch_rows.append(row)
        mem_rows.append({"layout": layout, "optimizer": name, "param_bytes": numel * 4,
                         **{v.label: v.info.get("peak_bytes") for (n, _), (v, _) in found.items()
                            if n == name and "peak_bytes" in v.info},
                         "dynopt_held": dyn.info.get("held_bytes"), "fused_held": fused.info.get("held_bytes"),
                         "flatp_held": flatp.info.get("held_bytes"), "flatp_fused_held": flatp_fused.info.get("held_bytes"),
                         "dynopt_flat": dyn.info.get("flat"), "fused_flat": fused.info.get("flat")})
        if (name, "dynopt.jax") in found:
            dj = found[(name, "dynopt.jax")][0]
            if entry.base is None:
                ref = found.get((name, "optax"), (None,))[0]
                ref_label = "optax"
            else:
                ref = found.get((entry.base, "dynopt.jax"), (None,))[0]
                ref_label = f"dynopt.jax {entry.base}"
            jrow = {"layout": layout, "optimizer": name, "dynopt_ms": statistics.median(dj.samples) * 1e3,
                    "ref": ref_label, "ref_ms": float("nan"), "dynopt_vs_ref": float("nan"),
                    "bound_ms": statistics.median(bounds) * 1e3, "dynopt_vs_bound": _median_ratio(dj.samples, bounds),
                    "ref_vs_bound": float("nan"), "compile_s": dj.info["compile_s"], "temp_bytes": dj.info["temp_bytes"],
                    "ref_compile_s": float("nan"), "ref_temp_bytes": float("nan")}
            if ref is not None:
                jrow.update(ref_ms=statistics.median(ref.samples) * 1e3, dynopt_vs_ref=_median_ratio(dj.samples, ref.samples),
                            ref_vs_bound=_median_ratio(ref.samples, bounds), ref_compile_s=ref.info["compile_s"],
                            ref_temp_bytes=ref.info["temp_bytes"])
            else:
                jrow["ref"] += " (skipped)"
            one_d = found.get((name, "jax 1-D"), (None,))[0]
            one_d_ref = ref if entry.base is None else found.get((entry.base, "jax 1-D"), (None,))[0]
            if one_d is not None:
                jrow["proto_ms"] = statistics.median(one_d.samples) * 1e3
                if one_d_ref is not None:
                    jrow["proto_vs_ref"] = _median_ratio(one_d.samples, one_d_ref.samples)
            jax_rows.append(jrow)
        else:
            jax_rows.append({"layout": layout, "optimizer": name, "skipped": notes.get(f"{name} dynopt.jax", "jax off")})
    return torch_rows, jax_rows, mem_rows


def _f(x, digits=2):
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    return f"{x:.{digits}f}"


def _mb(nbytes: float) -> str:
    return _f(nbytes / 1e6, 1 if nbytes >= 1e6 or nbytes == 0 else 3)


def print_tables(torch_rows, jax_rows, mem_rows, layouts, out=print):
    out("\n### torch (CPU): dynopt.torch (default, and fused=True) against torch.optim\n")
    out("ms = median step time; ratios = median over rounds of per-round ratios; bound = bytes/element × numel / bandwidth.")
    out("EG and Meta* rows compare with dynopt's own base optimizer (dynopt against dynopt base, fused against fused base).\n")
    out("| layout | optimizer | dynopt ms | fused ms | best reference | ref ms | dynopt/ref | fused/ref | B/elem | bound ms | dynopt/bound | fused/bound | ref/bound |")
    out("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in torch_rows:
        out(f"| {r['layout']} | {r['optimizer']} | {_f(r['dynopt_ms'])} | {_f(r['fused_ms'])} | {r['ref']} | {_f(r['ref_ms'])} | "
            f"{_f(r['dynopt_vs_ref'])} | {_f(r['fused_vs_ref'])} | {r['bytes_per_element']} | {_f(r['bound_ms'])} | "
            f"{_f(r['dynopt_vs_bound'])} | {_f(r['fused_vs_bound'])} | {_f(r['ref_vs_bound'])} |")
    out("\n### issue 15's targets: the default path against torch.optim foreach; fused=True against the fastest and the default\n")
    out("| layout | optimizer | dynopt ms | foreach ms | dynopt/foreach | fused ms | best reference | fused/ref | fused/dynopt |")
    out("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for r in torch_rows:
        if r["ref"].startswith("torch"):
            out(f"| {r['layout']} | {r['optimizer']} | {_f(r['dynopt_ms'])} | {_f(r['all_ms'].get('foreach'))} | "
                f"{_f(r['dynopt_vs_foreach'])} | {_f(r['fused_ms'])} | {r['ref']} | {_f(r['fused_vs_ref'])} | "
                f"{_f(r['fused_vs_dynopt'])} |")
    out("\n### flat-parameter mode: dynopt.torch on parameters flattened by flatten_parameters\n")
    out("flat = the default path, flat fused = fused=True, both on flattened parameters and gradients (stepped in place,")
    out("no gather, no scatter); ratios = median over rounds of per-round ratios; in place = parameters stepped in")
    out("place at the last step (flat / flat fused). EG and Meta* rows compare with their base on flattened parameters.\n")
    out("| layout | optimizer | flat ms | flat fused ms | torch fused ms | flat/torch fused | flat fused/torch fused | "
        "best reference | flat/ref | flat fused/ref | in place |")
    out("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for r in torch_rows:
        out(f"| {r['layout']} | {r['optimizer']} | {_f(r['flatp_ms'])} | {_f(r['flatp_fused_ms'])} | {_f(r['torch_fused_ms'])} | "
            f"{_f(r['flatp_vs_torch_fused'])} | {_f(r['flatp_fused_vs_torch_fused'])} | {r['flatp_ref']} | "
            f"{_f(r['flatp_vs_ref'])} | {_f(r['flatp_fused_vs_ref'])} | {r['flatp_direct'][0]} / {r['flatp_direct'][1]} |")
    out("\n### every torch variant (median ms per step; k = steps per sample)\n")
    labels = TORCH_LABELS
    out("| layout | optimizer | " + " | ".join(labels) + " | notes |")
    out("|---|---|" + "---:|" * len(labels) + "---|")
    for r in torch_rows:
        cells = [f"{_f(r['all_ms'][lab])} (k={r['k'][lab]})" if lab in r["all_ms"] else "—" for lab in labels]
        notes = "; ".join(f"{k}: {v}" for k, v in r["notes"].items() if not k.endswith("jax") and k != "optax")
        out(f"| {r['layout']} | {r['optimizer']} | " + " | ".join(cells) + f" | {notes} |")
    out("\n### minor page faults per step (median over samples; a 4 KiB page touched for the first time)\n")
    out("| layout | optimizer | " + " | ".join(labels) + " | dynopt.jax | optax |")
    out("|---|---|" + "---:|" * (len(labels) + 2))
    for r in torch_rows:
        cells = [_f(r["faults"].get(lab), 0) for lab in labels + ["dynopt.jax", "optax"]]
        out(f"| {r['layout']} | {r['optimizer']} | " + " | ".join(cells) + " |")
    compiled = [r for r in torch_rows if "compile" in r]
    if compiled:
        out("\n### torch.compile (foreach torch.optim step)\n")
        out("| layout | optimizer | cold first step s (child) | cold warm-up s (3 steps) | in-process first step s (cache hit) | recompiled while timed |")
        out("|---|---|---:|---:|---:|---|")
        for r in compiled:
            c = r["compile"]
            out(f"| {r['layout']} | {r['optimizer']} | {_f(c.get('cold_first_step_s'), 1)} | {_f(c.get('cold_warmup_s'), 1)} | "
                f"{_f(c.get('first_step_s'), 1)} | {c.get('recompiled_during_timing')} |")
    out("\n### JAX (jit, donated params and state): dynopt.jax against optax\n")
    out("1-D = prototype: the same dynopt.jax update on 1-D views of the leaves (layouts with multi-dimensional leaves only);")
    out("its ratio is against optax, or for EG/Meta* against the base's 1-D variant.\n")
    out("| layout | optimizer | dynopt.jax ms | 1-D ms | reference | ref ms | dynopt/ref | 1-D/ref | bound ms | dynopt/bound | ref/bound | compile s (dynopt / ref) | XLA temp MB (dynopt / ref) |")
    out("|---|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|")
    for r in jax_rows:
        if "skipped" in r:
            out(f"| {r['layout']} | {r['optimizer']} | — | — | {r['skipped']} | — | — | — | — | — | — | — | — |")
            continue
        out(f"| {r['layout']} | {r['optimizer']} | {_f(r['dynopt_ms'])} | {_f(r.get('proto_ms'))} | {r['ref']} | {_f(r['ref_ms'])} | "
            f"{_f(r['dynopt_vs_ref'])} | {_f(r.get('proto_vs_ref'))} | "
            f"{_f(r['bound_ms'])} | {_f(r['dynopt_vs_bound'])} | {_f(r['ref_vs_bound'])} | "
            f"{_f(r['compile_s'], 1)} / {_f(r['ref_compile_s'], 1)} | {_mb(r['temp_bytes'])} / {_mb(r['ref_temp_bytes'])} |")
    out("\n### peak transient memory per torch step (MB allocated on top of params, grads and state; torch.profiler)\n")
    out("| layout | optimizer | params MB | dynopt (+ held between steps) | dynopt-fused (+ held) | dynopt-flatp (+ held) | "
        "dynopt-flatp-fused (+ held) | for-loop | foreach | fused | compiled |")
    out("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in mem_rows:
        mb = {key: _mb(r[key]) if r.get(key) is not None else "—" for key in TORCH_LABELS}

        def held(key, r=r):
            return f" (+{_mb(r[key])})" if r.get(key) is not None else ""

        out(f"| {r['layout']} | {r['optimizer']} | {_mb(r['param_bytes'])} | {mb['dynopt']}{held('dynopt_held')} | "
            f"{mb['dynopt-fused']}{held('fused_held')} | {mb['dynopt-flatp']}{held('flatp_held')} | "
            f"{mb['dynopt-flatp-fused']}{held('flatp_fused_held')} | {mb['for-loop']} | {mb['foreach']} | {mb['fused']} | "
            f"{mb['compiled']} |")


# ----------------------------------------------------------------------------------------- main


def machine_info(args, xla_note) -> dict:
    import jax
    import numpy
    import optax
    import torch

    model = platform.processor()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    backend = ROOT / "dynopt" / "_backends" / "torch_optim.py"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "dynopt"], capture_output=True, text=True, cwd=ROOT, timeout=10).stdout.split()
    except (OSError, subprocess.SubprocessError):
        commit, dirty = "?", []
    return {
        "cpu": model, "cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
        "jax": jax.__version__, "optax": optax.__version__, "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(), "xla": xla_note, "load_before": os.getloadavg(),
        "commit": commit, "dynopt_modified": dirty[1::2] if dirty else [],
        "torch_backend_sha1": hashlib.sha1(backend.read_bytes()).hexdigest()[:10],
    }


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--fast", action="store_true", help="tiny sizes, 2 rounds, no torch.compile (smoke test)")
    mode.add_argument("--quick", action="store_true", help="full sizes, 3 rounds, no torch.compile")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--layouts", default="abcd")
    parser.add_argument("--optimizers", default=",".join(ORDER))
    parser.add_argument("--min-sample", type=float, help="seconds per sample (k steps)")
    parser.add_argument("--max-k", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--no-jax", action="store_true")
    parser.add_argument("--compile-cap", type=float, default=90.0, help="seconds per torch.compile (child process)")
    parser.add_argument("--compile-budget", type=float, default=120.0, help="seconds for all torch.compile probes")
    parser.add_argument("--jax-cap", type=float, default=30.0, help="seconds per probed JAX compile")
    parser.add_argument("--jax-budget", type=float, default=100.0, help="seconds for all JAX compile probes")
    parser.add_argument("--jax-probe-leaves", type=int, default=256, help="probe JAX compiles of layouts with more leaves")
    parser.add_argument("--json", help="write the rows here")
    parser.add_argument("--no-fused-probe", action="store_true", help="skip the cold first steps of dynopt fused=True")
    parser.add_argument("--probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = 2 if args.fast else 3 if args.quick else 5
    if args.min_sample is None:
        args.min_sample = 0.002 if args.fast else 0.03
    args.bandwidth_numel = 1 << 16 if args.fast else 16_000_000
    args.compile_skip_reason = "--fast" if args.fast else "--quick" if args.quick else "--no-compile"
    if args.fast or args.quick:
        args.no_compile = True
    return args


def main(argv: list[str] | None = None, out: Callable[[str], Any] = print) -> dict:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.probe:
        _probe_main(json.loads(args.probe))
        return {}
    started = time.perf_counter()
    tmp = tempfile.TemporaryDirectory(prefix="dynopt-bench-")
    if not args.fast:  # cold, private compile caches (children and this process share them)
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(Path(tmp.name) / "inductor")
    xla_note = _setup_threads(args.threads)
    import torch

    if not args.fast:
        args.jax_cache = str(Path(tmp.name) / "jax")
        _jax_cache(args.jax_cache)
    torch_threads_before = xla_note.pop("torch_threads_before")
    info = machine_info(args, xla_note["xla"])
    out(f"# dynopt step-time benchmark ({'fast' if args.fast else 'quick' if args.quick else 'full'})")
    out(f"machine: {info['cpu']}, {info['cpus']} CPUs; python {info['python']}, torch {info['torch']}, jax {info['jax']}, "
        f"optax {info['optax']}, numpy {info['numpy']}")
    out(f"threads: torch {info['torch_threads']}; {info['xla']}; load average before (1/5/15 min): "
        f"{' '.join(f'{x:.2f}' for x in info['load_before'])}")
    out(f"dynopt commit {info['commit']}, uncommitted changes in: {', '.join(info['dynopt_modified']) or 'none'}; "
        f"torch backend sha1 {info['torch_backend_sha1']}")
    out(f"rounds {args.rounds}, sample >= {args.min_sample * 1e3:.0f} ms, warm-up {args.warmup} steps, lr {LR}, float32")

    layouts = FAST_LAYOUTS if args.fast else LAYOUTS
    chosen = [name for name in args.optimizers.split(",") if name]
    entries = {e.name: e for e in _entries()}
    groups = [tuple(n for n in g if n in chosen) for g in GROUPS]
    groups = [g for g in groups if g]
    for name in chosen:  # a Meta/EG row needs its base in the same rounds
        base = entries[name].base
        if base and base not in chosen:
            raise SystemExit(f"{name} is compared with {base}: add {base} to --optimizers")

    probes: dict[tuple, dict] = {}
    if not args.no_compile:
        budget = [args.compile_budget]
        for layout in sorted(args.layouts, key="bacd".index):  # the realistic layout first
            items = [n for n in ("Adam", "Momentum", "SGD", "Nesterov", "RMSprop", "AdamW") if n in chosen]
            out(f"compiling torch.optim steps for layout {layout} in a child process (cap {args.compile_cap:.0f} s each, "
                f"{budget[0]:.0f} s left)...")
            results = run_probes("torch", layout, items[:1], args.compile_cap, budget, args)
            if not results[items[0]]["ok"] and "cap" in results[items[0]]["reason"]:
                for n in items[1:]:
                    results[n] = {"ok": False, "reason": f"{items[0]} did not compile within the cap on this layout"}
            else:
                results.update(run_probes("torch", layout, items[1:], args.compile_cap, budget, args))
            for n, r in results.items():
                probes[("torch", layout, n)] = r
                out(f"  {layout} {n}: " + (f"first step {r['first_step_s']:.1f} s" if r["ok"] else r["reason"]))
    if not args.no_jax and not args.fast:
        budget = [args.jax_budget]
        for layout in args.layouts:
            if len(layouts[layout][1]) <= args.jax_probe_leaves:
                continue
            items = [n + "@optax" for n in chosen if entries[n].optax_ref is not None] + list(chosen)  # cheap ones first
            out(f"compiling JAX steps for layout {layout} ({len(layouts[layout][1])} leaves) in a child process "
                f"(cap {args.jax_cap:.0f} s each)...")
            for n, r in run_probes("jax", layout, items, args.jax_cap, budget, args).items():
                probes[("jax", layout, n)] = r
                out(f"  {layout} {n}: " + (f"compile {r['compile_s']:.1f} s" if r["ok"] else r["reason"]))

    fused_probe: dict[str, dict] = {}
    if not args.no_fused_probe:
        items = list(chosen)[:1] if args.fast else list(chosen)
        out(f"first steps of dynopt fused=True on layout c in a child process ({'default' if args.fast else 'fresh'} inductor cache; cap {args.compile_cap:.0f} s each)...")
        fused_probe = run_probes("dynopt-fused", "c", items, args.compile_cap, [args.compile_budget], args)
        for n, r in fused_probe.items():
            out(f"  c {n}: " + (f"step 1 (state) {r['first_step_s']:.2f} s, step 2 (trace + compile) {r['second_step_s']:.2f} s"
                               if r["ok"] else r["reason"]))

    torch_rows, jax_rows, mem_rows = [], [], []
    out("timing (median ms per step as each group finishes):")
    for layout in args.layouts:
        title, shapes = layouts[layout]
        numel = sum(math.prod(s) for s in shapes)
        results = [run_group(layout, g, shapes, entries, args, probes, out) for g in groups]
        t, j, m = summarize(f"{layout}: {title}", numel, results, entries)
        torch_rows += t
        jax_rows += j
        mem_rows += m
        del results
    print_tables(torch_rows, jax_rows, mem_rows, layouts, out)
    load_after = os.getloadavg()
    elapsed = time.perf_counter() - started
    out(f"\nload average after: {' '.join(f'{x:.2f}' for x in load_after)}; total {elapsed:.0f} s")
    torch.set_num_threads(torch_threads_before)
    result = {"info": {**info, "load_after": load_after, "elapsed_s": elapsed}, "torch": torch_rows, "jax": jax_rows,
              "memory": mem_rows, "fused_probe": fused_probe}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1, default=str))
    tmp.cleanup()
    return result


if __name__ == "__main__":
    main()
