"""Spec -> optax factory -> ``optax.GradientTransformationExtraArgs``.

The factory has an explicit signature ``(learning_rate, <hyperparameters>...)`` so that
``optax.inject_hyperparams`` and ``optax.chain`` work; ``learning_rate`` is a float, an array or
an optax schedule (evaluated at the count of previous steps, as optax does). The update is pure
and jit-able; it branches in Python only on static options, never on hyperparameter values.
The state is a NamedTuple ``<Name>State(count, <state variables>...)`` of pytrees shaped like the
params. Updates keep the gradients' dtype and the state keeps its own.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..spec import LR, Spec
from ..tree import ZERO, ArrayLeafOps, TreeMath
from .common import bind, caller_module, signature

__all__ = ["from_spec"]

MATH = TreeMath(ArrayLeafOps(jnp))


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer) and not callable(value)


@functools.lru_cache(maxsize=None)
def _state_type(name: str, fields: tuple[str, ...], module: str) -> type:
    state = NamedTuple(f"{name}State", [("count", Any)] + [(f, Any) for f in fields])
    state.__module__ = module
    return state


def from_spec(spec: Spec, name: str | None = None) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """An optax-style factory ``name(learning_rate, **hyperparameters)`` computing ``spec``."""
    name = name or spec.jax_name
    sig = signature(spec, (), "learning_rate")
    module = caller_module()

    def factory(*args, **kwargs) -> optax.GradientTransformationExtraArgs:
        hyper = bind(sig, name, args, kwargs)
        learning_rate = hyper.pop("learning_rate")
        spec.validate({LR: learning_rate, **hyper}, _is_concrete)
        static_hp = spec.namespace({LR: learning_rate, **hyper})
        fields = spec.state(static_hp)
        scalars = spec.scalars(static_hp)
        State = _state_type(spec.name, fields + tuple(scalars), module)
        needs_params = spec.needs_params(static_hp)

        def init_fn(params):
            leaves, treedef = jax.tree.flatten(params)
            if not any(isinstance(x, jax.core.Tracer) for x in leaves):
                spec.check_params(MATH, static_hp, leaves, lambda i: f"parameter leaf {i}")
            initial = spec.initial(MATH, static_hp, MATH.tree(leaves))
            trees = (treedef.unflatten(initial[f].leaves) for f in fields)
            dtype = jnp.result_type(jnp.float32, *leaves) if leaves else jnp.float32
            values = (jnp.asarray(v, dtype) for v in scalars.values())
            return State(jnp.zeros([], jnp.int32), *trees, *values)

        def update_fn(updates, state, params=None, **extra_args):
            del extra_args
            grads, treedef = jax.tree.flatten(updates)
            if needs_params and params is None:
                raise ValueError(
                    f"{name}: this configuration reads the parameters (e.g. weight_decay != 0); "
                    "call update(grads, state, params) with params"
                )
            leaves = treedef.flatten_up_to(params) if params is not None else [None] * len(grads)
            old = {f: treedef.flatten_up_to(getattr(state, f)) for f in fields}
            lr = learning_rate(state.count) if callable(learning_rate) else learning_rate
            hp = spec.namespace({LR: lr, **hyper})
            current = SimpleNamespace(**{f: MATH.tree(v) for f, v in old.items()}, **{n: getattr(state, n) for n in scalars})
            grad_tree, param_tree = MATH.tree(grads), MATH.tree(leaves)
            extra = {}
            if spec.reductions is not None:
                extra["totals"] = spec.reductions(MATH, hp, grad_tree, param_tree, current)
            delta, new = spec.update(MATH, hp, state.count + 1, grad_tree, param_tree, current, **extra)
            step = [jnp.zeros_like(g) for g in grads] if delta is ZERO else [d.astype(g.dtype) for d, g in zip(delta.leaves, grads)]
            new_state = []
            for f in fields:
                value = [jnp.zeros_like(x) for x in old[f]] if new[f] is ZERO else new[f].leaves
                new_state.append(treedef.unflatten([v.astype(x.dtype) for v, x in zip(value, old[f])]))
            new_scalars = [jnp.asarray(new[n], getattr(state, n).dtype) for n in scalars]
            return treedef.unflatten(step), State(optax.safe_increment(state.count), *new_state, *new_scalars)

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    factory.__signature__ = sig
    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = module
    factory.__doc__ = spec.doc
    return factory
