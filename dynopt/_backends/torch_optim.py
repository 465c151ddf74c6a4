"""Spec -> ``torch.optim.Optimizer`` subclass, executed with multi-tensor (``torch._foreach_*``) kernels.

Each tree operation of a spec becomes one ``_foreach`` call over all parameters of a bucket
(same device, dtype and step count), so no Python loop issues per-parameter ops. State lives
in ``self.state[p]`` under the spec's names plus torch's ``step`` (a 0-dim float tensor), so
``state_dict``, checkpoints and every ``lr_scheduler`` work as with ``torch.optim``.
A step first computes every new value, then writes them all: an error leaves no half-update.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

import torch

from ..spec import LR, Spec
from ..tree import ZERO, LeafOps, TreeMath
from .common import bind, caller_module, signature

__all__ = ["from_spec", "SpecOptimizer", "ForeachOps"]

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
        return [f(x, dim=tuple(range(x.dim())) if axis is None else axis, keepdim=True) for x in xs]

    def clip(self, s, low, high):
        return torch.clamp(s, low, high)

    def leaf_min(self, x):
        return float(x.min()) if x.numel() else float("inf")

    def leaf_ndim(self, x):
        return x.dim()


MATH = TreeMath(ForeachOps())


def _scalar_dtype() -> torch.dtype:
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


def _is_concrete(value: Any) -> bool:
    return not (isinstance(value, torch.Tensor) and value.requires_grad)


class SpecOptimizer(torch.optim.Optimizer):
    """Base of every generated optimizer; ``spec`` says what it computes."""

    spec: ClassVar[Spec]

    def __init__(self, params, *args, **kwargs):
        hyper = bind(type(self).__init__.__signature__, type(self).__name__, (self, params) + args, kwargs)
        del hyper["self"], hyper["params"]
        self.spec.validate(hyper, _is_concrete)
        if isinstance(params, (set, frozenset)):
            raise TypeError(
                f"{type(self).__name__}: params must be an ordered collection (a list), not a set: the order "
                "of a set changes between runs, so a state_dict could not be mapped back to the parameters"
            )
        super().__init__(params, hyper)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group.get("params"), (set, frozenset)):
            raise TypeError(f"{type(self).__name__}: a param group's params must be a list, not a set")
        merged = {**self.defaults, **param_group}
        self.spec.validate({h.name: merged[h.name] for h in self.spec.hyperparams}, _is_concrete)
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
        buckets = [bucket for group, params in with_grads for bucket in self._plan(group, params)]
        totals = self._totals(buckets) if self.spec.reductions is not None else None
        commits = [self._compute(*bucket, totals) for bucket in buckets]
        for commit in commits:
            commit()
        if commits:
            self._share_scalars(buckets[0][2][0])
        return loss

    def _params_with_grad(self, index: int, group: dict[str, Any]) -> list[torch.Tensor]:
        """The params that have a gradient; unsupported ones raise before anything is mutated."""
        for i, p in enumerate(group["params"]):
            if p.grad is not None and p.grad.is_sparse:
                raise TypeError(f"{type(self).__name__} does not support sparse gradients (param group {index}, parameter {i})")
            if p.grad is not None and p.is_complex():
                raise TypeError(f"{type(self).__name__} does not support complex parameters (param group {index}, parameter {i})")
        return [p for p in group["params"] if p.grad is not None]

    def _plan(self, group: dict[str, Any], params: list[torch.Tensor]):
        """Create missing state and bucket params by (device, dtype, step count)."""
        hp = self._hyper(group)
        names = self.spec.state(hp)
        fresh = [p for p in params if any(n not in self.state[p] for n in ("step", *names))]
        if fresh:
            initial = self.spec.initial(MATH, hp, MATH.tree(fresh))
            shared = self.global_scalars()
            for i, p in enumerate(fresh):
                state = self.state[p]
                state.setdefault("step", torch.tensor(0.0, dtype=_scalar_dtype()))
                for name in names:
                    if name not in state:
                        state[name] = initial[name].leaves[i].clone(memory_format=torch.preserve_format)
                for name, value in self.spec.scalars(hp).items():
                    dtype = torch.promote_types(p.dtype, torch.float32)
                    state.setdefault(name, shared[name].to(p.device, dtype) if name in shared
                                     else torch.tensor(value, dtype=dtype, device=p.device))
        # one read of all step counters (CPU tensors, as in torch.optim), not one per parameter
        counts = torch.stack([self.state[p]["step"].float() for p in params]).tolist() if params else []
        buckets: dict[tuple, list[torch.Tensor]] = {}
        for p, count in zip(params, counts):
            buckets.setdefault((p.device, p.dtype, count), []).append(p)
        return [(hp, names, bucket, key[2] + 1) for key, bucket in buckets.items()]

    def _state(self, hp: SimpleNamespace, names: tuple[str, ...], params: list[torch.Tensor]) -> SimpleNamespace:
        trees = {n: MATH.tree([self.state[p][n] for p in params]) for n in names}
        scalars = {n: self.state[params[0]][n] for n in self.spec.scalars(hp)}
        return SimpleNamespace(**trees, **scalars)

    def _totals(self, buckets) -> dict[str, torch.Tensor]:
        """The spec's reductions summed over every bucket of every param group."""
        totals: dict[str, torch.Tensor] = {}
        for hp, names, params, _ in buckets:
            parts = self.spec.reductions(MATH, hp, MATH.tree([p.grad for p in params]), MATH.tree(params),
                                         self._state(hp, names, params))
            for key, value in parts.items():
                totals[key] = value if key not in totals else totals[key] + value.to(totals[key].device)
        return totals

    def _compute(self, hp: SimpleNamespace, names: tuple[str, ...], params: list[torch.Tensor], t: float, totals):
        state = self._state(hp, names, params)
        extra = {} if totals is None else {"totals": totals}
        delta, new = self.spec.update(MATH, hp, t, MATH.tree([p.grad for p in params]), MATH.tree(params), state, **extra)

        def commit():
            if delta is not ZERO:
                torch._foreach_add_(params, delta.leaves)
            for name in names:
                old, value = getattr(state, name), new[name]
                if value is ZERO:
                    torch._foreach_zero_(old.leaves)
                elif value is not old:
                    torch._foreach_copy_(old.leaves, value.leaves)
            for name in self.spec.scalars(hp):
                self.state[params[0]][name].copy_(new[name])
            torch._foreach_add_([self.state[p]["step"] for p in params], 1.0)

        return commit

    def _share_scalars(self, source: torch.Tensor) -> None:
        """Global scalars are one value: copy the new one to every parameter's state."""
        for name in self._scalar_names():
            value = self.state[source].get(name)
            targets = [state[name] for state in self.state.values() if name in state and state[name] is not value]
            if value is not None and targets:
                torch._foreach_copy_(targets, [value] * len(targets))


def from_spec(spec: Spec, name: str | None = None) -> type[SpecOptimizer]:
    """A ``torch.optim.Optimizer`` subclass computing ``spec``; hyperparameters as keyword arguments.

    The signature is ``(params, lr=<default>, <hyperparameters>...)`` with the spec's defaults.
    """
    name = name or spec.name
    sig = signature(spec, ("self", "params"), LR, spec.defaults[LR])

    def __init__(self, params, *args, **kwargs):
        SpecOptimizer.__init__(self, params, *args, **kwargs)

    __init__.__signature__ = sig
    cls = type(name, (SpecOptimizer,), {"spec": spec, "__init__": __init__, "__doc__": spec.doc})
    cls.__module__ = caller_module()
    cls.__qualname__ = name
    return cls
