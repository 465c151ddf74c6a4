"""The step of a dynopt optimizer inside a ``torch.compile``'d function, behind few guards.

Dynamo guards on every Python object the code it traces reads, and checks those guards before every call
of the compiled function. Tracing the spec's Python step (the driver, the statement, the tree arithmetic,
the spec's closures) installs ~600 of them: ~15 µs a call, ~45 µs once the step's own memory traffic has
evicted those objects from the CPU caches (a compiled plain gradient step on a 263k-parameter MLP then ran at 1.2×
compiled torch.optim's, which installs ~60).

So, as torch.optim does, the step asks for its tensors through ``Optimizer._init_group``, a method dynamo
runs eagerly while tracing (not traced: what it reads gets no guards) and whose tensors it then guards as
optimizer tensors (by identity, as static addresses), and the update runs as a
``torch._dynamo.nonstrict_trace`` function: dynamo does not trace its bytecode either; AOTAutograd traces
its tensor operations into the same graph. ``_init_group`` (``collect``) finds the param group's recipe:
the spec, the group's static structure and state names, checked once by running the update on fake
tensors (a spec that reads a value on the host, or fails otherwise, keeps the inlined route). The update's
inputs are the tensors and the group's numeric hyperparameters (numbers as 0-dim tensors); its outputs
are the step and the new state, which the traced caller writes in place.

Covered: a spec without global reductions, random draws, global or per-parameter scalar state, state of
another shape or a multi-stage scheme; a param group without ``skip_nonfinite``, hyperparameters numbers
or tensors (no schedule callables), dense plain tensors whose state exists (not the first step), and no
``shard_group``. Elsewhere the optimizer traces the spec's step itself (``opt.execution.traced`` says which
ran). This module never names an optimizer.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import torch

from ..spec import Namespace
from ..tree import ZERO, TreeMath, unread
from . import driver
from .torch_flat import FlatOps
from .torch_ops import ForeachOps, is_plain, real_dtype, real_view

__all__ = ["ENABLED", "Recipe", "collect", "run"]

ENABLED = True  # False: a compiled step always traces the spec's step itself (inlined: many guards)
GUARD = "skip_nonfinite"
_LOG = logging.getLogger("dynopt.torch")
_LEAF = FlatOps()  # one-leaf tree operations, a 0-dim tensor operand taken as a tensor


class _TensorScalarOps(ForeachOps):
    """``ForeachOps`` where a scalar operand is a 0-dim tensor (here every number is one, see ``_as_input``): the
    one-leaf ops of the flat buckets, leaf by leaf, since a multi-tensor kernel takes a tensor scalar by reading it
    on the host."""

    def binary(self, op, xs, ys):
        if isinstance(ys, torch.Tensor):
            return [_LEAF.binary(op, [x], ys)[0] for x in xs]
        return super().binary(op, xs, ys)

    def rbinary(self, op, s, xs):
        if isinstance(s, torch.Tensor):
            return [_LEAF.rbinary(op, s, [x])[0] for x in xs]
        return super().rbinary(op, s, xs)


MATH = TreeMath(_TensorScalarOps())


class Recipe(SimpleNamespace):
    """How a param group steps in a compiled function: ``spec``; ``hypers``: the spec's hyperparameters'
    ``(name, static)``; ``structure``: the group's (``structure``); ``names``: the state variables its parameters
    hold; ``index``: its position in ``_RECIPES`` (``_update``'s constant argument); ``usable``: its update ran on
    fake tensors (else the compiled step inlines the spec's step)."""

    def __repr__(self) -> str:
        return f"Recipe({self.spec.name}, index={self.index}, usable={self.usable})"


_RECIPES: list[Recipe] = []  # per process: one per spec, group structure and kinds of parameters (few)
_INDEX: dict[tuple, int] = {}


def structure(hypers: tuple[tuple[str, bool], ...], group: dict) -> tuple | None:
    """What the traced update depends on besides values: each static hyperparameter's value, and for each
    numeric one (tuple items included) whether it is a tensor ("tensor") or a literal zero (True/False). None:
    not covered (a schedule, or another kind of value)."""
    out = []
    for name, static in hypers:
        value = group[name]
        if static:
            out.append(value)
            continue
        items = value if isinstance(value, (tuple, list)) else (value,)
        kinds = []
        for item in items:
            if isinstance(item, torch.Tensor):
                kinds.append("tensor")
            elif isinstance(item, (int, float)) and not isinstance(item, bool):
                kinds.append(item == 0)
            else:
                return None
        out.append(tuple(kinds))
    return tuple(out)


def collect(opt: Any, group: dict, params: list, grads: list, states: list, steps: list) -> tuple | None:
    """``Optimizer._init_group`` of a dynopt optimizer: run eagerly by dynamo while it traces (its reads get no
    guards; the tensors it appends are guarded as the optimizer's). Appends the group's parameters with a gradient,
    their gradients, their state tensors (variable by variable) and step counters, and returns what the traced
    caller needs as a constant (dynamo does not guard a constant): ``(index, numeric)``, the group's recipe and its
    numeric hyperparameters' ``(name, kinds)``; or None (nothing appended) where this route does not cover the group."""
    for entry in opt.state.values():  # dynamo moved the step counters to the parameters' device before calling this
        step = entry.get("step")  # (torch.optim's capturable convention); dynopt keeps them on the CPU
        if isinstance(step, torch.Tensor) and not step.is_cpu:
            entry["step"] = step.cpu()
    found = _recipe(opt, group)
    if found is None:
        return None
    chosen = [p for p in group["params"] if p.grad is not None]
    params += chosen
    grads += [p.grad for p in chosen]
    states += [opt.state[p][n] for n in found.names for p in chosen]
    steps += [opt.state[p]["step"] for p in chosen]
    return found.index, tuple((name, kind) for (name, static), kind in zip(found.hypers, found.structure) if not static)


def _recipe(opt: Any, group: dict) -> Recipe | None:
    spec = opt.spec
    if (spec.reductions is not None or spec.random_seed is not None or spec.state_shape is not None
            or spec.gradient_calls > 1 or getattr(opt, "_shard_group", None) is not None or group.get(GUARD, False)):
        return None
    hypers = tuple((h.name, bool(h.static)) for h in spec.hyperparams)
    found = structure(hypers, group)
    if found is None:
        return None
    hp = opt._hyper(group)
    if spec.scalars(hp):
        return None
    names = tuple(spec.state(hp))
    kinds = set()
    for p in group["params"]:
        if p.grad is None:
            continue
        entry = opt.state.get(p)
        if (p.grad.is_sparse or not (is_plain(p) and is_plain(p.grad)) or entry is None or "step" not in entry
                or any(n not in entry for n in names)):
            return None  # state not created yet (the first step), or a tensor this route does not take
        kinds.add((p.dtype, p.dim()))
    key = (id(spec), hypers, found, names, tuple(sorted(kinds, key=str)))
    try:
        index = _INDEX.get(key)
    except TypeError:  # a static hyperparameter given as an unhashable value (a list): not covered
        return None
    if index is not None and _RECIPES[index].spec is spec:  # (an id of a spec garbage-collected since: made anew)
        known = _RECIPES[index]
        return known if known.usable else None
    made = Recipe(spec=spec, hypers=hypers, structure=found, names=names, index=len(_RECIPES), usable=True)
    _INDEX[key] = made.index
    _RECIPES.append(made)
    made.usable = _runs_on_fakes(made, group, opt.state)  # once per spec, structure and kinds of parameters
    return made if made.usable else None


def _runs_on_fakes(found: Recipe, group: dict, state: dict) -> bool:
    """Whether ``_update`` runs on fake copies (``FakeTensorMode``: no data, no compute) of one parameter of each
    dtype and number of dimensions: a spec whose update reads a value on the host fails here."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    mode = FakeTensorMode()
    chosen, seen = [], set()
    for p in group["params"]:
        if p.grad is not None and (p.dtype, p.dim()) not in seen:
            seen.add((p.dtype, p.dim()))
            chosen.append(p)
    try:
        with torch.no_grad():
            fake = mode.from_tensor  # fake copies, made outside the mode
            values = [_fake_all(group[name], fake) for name, static in found.hypers if not static]
            tensors = ([fake(p.grad.detach()) for p in chosen], [fake(p.detach()) for p in chosen],
                       [fake(state[p][n].detach()) for n in found.names for p in chosen],
                       [fake(state[p]["step"]) for p in chosen])
            with mode:
                raw = [_as_input(value, kind) for value, kind in zip(values, _numeric_kinds(found))]
                _update(found.index, raw, *_real_views(*tensors))
    except Exception as err:  # a host read (data-dependent output) or anything else: the inlined route
        _LOG.debug("%s: a compiled step traces the spec's step itself (%s: %s)", found.spec.name, type(err).__name__,
                   err)
        return False
    return True


def _fake_all(value: Any, fake) -> Any:
    if isinstance(value, (tuple, list)):
        return tuple(_fake_all(item, fake) for item in value)
    return fake(value) if isinstance(value, torch.Tensor) else value


def _numeric_kinds(found: Recipe) -> list:
    return [kind for (_, static), kind in zip(found.hypers, found.structure) if not static]


def _real_views(params: list, grads: list, states: list, steps: list) -> tuple:
    return ([real_view(g) for g in grads], [real_view(p.detach()) for p in params], [real_view(s) for s in states],
            steps)


def run(opt: Any, closure: Any) -> tuple[bool, Any]:
    """(At trace time) ``(True, loss)`` after one step of every param group (``closure`` called first, if any), or
    ``(False, None)``, nothing done, where a group is not covered."""
    work = []
    for group in opt.param_groups:
        params: list = []
        grads: list = []
        states: list = []
        steps: list = []
        found = opt._init_group(group, params, grads, states, steps)
        if found is None:
            return False, None
        work.append((group, found, params, grads, states, steps))
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    for group, (index, numeric), params, grads, states, steps in work:
        raw = [_as_input(group[name], kinds) for name, kinds in numeric]
        grads, values, states, steps = _real_views(params, grads, states, steps)
        deltas, news = _update(index, raw, grads, values, states, steps)
        if deltas:
            torch._foreach_add_([real_view(p) for p in params], deltas)
        count = len(params)
        for k, new in enumerate(news):
            if new is not None:
                torch._foreach_copy_(states[k * count:(k + 1) * count], new)
        if steps:
            torch._foreach_add_(steps, 1.0)
    return True, loss


def _as_input(value: Any, kinds: tuple) -> Any:
    """A numeric hyperparameter (``kinds``: its items' kinds in the recipe) as an input of ``_update`` (the statics
    are the recipe's): a number as a 0-dim float64 tensor (a constant of the graph; one that changed between calls
    is symbolic, where a primitive input would recompile at every change), a literal zero as it is (the graph
    folds it away), a tensor as it is."""
    if isinstance(value, (tuple, list)):
        return tuple(_as_input(item, (kind,)) for item, kind in zip(value, kinds))
    if isinstance(value, torch.Tensor) or kinds[0] is True:
        return value
    return torch.ones((), dtype=torch.float64) * value  # torch.tensor(value) would specialize a symbolic number


@torch._dynamo.nonstrict_trace
def _update(index: int, raw: list, grads: list, values: list, states: list, steps: list) -> tuple:
    """The update of one param group (``states``: its state tensors variable by variable): ``(deltas, news)``,
    each parameter's step ([] where the spec's step is zero) and per state variable its new values (None where
    the spec keeps it as it is). Pure: writes nothing."""
    found = _RECIPES[index]
    spec, names = found.spec, found.names
    count = len(values)
    held_by = [states[k * count:(k + 1) * count] for k in range(len(names))]
    hps: dict[torch.dtype, Any] = {}
    deltas, news = [], [[] for _ in names]
    kept = [True] * len(names)
    for i, (grad, value, counter) in enumerate(zip(grads, values, steps)):
        # t and the hyperparameters in the parameter's precision, at least float32 (float64 for float64
        # parameters): inductor computes the step's scalars (bias corrections) inside the loop, and float64 pow
        # there made a float32 step 1.8x torch.optim's compiled one (which computes them in float32 too)
        dtype = torch.promote_types(real_dtype(value.dtype), torch.float32)
        if dtype not in hps:
            numbers = iter(raw)
            hp = spec.namespace(spec.scalar_values({name: fixed if static else _cast(next(numbers), dtype)
                                                    for (name, static), fixed in zip(found.hypers, found.structure)}))
            hps[dtype] = hp, spec.needs_params(hp)
        hp, needs_params = hps[dtype]
        t = counter.to(dtype) + 1
        held = Namespace(**{n: MATH.tree([held_by[k][i]]) for k, n in enumerate(names)})
        param = MATH.tree([value]) if needs_params else unread(MATH.ops, spec.name)
        done = driver.step(spec, MATH, hp, t, MATH.tree([grad]), param, held, totals=None)
        deltas.append(None if done.delta is ZERO else done.delta.leaves[0])
        for k, n in enumerate(names):
            new = done.state[n]
            if new is ZERO:
                news[k].append(torch.zeros_like(held_by[k][i]))
                kept[k] = False
            elif new is getattr(held, n):
                news[k].append(None)
            else:
                news[k].append(new.leaves[0])
                kept[k] = False
    if all(d is None for d in deltas):
        deltas = []
    else:
        deltas = [torch.zeros_like(v) if d is None else d for d, v in zip(deltas, values)]
    news = [None if keep else [held_by[k][i].clone() if x is None else x for i, x in enumerate(new)]
            for k, (keep, new) in enumerate(zip(kept, news))]
    return deltas, news


def _cast(value: Any, dtype: torch.dtype) -> Any:
    if isinstance(value, tuple):
        return tuple(_cast(item, dtype) for item in value)
    return value.to(dtype) if isinstance(value, torch.Tensor) else value

