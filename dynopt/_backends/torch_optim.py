"""Spec -> ``torch.optim.Optimizer`` subclass, executed with multi-tensor (``torch._foreach_*``) kernels.

Each tree operation of a spec becomes one ``_foreach`` call over all parameters of a bucket
(same device, dtype and step count), so no Python loop issues per-parameter ops. State lives
in ``self.state[p]`` under the spec's names plus torch's ``step`` (a 0-dim float tensor), so
``state_dict``, checkpoints and every ``lr_scheduler`` work as with ``torch.optim``.
A step first computes every new value, then writes them all: an error leaves no half-update.

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

from ..spec import LR, REGISTRY, Hyper, Spec
from ..tree import ZERO, LeafOps, TreeMath
from .common import bind, caller_module, signature

__all__ = ["from_spec", "SpecOptimizer", "ForeachOps", "GUARD"]

GUARD = "skip_nonfinite"
_GUARD_HYPER = Hyper(GUARD, False, "skip a step whose gradients or new values are not all finite", static=True)

_BINARY = {
    "add": torch._foreach_add,
    "sub": torch._foreach_sub,
    "mul": torch._foreach_mul,
    "div": torch._foreach_div,
    "maximum": torch._foreach_maximum,
    "minimum": torch._foreach_minimum,
}
_UNARY = {
    "neg": torch._foreach_neg,
    "sqrt": torch._foreach_sqrt,
    "exp": torch._foreach_exp,
    "log": torch._foreach_log,
    "abs": torch._foreach_abs,
    "sign": torch._foreach_sign,
    "expm1": torch._foreach_expm1,
}
_SCALAR = {"sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log, "abs": torch.abs, "sign": torch.sign,
           "neg": torch.neg, "expm1": torch.expm1}
_REDUCE = {"sum": torch.sum, "max": torch.amax, "min": torch.amin}


class ForeachOps(LeafOps):
    """Tree operations as ``torch._foreach_*`` multi-tensor kernels."""

    def binary(self, op, xs, ys):
        if op in ("maximum", "minimum") and not isinstance(ys, list):
            clamp = torch._foreach_clamp_min if op == "maximum" else torch._foreach_clamp_max
            return list(clamp(xs, ys))
        return list(_BINARY[op](xs, ys))

    def rbinary(self, op, s, xs):
        if op == "sub":  # s - x == (-x) + s exactly
            return list(torch._foreach_add(torch._foreach_neg(xs), s))
        if op in ("add", "mul"):
            return list(_BINARY[op](xs, s))
        return [torch.div(s, x) if op == "div" else _BINARY[op]([s], [x])[0] for x in xs]

    def unary(self, op, xs):
        return list(_UNARY[op](xs))

    def scalar(self, op, s):
        return _SCALAR[op](s)

    def sum_all(self, xs):
        """Σ x = ‖max(x, 0)‖₁ − ‖min(x, 0)‖₁: a constant number of multi-tensor kernels, no per-leaf sum."""
        if not xs:
            return torch.zeros(())
        positive = torch._foreach_norm(torch._foreach_clamp_min(xs, 0.0), 1)
        negative = torch._foreach_norm(torch._foreach_clamp_max(xs, 0.0), 1)
        return torch.stack(positive).sum() - torch.stack(negative).sum()

    def zeros_like(self, xs):
        return [torch.zeros_like(x) for x in xs]

    def is_scalar(self, x):
        return isinstance(x, torch.Tensor) and x.dim() == 0

    def where(self, cond, xs, ys):
        return [torch.where(cond, x, y) for x, y in zip(xs, ys)]

    def reduce_along(self, op, xs, axis):
        f = _REDUCE[op]
        out = []
        for x in xs:
            dims = tuple(range(x.dim())) if axis is None else (axis % max(x.dim(), 1),)
            if x.numel() == 0:  # max/min have no identity; any value broadcasts against an empty leaf
                out.append(x.new_zeros([1 if d in dims else n for d, n in enumerate(x.shape)]))
            else:
                out.append(f(x, dim=dims, keepdim=True))
        return out

    def clip(self, s, low, high):
        return torch.clamp(s, low, high)

    def leaf_min(self, x):
        return float(x.min()) if x.numel() else float("inf")

    def leaf_ndim(self, x):
        return x.dim()


class FiniteSumOps(ForeachOps):
    """``ForeachOps`` whose tree-wide sums leave out a leaf whose own sum is not finite: the maths of
    the spec's global reductions, so that one non-finite parameter cannot poison the others."""

    def sum_all(self, xs):
        if not xs:
            return torch.zeros(())
        positive = torch._foreach_norm(torch._foreach_clamp_min(xs, 0.0), 1)
        negative = torch._foreach_norm(torch._foreach_clamp_max(xs, 0.0), 1)
        positive, negative = torch.stack(positive), torch.stack(negative)
        finite = torch.isfinite(positive - negative)  # both parts finite (inf − inf is nan)
        return torch.where(finite, positive, 0.0).sum() - torch.where(finite, negative, 0.0).sum()


MATH = TreeMath(ForeachOps())
REDUCTIONS = TreeMath(FiniteSumOps())


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _is_concrete(value: Any) -> bool:
    return not (isinstance(value, torch.Tensor) and value.requires_grad)


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
        guard = hyper.pop(GUARD, False)
        self.spec.validate(hyper, _is_concrete)
        _GUARD_HYPER.validate(guard, _is_concrete)
        _check_tuples(self.spec, hyper)
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{type(self).__name__}: params must be an ordered collection (a list), not a set: the order "
                "of a set changes between runs, so a state_dict could not be mapped back to the parameters"
            )
        super().__init__(params, {**hyper, GUARD: guard})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group.get("params"), (set, frozenset)):
            raise TypeError(f"{type(self).__name__}: a param group's params must be a list, not a set")
        merged = {**self.defaults, **param_group}
        self.spec.validate({h.name: merged[h.name] for h in self.spec.hyperparams}, _is_concrete)
        _GUARD_HYPER.validate(merged.get(GUARD, False), _is_concrete)
        _check_tuples(self.spec, merged)
        super().add_param_group(param_group)
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
        with_grads = [(group, self._params_with_grad(index, group)) for index, group in enumerate(self.param_groups)]
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
                    torch._foreach_copy_(old.leaves, value.leaves)
            for name, value in scalars.items():  # a global scalar keeps its value rather than become non-finite
                target = self.state[params[0]][name]
                value = value.to(target.device, target.dtype)
                target.copy_(torch.where(torch.isfinite(value), value, target))
            torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)

        return commit, written

    def _share_scalars(self, source: torch.Tensor) -> None:
        """Global scalars are one value: copy the new one to every parameter's state."""
        for name in self._scalar_names():
            value = self.state[source].get(name)
            targets = [state[name] for state in self.state.values() if name in state and state[name] is not value]
            if value is not None and targets:
                torch._foreach_copy_(targets, [value] * len(targets))

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
            _GUARD_HYPER.validate(merged.get(GUARD, False), _is_concrete)
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

    The signature is ``(params, lr=<default>, <hyperparameters>..., *, skip_nonfinite=False)``
    with the spec's defaults.
    """
    name = name or spec.name
    sig = signature(spec, ("self", "params"), LR, spec.defaults[LR])
    sig = sig.replace(parameters=[*sig.parameters.values(), inspect.Parameter(GUARD, inspect.Parameter.KEYWORD_ONLY, default=False)])

    def __init__(self, params, *args, **kwargs):
        SpecOptimizer.__init__(self, params, *args, **kwargs)

    __init__.__signature__ = sig
    cls = type(name, (SpecOptimizer,), {"spec": spec, "__init__": __init__, "__doc__": spec.doc})
    cls.__module__ = caller_module()
    cls.__qualname__ = name
    return cls
