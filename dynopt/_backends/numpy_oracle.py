"""Spec -> a plain NumPy optimizer: the discrete oracle (float64, obvious code, no framework).

``from_spec(spec)(lr, **hyperparameters)`` returns an object with pure ``init(params)`` and
``update(grads, state, params) -> (updates, state)`` over lists of arrays, like optax. Tests
compare torch and JAX against it; trajectories on 2-D toy losses use it because it is cheap.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..spec import LR, Spec
from ..tree import ZERO, ArrayLeafOps, FiniteSumArrayOps, TreeMath
from .common import bind, signature

__all__ = ["from_spec", "NumpyOptimizer", "MATH"]

MATH = TreeMath(ArrayLeafOps(np))
REDUCTIONS = TreeMath(FiniteSumArrayOps(np))  # global sums skip a non-finite leaf, as in every backend


class OracleState(NamedTuple):
    count: int
    values: dict[str, Any]  # state variables (lists of arrays) and global scalars (floats) by name


class NumpyOptimizer:
    """One configured optimizer; ``hyper`` holds every hyperparameter, ``lr`` included."""

    def __init__(self, spec: Spec, hyper: dict[str, Any]):
        spec.validate(hyper, lambda value: not callable(value))  # a schedule lr is checked when called
        self.spec, self.hyper = spec, dict(hyper)
        self.hp = spec.namespace(hyper)
        self.fields = spec.state(self.hp)

    def init(self, params: Sequence[np.ndarray]) -> OracleState:
        params = [np.asarray(p, dtype=np.float64) for p in params]
        self.spec.check_params(MATH, self.hp, params, lambda i: f"parameter {i}")
        initial = self.spec.initial(MATH, self.hp, MATH.tree(params))
        values = {f: initial[f].leaves for f in self.fields}
        return OracleState(0, {**values, **{n: np.float64(v) for n, v in self.spec.scalars(self.hp).items()}})

    def update(self, grads, state: OracleState, params):
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        params = [np.asarray(p, dtype=np.float64) for p in params]
        lr = self.hyper[LR]
        hp = self.spec.namespace({**self.hyper, LR: lr(state.count) if callable(lr) else lr})
        scalars = self.spec.scalars(hp)
        current = SimpleNamespace(**{f: MATH.tree(state.values[f]) for f in self.fields}, **{n: state.values[n] for n in scalars})
        grad_tree, param_tree = MATH.tree(grads), MATH.tree(params)
        extra = {}
        if self.spec.reductions is not None:
            extra["totals"] = self.spec.reductions(REDUCTIONS, hp, grad_tree, param_tree, current)
        delta, new = self.spec.update(MATH, hp, state.count + 1, grad_tree, param_tree, current, **extra)
        updates = [np.zeros_like(g) for g in grads] if delta is ZERO else delta.leaves
        values = {f: [np.zeros_like(g) for g in grads] if new[f] is ZERO else new[f].leaves for f in self.fields}
        # a global scalar keeps its previous value rather than become non-finite (every backend)
        values.update({n: np.float64(new[n]) if np.isfinite(new[n]) else state.values[n] for n in scalars})
        return updates, OracleState(state.count + 1, values)

    def time_step(self) -> float:
        """ODE time advanced by one step: step k sits at ``k * time_step()``."""
        return float(self.spec.time_step(self.spec.namespace(self.hyper)))


def from_spec(spec: Spec):
    """A factory ``(lr, **hyperparameters) -> NumpyOptimizer`` with the spec's defaults."""
    sig = signature(spec, (), LR, spec.defaults[LR])

    def factory(*args, **kwargs) -> NumpyOptimizer:
        return NumpyOptimizer(spec, bind(sig, spec.jax_name, args, kwargs))

    factory.__signature__ = sig
    factory.__name__ = spec.jax_name
    factory.__doc__ = spec.doc
    return factory
