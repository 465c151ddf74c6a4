"""Spec -> a plain NumPy optimizer: the discrete oracle (float64, obvious code, no framework).

``from_spec(spec)(lr, **hyperparameters)`` returns an object with pure ``init(params)`` and
``update(grads, state, params) -> (updates, state)`` over lists of arrays, like optax. Tests
compare torch and JAX against it; trajectories on 2-D toy losses use it because it is cheap.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..spec import LR, Spec, scalar_value
from ..statement import RANDOM
from ..tree import ZERO, ArrayLeafOps, FiniteSumArrayOps, TreeMath
from . import driver
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
        self.spec, self.hyper = spec, spec.scalar_values(hyper)  # a learning rate of shape (1,) as a scalar
        self.hp = spec.namespace(hyper)
        self.fields = spec.state(self.hp)

    def init(self, params: Sequence[np.ndarray]) -> OracleState:
        params = [np.asarray(p, dtype=np.float64) for p in params]
        self.spec.check_params(MATH, self.hp, params, lambda i: f"parameter {i}")
        lr = self.hyper[LR]  # a schedule's value at count 0 for a state that starts from the learning rate
        hp = self.spec.namespace({**self.hyper, LR: scalar_value(lr(0), "lr")}) if callable(lr) else self.hp
        initial = self.spec.initial(MATH, hp, MATH.tree(params))
        # None for a parameter that does not hold a variable (Spec.state_shape)
        values = {f: driver.align([self.spec.holds(f, p.shape) for p in params], initial[f].leaves) for f in self.fields}
        if self.spec.random_seed is not None:  # a PCG64 state (a dict), drawn from by the step and replaced
            values[RANDOM] = MATH.ops.stream(self.spec.random_seed(self.hp), params)
        return OracleState(0, {**values, **{n: np.float64(v) for n, v in self.spec.scalars(self.hp).items()}})

    def update(self, grads, state: OracleState, params, grad_fn=None):
        """One step; ``grad_fn(params) -> grads`` (lists of arrays) gives the gradient at the intermediate
        points of a multi-stage scheme (``spec.gradient_calls > 1``)."""
        grads = [np.asarray(g, dtype=np.float64) for g in grads]
        params = [np.asarray(p, dtype=np.float64) for p in params]
        hp = driver.hyperparameters(self.spec, self.hyper, state.count, lambda name, v: scalar_value(v, name))
        scalars = self.spec.scalars(hp)
        streams = (RANDOM,) if self.spec.random_seed is not None else ()
        current = SimpleNamespace(**{f: MATH.tree(driver.present(state.values[f])) for f in self.fields},
                                  **{n: state.values[n] for n in (*scalars, *streams)})
        grad_tree, param_tree = MATH.tree(grads), MATH.tree(params)
        totals = driver.reductions(self.spec, REDUCTIONS, hp, grad_tree, param_tree, current)
        tree_grad_fn = None if grad_fn is None else (
            lambda point: MATH.tree([np.asarray(g, dtype=np.float64) for g in grad_fn(list(point.leaves))]))
        result = driver.step(self.spec, MATH, hp, state.count + 1, grad_tree, param_tree, current, totals=totals,
                             grad_fn=tree_grad_fn)
        new = result.state
        updates = [np.zeros_like(g) for g in grads] if result.delta is ZERO else result.delta.leaves
        values = {f: driver.align([v is not None for v in state.values[f]],
                                  [np.zeros_like(v) for v in getattr(current, f).leaves] if new[f] is ZERO else new[f].leaves)
                  for f in self.fields}
        values.update({n: np.float64(new[n]) for n in scalars})
        values.update({n: new[n] for n in streams})
        return updates, OracleState(state.count + 1, values)

    def time_step(self) -> float:
        """ODE time advanced by one step: step k sits at ``k * time_step()``."""
        return float(self.spec.time_step(self.spec.namespace(self.hyper)))


def from_spec(spec: Spec):
    """A factory ``(lr, **hyperparameters) -> NumpyOptimizer`` with the spec's defaults."""
    sig = signature(spec, (), LR, spec.defaults[LR])

    def factory(*args, **kwargs) -> NumpyOptimizer:
        return NumpyOptimizer(spec, bind(sig, spec.jax_name, args, kwargs, spec))

    factory.__signature__ = sig
    factory.__name__ = spec.jax_name
    factory.__doc__ = spec.doc
    return factory
