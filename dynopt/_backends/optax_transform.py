"""Spec -> optax factory -> ``optax.GradientTransformationExtraArgs``.

The factory has an explicit signature ``(learning_rate, <hyperparameters>...)`` so that
``optax.inject_hyperparams`` and ``optax.chain`` work; ``learning_rate`` is a float, an array or
an optax schedule (evaluated at the count of previous steps, as optax does). The update is pure
and jit-able; it branches in Python only on static options, never on hyperparameter values.
The state is a NamedTuple ``<Name>State(count, <state variables>...)`` of pytrees shaped like the
params. Updates keep the gradients' dtype and the state keeps its own.

Faults:

* Non-finite gradients propagate into the leaves that receive them, as in optax. The spec's
  global reductions (sums over all leaves, e.g. a meta-step alignment) leave out a leaf whose
  contribution is not finite, and a global scalar of the spec (one value for all leaves) keeps
  its previous value rather than become non-finite, so one bad leaf cannot poison every other
  leaf through them.
* ``skip_nonfinite=True`` (keyword-only, static): if any gradient, or any value the step would
  produce (updates, state, global scalars), is not finite, the step is skipped: the updates are
  zeros and the state is returned unchanged, ``count`` included, so schedules and bias
  corrections advance only with the steps actually taken. The decision is one ``jnp.isfinite``
  reduction over all of these and ``jnp.where`` selects, so it runs under ``jit`` with no host
  synchronisation and the state keeps its type. Unlike ``optax.apply_if_finite`` it adds no
  wrapper state (no counters), never lets a non-finite step through after a number of
  consecutive failures, and also checks the gradients and the new state, not only the updates.

Sharding: under ``jit`` with sharded arrays the spec's global reductions already span every
shard. Inside ``shard_map`` or ``pmap``, where each device sees only its own shard of the
parameters, pass ``axis_name=`` (keyword-only, static; factories of specs with global reductions,
the meta step) and the sums are ``jax.lax.psum``'d over that axis, so every device adapts the same
global scalars. Leave it None when every device holds the whole model (data parallelism with
averaged gradients), or the sums count each parameter once per device.
"""

from __future__ import annotations

import functools
import inspect
from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ..spec import LR, Hyper, OptaxView, Spec, scalar_value
from ..statement import RANDOM
from ..tree import ZERO, ArrayLeafOps, FiniteSumArrayOps, TreeMath
from . import driver
from .common import bind, caller_module, signature

__all__ = ["from_spec", "from_view", "factories", "GUARD"]

GUARD = "skip_nonfinite"
AXIS_NAME = "axis_name"
_GUARD_HYPER = Hyper(GUARD, False, "skip a step whose gradients or new values are not all finite", static=True)


MATH = TreeMath(ArrayLeafOps(jnp))
REDUCTIONS = TreeMath(FiniteSumArrayOps(jnp))


def _all_finite(leaves) -> jax.Array:
    """One traced bool: every entry of every inexact leaf is finite."""
    flags = [jnp.all(jnp.isfinite(x)) for x in leaves if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
    return jnp.all(jnp.stack(flags)) if flags else jnp.asarray(True)


def _schedule_value(name: str, value: Any, hyper: str = LR) -> Any:
    argument = "learning_rate" if hyper == LR else hyper
    try:
        return scalar_value(value, argument)
    except ValueError as err:
        raise ValueError(f"{name}: the {argument} schedule returned a value that is not a scalar: {err}") from None


def _after(totals: dict | None) -> Callable[[Any], Any]:
    """``x ↦ x + (−0.0)``, the −0.0 computed from the totals: an exact identity (x + (−0) = x for every x, −0 and NaN
    included). Applied to the gradients the update reads, it makes every new value depend on the global sums,
    which read the old state, so XLA orders those reads before any write and updates donated state buffers in
    place; without it, it copies each state buffer the sums read before the step (measured: 128 MB of
    temporaries per step for the meta step on one 16M-element leaf, then none)."""
    if not totals:
        return lambda x: x
    every = sum(jnp.abs(totals[name]) for name in sorted(totals))  # after every sum: each reads some old state
    negative_zero = -0.0 * jnp.where(jnp.isfinite(every), every, 0.0)  # −0.0 · (finite ≥ 0) = −0.0
    return lambda x: x + negative_zero.astype(x.dtype)


def _is_concrete(value: Any) -> bool:
    return not isinstance(value, jax.core.Tracer) and not callable(value)


@functools.lru_cache(maxsize=None)
def _state_type(name: str, fields: tuple[str, ...], module: str) -> type:
    """The NamedTuple ``<name>State(count, *fields)``, one class per (name, fields, module).

    The class is built at run time (its fields depend on static options, e.g. a centered moving average's
    ``centered``), so pickle cannot find it by qualified name. Its instances therefore pickle as
    a call to :func:`_rebuild_state` with ``(name, fields, module)`` and their values: unpickling
    rebuilds the class through this cache, in this process or a fresh one, and returns an
    instance of the very class the factory's ``init`` returns, for the zoo and for a spec made
    anywhere (a test module, ``__main__``) alike. ``copy.deepcopy`` goes the same way.
    """
    state = NamedTuple(f"{name}State", [("count", Any)] + [(f, Any) for f in fields])
    state.__module__ = module
    state.__reduce__ = lambda self: (_rebuild_state, (name, fields, module, tuple(self)))
    return state


def _rebuild_state(name: str, fields: tuple[str, ...], module: str, values: tuple) -> tuple:
    """Unpickle a state made by :func:`_state_type` (see there)."""
    return _state_type(name, tuple(fields), module)(*values)


def _with_options(spec: Spec, sig: inspect.Signature) -> inspect.Signature:
    """``sig`` with the keyword-only options of every factory: ``skip_nonfinite``, and ``axis_name`` for a spec with
    global reductions."""
    sig = sig.replace(parameters=[*sig.parameters.values(), inspect.Parameter(GUARD, inspect.Parameter.KEYWORD_ONLY, default=False)])
    if spec.reductions is not None:  # sums over all parameters: psum'd over axis_name when each device holds a shard
        sig = sig.replace(parameters=[*sig.parameters.values(), inspect.Parameter(AXIS_NAME, inspect.Parameter.KEYWORD_ONLY,
                                                                                  default=None)])
    return sig


def from_spec(spec: Spec, name: str | None = None, *, module: str | None = None) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """An optax-style factory ``name(learning_rate, **hyperparameters)`` computing ``spec`` itself, with the spec's
    hyperparameter names (a zoo spec: torch's names and algorithm; ``factories`` gives optax's views)."""
    name = name or spec.jax_name
    sig = _with_options(spec, signature(spec, (), "learning_rate"))

    def prepare(hyper: dict) -> tuple[dict, dict, dict]:
        learning_rate = hyper.pop("learning_rate")
        spec.validate({LR: learning_rate, **hyper}, _is_concrete)  # the same messages as every backend
        return {LR: learning_rate, **hyper}, {}, {}

    return _factory(spec, name, sig, prepare, module or caller_module(), spec.doc)


def from_view(view: OptaxView, module: str | None = None) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """The factory ``view.name`` with optax's signature (``view.arguments``, then ``skip_nonfinite``), computing
    ``view.spec``: optax's arguments are validated under their own names, then mapped to the spec's hyperparameters."""
    spec = view.spec
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    sig = inspect.Signature([inspect.Parameter(h.name, kinds[h.keyword_only], default=h.default) for h in view.arguments])
    sig = _with_options(spec, sig)

    def prepare(arguments: dict) -> tuple[dict, dict, dict]:
        view.validate(arguments, _is_concrete)
        dtypes = {field: arguments[arg] for arg, field in view.dtypes}  # one argument may type several variables
        for arg in {arg for arg, _ in view.dtypes}:
            del arguments[arg]
        masks = {hyper: arguments.pop(arg) for arg, hyper in view.masks}
        return view.hyperparameters(arguments), dtypes, masks

    return _factory(spec, view.name, sig, prepare, module or caller_module(), view.spec.doc, view.leafwise)


def factories(spec: Spec, module: str | None = None, namespace: str = "") -> dict[str, Callable[..., optax.GradientTransformationExtraArgs]]:
    """The factories ``dynopt.jax`` exports for ``spec``: one per optax view (:class:`dynopt.spec.OptaxView`) when
    the spec has views, else ``{spec.jax_name: from_spec(spec)}``. ``namespace``: the views of that optax namespace
    only (``"contrib"``: ``dynopt.jax.contrib``'s; then no factory of the spec's own)."""
    module = module or caller_module()
    views = [view for view in spec.optax if view.namespace == namespace]
    if namespace:
        return {view.name: from_view(view, f"{module}.{namespace}") for view in views}
    if not views:
        return {spec.jax_name: from_spec(spec, module=module)}
    return {view.name: from_view(view, module) for view in views}


def _cast(leaf: Any, dtype: Any) -> Any:
    """A state leaf in ``dtype`` (None: as it is); a complex leaf stored real keeps its real part, as optax's zeros."""
    if dtype is None:
        return leaf
    dtype = jax.dtypes.canonicalize_dtype(dtype)
    if jnp.iscomplexobj(leaf) and not jnp.issubdtype(dtype, jnp.complexfloating):
        leaf = jnp.real(leaf)
    return jnp.asarray(leaf, dtype)


def _per_leaf(value: Any, tree: Any, treedef: Any, is_value: Callable[[Any], bool]) -> tuple:
    """One value per leaf of ``tree`` from ``value``: a pytree (a prefix of ``tree``) whose values (``is_value``, or
    None) apply to every leaf beneath them, or a callable ``tree -> such a pytree`` (optax's convention, as for
    masks: called with the params at init and with the updates at a step, only their shapes matter)."""
    values = value(tree) if callable(value) else value
    broadcast = jax.tree.map(lambda v, sub: jax.tree.map(lambda _: v, sub), values, tree,
                             is_leaf=lambda x: x is None or is_value(x))
    return tuple(treedef.flatten_up_to(broadcast))


def _factory(spec: Spec, name: str, sig: inspect.Signature, prepare: Callable[[dict], tuple[dict, dict, dict]], module: str,
             doc: str, leafwise: tuple = ()) -> Callable[..., optax.GradientTransformationExtraArgs]:
    """The factory: bind the call to ``sig``, ``prepare`` it into (the spec's hyperparameters, dtypes of state
    variables, masks of hyperparameters), and build the transformation."""

    def factory(*args, **kwargs) -> optax.GradientTransformationExtraArgs:
        hyper = bind(sig, name, args, kwargs, spec)
        guard = hyper.pop(GUARD)
        axis_name = hyper.pop(AXIS_NAME, None)
        hyper, dtypes, masks = prepare(hyper)
        learning_rate = hyper.pop(LR)
        learning_rate = scalar_value(learning_rate, "learning_rate")  # shape (1,) as optax takes it
        hyper = spec.scalar_values(hyper)
        _GUARD_HYPER.validate(guard, lambda value: True)
        static_hp = spec.namespace({LR: learning_rate, **hyper})
        fields = spec.state(static_hp)
        scalars = spec.scalars(static_hp)
        streams = () if spec.random_seed is None else (RANDOM,)  # a PRNG key, after the state trees and scalars
        State = _state_type(spec.name, fields + tuple(scalars) + streams, module)
        needs_params = spec.needs_params(static_hp)
        # OptaxView.leafwise: a hyperparameter given as a pytree of per-leaf values, resolved to a tuple (None: as is)
        leafwise_given = [(h, is_value) for h, is_value in leafwise if hyper.get(h) is not None]

        def resolve(tree: Any, treedef: Any) -> dict:
            return {h: _per_leaf(hyper[h], tree, treedef, is_value) for h, is_value in leafwise_given}

        def init_fn(params):
            leaves, treedef = jax.tree.flatten(params)
            # Values are checked only when known: under jit (tracers) check_param is skipped, nothing is
            # raised, and the step runs on the entries as they are (README, "Exponentiated gradient").
            if not any(isinstance(x, jax.core.Tracer) for x in leaves):
                spec.check_params(MATH, static_hp, leaves, lambda i: f"parameter leaf {i}")
            # a schedule's value at count 0 for a state that starts from the learning rate (initial step sizes)
            start = _schedule_value(name, learning_rate(0)) if callable(learning_rate) else learning_rate
            initial = spec.initial(MATH, spec.namespace({LR: start, **hyper, **resolve(params, treedef)}), MATH.tree(leaves))

            def placed(f: str) -> list:
                """None for a leaf that does not hold a variable: by ``Spec.state_shape``, or, with a leafwise
                hyperparameter given, where the initial state (then one leaf per parameter) has None."""
                values = initial[f].leaves
                if leafwise_given:
                    return [None if v is None else _cast(v, dtypes.get(f)) for v in values]
                return driver.align([spec.holds(f, jnp.shape(x)) for x in leaves], [_cast(x, dtypes.get(f)) for x in values])

            trees = (treedef.unflatten(placed(f)) for f in fields)
            dtype = jnp.result_type(jnp.float32, *leaves) if leaves else jnp.float32
            values = (jnp.asarray(v, dtype) for v in scalars.values())
            keys = (MATH.ops.stream(spec.random_seed(static_hp), leaves) for _ in streams)
            return State(jnp.zeros([], jnp.int32), *trees, *values, *keys)

        def update_fn(updates, state, params=None, grad_fn=None, **extra_args):
            del extra_args
            grads, treedef = jax.tree.flatten(updates)
            if spec.gradient_calls > 1 and (params is None or grad_fn is None):
                missing = " and ".join(n for n, v in (("params", params), ("grad_fn", grad_fn)) if v is None)
                raise ValueError(
                    f"{name}: this scheme takes {spec.gradient_calls} gradients per step; call "
                    f"update(grads, state, params, grad_fn=grad_fn) with grad_fn(params) -> grads (missing: {missing})"
                )
            if needs_params and params is None:
                raise ValueError(
                    f"{name}: this configuration reads the parameters (e.g. weight_decay != 0); "
                    "call update(grads, state, params) with params"
                )
            leaves = treedef.flatten_up_to(params) if params is not None else [None] * len(grads)
            old = {f: treedef.flatten_up_to(getattr(state, f)) for f in fields}
            hp = driver.hyperparameters(spec, {LR: learning_rate, **hyper}, state.count,
                                        lambda hyper, value: _schedule_value(name, value, hyper))  # (1,) accepted
            for hname, mask in masks.items():  # optax's mask: the hyperparameter on the leaves it selects, 0 on the others
                if mask is not None:
                    flags = treedef.flatten_up_to(mask(params) if callable(mask) else mask)
                    value = getattr(hp, hname)
                    setattr(hp, hname, MATH.tree([value if flag else 0.0 for flag in flags]))
            for hname, values in resolve(updates, treedef).items():
                setattr(hp, hname, values)
            tree_grad_fn = None if grad_fn is None else (lambda point: MATH.tree(treedef.flatten_up_to(
                grad_fn(treedef.unflatten([x.astype(p.dtype) for x, p in zip(point.leaves, leaves)])))))
            held = {f: driver.present(v) for f, v in old.items()}  # a leaf that does not hold a variable stores None
            current = SimpleNamespace(**{f: MATH.tree(v) for f, v in held.items()},
                                      **{n: getattr(state, n) for n in (*scalars, *streams)})
            reduced = SimpleNamespace(**{f: REDUCTIONS.tree(v) for f, v in held.items()}, **{n: getattr(state, n) for n in scalars})
            totals = driver.reductions(spec, REDUCTIONS, hp, REDUCTIONS.tree(grads), REDUCTIONS.tree(leaves), reduced)
            if axis_name is not None and totals is not None:  # each device summed its own shard: add up the shards
                totals = {k: jax.lax.psum(v, axis_name) for k, v in totals.items()}
            tie = _after(totals)
            done = driver.step(spec, MATH, hp, state.count + 1, MATH.tree([tie(g) for g in grads]), MATH.tree(leaves), current,
                               totals=totals,
                               grad_fn=tree_grad_fn)
            delta, new = done.delta, done.state
            step = [jnp.zeros_like(g) for g in grads] if delta is ZERO else [d.astype(g.dtype) for d, g in zip(delta.leaves, grads)]
            new_state = []
            for f in fields:
                value = [jnp.zeros_like(x) for x in held[f]] if new[f] is ZERO else new[f].leaves
                value = [v.astype(x.dtype) for v, x in zip(value, held[f])]
                new_state.append(treedef.unflatten(driver.align([x is not None for x in old[f]], value)))
            new_scalars = [jnp.asarray(new[n], getattr(state, n).dtype) for n in scalars]
            result = State(optax.safe_increment(state.count), *new_state, *new_scalars, *(new[n] for n in streams))
            if guard:  # the contract's checked values, in the dtypes they are written in
                ok = _all_finite(grads + step + jax.tree.leaves(result))
                step = [jnp.where(ok, s, jnp.zeros_like(s)) for s in step]
                result = jax.tree.map(lambda n, o: jnp.where(ok, n, o), result, state)
            return treedef.unflatten(step), result

        return optax.GradientTransformationExtraArgs(init_fn, update_fn)

    factory.__signature__ = sig
    factory.__name__ = factory.__qualname__ = name
    factory.__module__ = module
    factory.__doc__ = doc
    return factory
