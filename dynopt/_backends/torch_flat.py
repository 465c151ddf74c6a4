"""Fast execution of a spec in the torch backend: flat buckets, reused buffers, compiled kernels.

``torch_optim.SpecOptimizer`` has one reference path (each tree operation one ``torch._foreach_*``
call over the parameters of a bucket; see that module). After the first step it runs the same
spec on a *flat plan* instead, unless the optimizer was built with ``flat=False``:

* **Flat buckets.** The parameters of a param group with the same device, dtype and step count
  form a bucket; every state variable of a bucket lives in one contiguous buffer and
  ``optimizer.state[p][name]`` is a view into it, so ``state_dict``, checkpoints and schedulers
  see what they always saw. A parameter of at least ``FLAT_MAX_NUMEL`` elements is a bucket of
  its own and is used in place; smaller ones are gathered (gradients, and parameters when the
  spec reads them) into a flat buffer with one ``_foreach_copy_``. The spec then sees trees of a
  single leaf, so each tree operation is one ATen kernel over the whole bucket.
* **Flat parameters** (``flatten_parameters``, module ``torch_flat_params``). A run of consecutive
  parameters of a group whose data, and whose gradients, are consecutive pieces of one buffer each
  (found from the memory alone, ``adjacent_runs``) is a *direct* bucket: it steps views of those
  buffers in place, nothing gathered or scattered. Every step checks that the parameters and
  gradients are still there (``FlatPlan.holds``: native loops, ``native_checks``; ``Bucket.aliased`` in
  the full check); the plan is rebuilt when they moved.
* **Reused temporaries** (eager execution). Every intermediate result is written with ``out=`` into
  a buffer of a per-bucket pool that lives across steps; a buffer is free again as soon as the
  tensor handed out for it is garbage. No allocation per step, hence no page faults.
* **One-pass reductions.** ``o.sum``/``o.dot`` are one ``sum``/``dot`` kernel. The spec's global
  reductions keep the fault isolation of the reference path (a parameter whose own sum is not
  finite is left out). A bucket of one parameter gets it for free. For a gathered bucket on the
  CPU the one-pass total is read on the host (free there) and recomputed per parameter only if
  it is not finite; on other devices, where that read would synchronise, the per-parameter sums
  are always computed on the device (``segment_reduce``) and no step reads anything back.
* **Compiled kernels** (``fused=True``). The bucket update is traced once per spec, static
  options and dtype into an ATen graph (``make_fx``, symbolic sizes; the step number and the
  numeric hyperparameters are 0-dim float64 inputs, so schedules never recompile) and compiled
  by ``torch.compile`` (inductor) into one loop that reads the gradient, parameter and state
  once and writes the parameter and state in place. Compiled kernels are cached per process and
  shared by every optimizer and bucket size. Compilation happens before anything is written. From a
  kernel's second call on, inductor's code is called directly (``torch_direct``), and an update that is
  one ATen kernel is run by the eager program instead (nothing to fuse).

The plan is cached and rebuilt when the parameters that have gradients, the param groups, the
hyperparameters' static structure or the state entries change, and after ``load_state_dict``.
A plan that steps only flattened parameters in place is confirmed at each step against a snapshot
(``FlatPlan.arm``/``holds``: list comparisons and ``map`` over the parameters, no Python loop per
parameter); any difference falls back to the full check (``plan_key``, ``FlatPlan.current``).
The reference path still runs the first step (it creates the state), steps of groups with
``skip_nonfinite=True``, specs that reduce inside a leaf (``o.sum_along``, e.g. a projection onto a simplex),
sparse or non-contiguous parameters, and ``flat=False``. ``tests/test_torch_paths.py`` proves
every path equal to the reference path, parameters and state, on the whole zoo.
"""

from __future__ import annotations

import operator
import weakref
from types import SimpleNamespace
from typing import Any, Callable

import torch

from ..spec import Spec, is_static_zero
from ..tree import ZERO, TreeMath, UnreadParamsError, unread
from . import driver, torch_eager_graph, torch_flat_params
from .native_checks import CHECKS
from .torch_direct import DirectCompiled
from .torch_ops import ForeachOps, at_least_float32, is_plain, real_dtype, real_view

__all__ = ["FLAT_MAX_NUMEL", "NeedsLeaves", "FlatPlan", "build_plan"]

FLAT_MAX_NUMEL = 1 << 16  # a parameter this large is a bucket of its own, stepped in place

_OUT = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
        "minimum": torch.minimum, "neg": torch.neg, "sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log,
        "abs": torch.abs, "sign": torch.sign, "expm1": torch.expm1}


class NeedsLeaves(Exception):
    """The spec reduces inside a leaf, which a flat bucket would mix across parameters."""


def split_views(flat: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    """Parameter-shaped views of consecutive pieces of ``flat``."""
    views, offset = [], 0
    for shape in shapes:
        n = shape.numel()
        views.append(flat[offset:offset + n].view(shape))
        offset += n
    return views


class Pool:
    """Flat scratch buffers of one bucket, reused across operations and across steps."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device, shapes: list[torch.Size]):
        self.numel, self.dtype, self.device, self.shapes = numel, dtype, device, shapes
        self.slots: list[list] = []  # [buffer, weak reference to the tensor handed out, cached views]

    def take(self) -> torch.Tensor:
        for slot in self.slots:
            if slot[1] is None or slot[1]() is None:
                break
        else:
            slot = [torch.empty(self.numel, dtype=self.dtype, device=self.device), None, None]
            self.slots.append(slot)
        out = slot[0].view(-1)  # a new tensor object on the same memory: its lifetime is the temporary's
        slot[1] = weakref.ref(out)
        return out

    def views(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-shaped views of ``tensor`` (cached when it is one of this pool's buffers)."""
        for slot in self.slots:
            if slot[1] is not None and slot[1]() is tensor:
                if slot[2] is None:
                    slot[2] = split_views(slot[0], self.shapes)
                return slot[2]
        return split_views(tensor, self.shapes)

    @property
    def nbytes(self) -> int:
        return sum(slot[0].numel() * slot[0].element_size() for slot in self.slots)


class FlatOps(ForeachOps):
    """Leaf operations on one-leaf trees: each one ATen kernel, writing into ``pool`` when given.

    Without a pool (tracing for a compiled kernel) results are fresh tensors."""

    def __init__(self, pool: Pool | None = None):
        self.pool = pool

    def _out(self) -> dict[str, torch.Tensor]:
        return {} if self.pool is None else {"out": self.pool.take()}

    def binary(self, op, xs, ys):
        (x,) = xs
        y = ys[0] if isinstance(ys, list) else ys
        if op in ("maximum", "minimum") and not isinstance(ys, list):
            return [(torch.clamp_min if op == "maximum" else torch.clamp_max)(x, y, **self._out())]
        return [_OUT[op](x, y, **self._out())]

    def rbinary(self, op, s, xs):
        (x,) = xs
        if op == "sub":  # s − x == (−x) + s exactly, as in the reference path
            return [torch.neg(x, **self._out()).add_(s)]
        if op in ("add", "mul"):
            return [_OUT[op](x, s, **self._out())]
        return [_OUT[op](s, x, **self._out())]

    def unary(self, op, xs):
        return [_OUT[op](xs[0], **self._out())]

    def sum_all(self, xs):
        return xs[0].sum() if xs else super().sum_all(xs)

    def dot(self, xs, ys):
        return torch.dot(xs[0], ys[0])

    def scalar_where(self, cond, a, b):
        return torch.where(cond, a, b)  # a 0-dim value: never into a bucket-sized pool buffer

    def where(self, cond, xs, ys):
        return [torch.where(cond, xs[0], ys[0], **self._out())]

    def reduce_along(self, op, xs, axis):
        raise NeedsLeaves(op)

    def matmul(self, xs, ys, alpha=1.0, beta=0.0, cs=None):  # per-leaf matrix algebra needs the leaves' shapes
        raise NeedsLeaves("matmul")

    def transpose(self, xs, which=None):
        raise NeedsLeaves("transpose")

    def cast(self, xs, dtype):
        raise NeedsLeaves("cast")

    def leaf_shape(self, x):
        raise NeedsLeaves("leaf_shape")


HOST_CHECK_DEVICES = {"cpu"}  # device types where reading a total on the host costs no synchronisation


class FiniteFlatOps(FlatOps):
    """Sums over a bucket that leave out a parameter whose own sum is not finite (see the module docstring)."""

    def __init__(self, pool: Pool):
        super().__init__(pool)
        self.lengths = torch.tensor([shape.numel() for shape in pool.shapes], device=pool.device)
        self.host_check = pool.device.type in HOST_CHECK_DEVICES

    def _finite(self, total: torch.Tensor, x: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``total`` = Σx, or the sum of the finite per-parameter sums of ``x()`` when it is not finite
        (in at least float32, as on the reference path)."""
        total = at_least_float32(total)
        if len(self.pool.shapes) == 1:
            return torch.where(torch.isfinite(total), total, 0.0)
        if self.host_check and bool(torch.isfinite(total)):
            return total
        sums = at_least_float32(torch.segment_reduce(x(), "sum", lengths=self.lengths))
        return torch.where(torch.isfinite(sums), sums, 0.0).sum()

    def sum_all(self, xs):
        if not xs:  # the sum of ZERO
            return super().sum_all(xs)
        (x,) = xs
        return self._finite(x.sum(), lambda: x)

    def dot(self, xs, ys):
        (x,), (y,) = xs, ys
        return self._finite(torch.dot(x, y), lambda: torch.mul(x, y, out=self.pool.take()))


def _one(scalar: torch.Tensor) -> torch.Tensor:
    """A bucket's value of a scalar state: the tensor itself when 0-dim (one parameter, or a global scalar held
    once), else the first of the stacked per-parameter values (equal within a bucket)."""
    return scalar if scalar.dim() == 0 else scalar[0]


_GRAD = operator.attrgetter("grad")
_DATA_PTR = torch.Tensor.data_ptr


class Bucket:
    """The parameters of one flat bucket, its flat state, gather buffers and pool."""

    def __init__(self, state: dict, params: list[torch.Tensor], names: tuple[str, ...], scalar_names: tuple[str, ...],
                 needs_params: bool, spec_name: str = "the spec", direct: bool = False):
        first = params[0]
        self.params, self.names, self.scalar_names, self.spec_name = params, names, scalar_names, spec_name
        # direct: the parameters, and their gradients, are consecutive pieces of one buffer each (flat-parameter
        # mode, see ``adjacent_runs``): the bucket steps views of those buffers in place, nothing is gathered
        self.direct = direct
        self.complex = first.is_complex()  # stepped as real views (re, im), as torch.optim does; the state stays complex
        self.shapes = [torch.Size([*p.shape, 2]) if self.complex else p.shape for p in params]
        self.numel = sum(shape.numel() for shape in self.shapes)
        self.single = len(params) == 1
        self.needs_params = needs_params
        self.count = int(state[first]["step"])
        dtype = real_dtype(first.dtype)
        self.pool = Pool(self.numel, dtype, first.device, self.shapes)
        self.math = TreeMath(FlatOps(self.pool))
        self.reductions = TreeMath(FiniteFlatOps(self.pool))
        self.flat: dict[str, torch.Tensor] = {}  # state name -> flat buffer
        for name in names:
            old = [state[p][name] for p in params]
            if self.single:
                self.flat[name] = real_view(old[0]).view(-1)
                continue
            flat = torch.empty(self.numel, dtype=dtype, device=first.device)
            views = split_views(flat, self.shapes)
            torch._foreach_copy_(views, [real_view(x) for x in old])
            for p, view in zip(params, views):
                state[p][name] = torch.view_as_complex(view) if self.complex else view
            self.flat[name] = flat
        self.steps = self._stack(state, "step")
        self.scalars = {name: self._stack(state, name) for name in scalar_names}
        self.entries = [(state[p], name, state[p][name]) for p in params for name in ("step", *names, *scalar_names)]
        self.grad_flat = self.param_flat = self.delta_flat = None
        self.kernel = self.reducer = None  # (signature of the hyperparameter inputs, compiled kernel) once fused
        self.program, self.graph_note = None, ""  # (signature, eager graph Program or why not), default path
        if direct:
            self.addresses = [p.data_ptr() for p in params]  # checked at every step (``aliased``)
            self.grad_addresses = [p.grad.data_ptr() for p in params]
            self.grad_flat = torch.as_strided(first.grad.detach(), (self.numel,), (1,), first.grad.storage_offset())
            self.param_flat = torch.as_strided(first.detach(), (self.numel,), (1,), first.storage_offset())
        elif not self.single:
            self.grad_flat = torch.empty(self.numel, dtype=dtype, device=first.device)
            self.grad_views = split_views(self.grad_flat, self.shapes)
            if needs_params:
                self.param_flat = torch.empty(self.numel, dtype=dtype, device=first.device)
                self.param_views = split_views(self.param_flat, self.shapes)

    def _stack(self, state: dict, name: str) -> torch.Tensor:
        """The 0-dim ``state[p][name]`` of the bucket as views of one tensor (one kernel updates all)."""
        old = [state[p][name] for p in self.params]
        if self.single or all(x is old[0] for x in old):  # one tensor already (a global scalar): nothing to stack
            return old[0]
        flat = torch.stack([x.detach() for x in old])
        for i, p in enumerate(self.params):
            state[p][name] = flat[i]
        return flat

    def intact(self) -> bool:
        """The state entries are still the ones this bucket planned (nobody replaced them), and a direct
        bucket's parameters and gradients still the views it steps."""
        if getattr(self, "_columns", None) is None or self._columns[0] is not self.entries:
            self._columns = (self.entries, *(map(list, zip(*self.entries)) if self.entries else ([], [], [])))
        _, entries, names, values = self._columns
        return CHECKS.entries_are(entries, names, values) and (not self.direct or self.aliased())

    def aliased(self) -> bool:
        """(Direct buckets) every parameter's data and every gradient's data are where they were when planned
        (the flat buffers stay allocated while the bucket holds views of them, so no other tensor can be there);
        a gradient assigned anew, ``grad.data = ...``, ``param.data = ...`` or ``.to()`` all move one."""
        grads = list(map(_GRAD, self.params))
        return (CHECKS.data_ptrs_are(self.params, self.addresses)
                and CHECKS.data_ptrs_are(grads, self.grad_addresses))

    @property
    def in_place(self) -> bool:
        """The step is added to the parameters where they are (one parameter, or a direct bucket)."""
        return self.single or self.direct

    @property
    def held_bytes(self) -> int:
        """Memory held beyond the state: pool, gather and delta buffers."""
        extra = [x for x in ((None, None) if self.direct else (self.grad_flat, self.param_flat)) + (self.delta_flat,)
                 if x is not None]
        return self.pool.nbytes + sum(x.numel() * x.element_size() for x in extra)

    def gather(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Flat gradient and (when the spec reads it) flat parameter of this bucket."""
        if self.single:
            (p,) = self.params
            return real_view(p.grad).reshape(-1), (real_view(p.detach()).view(-1) if self.needs_params else None)
        if self.direct:  # views of the buffers the parameters and gradients live in: nothing to copy
            return self.grad_flat, (self.param_flat if self.needs_params else None)
        torch._foreach_copy_(self.grad_views, [real_view(p.grad) for p in self.params] if self.complex
                             else [p.grad for p in self.params])
        if self.needs_params:
            torch._foreach_copy_(self.param_views, self.values())
        return self.grad_flat, self.param_flat

    def current_grad(self) -> torch.Tensor:
        """A copy of the flat gradient as the parameters hold it now (a closure may have replaced gradients)."""
        if self.direct and (any(p.grad is None for p in self.params) or not self.aliased()):
            return torch.cat([p.grad.reshape(-1) for p in self.params])  # as the gathered path, None fails
        return self.gather()[0].clone()

    def values(self) -> list[torch.Tensor]:
        """The parameters as the spec sees them and the step writes them (complex ones as real views)."""
        return [real_view(p.detach()) for p in self.params] if self.complex else self.params

    def trees(self, math: TreeMath, grad, param):
        state = SimpleNamespace(**{n: math.tree([self.flat[n]]) for n in self.names},
                                **{n: _one(s) for n, s in self.scalars.items()})
        # a spec that does not read the parameter (needs_params False) may only multiply it by a literal 0
        return math.tree([grad]), math.tree([param]) if param is not None else unread(math.ops, self.spec_name), state

    def delta_buffer(self) -> torch.Tensor:
        """A flat buffer for a compiled kernel's step (gathered buckets), with ``delta_views``."""
        if self.delta_flat is None:
            first = self.params[0]
            self.delta_flat = torch.empty(self.numel, dtype=real_dtype(first.dtype), device=first.device)
            self.delta_views = split_views(self.delta_flat, self.shapes)
        return self.delta_flat

    def add_delta(self, delta: torch.Tensor) -> None:
        if self.single:
            self.values()[0].add_(delta.view(self.shapes[0]))
        elif self.direct:
            self.param_flat.add_(delta)
            torch.autograd.graph.increment_version(self.params)  # as an in-place step on each parameter would
        else:
            torch._foreach_add_(self.values(), self.pool.views(delta))

    def commit(self, delta, new: dict[str, Any]) -> None:
        """Write an eager result: the parameter step and the state buffers (the caller writes the global scalars,
        after every bucket has read them; the plan advances the counters)."""
        values = {name: new[name] if new[name] is ZERO else new[name].leaves[0] for name in self.names}
        if self.in_place and self.needs_params and delta is not ZERO:  # a new state that is the parameter read in
            memory = self.params[0].untyped_storage().data_ptr()       # place must keep its value before the step
            values = {n: v.clone() if v is not ZERO and v.untyped_storage().data_ptr() == memory else v
                      for n, v in values.items()}
        if delta is not ZERO:
            self.add_delta(delta.leaves[0])
        for name, value in values.items():
            if value is ZERO:
                self.flat[name].zero_()
            elif value is not self.flat[name]:
                self.flat[name].copy_(value)

    def kernel_inputs(self, hypers: list[torch.Tensor], t: torch.Tensor, grad, param, totals: dict) -> list:
        """The inputs of a compiled kernel, in the order it was traced with (``hypers``: see ``hyper_inputs``;
        ``t``: the step number as a 0-dim float64 tensor)."""
        scalars = [_one(s) for s in self.scalars.values()]
        return [grad, *([param] if self.needs_params else []), *(self.flat[n] for n in self.names), *scalars, t,
                *hypers, *(totals[n] for n in sorted(totals))]

    def fused_reductions(self, spec: Spec, hp: SimpleNamespace, hypers: list, signature: tuple, grad, param):
        """The spec's reductions over this bucket in one compiled pass; None where the per-parameter
        fault isolation needs the eager path (a gathered bucket whose sums are not all finite, or
        one on a device where checking that would synchronise)."""
        inputs = [grad, *([param] if self.needs_params else []), *(self.flat[n] for n in self.names),
                  *(_one(s) for s in self.scalars.values()), *hypers]
        if self.reducer is None or self.reducer[0] != signature:
            self.reducer = signature, compiled_reductions(spec, hp, self, inputs)
        names, kernel = self.reducer[1]
        sums = [at_least_float32(v) for v in kernel(*inputs)]
        if self.single:
            return {n: torch.where(torch.isfinite(v), v, 0.0) for n, v in zip(names, sums)}
        if not self.reductions.ops.host_check or not bool(torch.isfinite(torch.stack(list(sums))).all()):
            return None
        return dict(zip(names, sums))

    def run_kernel(self, kernel: "Kernel", inputs: list, hoisted: list) -> dict[str, Any]:
        """Run the compiled step; returns the new global scalars, which the caller writes once every bucket has
        run (a global scalar is one tensor, which the other buckets' kernels read as an input)."""
        if self.single:  # the parameter itself; where the kernel also reads it, the very tensor it reads (two views
            # of one storage with different ._base tensors are inputs AOTAutograd refuses to compile)
            target = inputs[1] if self.needs_params else real_view(self.params[0].detach()).view(-1)
        else:
            target = self.param_flat if self.direct else self.delta_buffer()
        new_scalars = kernel(inputs, target, [self.flat[n] for n in self.names], hoisted)
        if self.direct:
            torch.autograd.graph.increment_version(self.params)  # as an in-place step on each parameter would
        elif not self.single:
            torch._foreach_add_(self.values(), self.delta_views)
        return dict(zip(self.scalar_names, new_scalars))

    def commit_scalars(self, new: dict[str, Any]) -> None:
        """Write the global scalars (already finite-or-previous: the driver's contract); the plan advances the counters."""
        for name, flat in self.scalars.items():
            flat.copy_(torch.as_tensor(new[name]).to(flat.device, flat.dtype))


def _staged(spec: Spec, work: list, totals: dict | None, closure: Callable[[], Any]) -> list:
    """A multi-stage scheme on flat buckets: at each stage every bucket's parameters are set to its stage
    point, the closure runs once, and each bucket's staged update receives its gathered gradient. The
    parameters are restored before the results (``(group, bucket, None, (delta, new))``) are committed."""
    steppers, starts, results = [], [], {}
    for _group, hp, bucket, grad, _ in work:
        start = torch.cat([v.detach().reshape(-1) for v in bucket.values()])  # θ_n, also the spec's parameter
        starts.append(start)
        grads, param, state = bucket.trees(bucket.math, grad.clone(), start)
        extra = {} if totals is None else {"totals": totals}
        steppers.append((grads, state, spec.staged_update(bucket.math, hp, bucket.count + 1, grads, param, state, **extra)))
    pending = {}

    def advance(index, value=None):
        try:
            stepper = steppers[index][2]
            pending[index] = next(stepper) if value is None else stepper.send(value)
        except StopIteration as done:
            pending.pop(index, None)
            results[index] = done.value

    try:
        for index in range(len(work)):
            advance(index)
        while pending:
            for index, point in pending.items():
                bucket = work[index][2]
                torch._foreach_copy_(bucket.values(), split_views(point.leaves[0], bucket.shapes))
            with torch.enable_grad():
                closure()
            for index in list(pending):
                bucket = work[index][2]
                advance(index, bucket.math.tree([bucket.current_grad()]))
    finally:
        for (_, _, bucket, _, _), start in zip(work, starts):
            torch._foreach_copy_(bucket.values(), split_views(start, bucket.shapes))
    prepared = []
    for index, (group, hp, bucket, _, _) in enumerate(work):
        grads, state, _ = steppers[index]
        done = driver.finish(spec, bucket.math, hp, grads, state, *results[index])
        prepared.append((group, bucket, None, (done.delta, done.state)))
    return prepared


def _immutable(value: Any) -> bool:
    """A hyperparameter value that cannot change while it stays the same object (a tensor changes in place,
    but the kernels read the tensor itself)."""
    return (isinstance(value, (int, float, str, type(None), torch.Tensor))
            or (type(value) is tuple and all(map(_immutable, value))))


def _runs_eagerly(bucket: Bucket) -> bool:
    """(fused=True) The bucket's update was found to be one ATen kernel (``FlatPlan._trivial``): the eager
    program runs it, and gathers what it reads as on the default path."""
    return (bucket.kernel is None and bucket.program is not None
            and isinstance(bucket.program[1], torch_eager_graph.Program) and bucket.program[1].passes <= 1)


class FlatPlan(SimpleNamespace):
    """``groups``: (group, buckets) per param group with gradients; ``key``: what it was built for;
    ``unplanned``: the state entries of parameters without a gradient (they keep the global scalars);
    ``direct``: how many parameters are stepped in place, nothing gathered (direct buckets: the flat-parameter
    mode; and a parameter that is a bucket of its own); ``note``: why
    flattened parameters are gathered instead ("" if none is); ``generation``: see ``current``."""

    def step(self, spec: Spec, hyper: Callable[[dict], SimpleNamespace],
             all_reduce: Callable[[dict], dict] | None = None, closure: Callable[[], Any] | None = None) -> None:
        """One step of every bucket: the spec's reductions, then every update computed (or its kernel
        compiled) before anything is written. Raises ``NeedsLeaves`` before writing, if it does.
        ``all_reduce``: applied to the reductions' totals over all buckets (sums over other ranks' shards).
        ``closure``: re-evaluates the gradients at a stage point of a multi-stage scheme."""
        work, hypers = [], {}
        for group, buckets in self.groups:
            hp, inputs, _ = self.hyperparameters(spec, hyper, group)
            if inputs is not None:  # fused, or the eager graph executor: the numeric hyperparameters as kernel inputs
                hypers[id(group)] = inputs
            work += [(group, hp, bucket, *(bucket.gather() if (group["fused"] and not _runs_eagerly(bucket))
                                           or spec.reductions is not None or torch_eager_graph.reads_grad(bucket)
                                           else (bucket.grad_flat, None)))
                     for bucket in buckets]  # not gathered: a gradient the eager program only scatters
        totals = None
        if spec.reductions is not None:
            totals = {}
            for group, hp, bucket, grad, param in work:
                parts = bucket.fused_reductions(spec, hp, *hypers[id(group)], grad, param) if group["fused"] else None
                if parts is None:
                    math = bucket.reductions
                    parts = spec.reductions(math, hp, *bucket.trees(math, grad, param))
                for key, value in parts.items():
                    totals[key] = value if key not in totals else totals[key] + value.to(totals[key].device)
            if all_reduce is not None:
                totals = all_reduce(totals)
        prepared, steps = [], {}
        if spec.gradient_calls > 1:  # stages need the closure between them: eager, every bucket in lockstep
            prepared = _staged(spec, work, totals, closure)
            work = []
        for group, hp, bucket, grad, param in work:
            if (group["fused"] and bucket.kernel is None and torch_eager_graph.ENABLED
                    and (trivial := self._trivial(spec, hp, bucket, hypers[id(group)], steps, grad, param, totals))):
                prepared.append((group, bucket, *trivial))  # one ATen kernel: nothing for the compiler to fuse
            elif group["fused"]:
                values, signature = hypers[id(group)]
                if bucket.count not in steps:
                    steps[bucket.count] = torch.tensor(float(bucket.count + 1), dtype=torch.float64)
                inputs = bucket.kernel_inputs(values, steps[bucket.count], grad, param, totals or {})
                if bucket.kernel is None or bucket.kernel[0] != signature:
                    bucket.kernel = signature, compiled_kernel(spec, hp, bucket, inputs, tuple(sorted(totals or {})))
                prepared.append((group, bucket, bucket.kernel[1], inputs))
            elif id(group) in hypers and isinstance(program := self._program(spec, hp, bucket, hypers[id(group)], steps,
                                                                              grad, param, totals), tuple):
                prepared.append((group, bucket, *program))  # the eager graph executor (torch_eager_graph)
            else:
                trees = bucket.trees(bucket.math, grad, param)  # (grad, param, state)
                done = driver.step(spec, bucket.math, hp, bucket.count + 1, *trees, totals=totals)
                prepared.append((group, bucket, None, (done.delta, done.state)))
        hoisted: dict[tuple, list] = {}  # the prelude of a kernel family is the same for a group and count
        scalars = []  # written after every kernel has read the old values
        for group, bucket, kernel, payload in prepared:
            if kernel is None:
                bucket.commit(*payload)
                scalars.append((bucket, payload[1]))
                continue
            key = (id(group), bucket.count, kernel.family)
            if key not in hoisted:
                hoisted[key] = kernel.hoisted(payload)
            if isinstance(kernel, torch_eager_graph.Program):
                scalars.append((bucket, kernel.run(bucket, payload, hoisted[key])))
            else:
                scalars.append((bucket, bucket.run_kernel(kernel, payload, hoisted[key])))
        for bucket, new in scalars:
            bucket.commit_scalars(new)
        buckets = [bucket for _, bucket, _, _ in prepared]
        if buckets:
            torch._foreach_add_([bucket.steps for bucket in buckets], 1.0)
        for bucket in buckets:
            bucket.count += 1

    @staticmethod
    def _program(spec: Spec, hp: SimpleNamespace, bucket: Bucket, hypers: tuple, steps: dict, grad, param,
                 totals: dict | None) -> tuple | None:
        """``(program, inputs)`` of the eager graph executor for this bucket, or None: one kernel per tree
        operation (``bucket.graph_note`` says why)."""
        values, signature = hypers
        if bucket.count not in steps:
            steps[bucket.count] = torch.tensor(float(bucket.count + 1), dtype=torch.float64)
        inputs = bucket.kernel_inputs(values, steps[bucket.count], grad, param, totals or {})
        if bucket.program is None or bucket.program[0] != signature:
            bucket.program = signature, torch_eager_graph.program(spec, hp, bucket, inputs, tuple(sorted(totals or {})))
        program = bucket.program[1]
        if isinstance(program, str):
            bucket.graph_note = program
            return None
        bucket.graph_note = ""
        return program, inputs

    def hyperparameters(self, spec: Spec, hyper: Callable[[dict], SimpleNamespace], group: dict) -> tuple:
        """``(hp, inputs, static)`` of a param group: its hyperparameters as the spec sees them; where its
        buckets run kernels (fused, or the eager graph executor), ``(values, signature)``: the numeric ones
        as 0-dim tensors (``hyper_inputs``) and their kernel signature, else None; and their static
        structure (``_static_structure``). Cached while the group holds the very same values (``is``: an lr
        a scheduler set anew, or a tensor replaced, recomputes)."""
        raw = [group[h.name] for h in spec.hyperparams]
        cached = self.__dict__.setdefault("_hypers", {}).get(id(group))
        if cached is not None and cached[0] is group and CHECKS.same_objects(cached[1], raw):
            return cached[2]
        hp = hyper(group)
        inputs = None
        if group["fused"] or torch_eager_graph.ENABLED:
            values = hyper_inputs(spec, hp)[0]
            inputs = values, tuple(map(_signature, values))
        found = hp, inputs, _static_structure(spec, hp)
        if all(map(_immutable, raw)):  # a list changed in place would be the same object: never cached
            self._hypers[id(group)] = group, raw, found
        return found

    @classmethod
    def _trivial(cls, spec: Spec, hp: SimpleNamespace, bucket: Bucket, hypers: tuple, steps: dict, grad, param,
                 totals: dict | None) -> tuple | None:
        """(fused=True) The eager graph executor's ``(program, inputs)`` when its update is at most one ATen
        kernel over the bucket (the plain gradient step): there is nothing to fuse, the compiled loop would make
        the same single pass (slower than ATen's on in-cache sizes) behind its per-call cost. None: compile."""
        found = cls._program(spec, hp, bucket, hypers, steps, grad, param, totals)
        bucket.graph_note = ""  # why the eager executor does not model an update concerns the default path only
        return found if found is not None and found[0].passes <= 1 else None

    def graph_note(self) -> str:
        """Why buckets of this plan ran one kernel per tree operation on the default path ("" if none did)."""
        notes = sorted({b.graph_note for b in self.buckets() if b.graph_note})
        return f"eager graph executor not used: {'; '.join(notes)}" if notes else ""

    def share_scalars(self) -> None:
        """Global scalars are one value: copy the first bucket's new value into every other bucket's
        stack and into the state of the parameters the plan does not step (no gradient now)."""
        buckets = self.buckets()
        if not buckets or not buckets[0].scalar_names:
            return
        first = buckets[0]
        for name in first.scalar_names:
            source = _one(first.scalars[name])
            for bucket in buckets[1:]:
                if bucket.scalars[name] is not source:
                    bucket.scalars[name].copy_(source)
            others = list({id(x): x for entry in self.unplanned if (x := entry.get(name)) is not None
                           and x is not source}.values())
            if others:
                torch._foreach_copy_(others, [source] * len(others))

    def buckets(self) -> list[Bucket]:
        return [b for _, buckets in self.groups for b in buckets]

    def current(self) -> bool:
        """Nobody replaced the state entries, the direct buckets' parameters and gradients are where they were,
        no stray flattened parameter is back in its flat buffer, and no parameters were flattened or released
        since the plan was built."""
        return (self.generation == torch_flat_params.generation() and all(b.intact() for b in self.buckets())
                and not any(p.grad is not None and p.grad.data_ptr() == home.grad_ptr
                            and p.data_ptr() == home.data.data_ptr() for p, home in self.strays))

    def arm(self, spec: Spec, groups: list[dict], hyper: Callable[[dict], SimpleNamespace],
            options: tuple[str, ...]) -> None:
        """Take the snapshot ``holds`` compares with, once ``plan_key`` and ``current`` have confirmed the plan.

        Only for a plan of the flat-parameter mode: every bucket steps its parameters in place, a run of
        flattened parameters (direct) or one flattened parameter, and no flattened parameter is a stray.
        There every gradient is an object the plan knows (a view of the flat gradient buffer), so whether
        the plan still holds is a few C-level passes over the parameters instead of ``plan_key``'s and
        ``current``'s Python-level ones. Other plans keep the full check (``snapshot`` None)."""
        self.snapshot = None
        buckets = self.buckets()
        if not buckets or self.strays or not all(
                b.direct or (b.single and torch_flat_params.home_of(b.params[0]) is not None) for b in buckets):
            return
        stepped = {id(p) for b in buckets for p in b.params}
        per_group = []
        for g in groups:
            params = list(g["params"])
            grads = list(map(_GRAD, params))
            addresses = [p.data_ptr() if id(p) in stepped else None for p in params]
            grad_addresses = [x.data_ptr() if id(p) in stepped else None for p, x in zip(params, grads)]
            per_group.append((params, grads, addresses, grad_addresses, _static_structure(spec, hyper(g)),
                              tuple(g.get(o) for o in options)))
        entries = [entry for b in buckets for entry in b.entries]
        states, names, values = (list(column) for column in zip(*entries)) if entries else ([], [], [])
        self.snapshot = SimpleNamespace(groups=per_group, states=states, names=names, values=values)

    def holds(self, spec: Spec, groups: list[dict], hyper: Callable[[dict], SimpleNamespace],
              options: tuple[str, ...]) -> bool:
        """What ``plan_key`` and ``current`` check, from the snapshot ``arm`` took; False (the caller then runs
        the full check) when there is none or anything differs: no parameters flattened or released since
        (the generation), per group its static structure and options, its parameter list and the
        gradient object of each parameter (None included), then the data addresses of the stepped
        parameters and of their gradients (``param.data = ...``, ``grad.data = ...``) and the state entries.

        Each pass over the parameters is one loop of the native checks (``native_checks.CHECKS``; C-level
        ``map`` passes where no compiler is present)."""
        snapshot = getattr(self, "snapshot", None)
        if (snapshot is None or self.generation != torch_flat_params.generation()
                or len(groups) != len(snapshot.groups)):
            return False
        for g, (params, grads, addresses, grad_addresses, static, chosen) in zip(groups, snapshot.groups):
            if not (CHECKS.same_objects(g["params"], params) and CHECKS.views_hold(params, grads, addresses, grad_addresses)
                    and tuple(g.get(o) for o in options) == chosen
                    and self.hyperparameters(spec, hyper, g)[2] == static):
                return False
        return CHECKS.entries_are(snapshot.states, snapshot.names, snapshot.values)

    def held_bytes(self) -> int:
        return sum(b.held_bytes for b in self.buckets())


def _static_structure(spec: Spec, hp: SimpleNamespace) -> tuple:
    """What the traced step depends on besides values: static options and which numbers are literal zeros."""
    out = []
    for h in spec.hyperparams:
        value = getattr(hp, h.name)
        if h.static:
            out.append((h.name, value))
        else:
            items = value if h.length else (value,)
            out.append((h.name, tuple("tensor" if isinstance(v, torch.Tensor) else v == 0 for v in items)))
    return tuple(out)


def plan_key(spec: Spec, groups: list[dict], hyper: Callable[[dict], SimpleNamespace], options: tuple[str, ...]) -> tuple:
    """Everything whose change must rebuild the plan (checked at every step)."""
    return tuple((tuple(None if p.grad is None else id(p) for p in g["params"]), _static_structure(spec, hyper(g)),
                  tuple(g.get(o) for o in options)) for g in groups)


def build_plan(spec: Spec, state: dict, groups: list[dict], hyper: Callable[[dict], SimpleNamespace],
               key: tuple) -> FlatPlan | None:
    """Bucket every group, moving its state into flat buffers; None when the reference path must run."""
    planned = []
    for group in groups:
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        hp = hyper(group)
        names, scalar_names = spec.state(hp), tuple(spec.scalars(hp))
        needed = ("step", *names, *scalar_names)
        keyed: dict[tuple, list[torch.Tensor]] = {}
        keys = []
        for p in params:
            entry = state.get(p)
            if entry is None or any(n not in entry for n in needed) or p.grad.is_sparse or not p.is_contiguous():
                return None
            if not (is_plain(p) and is_plain(p.grad)):  # DTensor (FSDP2) and other subclasses
                return None
            if any(entry[n].shape != p.shape or entry[n].dtype != p.dtype or entry[n].device != p.device for n in names):
                return None
            keys.append((p.device, p.dtype, int(entry["step"])))
        runs = adjacent_runs(params, keys)  # flat-parameter mode: stepped in place, nothing gathered
        in_runs = {id(p) for run in runs for p in run}
        for p, bucket_key in zip(params, keys):
            if id(p) not in in_runs:
                keyed.setdefault(bucket_key + ((id(p),) if p.numel() >= FLAT_MAX_NUMEL else ()), []).append(p)
        needs_params = spec.needs_params(hp)
        planned.append((group, [Bucket(state, run, names, scalar_names, needs_params, spec.name, direct=True) for run in runs]
                        + [Bucket(state, b, names, scalar_names, needs_params, spec.name) for b in keyed.values()]))
    stepped = {id(p) for _, buckets in planned for bucket in buckets for p in bucket.params}
    unplanned = [entry for p, entry in state.items() if id(p) not in stepped]
    direct = [p for _, buckets in planned for bucket in buckets if bucket.in_place for p in bucket.params]
    note, strays = _flat_parameters_note(planned, {id(p) for p in direct})
    return FlatPlan(groups=planned, key=key, unplanned=unplanned, direct=len(direct), note=note, strays=strays,
                    generation=torch_flat_params.generation())


def adjacent_runs(params: list[torch.Tensor], keys: list[tuple]) -> list[list[torch.Tensor]]:
    """The maximal runs (of at least two) of consecutive ``params`` with the same bucket key (device, dtype,
    step count) whose data are consecutive pieces of one buffer, and whose gradients are consecutive
    pieces of one buffer too, both dense, contiguous and real: the flat-parameter layout
    (``flatten_parameters``), found from the memory alone."""
    runs: list[list[torch.Tensor]] = []
    run: list[torch.Tensor] = []
    ends = None  # (key, data storage, next data address, grad storage, next grad address) after the run
    for p, key in zip(params, keys):
        g = p.grad
        fits = (not p.is_complex() and p.is_contiguous() and g.layout == torch.strided and g.is_contiguous()
                and g.dtype == p.dtype)
        if not fits:
            if len(run) > 1:
                runs.append(run)
            run, ends = [], None
            continue
        data, grad = p.untyped_storage().data_ptr(), g.untyped_storage().data_ptr()
        if ends is not None and ends == (key, data, p.data_ptr(), grad, g.data_ptr()):
            run.append(p)
        else:
            if len(run) > 1:
                runs.append(run)
            run = [p]
        size = p.numel() * p.element_size()
        ends = (key, data, p.data_ptr() + size, grad, g.data_ptr() + size)
    if len(run) > 1:
        runs.append(run)
    return runs


def _flat_parameters_note(planned: list, direct: set[int]) -> tuple[str, list]:
    """Why parameters flattened by ``flatten_parameters`` are not stepped in their flat buffers ("" if all are),
    and the strays: ``(param, home)`` of those whose data or gradient is not their flat view (the plan is
    rebuilt when one comes back, e.g. a gradient view re-attached by the hook or ``FlatParameters.zero_grad``)."""
    count, strays, named, others = 0, [], [], []
    for index, (group, buckets) in enumerate(planned):
        stepped = {id(p) for bucket in buckets for p in bucket.params}
        for position, p in enumerate(group["params"]):  # in the group's order
            home = torch_flat_params.home_of(p)
            if home is None or id(p) not in stepped:
                continue
            moved = p.data_ptr() != home.data.data_ptr() or p.dtype != home.data.dtype
            stray = moved or p.grad.data_ptr() != home.grad_ptr
            if not stray and id(p) in direct:
                continue
            count += 1
            where = f"parameter {position} of param group {index}: "
            if stray:  # stepped where it is now (gathered, or a bucket of its own), not in its flat buffer
                strays.append((p, home))
                named.append(where + ("its data is no longer its view of the flat buffer (.to(), param.data = ..., "
                                      "load_state_dict(assign=True))" if moved else
                                      "its gradient is not its view of the flat gradient buffer (assigned by hand, "
                                      "grad.data = ..., or backward(create_graph=True))"))
            elif not others:
                others.append(where + "gathered: no neighbour in its param group is next to it in memory with a "
                              "gradient (the order of the param group, or its neighbours have no gradient or another "
                              "step count)")
    if not count:
        return "", strays
    examples = "; ".join((named[:3] + [f"and {len(named) - 3} more"] if len(named) > 3 else named) or others)
    return f"flat parameters: {count} flattened parameter(s) not stepped as flat parameters: {examples}", strays


# ----------------------------------------------------------------------------------------------
# compiled kernels


class _Input:
    """Position of a hyperparameter in a compiled kernel's list of 0-dim inputs."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


def _as_input(value: Any) -> Any:
    """A numeric hyperparameter as a 0-dim float64 tensor; a literal zero stays a Python 0 (folded away)."""
    if isinstance(value, torch.Tensor) or is_static_zero(value):
        return value
    return torch.tensor(float(value), dtype=torch.float64)


def hyper_inputs(spec: Spec, hp: SimpleNamespace) -> tuple[list[torch.Tensor], dict[str, Any]]:
    """The numeric hyperparameters as a list of 0-dim tensors, and ``hp`` with positions in that list."""
    tensors, layout = [], {}
    for h in spec.hyperparams:
        value = getattr(hp, h.name)
        if h.static:
            layout[h.name] = value
            continue
        items = []
        for item in (_as_input(v) for v in (value if h.length else (value,))):
            if isinstance(item, torch.Tensor):
                items.append(_Input(len(tensors)))
                tensors.append(item)
            else:
                items.append(item)
        layout[h.name] = tuple(items) if h.length else items[0]
    return tensors, layout


def _rebuild(spec: Spec, layout: dict[str, Any], inputs: list) -> SimpleNamespace:
    def value(item):
        return inputs[item.index] if isinstance(item, _Input) else item

    return spec.namespace({name: tuple(map(value, v)) if isinstance(v, tuple) else value(v) for name, v in layout.items()})


def _signature(x: Any) -> Any:
    return (x.dtype, x.device.type, x.dim()) if isinstance(x, torch.Tensor) else x


def split_scalar_prelude(gm: torch.fx.GraphModule) -> tuple[torch.fx.GraphModule, torch.fx.GraphModule, list[int]]:
    """Split a traced step into a prelude over its 0-dim inputs and the elementwise rest.

    The bias corrections, the step size and any other function of the step number and the
    hyperparameters alone would otherwise be recomputed inside the compiled loop for every vector
    of elements. Returns ``(prelude, main, scalar_positions)``: ``prelude(*scalar inputs)`` gives the
    0-dim values the rest uses; ``main(*other inputs, *those values)`` gives the original outputs."""
    graph = gm.graph
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]

    def is_scalar_value(node) -> bool:
        value = node.meta.get("val")
        return isinstance(value, torch.Tensor) and value.dim() == 0

    scalar = set()
    for node in graph.nodes:
        if node.op == "placeholder":
            if is_scalar_value(node):
                scalar.add(node)
        elif node.op in ("call_function", "get_attr") and is_scalar_value(node) and all(n in scalar for n in node.all_input_nodes):
            scalar.add(node)
    boundary = [n for n in graph.nodes if n in scalar and any(user not in scalar for user in n.users)]
    prelude, main = torch.fx.Graph(), torch.fx.Graph()
    pre_env: dict = {}
    main_env: dict = {}
    for node in placeholders:
        if node in scalar:
            pre_env[node] = prelude.placeholder(node.name)
        else:
            main_env[node] = main.placeholder(node.name)
    for node in boundary:
        main_env[node] = main.placeholder(f"{node.name}_hoisted")
    for node in graph.nodes:
        if node.op == "placeholder":
            continue
        if node.op == "output":
            main.output(torch.fx.map_arg(node.args[0], lambda n: main_env[n]))
        elif node in scalar:
            pre_env[node] = prelude.node_copy(node, lambda n: pre_env[n])
        elif node not in main_env:
            main_env[node] = main.node_copy(node, lambda n: main_env[n])
    prelude.output([pre_env[n] for n in boundary])
    positions = [i for i, node in enumerate(placeholders) if node in scalar]
    return torch.fx.GraphModule(gm, prelude), torch.fx.GraphModule(gm, main), positions


class Kernel:
    """The compiled update of a bucket: an eager prelude over the 0-dim inputs, then one compiled loop.

    ``kernel(inputs, target, states)``: ``inputs`` are the traced function's inputs in order
    (gradient, parameter if read, state buffers, global scalars, step number, hyperparameters,
    totals); the loop adds the step to ``target`` (the parameter; for a gathered bucket, a flat
    buffer it overwrites), writes the new state into ``states`` in place, and returns the new
    global scalars."""

    def __init__(self, prelude, positions, loop, family):
        self.prelude, self.positions, self.loop, self.family = prelude, positions, loop, family
        self._others = None

    def hoisted(self, inputs: list) -> list:
        return self.prelude(*[inputs[i] for i in self.positions])

    def __call__(self, inputs: list, target: torch.Tensor, states: list[torch.Tensor], hoisted: list | None = None) -> list:
        if hoisted is None:
            hoisted = self.hoisted(inputs)
        if self._others is None:
            positions = set(self.positions)
            self._others = [i for i in range(len(inputs)) if i not in positions]
        return self.loop(*[inputs[i] for i in self._others], *hoisted, target, *states)


_KERNELS: dict[tuple, Any] = {}  # compiled updates (Kernel) and reductions ((names, kernel)), per process


class _Same:
    """A cache key that is equal only for the very same object and keeps it alive: an ``id()`` alone
    could be reused by a new spec once the old one is garbage, and find the old one's kernel."""

    __slots__ = ("obj",)

    def __init__(self, obj: Any):
        self.obj = obj

    def __hash__(self) -> int:
        return id(self.obj)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, _Same) and other.obj is self.obj


def trace_update(spec: Spec, hp: SimpleNamespace, bucket: Bucket, inputs: list,
                 total_names: tuple[str, ...]) -> tuple[torch.fx.GraphModule, dict[str, Any]]:
    """The bucket update traced into an ATen graph (see ``Bucket.kernel_inputs`` for its inputs) and the
    structure of its outputs: ``{"delta": whether the step is not ZERO, "states": per state variable
    "zero", "same" or "new"}``; the graph returns the step (if any), the new state values, then the new
    global scalars. Shared by the compiled kernels and the eager graph executor (``torch_eager_graph``)."""
    _, layout = hyper_inputs(spec, hp)
    names, scalar_names = bucket.names, bucket.scalar_names
    math = TreeMath(FlatOps())
    outputs: dict[str, Any] = {}  # the structure of what the traced function returns, noted while tracing
    counts = (1, int(bucket.needs_params), len(names), len(scalar_names), 1)

    def pure(*flat):
        grad, param, states, scalars, (t,), rest = _unflatten(flat, counts)
        hypers, totals = rest[:len(rest) - len(total_names)], rest[len(rest) - len(total_names):]
        grad = grad[0]
        param = math.tree(param) if param else unread(math.ops, spec.name)  # needs_params False: only 0 * param
        state = SimpleNamespace(**{n: math.tree([x]) for n, x in zip(names, states)}, **dict(zip(scalar_names, scalars)))
        done = driver.step(spec, math, _rebuild(spec, layout, hypers), t, math.tree([grad]), param, state,
                           totals=dict(zip(total_names, totals)) if total_names else None)
        delta, new = done.delta, done.state
        outputs["delta"] = delta is not ZERO
        outputs["states"] = ["zero" if new[n] is ZERO else "same" if new[n] is getattr(state, n) else "new" for n in names]
        result = [delta.leaves[0]] if delta is not ZERO else []
        result += [new[n].leaves[0] for n, kind in zip(names, outputs["states"]) if kind == "new"]
        result += [torch.as_tensor(new[n]).to(s.dtype) for n, s in zip(scalar_names, scalars)]
        return result

    return _trace(spec, pure, inputs), outputs


def compiled_kernel(spec: Spec, hp: SimpleNamespace, bucket: Bucket, inputs: list, total_names: tuple[str, ...]) -> Kernel:
    """The compiled in-place update of ``bucket`` (cached per spec, static structure, dtypes and
    bucket kind). The first call of a new kernel compiles it on small scratch tensors, so a failure
    happens before anything is written."""
    names, scalar_names = bucket.names, bucket.scalar_names
    first = bucket.params[0]
    family = (_Same(spec), _static_structure(spec, hp), first.device.type, bucket.needs_params, names, scalar_names,
              total_names, tuple(map(_signature, inputs)))
    key = (*family, bucket.in_place)
    kernel = _KERNELS.get(key)
    if kernel is not None:
        return kernel
    traced, outputs = trace_update(spec, hp, bucket, inputs, total_names)
    prelude, main, positions = split_scalar_prelude(traced)
    single, has_delta, kinds = bucket.in_place, outputs["delta"], outputs["states"]  # single: add to the target in place

    n_others, n_hoisted = len(inputs) - len(positions), len(next(n for n in prelude.graph.nodes if n.op == "output").args[0])

    def loop(*flat):
        others, hoisted = flat[:n_others], flat[n_others:n_others + n_hoisted]
        target, states = flat[n_others + n_hoisted], flat[n_others + n_hoisted + 1:]
        result = main(*others, *hoisted)
        position = 0
        if has_delta:
            if single:
                target.add_(result[0])
            else:
                target.copy_(result[0])
            position = 1
        elif not single:
            target.zero_()
        for state, kind in zip(states, kinds):
            if kind == "zero":
                state.zero_()
            elif kind == "new":
                state.copy_(result[position])
                position += 1
        return result[position:]

    # torch.compile caches per code object: a code object of its own keeps kernels from evicting each other
    kernel = Kernel(prelude, positions, DirectCompiled(loop, f"dynopt_{spec.name}_kernel_{len(_KERNELS)}"), family)
    example = _scratch_inputs(inputs)
    _compile_now(spec, "update", lambda: kernel(example, _scratch(real_view(first.detach())),
                                                 example[1 + int(bucket.needs_params):][:len(names)]))
    _KERNELS[key] = kernel
    return kernel


def compiled_reductions(spec: Spec, hp: SimpleNamespace, bucket: Bucket, inputs: list) -> tuple[list[str], Callable]:
    """The spec's reductions over a bucket as one compiled pass: ``(names, kernel)`` with
    ``kernel(*inputs)`` the list of raw sums in the order of ``names`` (cached like the update)."""
    _, layout = hyper_inputs(spec, hp)
    names, scalar_names = bucket.names, bucket.scalar_names
    key = ("reductions", _Same(spec), _static_structure(spec, hp), bucket.params[0].device.type, bucket.needs_params,
           names, scalar_names, tuple(map(_signature, inputs)))
    found = _KERNELS.get(key)
    if found is not None:
        return found
    math = TreeMath(FlatOps())
    keys: list[str] = []
    counts = (1, int(bucket.needs_params), len(names), len(scalar_names))

    def pure(*flat):
        grad, param, states, scalars, hypers = _unflatten(flat, counts)
        state = SimpleNamespace(**{n: math.tree([x]) for n, x in zip(names, states)}, **dict(zip(scalar_names, scalars)))
        grad = math.tree(grad)
        sums = spec.reductions(math, _rebuild(spec, layout, hypers), grad,
                               math.tree(param) if param else unread(math.ops, spec.name), state)
        keys.extend(sorted(sums))
        return [torch.as_tensor(sums[k]) for k in keys]

    traced = _trace(spec, pure, inputs)
    kernel = torch.compile(traced, dynamic=True, fullgraph=True)
    _compile_now(spec, "reductions", lambda: kernel(*_scratch_inputs(inputs)))
    _KERNELS[key] = keys, kernel
    return keys, kernel


def _compile_now(spec: Spec, what: str, first_call: Callable[[], Any]) -> None:
    """Make a new kernel's first call (it compiles) on scratch inputs; a failure names the spec."""
    try:
        first_call()
    except Exception as err:
        raise RuntimeError(f"fused=True: torch.compile could not compile {spec.name}'s {what} "
                           f"({type(err).__name__}: {err}); use fused=False") from err


def _scratch(x: torch.Tensor) -> torch.Tensor:
    """A small stand-in for a kernel input: 16 elements for a flat buffer, a copy of a 0-dim value."""
    return torch.ones(16, dtype=x.dtype, device=x.device) if x.dim() else x.detach().clone()


def _scratch_inputs(inputs: list) -> list:
    return [_scratch(x) for x in inputs]


def _trace(spec: Spec, fn: Callable, inputs: list) -> torch.fx.GraphModule:
    """``fn`` traced into an ATen graph with symbolic sizes (no Python branch on a value survives)."""
    from torch.fx.experimental.proxy_tensor import make_fx

    try:
        return make_fx(fn, tracing_mode="symbolic")(*_scratch_inputs(inputs))
    except (NeedsLeaves, UnreadParamsError):
        raise
    except Exception as err:  # a Python branch on a numeric value, or an op with no symbolic-size rule
        raise RuntimeError(f"fused=True: could not trace {spec.name}'s step into a graph: {err}") from err


def _unflatten(flat: tuple, counts: tuple[int, ...]) -> list:
    """Consecutive pieces of ``flat`` of the given lengths, then the rest."""
    pieces, position = [], 0
    for count in counts:
        pieces.append(list(flat[position:position + count]))
        position += count
    return [*pieces, list(flat[position:])]
