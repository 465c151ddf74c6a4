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
from types import SimpleNamespace
from typing import Any, ClassVar, Mapping, NamedTuple

import torch

from ..spec import LR, REGISTRY, Hyper, Spec, one_of
from ..tree import ZERO, TreeMath
from .common import bind, caller_module, signature
from .torch_flat import FlatPlan, NeedsLeaves, build_plan, plan_key
from .torch_ops import FiniteSumOps, ForeachOps, is_plain, unsharded

__all__ = ["from_spec", "SpecOptimizer", "ForeachOps", "GUARD"]

GUARD = "skip_nonfinite"
OPTIONS = (  # keyword-only execution options, stored in defaults and param groups like torch's foreach/fused
    Hyper(GUARD, False, "skip a step whose gradients or new values are not all finite", static=True),
    Hyper("flat", True, "after the first step, run on flat per-bucket buffers (False: per-tensor foreach kernels)",
          static=True),
    Hyper("fused", None, "True: compile the bucket update into one in-place kernel with torch.compile (needs flat); "
          "None (torch's default) or False: do not", one_of(None, False, True), static=True),
)

MATH = TreeMath(ForeachOps())
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
        hyper = bind(type(self).__init__.__signature__, type(self).__name__, (self, params) + args, kwargs)
        del hyper["self"], hyper["params"]
        options = {o.name: hyper.pop(o.name, o.default) for o in OPTIONS}
        self.spec.validate(hyper, _is_concrete)
        _validate_options(options)
        _check_tuples(self.spec, hyper)
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{type(self).__name__}: params must be an ordered collection (a list), not a set: the order "
                "of a set changes between runs, so a state_dict could not be mapped back to the parameters"
            )
        super().__init__(params, {**hyper, **options})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group.get("params"), (set, frozenset)):
            raise TypeError(f"{type(self).__name__}: a param group's params must be a list, not a set")
        merged = {**self.defaults, **param_group}
        self.spec.validate({h.name: merged[h.name] for h in self.spec.hyperparams}, _is_concrete)
        _validate_options(merged)
        _check_tuples(self.spec, merged)
        super().add_param_group(param_group)
        self._flat = None
        index = len(self.param_groups) - 1
        group = self.param_groups[index]
        try:
            with torch.no_grad():
                self.spec.check_params(MATH, self._hyper(group), group["params"],
                                       lambda i: f"parameter {i} of param group {index}")
        except ValueError:
            self.param_groups.pop()
            raise

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._flat = None
        for group in self.param_groups:  # checkpoints from older versions lack newer options
            for name, value in self.defaults.items():
                group.setdefault(name, value)
        for entry in self.state.values():  # torch < 1.12 wrote the step counter as a number
            if "step" in entry and not isinstance(entry["step"], torch.Tensor):
                entry["step"] = torch.tensor(float(entry["step"]), dtype=_scalar_dtype())

    def _hyper(self, group: dict[str, Any]) -> SimpleNamespace:
        return self.spec.namespace({h.name: group[h.name] for h in self.spec.hyperparams})

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

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        plan = self._flat_plan()  # its buckets hold no sparse gradient and no complex parameter
        if plan is not None:
            self._flat_step(plan)
            return loss
        with_grads = [(group, self._params_with_grad(index, group)) for index, group in enumerate(self.param_groups)]
        self._flat = None  # the reference path advances step counters a plan keeps as Python ints
        created: list[tuple[torch.Tensor, bool, set[str]]] = []
        try:
            buckets = [bucket for group, params in with_grads for bucket in self._plan(group, params, created)]
            totals = self._totals(buckets) if self.spec.reductions is not None else None
            computed = [self._compute(bucket, totals) for bucket in buckets]
            skip = False
            if any(bucket.guard for bucket in buckets):
                checked = [p.grad for bucket in buckets for p in bucket.params]
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
        if committed:
            self._share_scalars(committed[0].params[0])
        return loss

    def _flat_plan(self) -> FlatPlan | None:
        """The cached flat plan, rebuilt when what it was built for changed; None: run the reference path."""
        groups = self.param_groups
        if getattr(self, "_needs_leaves", False) or any(g[GUARD] or not g["flat"] for g in groups):
            return None
        key = plan_key(self.spec, groups, self._hyper, ("fused",))
        plan = getattr(self, "_flat", None)
        if plan is None or plan.key != key or not all(b.intact() for b in plan.buckets()):
            plan = self._flat = build_plan(self.spec, self.state, groups, self._hyper, key)
        return plan

    def _flat_step(self, plan: FlatPlan) -> None:
        try:
            plan.step(self.spec, self._hyper)
        except NeedsLeaves:  # the spec reduces inside a leaf: this optimizer always takes the reference path
            self._needs_leaves, self._flat = True, None
            self.step()
            return
        plan.share_scalars()

    def _params_with_grad(self, index: int, group: dict[str, Any]) -> list[torch.Tensor]:
        """The params that have a gradient; unsupported ones raise before anything is mutated."""
        for i, p in enumerate(group["params"]):
            if p.grad is not None and p.grad.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients (param group {index}, parameter {i})")
            if p.grad is not None and p.is_complex():
                raise TypeError(f"{type(self).__name__} does not support complex parameters (param group {index}, parameter {i})")
        return [p for p in group["params"] if p.grad is not None]

    def _plan(self, group: dict[str, Any], params: list[torch.Tensor], created: list) -> list[_Bucket]:
        """Create missing state (recorded in ``created``) and bucket params by (device, dtype, step count)."""
        hp = self._hyper(group)
        names = self.spec.state(hp)
        fresh = [p for p in params if p not in self.state or any(n not in self.state[p] for n in ("step", *names))]
        if fresh:
            initial = self.spec.initial(MATH, hp, MATH.tree(fresh))
            shared = self.global_scalars()
            for i, p in enumerate(fresh):
                existed = p in self.state
                state = self.state[p]
                before = set(state)
                state.setdefault("step", torch.tensor(0.0, dtype=_scalar_dtype()))
                for name in names:
                    if name not in state:
                        state[name] = initial[name].leaves[i].clone(memory_format=torch.preserve_format)
                for name, value in self.spec.scalars(hp).items():
                    dtype = torch.promote_types(p.dtype, torch.float32)
                    state.setdefault(name, shared[name].to(p.device, dtype) if name in shared
                                     else torch.tensor(value, dtype=dtype, device=p.device))
                created.append((p, existed, set(state) - before))
        # one read of all step counters (CPU tensors, as in torch.optim), not one per parameter
        counts = torch.stack([self.state[p]["step"].float() for p in params]).tolist() if params else []
        buckets: dict[tuple, list[torch.Tensor]] = {}
        for p, count in zip(params, counts):
            buckets.setdefault((p.device, p.dtype, count), []).append(p)
        guard = bool(group.get(GUARD, False))
        return [_Bucket(hp, names, bucket, key[2] + 1, guard) for key, bucket in buckets.items()]

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
        trees = {n: math.tree([self.state[p][n] for p in params]) for n in names}
        scalars = {n: self.state[params[0]][n] for n in self.spec.scalars(hp)}
        return SimpleNamespace(**trees, **scalars)

    def _totals(self, buckets: list[_Bucket]) -> dict[str, torch.Tensor]:
        """The spec's reductions summed over every bucket of every param group."""
        totals: dict[str, torch.Tensor] = {}
        for bucket in buckets:
            hp, names, params = bucket.hp, bucket.names, bucket.params
            parts = self.spec.reductions(REDUCTIONS, hp, REDUCTIONS.tree([p.grad for p in params]), REDUCTIONS.tree(params),
                                         self._state(hp, names, params, REDUCTIONS))
            for key, value in parts.items():
                totals[key] = value if key not in totals else totals[key] + value.to(totals[key].device)
        return totals

    def _compute(self, bucket: _Bucket, totals):
        """The new values of one bucket: ``(commit, written)``, the function that writes them and the tensors it writes."""
        hp, names, params = bucket.hp, bucket.names, bucket.params
        state = self._state(hp, names, params)
        extra = {} if totals is None else {"totals": totals}
        delta, new = self.spec.update(MATH, hp, bucket.t, MATH.tree([p.grad for p in params]), MATH.tree(params), state, **extra)
        scalars = {name: torch.as_tensor(new[name]) for name in self.spec.scalars(hp)}
        written = ([] if delta is ZERO else list(delta.leaves)) + list(scalars.values())
        for name in names:
            if new[name] is not ZERO and new[name] is not getattr(state, name):
                written += new[name].leaves

        def commit():
            if delta is not ZERO:
                torch._foreach_add_(params, delta.leaves)
            for name in names:
                old, value = getattr(state, name), new[name]
                if value is ZERO:
                    torch._foreach_zero_(old.leaves)
                elif value is not old:
                    _copy_all(old.leaves, value.leaves)
            for name, value in scalars.items():  # a global scalar keeps its value rather than become non-finite
                target = self.state[params[0]][name]
                value = value.to(target.device, target.dtype)
                value = unsharded(value)  # a global scalar computed from sharded tensors
                target.copy_(torch.where(torch.isfinite(value), value, target))
            torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)

        return commit, written

    def _share_scalars(self, source: torch.Tensor) -> None:
        """Global scalars are one value: copy the new one to every parameter's state."""
        for name in self._scalar_names():
            value = self.state[source].get(name)
            targets = [state[name] for state in self.state.values() if name in state and state[name] is not value]
            if value is not None and targets:
                _copy_all(targets, [value] * len(targets))

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


class _Bucket(NamedTuple):
    hp: SimpleNamespace
    names: tuple[str, ...]
    params: list[torch.Tensor]
    t: float
    guard: bool


def _is_number_like(value: Any) -> bool:
    return (isinstance(value, torch.Tensor) and value.numel() == 1) or (isinstance(value, (int, float)) and not isinstance(value, bool))


def _check_state_dict(opt: SpecOptimizer, state_dict: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``state_dict`` is a state_dict of an optimizer like ``opt`` (a load pre-hook)."""
    owner = f"{type(opt).__name__}.load_state_dict"
    if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
        found = sorted(state_dict) if isinstance(state_dict, Mapping) else type(state_dict).__name__
        raise ValueError(f"{owner}: expected a dict with 'state' and 'param_groups', got {found}")
    groups, states, spec = state_dict["param_groups"], state_dict["state"], opt.spec
    if len(groups) != len(opt.param_groups):
        raise ValueError(f"{owner}: the state_dict has {len(groups)} param group(s), this optimizer has {len(opt.param_groups)}")
    others = {h.name for s in REGISTRY.values() for h in s.hyperparams} - set(opt.defaults)
    for index, (saved, mine) in enumerate(zip(groups, opt.param_groups)):
        where = f"{owner}: param group {index}"
        if len(saved["params"]) != len(mine["params"]):
            raise ValueError(f"{where} of the state_dict has {len(saved['params'])} parameter(s), this optimizer's has {len(mine['params'])}")
        foreign = sorted(k for k in saved if k in others)
        if foreign:
            raise ValueError(f"{where} has hyperparameter(s) {foreign} that {type(opt).__name__} does not have: "
                             "a state_dict of a different optimizer type?")
        merged = {**opt.defaults, **{k: v for k, v in saved.items() if k != "params"}}
        try:  # hyperparameters the group lacks (an older checkpoint) take this optimizer's defaults
            spec.validate({h.name: merged[h.name] for h in spec.hyperparams}, _is_concrete)
            _validate_options(merged)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: {err}") from None
        hp = spec.namespace({h.name: merged[h.name] for h in spec.hyperparams})
        shaped, scalar = spec.state(hp), ("step", *spec.scalars(hp))
        expected = {*shaped, *scalar}
        for position, (key, param) in enumerate(zip(saved["params"], mine["params"])):
            entry = states.get(key)
            if entry is None:  # a parameter that has not been stepped yet
                continue
            what = f"{where}, parameter {position}"
            if not isinstance(entry, Mapping) or set(entry) != expected:
                found = set(entry) if isinstance(entry, Mapping) else set()
                raise ValueError(f"{what}: state {sorted(found)} does not match the state {sorted(expected)} of "
                                 f"{type(opt).__name__} with these hyperparameters (missing {sorted(expected - found)}, "
                                 f"unexpected {sorted(found - expected)})")
            for name in shaped:
                value = entry[name]
                if not isinstance(value, torch.Tensor) or value.shape != param.shape:
                    got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                    raise ValueError(f"{what}: state {name!r} has shape {got}, the parameter has shape {tuple(param.shape)}")
            for name in scalar:
                if not _is_number_like(entry[name]):
                    raise ValueError(f"{what}: state {name!r} must be a number or a 1-element tensor, got {entry[name]!r}")


def from_spec(spec: Spec, name: str | None = None) -> type[SpecOptimizer]:
    """A ``torch.optim.Optimizer`` subclass computing ``spec``; hyperparameters as keyword arguments.

    The signature is ``(params, lr=<default>, <hyperparameters>..., *, skip_nonfinite=False,
    flat=True, fused=None)`` with the spec's defaults.
    """
    name = name or spec.name
    sig = signature(spec, ("self", "params"), LR, spec.defaults[LR])
    options = [inspect.Parameter(o.name, inspect.Parameter.KEYWORD_ONLY, default=o.default) for o in OPTIONS]
    sig = sig.replace(parameters=[*sig.parameters.values(), *options])

    def __init__(self, params, *args, **kwargs):
        SpecOptimizer.__init__(self, params, *args, **kwargs)

    __init__.__signature__ = sig
    cls = type(name, (SpecOptimizer,), {"spec": spec, "__init__": __init__, "__doc__": spec.doc})
    cls.__module__ = caller_module()
    cls.__qualname__ = name
    return cls
