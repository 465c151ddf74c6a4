"""The per-step contract, written once. Every backend calls it; each supplies only its leaf operations
(the ``o`` and ``r`` namespaces) and its state storage.

One step of a spec over a set of leaves (the whole tree in NumPy and optax, one bucket in torch):

1. the learning rate in effect: a schedule is evaluated at the optimizer step, ``count // micro_steps``
   (:func:`hyperparameters`);
2. the spec's global reductions, in the fault-isolating maths ``r`` (a leaf whose own sum is not
   finite is left out), summed by the caller over everything it steps at once (:func:`reductions`);
3. ``spec.update`` at step clock ``t = count + 1``, with the totals and, for a multi-stage scheme,
   the gradient at intermediate points (``grad_fn``), or its staged form driven by the caller;
4. the results settled: ``ZERO`` (an exact zero the tree maths folded) stays ``ZERO`` for the step
   (nothing to add) and becomes zeros for a state variable; a constant broadcasts to the leaves;
5. a global scalar (one value for all parameters) keeps its previous value rather than become
   non-finite, so one bad parameter cannot poison all the others through it;
6. for ``skip_nonfinite``, the list of values whose finiteness decides the step: the gradients,
   the step, every new state value and the new global scalars (:attr:`Step.checked`). How a
   backend skips (a ``where`` in JAX, a host read in torch) is its own business.

The step counter is the backend's storage (``count`` in optax and NumPy, ``state[p]["step"]`` in
torch); it advances by one per call, after the values are written.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, NamedTuple

from ..spec import Spec
from ..tree import ZERO, Tree, TreeMath, settle

__all__ = ["Step", "hyperparameters", "reductions", "step", "finish", "scalar_fallback", "present", "align"]


def present(values: list) -> list:
    """The entries of a stored state variable that exist: optax and NumPy store None for a parameter that does not
    hold the variable (``Spec.state_shape``); the spec sees the tree of the others."""
    return values if all(v is not None for v in values) else [v for v in values if v is not None]


def align(holds: list, leaves: list) -> list:
    """``leaves`` (one per True of ``holds``) back in their places, None where ``holds`` is False."""
    if all(holds):
        return list(leaves)
    it = iter(leaves)
    return [next(it) if held else None for held in holds]


class Step(NamedTuple):
    """What one step computed: ``delta`` (a Tree, or ZERO for no move), ``state`` (every state
    variable a Tree or ZERO, every global scalar its new, finite-or-previous value) and ``checked``
    (the leaves and scalars ``skip_nonfinite`` requires finite, gradients first)."""

    delta: Any
    state: dict
    checked: list


def hyperparameters(spec: Spec, hyper: dict, count: Any, value: Callable[[str, Any], Any] = lambda name, v: v) -> SimpleNamespace:
    """The hyperparameters in effect at the step after ``count`` steps: a callable lr (a schedule), or a callable
    value of a hyperparameter declared ``Hyper(schedule=True)``, is evaluated at the optimizer step
    ``count // spec.micro_steps``; ``value(name, v)`` checks what it returned."""
    at = None
    values = dict(hyper)
    for name in spec.schedulable:
        if callable(values.get(name)):
            at = count // spec.micro_steps if at is None else at
            values[name] = value(name, values[name](at))
    return spec.namespace(values)


def reductions(spec: Spec, r: TreeMath, hp: SimpleNamespace, grad: Tree, param: Tree, state: SimpleNamespace) -> dict | None:
    """The spec's global reductions over these leaves (None when it has none); callers add them up."""
    if spec.reductions is None:
        return None
    return spec.reductions(r, hp, grad, param, state)


def scalar_fallback(o: TreeMath, new: Any, old: Any) -> Any:
    """``new`` where it is finite, else ``old``: a global scalar never becomes non-finite."""
    if new is ZERO:
        return 0.0
    return o.select(o.isfinite(new), new, old)


def finish(spec: Spec, o: TreeMath, hp: SimpleNamespace, grad: Tree, state: SimpleNamespace, delta: Any, new: dict) -> Step:
    """Settle a spec's raw ``(delta, new)`` into a :class:`Step` (parts 4–6 of the contract)."""
    delta, new = settle(delta, new, grad, state)
    scalars = spec.scalars(hp)
    for name in scalars:
        new[name] = scalar_fallback(o, new[name], getattr(state, name))
    checked = list(grad.leaves)
    if delta is not ZERO:
        checked += delta.leaves
    for name in spec.state(hp):
        value = new[name]
        if value is not ZERO and value is not getattr(state, name):
            checked += value.leaves
    checked += [new[name] for name in scalars]
    return Step(delta, new, checked)


def step(spec: Spec, o: TreeMath, hp: SimpleNamespace, t: Any, grad: Tree, param: Tree, state: SimpleNamespace, *,
         totals: dict | None = None, grad_fn: Callable[[Tree], Tree] | None = None) -> Step:
    """One step of ``spec`` over these leaves (parts 3–6 of the contract)."""
    extra: dict[str, Any] = {}
    if totals is not None:
        extra["totals"] = totals
    if spec.gradient_calls > 1:
        extra["grad_fn"] = grad_fn
    delta, new = spec.update(o, hp, t, grad, param, state, **extra)
    return finish(spec, o, hp, grad, state, delta, new)
