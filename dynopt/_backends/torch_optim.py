"""Spec -> ``torch.optim.Optimizer`` subclass.

State lives in ``self.state[p]`` under the spec's names plus torch's ``step`` (a 0-dim float
tensor), so ``state_dict``, checkpoints and every ``lr_scheduler`` work as with ``torch.optim``.
A step first computes every new value, then writes them all: an error leaves no half-update.

Execution. This module holds the reference path: each tree operation of the spec is one
``torch._foreach_*`` call (``torch_ops.ForeachOps``) over the parameters of a bucket (same device,
dtype and step count), so no Python loop issues per-parameter ops. It runs the first step (which
creates the state) and every step the flat path leaves out. From the second step on, unless
``flat=False``, the same spec runs on flat per-bucket buffers, eagerly or, with ``fused=True``,
as compiled kernels (``torch_flat``); ``tests/test_torch_paths.py`` proves them equal to this path.

Faults:

* Non-finite gradients propagate into the parameters that receive them, as in ``torch.optim``;
  elementwise state never mixes parameters, so other parameters are not affected. The spec's
  global reductions (sums over all parameters, e.g. a meta-step alignment) leave out a parameter
  whose contribution is not finite, and a global scalar of the spec (one value shared by all
  parameters) keeps its previous value rather than become non-finite, so one bad parameter cannot
  poison every other one through them.
* ``skip_nonfinite=True`` (keyword-only, stored in ``defaults`` and in each param group like
  torch's own flags, so it survives ``state_dict``): if any gradient of the step, or any value
  the step would write for such a group (update, state, global scalars), is not finite, those
  groups skip the step entirely: parameters, state and step counters stay untouched (state a
  first step would have created is not created). The check is a few multi-tensor kernels plus
  one device-to-host read per step, as in ``torch.amp.GradScaler``; without the flag there is none.
* ``load_state_dict`` first checks the state_dict against this optimizer (param groups and
  their sizes, hyperparameters, the state names each parameter must have, their shapes) and
  raises ``ValueError`` before anything changes. Hyperparameters a group lacks (a checkpoint of
  an older version) take this optimizer's defaults; a hyperparameter of another registered
  optimizer that this one does not have, or state names that do not match, mean the state_dict
  comes from a different optimizer type.
"""

from __future__ import annotations

import inspect
import logging
from types import SimpleNamespace
from typing import Any, ClassVar, Mapping, NamedTuple

import torch

from ..spec import LR, REGISTRY, VARIANT_FLAGS, Check, Hyper, Namespace, Spec, one_of
from ..statement import RANDOM
from ..tree import ZERO, TreeMath, unread
from . import driver, torch_traced
from .common import bind, caller_module, signature
from .torch_flat import FlatPlan, NeedsLeaves, build_plan, plan_key
from .torch_ops import FiniteSumOps, ForeachOps, generator_state, is_plain, real_dtype, real_view, unsharded

__all__ = ["from_spec", "SpecOptimizer", "ForeachOps", "GUARD"]

GUARD = "skip_nonfinite"
OPTIONS = (  # keyword-only execution options, stored in defaults and param groups like torch's foreach/fused
    Hyper(GUARD, False, "skip a step whose gradients or new values are not all finite", static=True),
    Hyper("flat", True, "after the first step, run on flat per-bucket buffers (False: per-tensor foreach kernels)",
          static=True),
    Hyper("fused", None, "True: compile the bucket update into one in-place kernel with torch.compile (needs flat); "
          "None (torch's default) or False: do not", one_of(None, False, True), static=True),
    # torch.optim's implementation switches, accepted so that a torch.optim call runs unchanged
    Hyper("foreach", None, "torch.optim's per-tensor/multi-tensor switch: accepted, no effect (every dynopt path "
          "computes the same numbers)", one_of(None, False, True), static=True),
    Hyper("capturable", False, "torch.optim's CUDA-graph switch: only False", Check(
        lambda value: value is False, "only False: dynopt keeps step counters on the CPU and does not support CUDA-graph "
        "capture"), static=True),
    Hyper("differentiable", False, "torch.optim's autograd-through-the-step switch: only False", Check(
        lambda value: value is False, "only False: dynopt's step runs under torch.no_grad and cannot be differentiated"),
        static=True),
)

_PLAN_OPTIONS = ("fused",)  # the options whose change rebuilds a flat plan (besides the spec's static hyperparameters)
_LOG = logging.getLogger("dynopt.torch")  # DEBUG: which path each step took and why a flat plan was rebuilt

MATH = TreeMath(ForeachOps())
# opt.execution of a step inside a torch.compile'd function: the update traced by AOTAutograd behind few guards
# (torch_traced), or the spec's step traced by dynamo itself ("inlined")
_TRACED = SimpleNamespace(path="reference", reason="traced by torch.compile", direct=0, traced="update")
_INLINED = SimpleNamespace(path="reference", reason="traced by torch.compile", direct=0, traced="inlined")
REDUCTIONS = TreeMath(FiniteSumOps())


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _is_concrete(value: Any) -> bool:
    return not (isinstance(value, torch.Tensor) and value.requires_grad)


def _copy_all(targets: list[torch.Tensor], values: list[torch.Tensor]) -> None:
    if all(map(is_plain, targets)) and all(map(is_plain, values)):
        torch._foreach_copy_(targets, values)
    else:  # DTensor (FSDP2) has no sharding rule for _foreach_copy_
        for target, value in zip(targets, values):
            target.copy_(value)


def _validate_options(values: Mapping[str, Any]) -> None:
    for option in OPTIONS:
        option.validate(values.get(option.name, option.default), _is_concrete)
    if values.get("fused") and not values.get("flat", True):
        raise ValueError("Invalid fused value: True (fused=True runs on flat buckets: it needs flat=True)")


def _check_tuples(spec: Spec, hyper: Mapping[str, Any]) -> None:
    """A tuple hyperparameter is all numbers or all Tensors (torch.optim refuses a mix too)."""
    for h in spec.hyperparams:
        value = hyper.get(h.name)
        if h.length and isinstance(value, (tuple, list)):
            kinds = {isinstance(item, torch.Tensor) for item in value}
            if len(kinds) > 1:
                raise ValueError(h.message(value, "must be either all numbers or all Tensors"))


def _all_finite(tensors: list[torch.Tensor]) -> torch.Tensor:
    """A 0-dim bool tensor: every entry of every tensor is finite (x·0 is 0 exactly when x is finite)."""
    if not tensors:
        return torch.tensor(True)
    zeros = torch._foreach_mul(tensors, 0.0)
    return torch.isfinite(torch.stack(torch._foreach_norm(zeros, 1)).sum())  # stack promotes mixed dtypes


class SpecOptimizer(torch.optim.Optimizer):
    """Base of every generated optimizer; ``spec`` says what it computes."""

    spec: ClassVar[Spec]

    def __init__(self, params, *args, **kwargs):
        hyper = bind(type(self).__init__.__signature__, type(self).__name__, (self, params) + args, kwargs, self.spec)
        del hyper["self"], hyper["params"]
        options = {o.name: hyper.pop(o.name, o.default) for o in OPTIONS}
        self._shard_group = _check_shard_group(hyper.pop(SHARD_GROUP, None))
        self.spec.validate(hyper, _is_concrete)
        _validate_options(options)
        _check_tuples(self.spec, hyper)
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{type(self).__name__}: params must be an ordered collection (a list), not a set: the order "
                "of a set changes between runs, so a state_dict could not be mapped back to the parameters"
            )
        super().__init__(params, {**hyper, **options})
        self.__dict__.setdefault("_status", {"execution": None, "traced": False})  # see ``execution``

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group.get("params"), (set, frozenset)):
            raise TypeError(f"{type(self).__name__}: a param group's params must be a list, not a set")
        merged = {**self.defaults, **param_group}
        self.spec.validate({h.name: merged[h.name] for h in self.spec.hyperparams}, _is_concrete)
        _validate_options(merged)
        _check_tuples(self.spec, merged)
        _check_implied(self, param_group, f"{type(self).__name__}: param group {len(self.param_groups)}")
        _check_shared(self, merged, len(self.param_groups))
        super().add_param_group(param_group)
        self._flat = None
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        for name, value in self.spec.implies:  # torch.optim's flags for this meaning: torch.optim can load the state_dict
            group.setdefault(name, value)
        try:
            with torch.no_grad():
                checked = [(i, p) for i, p in enumerate(group["params"])  # complex ones raise at the step if refused
                           if self.spec.complex_params or not p.is_complex()]
                self.spec.check_params(MATH, self._hyper(group), [real_view(p) for _, p in checked],
                                       lambda i: f"parameter {checked[i][0]} of param group {index}")
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._flat = None
        self.__dict__.setdefault("_status", {"execution": None, "traced": False})
        for group in self.param_groups:  # checkpoints from older versions lack newer options
            for name, value in self.defaults.items():
                group.setdefault(name, value)
        for entry in self.state.values():  # torch < 1.12 wrote the step counter as a number
            if "step" in entry and not isinstance(entry["step"], torch.Tensor):
                entry["step"] = torch.tensor(float(entry["step"]), dtype=_scalar_dtype())

    def _hyper(self, group: dict[str, Any]) -> SimpleNamespace:
        """The group's hyperparameters as the spec sees them (a tensor of shape (1,) as a 0-dim one, as torch.optim takes it)."""
        return self.spec.namespace(self.spec.scalar_values({h.name: group[h.name] for h in self.spec.hyperparams}))

    def _scalar_names(self) -> set[str]:
        return {name for group in self.param_groups for name in self.spec.scalars(self._hyper(group))}

    def global_scalars(self) -> dict[str, torch.Tensor]:
        """The spec's global scalar state (e.g. an adapted step size), for logging; {} before step 1."""
        names = self._scalar_names()
        for state in self.state.values():
            found = {n: state[n] for n in names if n in state}
            if found:
                return found
        return {}

    @property
    def execution(self) -> SimpleNamespace:
        """What the last step ran: ``path`` (``"reference"``, ``"flat"``, ``"fused"``), ``reason`` (why the
        reference path ran; ``"traced by torch.compile"`` for a step inside a compiled function), ``direct`` (how
        many parameters were stepped in place in flat buffers) and ``traced`` (inside a compiled function:
        ``"update"``, the update traced behind few guards, or ``"inlined"``, the spec's step traced by dynamo;
        None for an eager step)."""
        value = self.__dict__.get("_status", {}).get("execution")
        if value is None:
            raise AttributeError(f"{type(self).__name__}.execution: no step yet")
        return value

    @execution.setter
    def execution(self, value: SimpleNamespace) -> None:
        # the keys never change: dynamo guards on them, and a new key would recompile a compiled step
        self.__dict__.setdefault("_status", {"execution": None, "traced": False})["execution"] = value

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if torch.compiler.is_compiling() and torch_traced.ENABLED:  # inside a torch.compile'd function
            done, loss = torch_traced.run(self, closure)  # the update traced by AOTAutograd, few guards
            if done:
                status = self._status
                status["traced"] = True  # the eager flat plan's step counts (Python ints) are stale: _flat_plan rebuilds it
                status["execution"] = _TRACED
                return loss
        if self.spec.gradient_calls > 1 and closure is None:
            raise ValueError(f"{type(self).__name__} takes {self.spec.gradient_calls} gradients per step (scheme "
                             f"{getattr(self.spec.discretization, 'name', '?')}): call step(closure), with a closure that "
                             "zeroes the gradients, computes the loss, calls backward() and returns the loss")
        if len(self.param_groups) > 1:
            for index, group in enumerate(self.param_groups[1:], 1):
                _check_shared(self, group, index)
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        if torch.compiler.is_compiling() and self._traceable():  # inside a torch.compile'd function: no host reads
            self._traced_step()
            return loss
        plan = self._flat_plan()  # its buckets hold no sparse gradient
        if plan is not None and self._flat_step(plan, closure):
            self.execution = SimpleNamespace(path="fused" if any(g["fused"] for g in self.param_groups) else "flat",
                                             reason="; ".join(filter(None, (plan.note, plan.graph_note()))),
                                             direct=plan.direct, traced=None)  # direct: stepped in flat parameters
            return loss
        self.execution = SimpleNamespace(path="reference", reason=getattr(self, "_reference_reason", ""), direct=0,
                                         traced=None)
        _LOG.debug("%s: reference path (%s)", type(self).__name__, self.execution.reason)
        with_grads = [(group, self._params_with_grad(index, group)) for index, group in enumerate(self.param_groups)]
        self._flat = None  # the reference path advances step counters a plan keeps as Python ints
        created: list[tuple[torch.Tensor, bool, set[str]]] = []
        try:
            buckets = [bucket for group, params in with_grads for bucket in self._plan(group, params, created)]
            totals = self._totals(buckets) if self.spec.reductions is not None else None
            staged = self._run_stages(buckets, totals, closure) if self.spec.gradient_calls > 1 else [None] * len(buckets)
            computed = [self._compute(bucket, totals, result) for bucket, result in zip(buckets, staged)]
            skip = False
            if any(bucket.guard for bucket in buckets):
                checked = [g for bucket in buckets if not bucket.guard for g in bucket.grads]  # any gradient of the step
                checked += [x for bucket, (_, written) in zip(buckets, computed) if bucket.guard for x in written]
                skip = not bool(_all_finite(checked))  # the one host read of a guarded step
        except BaseException:
            self._rollback(created)
            raise
        if skip:
            self._rollback(created, {id(p) for bucket in buckets if bucket.guard for p in bucket.params})
        committed = [bucket for bucket in buckets if not (skip and bucket.guard)]
        for bucket, (commit, _) in zip(buckets, computed):
            if not (skip and bucket.guard):
                commit()
        if committed and not self.spec.scalars_per_param:
            self._share_scalars(committed[0].params[0])
        return loss

    def _init_group(self, group: dict[str, Any], params: list, grads: list, states: list, steps: list) -> tuple | None:
        """What a step inside a ``torch.compile``'d function steps, as torch.optim's ``_init_group``: dynamo runs it
        eagerly while tracing (``torch_traced.collect``)."""
        return torch_traced.collect(self, group, params, grads, states, steps)

    def _traceable(self) -> bool:
        """Whether this step can run as one graph under ``torch.compile``: every parameter with a gradient
        has its state (not the first step), a dense plain gradient, and no group asks for ``skip_nonfinite``
        (which reads the host) or a multi-stage scheme (whose stages call the closure). Only Python-level
        facts, which dynamo guards on; otherwise the step runs as in eager mode, with graph breaks."""
        # a spec's random draws (torch.Generator states) run eagerly, not traced
        if self.spec.gradient_calls > 1 or self.spec.random_seed is not None:
            return False
        for group in self.param_groups:
            if group[GUARD]:
                return False
            names = self.spec.state(self._hyper(group))
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse or not (is_plain(p) and is_plain(p.grad)) or p not in self.state:
                    return False
                entry = self.state[p]
                if "step" not in entry or any(n not in entry for n in names if _holds(self.spec, n, p)):
                    return False
        return True

    def _traced_step(self) -> None:
        """One step as torch.compile traces it: the reference path's ``_foreach`` kernels, one bucket per
        parameter (its own step counter, a tensor, so nothing is read on the host and a new step number never
        recompiles), no logging. Inductor fuses the result into a few loops per parameter.

        Dynamo drops attribute writes on an optimizer (``self.x = ...``) inside a compiled function, so what
        the step records goes into the ``_status`` dict (dict writes are kept)."""
        status = self._status
        status["traced"] = True  # the eager flat plan's step counts (Python ints) are stale: _flat_plan rebuilds it
        buckets = []
        for group in self.param_groups:
            hp = self._hyper(group)
            names = self.spec.state(hp)
            for p in group["params"]:
                if p.grad is not None:
                    # t in the parameter's precision, at least float32 (float64 for float64 parameters; the eager
                    # paths use a Python float): inductor recomputes the step's scalars (bias corrections) in the
                    # loop, and float64 pow there made a compiled bias-corrected step 1.8x torch.optim's compiled step
                    t = self.state[p]["step"].to(torch.promote_types(real_dtype(p.dtype), torch.float32)) + 1
                    buckets.append(_Bucket(hp, names, [p], t, False, [_dense_real(p.grad)], [real_view(p)]))
        totals = self._totals(buckets) if self.spec.reductions is not None else None
        computed = [self._compute(bucket, totals) for bucket in buckets]
        for commit, _ in computed:
            commit()
        if buckets and not self.spec.scalars_per_param:
            self._share_scalars(buckets[0].params[0])
        status["execution"] = _INLINED  # an existing object: dynamo cannot build a SimpleNamespace

    def _flat_plan(self) -> FlatPlan | None:
        """The cached flat plan, rebuilt when what it was built for changed; None: run the reference path."""
        groups = self.param_groups
        if self.spec.state_shape is not None:  # no flat buffer holds state of another shape: always the reference path
            self._needs_leaves = True
        reason = ("the spec keeps state of another shape than its parameters" if self.spec.state_shape is not None
                  else "the spec reduces inside a parameter" if getattr(self, "_needs_leaves", False)
                  else "the spec draws random numbers" if self.spec.random_seed is not None
                  else "skip_nonfinite=True" if any(g[GUARD] for g in groups)
                  else "flat=False" if any(not g["flat"] for g in groups) else None)
        if reason:
            self._reference_reason = reason
            return None
        plan = getattr(self, "_flat", None)
        status = self.__dict__.get("_status")
        if status is not None and status["traced"]:  # steps under torch.compile advanced the counters
            status["traced"] = False
            plan = None
        if plan is not None and plan.holds(self.spec, groups, self._hyper, _PLAN_OPTIONS):  # flat parameters: C-level
            return plan
        key = plan_key(self.spec, groups, self._hyper, _PLAN_OPTIONS)
        rebuild = ("no plan yet" if plan is None else "param groups, hyperparameters' structure or gradients changed"
                   if plan.key != key else "state entries replaced, or flat parameters or their gradients moved"
                   if not plan.current() else None)
        if rebuild:
            _LOG.debug("%s: flat plan (re)built: %s", type(self).__name__, rebuild)
            plan = self._flat = build_plan(self.spec, self.state, groups, self._hyper, key)
            if plan is None:
                self._reference_reason = ("a parameter without state yet (its first step), a sparse gradient, a "
                                          "non-contiguous or sharded parameter, or state of another shape")
        if plan is not None:  # confirmed by the full check: the snapshot the next steps' quick check compares with
            plan.arm(self.spec, groups, self._hyper, _PLAN_OPTIONS)
        return plan

    def _flat_step(self, plan: FlatPlan, closure=None) -> bool:
        """Step on the flat plan; False (nothing written) when this step must take the reference path.

        The caller, ``step``, then continues on the reference path itself: calling ``self.step()``
        again would run the step hooks (and a hook that rescales gradients) twice."""
        try:
            plan.step(self.spec, self._hyper, self._all_reduce, closure)
        except NeedsLeaves:  # the spec reduces inside a leaf: this optimizer always takes the reference path
            self._needs_leaves, self._flat = True, None
            self._reference_reason = "the spec reduces inside a parameter"
            return False
        if not self.spec.scalars_per_param:
            plan.share_scalars()
        return True

    def _params_with_grad(self, index: int, group: dict[str, Any]) -> list[torch.Tensor]:
        """The params that have a gradient; unsupported ones raise before anything is mutated.

        A sparse gradient is stepped in its dense form where the spec says that means the same
        (``Spec.sparse_grads``); elsewhere it raises RuntimeError, the exception torch.optim raises for
        sparse gradients it does not take. Complex parameters are stepped as real views, as in torch.optim."""
        for i, p in enumerate(group["params"]):
            if p.grad is not None and p.is_complex() and not self.spec.complex_params:
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters (param group {index}, "
                                   f"parameter {i})")
            if p.grad is not None and p.grad.is_sparse and not self.spec.sparse_grads:
                accepting = [s.name for s in REGISTRY.values() if s.sparse_grads]
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients (param group {index}, "
                                   f"parameter {i}); these optimizers do: {', '.join(accepting)}")
        return [p for p in group["params"] if p.grad is not None]

    def _plan(self, group: dict[str, Any], params: list[torch.Tensor], created: list) -> list[_Bucket]:
        """Create missing state (recorded in ``created``) and bucket params by (device, dtype, step count)."""
        hp = self._hyper(group)
        names = self.spec.state(hp)
        fresh = [p for p in params if p not in self.state or "step" not in self.state[p]
                 or any(n not in self.state[p] for n in names if _holds(self.spec, n, p))]
        if fresh:
            initial = self.spec.initial(MATH, hp, MATH.tree([real_view(p) for p in fresh]))
            initial = {n: driver.align([_holds(self.spec, n, p) for p in fresh], initial[n].leaves) for n in names}
            shared = self.global_scalars()  # a global scalar is one tensor per (device, dtype), shared by every state
            homes: dict[tuple, torch.Tensor] = {}
            for i, p in enumerate(fresh):
                existed = p in self.state
                state = self.state[p]
                before = set(state)
                state.setdefault("step", torch.tensor(0.0, dtype=_scalar_dtype()))
                if self.spec.random_seed is not None and RANDOM not in state:  # its own torch.Generator's state
                    state[RANDOM] = generator_state(self.spec.random_seed(hp), self._position(p))
                for name in names:
                    value = initial[name][i]  # None: p does not hold this variable (Spec.state_shape)
                    if name not in state and value is not None:  # a complex parameter's state is complex, as in torch.optim
                        state[name] = (torch.view_as_complex(value.contiguous().clone()) if p.is_complex()
                                       else value.clone(memory_format=torch.preserve_format))
                for name, value in self.spec.scalars(hp).items():
                    dtype = torch.promote_types(real_dtype(p.dtype), torch.float32)
                    if self.spec.scalars_per_param:  # torch.optim's own 0-dim state: one per parameter
                        state.setdefault(name, torch.tensor(value, dtype=dtype, device=p.device))
                        continue
                    home = (name, p.device, dtype)
                    if home not in homes:  # Tensor.to returns the tensor itself where device and dtype match
                        homes[home] = (shared[name].to(p.device, dtype) if name in shared
                                       else torch.tensor(value, dtype=dtype, device=p.device))
                    state.setdefault(name, homes[home])
                created.append((p, existed, set(state) - before))
        # one read of all step counters (CPU tensors, as in torch.optim), not one per parameter
        counts = torch.stack([self.state[p]["step"].float() for p in params]).tolist() if params else []
        buckets: dict[tuple, list[torch.Tensor]] = {}
        for p, count in zip(params, counts):
            buckets.setdefault((p.device, p.dtype, count), []).append(p)
        guard = bool(group.get(GUARD, False))
        return [_Bucket(hp, names, bucket, key[2] + 1, guard, [_dense_real(p.grad) for p in bucket], [real_view(p) for p in bucket])
                for key, bucket in buckets.items()]

    def _rollback(self, created: list, only: set[int] | None = None) -> None:
        """Remove the state that ``_plan`` created this step (for the params whose ids are in ``only``)."""
        for p, existed, keys in created:
            if only is not None and id(p) not in only:
                continue
            state = self.state[p]
            for key in keys:
                state.pop(key, None)
            if not existed and not state:
                del self.state[p]

    def _state(self, hp: SimpleNamespace, names: tuple[str, ...], params: list[torch.Tensor], math: TreeMath = MATH) -> SimpleNamespace:
        trees = {n: math.tree([real_view(self.state[p][n]) for p in params if _holds(self.spec, n, p)])
                 for n in names}
        scalars = {n: self.state[params[0]][n] for n in self.spec.scalars(hp)}
        if self.spec.random_seed is not None:  # the stream: each parameter's generator state, in the bucket's order
            scalars[RANDOM] = [self.state[p][RANDOM] for p in params]
        return Namespace(**trees, **scalars)  # not SimpleNamespace: torch.compile traces this class

    def _position(self, param: torch.Tensor) -> int:
        """The position of ``param`` among the parameters of every param group, in order (it seeds its noise)."""
        every = [p for group in self.param_groups for p in group["params"]]
        return next(i for i, p in enumerate(every) if p is param)

    def _totals(self, buckets: list[_Bucket]) -> dict[str, torch.Tensor]:
        """The spec's reductions summed over every bucket of every param group."""
        totals: dict[str, torch.Tensor] = {}
        for bucket in buckets:
            hp, names, params = bucket.hp, bucket.names, bucket.params
            parts = self.spec.reductions(REDUCTIONS, hp, REDUCTIONS.tree(bucket.grads), REDUCTIONS.tree(bucket.values),
                                         self._state(hp, names, params, REDUCTIONS))
            for key, value in parts.items():
                totals[key] = value if key not in totals else totals[key] + value.to(totals[key].device)
        return self._all_reduce(totals)

    def _all_reduce(self, totals: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The totals summed over the ranks of ``shard_group`` (one all-reduce), or as they are without one.

        Every rank calls it once per step, also a rank with nothing to step (its totals are zeros),
        so the collective always matches up."""
        group = getattr(self, "_shard_group", None)
        if group is None:
            return totals
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(f"{type(self).__name__}(shard_group=...): torch.distributed is not initialized")
        if not totals:  # this rank steps no parameter now: it contributes zeros under the spec's names
            group0 = self.param_groups[0]
            hp = self._hyper(group0)
            empty = REDUCTIONS.tree([])
            state = SimpleNamespace(**{n: empty for n in self.spec.state(hp)}, **self.spec.scalars(hp))
            totals = {k: torch.as_tensor(v) for k, v in self.spec.reductions(REDUCTIONS, hp, empty, empty, state).items()}
        keys = sorted(totals)
        values = [torch.as_tensor(totals[k]) for k in keys]
        device = next((p.device for g in self.param_groups for p in g["params"]), values[0].device)
        packed = torch.stack([v.to(device=device, dtype=torch.float64) for v in values])
        dist.all_reduce(packed, op=dist.ReduceOp.SUM, group=None if group is True else group)
        return {k: packed[i].to(v.device, v.dtype) for i, (k, v) in enumerate(zip(keys, values))}

    def _run_stages(self, buckets: list[_Bucket], totals, closure) -> list[tuple]:
        """``(delta, new)`` of every bucket for a multi-stage scheme, its stages in lockstep over all buckets.

        At each stage every bucket's parameters are set to that bucket's stage point, the closure
        runs once, and each bucket receives its gradients; the parameters are restored before the
        caller commits. Afterwards ``p.grad`` holds the gradient of the last stage point."""
        params = [p for bucket in buckets for p in bucket.params]
        start = [p.detach().clone() for p in params]
        steps, results, pending = [], [None] * len(buckets), {}
        for bucket in buckets:
            hp, names = bucket.hp, bucket.names
            extra = {} if totals is None else {"totals": totals}
            grads = MATH.tree([g.detach().clone() for g in bucket.grads])
            values = MATH.tree([v.detach().clone() for v in bucket.values])
            steps.append(self.spec.staged_update(MATH, hp, bucket.t, grads, values, self._state(hp, names, bucket.params),
                                                 **extra))
        try:
            for i, stepper in enumerate(steps):
                try:
                    pending[i] = next(stepper)
                except StopIteration as done:
                    results[i] = done.value
            while pending:
                for i, point in pending.items():
                    _copy_all(list(buckets[i].values), point.leaves)
                with torch.enable_grad():
                    closure()
                answered = {}
                for i in pending:
                    grads = [torch.zeros_like(v) if p.grad is None else g.detach().clone()
                             for p, v, g in zip(buckets[i].params, buckets[i].values, _grads_of(buckets[i]))]
                    try:
                        answered[i] = steps[i].send(MATH.tree(grads))
                    except StopIteration as done:
                        results[i] = done.value
                pending = answered
        finally:
            _copy_all(params, start)
        return results

    def _compute(self, bucket: _Bucket, totals, result: tuple | None = None):
        """The new values of one bucket: ``(commit, written)``, the function that writes them and the tensors it writes
        (``result``: the ``(delta, new)`` a multi-stage scheme already computed)."""
        hp, names, params = bucket.hp, bucket.names, bucket.params
        state = self._state(hp, names, params)
        values = MATH.tree(bucket.values)
        param = values if self.spec.needs_params(hp) else unread(MATH.ops, self.spec.name)
        grads = MATH.tree(bucket.grads)
        if result is None:
            done = driver.step(self.spec, MATH, hp, bucket.t, grads, param, state, totals=totals)
        else:
            done = driver.finish(self.spec, MATH, hp, grads, state, *result)
        delta, new = done.delta, done.state
        scalars = {name: torch.as_tensor(new[name]) for name in self.spec.scalars(hp)}
        written = done.checked  # what skip_nonfinite requires finite: gradients, step, new state and scalars

        def commit():
            if delta is not ZERO:
                torch._foreach_add_(bucket.values, delta.leaves)
            for name in names:
                old, value = getattr(state, name), new[name]
                if value is ZERO:
                    torch._foreach_zero_(old.leaves)
                elif value is not old:
                    _copy_all(old.leaves, value.leaves)
            for name, value in scalars.items():  # already finite-or-previous (the driver's contract)
                owners = params if self.spec.scalars_per_param else params[:1]  # global ones are shared after the step
                for owner in owners:
                    target = self.state[owner][name]  # a scalar computed from sharded tensors: unsharded
                    # _copy_all, not target.copy_: under torch.compile (AOTAutograd) copy_ into one of several 0-dim
                    # views of a stacked tensor (the flat plan's per-parameter scalars) is lost; _foreach_copy_ is kept
                    _copy_all([target], [unsharded(value.to(target.device, target.dtype))])
            if RANDOM in new:  # the generators' states after the draw
                for p, value in zip(params, new[RANDOM]):
                    self.state[p][RANDOM] = value
            torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)

        return commit, written

    def _share_scalars(self, source: torch.Tensor) -> None:
        """Global scalars are one value, held by one tensor per (device, dtype) that every parameter's state
        refers to (torch's state_dict is per parameter): copy the new value into the other devices' or dtypes'
        tensors, if any (a model on one device and dtype has none)."""
        for name in self._scalar_names():
            value = self.state[source].get(name)
            if value is None:
                continue
            targets: list[torch.Tensor] = []  # plain loops: torch.compile traces this (the traced step calls it too)
            for state in self.state.values():
                target = state.get(name)
                if target is not None and target is not value and not any(target is t for t in targets):
                    targets.append(target)
            if targets:
                _copy_all(targets, [value] * len(targets))  # not copy_ (see _compute)

    def _alias_scalars(self) -> None:
        """Make every parameter's entry of a global scalar the one tensor of its (device, dtype), holding the
        value of the first parameter's (after load_state_dict, which copies each entry on its own)."""
        if self.spec.scalars_per_param:
            return
        for name, value in self.global_scalars().items():
            homes: dict[tuple, torch.Tensor] = {}
            for group in self.param_groups:
                for p in group["params"]:
                    entry = self.state.get(p)
                    if entry is None or name not in entry:
                        continue
                    mine = entry[name]
                    home = (mine.device, mine.dtype)
                    if home not in homes:
                        homes[home] = mine if mine is value else mine.copy_(value)
                    entry[name] = homes[home]

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.load_state_dict``, after checking that ``state_dict`` fits this optimizer.

        The check runs after any registered load pre-hooks and before anything is changed; a
        mismatch raises ``ValueError`` naming the param group, the parameter and what differs.
        """
        handle = self.register_load_state_dict_pre_hook(_check_state_dict)
        try:
            super().load_state_dict(state_dict)
        finally:
            handle.remove()
        self._alias_scalars()


class _Bucket(NamedTuple):
    hp: SimpleNamespace
    names: tuple[str, ...]
    params: list[torch.Tensor]
    t: float
    guard: bool
    grads: list[torch.Tensor]  # the gradients the spec sees: dense, complex ones as real views
    values: list[torch.Tensor]  # the parameters the spec sees and the step writes: complex ones as real views


def _holds(spec: Spec, name: str, p: torch.Tensor) -> bool:
    """Whether ``p`` holds state variable ``name`` (``Spec.state_shape``), by the shape of the leaf the spec sees
    (``real_view(p)``: a complex parameter as its (re, im) pairs)."""
    return spec.state_shape is None or spec.holds(name, (*p.shape, 2) if p.is_complex() else tuple(p.shape))


def _grads_of(bucket: _Bucket) -> list[torch.Tensor | None]:
    """The bucket's gradients as the spec sees them, read afresh (after a closure replaced them)."""
    return [None if p.grad is None else _dense_real(p.grad) for p in bucket.params]


def _dense_real(grad: torch.Tensor) -> torch.Tensor:
    return real_view(grad.to_dense() if grad.is_sparse else grad)


def _is_number_like(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.numel() == 1) or (isinstance(value, (int, float)) and not isinstance(value, bool))


class _Base:
    def __repr__(self) -> str:
        return "unset (the base optimizer)"


_BASE = _Base()  # a derived optimizer's flag that a param group does not carry


def _check_implied(opt: SpecOptimizer, group: Mapping[str, Any], where: str, saved: bool = False) -> None:
    """Raise ValueError when ``group`` sets a flag this optimizer implies (``Spec.implies``) to another value
    (a torch.optim flag that selects another method); for a ``saved`` group (a state_dict's), also when it lacks
    a flag of a derived optimizer (``VARIANT_FLAGS``: a checkpoint of the base optimizer)."""
    differs = [(key, group[key], meant) for key, meant in opt.spec.implies if key in group and not _same(group[key], meant)]
    implied = dict(opt.spec.implies)  # a derived optimizer's flags: absent from a saved group means the base optimizer
    differs += [(key, group.get(key, _BASE), implied.get(key, _BASE)) for key in VARIANT_FLAGS
                if key in group and key not in implied or saved and key in implied and key not in group]
    if differs:
        found = ", ".join(f"{key}={value!r}" for key, value, _ in differs)
        meant = ", ".join(f"{key}={value!r}" for key, _, value in differs)
        raise ValueError(f"{where} has {found}, but {type(opt).__name__} means {meant} (it takes no such hyperparameter): "
                         "settings of a different optimizer type")


SHARD_GROUP = "shard_group"


def _check_shard_group(group: Any) -> Any:
    """``shard_group``: None, True (the default process group) or a ``torch.distributed.ProcessGroup``."""
    if group is None or group is True:
        return group
    import torch.distributed as dist

    if dist.is_available() and isinstance(group, dist.ProcessGroup):
        return group
    raise TypeError(f"Invalid shard_group value: {group!r} (must be None, True for the default process group, "
                    "or a torch.distributed.ProcessGroup)")


def _check_shared(opt: SpecOptimizer, group: Mapping[str, Any], index: int) -> None:
    """Raise ValueError when param group ``index`` sets a ``shared`` hyperparameter (one that drives a global
    scalar, e.g. the meta step's scale) to another value than param group 0: there is one such scalar."""
    if index == 0 or not opt.param_groups:
        return
    first = opt.param_groups[0]
    for h in opt.spec.hyperparams:
        mine, theirs = group.get(h.name, opt.defaults.get(h.name)), first.get(h.name)
        if h.shared and mine is not theirs and not _same(mine, theirs):
            scalars = ", ".join(opt.spec.scalars(opt._hyper(first))) or "global state"
            raise ValueError(f"{type(opt).__name__}: param group {index} sets {h.name}={mine!r}, but param group 0 has "
                             f"{h.name}={theirs!r}: {h.name} drives the global {scalars} shared by every param group, so "
                             "it must be the same in all of them (use one optimizer per setting instead)")


def _same(value: Any, meant: Any) -> bool:
    try:
        return bool(value == meant)
    except (TypeError, ValueError, RuntimeError):  # e.g. a tensor of several elements
        return False


def _check_state_dict(opt: SpecOptimizer, state_dict: Mapping[str, Any]) -> dict[str, Any]:
    """Raise ValueError unless ``state_dict`` is a state_dict of an optimizer like ``opt`` (a load pre-hook).

    Returns what to load: ``state_dict`` completed where its meaning is this optimizer's, without changing
    the caller's dicts: the flags ``opt`` implies where a group lacks them, a step counter 1 where a
    parameter has state but no counter and the spec does not count steps (some torch.optim optimizers
    keep none), sparse state tensors (which torch.optim keeps for sparse gradients) made dense."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        found = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(f"{owner}: expected a dict with 'state' and 'param_groups', got {found}")
    groups, states, spec = state_dict["param_groups"], state_dict["state"], opt.spec
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{owner}: the state_dict has {len(groups)} param group(s), this optimizer has {len(opt.param_groups)}")
    others = {h.name for s in REGISTRY.values() for h in s.hyperparams} - set(opt.defaults) - {k for k, _ in spec.implies}
    fixed_groups, fixed_states = [], dict(states)
    for index, (saved, mine) in enumerate(zip(groups, opt.param_groups)):
        where = f"{owner}: param group {index}"
        saved = spec.upgrade_group(saved)  # hyperparameters saved under an earlier release's names (Hyper.formerly)
        if len(saved["params"]) != len(mine["params"]):
            raise ValueError(f"{where} of the state_dict has {len(saved['params'])} parameter(s), this optimizer's has {len(mine['params'])}")
        foreign = sorted(k for k in saved if k in others)
        if foreign:
            raise ValueError(f"{where} has hyperparameter(s) {foreign} that {type(opt).__name__} does not have: "
                             "a state_dict of a different optimizer type?")
        _check_implied(opt, saved, where, saved=True)
        absent = [key for key in spec.group_keys if key not in saved]
        if absent and len(absent) < len(spec.group_keys):
            raise ValueError(f"{where} sets {sorted(set(spec.group_keys) - set(absent))} but not {absent}, which every "
                             f"state_dict of {type(opt).__name__} carries together: a state_dict of a different optimizer type")
        fixed_groups.append({**{k: v for k, v in spec.implies}, **saved})  # a group without the flags means this optimizer
        merged = {**opt.defaults, **{k: v for k, v in saved.items() if k != "params"}}
        try:  # hyperparameters the group lacks (an older checkpoint) take this optimizer's defaults
            spec.validate({h.name: merged[h.name] for h in spec.hyperparams}, _is_concrete)
            _validate_options(merged)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        hp = spec.namespace({h.name: merged[h.name] for h in spec.hyperparams})
        names, scalar = spec.state(hp), ("step", *spec.scalars(hp))
        for position, (key, param) in enumerate(zip(saved["params"], mine["params"])):
            entry = states.get(key)
            if entry is None or (isinstance(entry, Mapping) and not entry):  # a parameter that has not been stepped yet
                continue
            what = f"{where}, parameter {position}"
            shaped = [name for name in names if spec.holds(name, tuple(param.shape))]  # Spec.state_shape: by the shape
            expected = {*shaped, *scalar, *((RANDOM,) if spec.random_seed is not None else ())}
            if isinstance(entry, Mapping) and set(entry) == expected - {"step"} and not spec.counts_steps(hp):
                entry = fixed_states[key] = {**entry, "step": torch.tensor(1.0, dtype=_scalar_dtype())}  # at least one step
            if not isinstance(entry, Mapping) or set(entry) != expected:
                found = set(entry) if isinstance(entry, Mapping) else set()
                raise ValueError(f"{what}: state {sorted(found)} does not match the state {sorted(expected)} of "
                                 f"{type(opt).__name__} with these hyperparameters (missing {sorted(expected - found)}, "
                                 f"unexpected {sorted(found - expected)})")
            for name in shaped:
                value = entry[name]
                shape = spec.shape_of(name, tuple(param.shape))  # the parameter's, unless the spec says otherwise
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape:
                    got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    whose = "" if shape == tuple(param.shape) else f" (expected {shape})"
                    raise ValueError(f"{what}: state {name!r} has shape {got}, the parameter has shape "
                                     f"{tuple(param.shape)}{whose}")
                if value.is_sparse:
                    entry = fixed_states[key] = {**entry, name: value.to_dense()}
            for name in scalar:
                if not _is_number_like(entry[name]):
                    raise ValueError(f"{what}: state {name!r} must be a number or a 1-element tensor, got {entry[name]!r}")
    return {**state_dict, "param_groups": fixed_groups, "state": fixed_states}


def from_spec(spec: Spec, name: str | None = None) -> type[SpecOptimizer]:
    """A ``torch.optim.Optimizer`` subclass computing ``spec``; hyperparameters as keyword arguments.

    The signature is ``(params, lr=<default>, <hyperparameters>..., *, <keyword-only hyperparameters>...,
    skip_nonfinite=False, flat=True, fused=None, foreach=None, capturable=False, differentiable=False)``
    with the spec's defaults (the last three are torch.optim's switches, accepted for drop-in use:
    ``foreach`` has no effect, ``capturable`` and ``differentiable`` take only False), plus ``shard_group=None`` for a spec with
    global reductions (the meta step): when each rank steps only its own shard of the parameters
    (``torch.distributed.optim.ZeroRedundancyOptimizer``), pass the process group the parameters are
    sharded over (True: the default group) and the spec's sums are all-reduced over it, one
    collective per step, so every rank adapts the same global scalars. Leave it None under DDP and
    FSDP2, where every rank already sums over the whole model.
    """
    name = name or spec.name
    sig = signature(spec, ("self", "params"), LR, spec.defaults[LR])
    keyword = {h.name for h in spec.hyperparams if h.keyword_only}  # after torch.optim's `*`: positional calls bind as there
    sig = sig.replace(parameters=[p for p in sig.parameters.values() if p.name not in keyword]
                      + [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in sig.parameters.values() if p.name in keyword])
    options = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in OPTIONS]
    if spec.reductions is not None:  # sums over all parameters: all-reduced over shard_group when the params are sharded
        options.append(inspect.Parameter(SHARD_GROUP, inspect.Parameter.KEYWORD_ONLY, default=None))
    sig = sig.replace(parameters=[*sig.parameters.values(), *options])

    def __init__(self, params, *args, **kwargs):
        SpecOptimizer.__init__(self, params, *args, **kwargs)

    __init__.__signature__ = sig
    cls = type(name, (SpecOptimizer,), {"spec": spec, "__init__": __init__, "__doc__": spec.doc})
    cls.__module__ = caller_module()
    cls.__qualname__ = name
    return cls
