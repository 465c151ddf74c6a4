r"""One statement per optimizer: the ODE written as terms, from which the step and the flow are derived.

A *statement* is a generator function ``statement(o, hp, t, x)`` that says, term by term, how each
variable of the optimizer moves over one step. ``x`` holds the variables by name (``x.param``, the
state variables such as ``x.momentum_buffer``) and ``x.grad``, the gradient of the loss at
``x.param``; ``t`` is the step clock (1 at the first step). Heavy ball reads::

    def heavy_ball(o, hp, t, x):
        yield Leak("momentum_buffer", hp.momentum, force(hp, x.grad, x.param))   # b ← μb + F
        yield Drift("param", -hp.lr * x.momentum_buffer)                          # θ ← θ − lr·b

Each term is an Euler step of one variable written in its discrete form, and so it also *is* the
ODE: with h the time one step advances (``Spec.time_step``), the term's increment over a step is
h·ẋ. The terms:

=====================================  ==============================  =====================================
term                                   one step                        ODE (h·ẋ)
=====================================  ==============================  =====================================
``Leak(x, μ, u)``, leaky integrator    x ← μx + u                      h·x' = u − (1 − μ)x
``Relax(x, α, y)``, moving average     x ← αx + (1 − α)y               h·x' = (1 − α)(y − x)
``Drift(x, d)``                        x ← x + d                       h·x' = d
``Mirror(x, e)``, in log coordinates   x ← x ⊙ exp(e)                  h·(log x)' = e
``Normalize(xs, axis, U)``             x ← U·x / Σ x  (projection)     x' projected on the tangent space
``Define(x, f)``                       x = f(variables)                x' = f(rates)  (f linear)
=====================================  ==============================  =====================================

A statement may also read ``x.noise``: ξ ~ N(0, I), shaped like the parameters, for a spec with a
random stream (``Spec.random_seed``). A step draws it once (on the first read; every stage of a
multi-stage scheme reads the same ξ) from the stream kept in the state under ``rng_key``, which
moves on; the field reads ξ = 0. So a term ``Drift(x, d + s·ξ)`` is one Euler–Maruyama step of the SDE
dx = (d/h) dt + (s/√h) dW: the vector field is its drift d/h, s/√h its diffusion
(:mod:`dynopt.optimizers.noisy_sgd`).

From one statement dynopt derives:

* the discrete update, by a scheme (:mod:`dynopt.schemes`): the zoo's own (semi-implicit Euler in
  the order the terms are written, Nesterov's look-ahead, Euler in mirror coordinates), or any
  other through :func:`discretize` (Heun, RK4, any Butcher tableau, leapfrog);
* the vector field, every term evaluated at the same point and divided by h.

Nothing divides by h in a step, so lr = 0 (h = √lr = 0 for heavy ball) is an ordinary step that
moves nothing. The field, used only for lr > 0, divides once.

:func:`accumulate` (gradient accumulation, Su's "soft batch") wraps any spec.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from types import SimpleNamespace
from typing import Any, Callable, Iterator

from .schemes import ExplicitRK, Scheme, Splitting
from .spec import Namespace, Spec
from .tree import ZERO

__all__ = [
    "Leak",
    "Relax",
    "Drift",
    "Mirror",
    "Normalize",
    "Define",
    "from_statement",
    "discretize",
    "accumulate",
    "MissingGradient",
]

PARAM = "param"
NOISE = "noise"  # ξ ~ N(0, I), parameter-shaped, read as x.noise by a statement with a random stream
RANDOM = "rng_key"  # the state entry that holds a spec's random stream (Spec.random_seed)


class MissingGradient(ValueError):
    """A multi-stage scheme needs the gradient at an intermediate point and no way to get it was given."""


# ----------------------------------------------------------------------------- terms


@dataclass(frozen=True, eq=False)
class Leak:
    """Leaky integrator x ← μ·x + u; ODE h·x' = u − (1 − μ)·x."""

    target: str
    decay: Any
    input: Any
    mirror = False

    def step(self, x, fraction=1, implicit=False):
        if implicit:
            return (x + fraction * self.input) / (1 + fraction * (1 - self.decay))
        if fraction == 1:
            return self.decay * x + self.input
        return x + fraction * self.increment(x)

    def increment(self, x):
        return self.input - (1 - self.decay) * x

    def ahead(self, new):
        """The integrator advanced once more with the same input (Nesterov's look-ahead)."""
        return self.decay * new + self.input


@dataclass(frozen=True, eq=False)
class Relax:
    """Relaxation (exponential moving average) x ← α·x + (1 − α)·y; ODE h·x' = (1 − α)(y − x)."""

    target: str
    decay: Any
    toward: Any
    mirror = False

    def step(self, x, fraction=1, implicit=False):
        rate = 1 - self.decay
        if implicit:
            return (x + fraction * rate * self.toward) / (1 + fraction * rate)
        if fraction == 1:
            return self.decay * x + rate * self.toward
        return x + fraction * self.increment(x)

    def increment(self, x):
        return (1 - self.decay) * (self.toward - x)

    def ahead(self, new):
        return self.decay * new + (1 - self.decay) * self.toward


@dataclass(frozen=True, eq=False)
class Drift:
    """x ← x + d (d already holds the step: d = −lr·direction); ODE h·x' = d."""

    target: str
    by: Any
    mirror = False

    def step(self, x, fraction=1, implicit=False):
        return x + (self.by if fraction == 1 else fraction * self.by)

    def increment(self, x):
        return self.by


@dataclass(frozen=True, eq=False)
class Mirror:
    """A step in mirror (log) coordinates: x ← x ⊙ exp(e − shift); ODE h·(log x)' = e, i.e. h·x' = x ⊙ e.

    ``shift``: a constant (per slice) subtracted from the exponent against overflow; only valid when
    a :class:`Normalize` of x follows, which removes any constant factor (ignored by the field)."""

    target: str
    exponent: Any
    shift: Any = 0
    mirror = True

    def increment(self, x):
        return self.exponent


@dataclass(frozen=True, eq=False)
class Normalize:
    """Projection x ← U·x / Σ_axis x of the targets together (their sum along ``axis`` becomes U)."""

    targets: tuple[str, ...]
    axis: Any
    total: Any


@dataclass(frozen=True, eq=False)
class Define:
    """An algebraic variable x = f(variables); ``f`` must be linear, so that x' = f(rates)."""

    target: str
    fn: Callable[[SimpleNamespace], Any]


INTEGRATING = (Leak, Relax, Drift, Mirror)
STRUCTURAL = (Normalize, Define)


# ----------------------------------------------------------------------------- evaluation helpers


class _Point(Namespace):  # not SimpleNamespace: torch.compile traces a plain class
    """The variables a statement reads: ``grad`` and every variable by name.

    In a single pass (semi-implicit Euler, look-ahead) θ's new value is formed only when the statement reads
    ``param`` after θ's own drift (``_settle`` forms it then), so a term after the drift sees the new θ while
    a statement that does not read it keeps θ's step exact, as torch.optim adds it."""

    def __getattr__(self, name):
        settle = self.__dict__.get("_settle")
        if settle is not None and name == PARAM:
            settle()
            return self.__dict__[PARAM]
        if name == NOISE:
            draw = self.__dict__.get("_draw")
            if draw is not None:
                self.__dict__[NOISE] = value = draw()
                return value
        raise AttributeError(f"the statement read {name!r}, which is neither 'grad' nor one of its variables "
                             f"{sorted(k for k in self.__dict__ if not k.startswith('_'))}")


def _point(grad, values: dict, draw=None) -> _Point:
    point = _Point(grad=grad, **values)
    if draw is not None:
        point._draw = draw
    return point


class _Draws:
    """ξ ~ N(0, I) shaped like ``like``, drawn from the stream ``values[RANDOM]`` at the first read and the same
    ξ at every later read of the step (each stage of a multi-stage scheme); ``finish(out)`` writes the stream
    after the draw into ``out`` (nothing when ξ was not read)."""

    def __init__(self, o, like, values: dict):
        self.o, self.like, self.values, self.value, self.next = o, like, values, None, None

    def __call__(self):
        if self.value is None:
            if RANDOM not in self.values:
                raise AttributeError(f"the statement read {NOISE!r}, but there is no random stream {RANDOM!r} in its "
                                     "state (a spec that draws noise sets Spec.random_seed)")
            self.value, self.next = self.o.normal(self.values[RANDOM], self.like)
        return self.value

    def finish(self, out: dict) -> None:
        if self.value is not None:
            out[RANDOM] = self.next


def _drift_only():
    return ZERO  # the vector field is the drift of the SDE: E[ξ] = 0


def _run(statement, o, hp, t, point) -> Iterator:
    terms = statement(o, hp, t, point)
    for term in terms:
        if not isinstance(term, INTEGRATING + STRUCTURAL):
            raise TypeError(f"a statement must yield Leak, Relax, Drift, Mirror, Normalize or Define terms, got {term!r}")
        yield term


def _targets(term) -> tuple[str, ...]:
    return term.targets if isinstance(term, Normalize) else (term.target,)


def _apply_structural(o, term, values: dict) -> None:
    if isinstance(term, Define):
        values[term.target] = term.fn(Namespace(**values))
        return
    parts = [values[name] for name in term.targets]
    mass = parts[0]
    for part in parts[1:]:
        mass = mass + part
    if len(parts) == 1:
        values[term.targets[0]] = term.total * parts[0] / o.sum_along(mass, term.axis)
    else:
        scale = term.total / o.sum_along(mass, term.axis)
        for name, part in zip(term.targets, parts):
            values[name] = part * scale


def _exp(o, exponent):
    if exponent is ZERO:
        return 1.0
    return o.exp(exponent)


def _step_term(o, term, x, fraction, implicit, mirror_coordinates: bool):
    """One (fractional) step of an integrating term from the value ``x``."""
    if isinstance(term, Mirror):
        exponent = term.exponent if fraction == 1 else fraction * term.exponent
        if not mirror_coordinates:
            return x + x * exponent
        if not (isinstance(term.shift, (int, float)) and term.shift == 0):
            exponent = exponent - term.shift
        return x * _exp(o, exponent)
    return term.step(x, fraction, implicit)


# ----------------------------------------------------------------------------- discrete updates


def _splitting_update(statement, scheme: Splitting):
    """The update of a splitting scheme; the statement's own order in one pass when ``steps`` is None."""

    def direct(o, hp, t, grad, param, state):  # one pass, no intermediate gradient: a plain function (_drive)
        names = tuple(state.__dict__)
        delta, new = _gauss_seidel(statement, scheme.lookahead, o, hp, t, grad, {PARAM: param, **state.__dict__})
        return delta, {n: new[n] for n in names}

    def staged(o, hp, t, grad, param, state):
        if scheme.steps is None:
            return direct(o, hp, t, grad, param, state)
        names = tuple(state.__dict__)
        values = {PARAM: param, **state.__dict__}
        delta, new = yield from _blocks(statement, scheme, o, hp, t, grad, values)
        return delta, {n: new[n] for n in names}

    if scheme.steps is None:
        staged.direct = direct
    return staged


def _exact_delta(o, term, old, mirror: bool):
    """The parameter's increment straight from its term (no new − old subtraction), or None."""
    if isinstance(term, Drift):
        return term.by
    if isinstance(term, Mirror) and mirror and _zero(term.shift):
        return ZERO if term.exponent is ZERO else old * o.expm1(term.exponent)
    return None


def _gauss_seidel(statement, lookahead: bool, o, hp, t, grad, values: dict):
    """Apply each term as the statement yields it: later terms read what earlier ones wrote.

    The parameter's own step is kept as an increment (as torch.optim adds it) and its new value is
    formed only if a later term needs it."""
    stored = dict(values)
    draws = _Draws(o, grad, values)
    point = _point(grad, values, draws)
    delta, pending = None, False

    def settle_param():
        nonlocal pending, delta
        if pending:
            stored[PARAM] = values[PARAM] + delta
            point.__dict__.pop("_settle", None)
            setattr(point, PARAM, stored[PARAM])
            pending, delta = False, None

    for term in _run(statement, o, hp, t, point):
        if PARAM in _targets(term) or isinstance(term, Define):  # θ again, or a function of every variable
            settle_param()
        if isinstance(term, STRUCTURAL):
            _apply_structural(o, term, stored)
            for name in _targets(term):
                setattr(point, name, stored[name])
            continue
        old = stored[term.target]
        if term.target == PARAM and old is values[PARAM]:
            delta = _exact_delta(o, term, old, True)
            if delta is not None:
                pending = True
                del point.__dict__[PARAM]  # formed if the statement reads it (_Point.__getattr__)
                point._settle = settle_param
                continue
        new = _step_term(o, term, old, 1, False, True)
        stored[term.target] = new
        setattr(point, term.target, term.ahead(new) if lookahead and isinstance(term, (Leak, Relax)) else new)
    point.__dict__.pop("_settle", None)  # no cycle point → settle_param → point left to the garbage collector
    draws.finish(stored)
    if not pending:
        delta = stored[PARAM] - values[PARAM] if stored[PARAM] is not values[PARAM] else ZERO
    return delta, stored


def _zero(value) -> bool:
    return value is ZERO or (isinstance(value, (int, float)) and not isinstance(value, bool) and value == 0)


def _blocks(statement, scheme: Splitting, o, hp, t, grad, values: dict):
    """Sub-steps in a given order: the statement is evaluated afresh at the start of each."""
    current = dict(values)
    draws = _Draws(o, grad, values)
    grad_at = values[PARAM]
    survey, rest = None, ()
    for sub in scheme.steps:
        if survey is not None and not (sub.variables if sub.variables is not None else rest):
            continue  # nothing to move (e.g. leapfrog's kicks for an ODE of θ alone)
        if current[PARAM] is not grad_at:
            grad = yield current[PARAM]
            grad_at = current[PARAM]
        point = _point(grad, current, draws)
        terms = list(_run(statement, o, hp, t, point))
        integrating = {term.target: term for term in terms if isinstance(term, INTEGRATING)}
        if survey is None:
            survey = integrating
            named = {name for s in scheme.steps if s.variables is not None for name in s.variables}
            for s in scheme.steps:
                for name in s.variables or ():
                    if name not in survey:
                        raise ValueError(f"{scheme.name}: the statement has no variable {name!r} "
                                         f"(its variables: {sorted(survey)})")
            rest = tuple(name for name in survey if name not in named)
        variables = sub.variables if sub.variables is not None else rest
        moved = {name: _step_term(o, integrating[name], current[name], float(sub.fraction), sub.implicit, True) for name in variables}
        current.update(moved)
        for term in terms:
            if isinstance(term, STRUCTURAL):
                _apply_structural(o, term, current)
    draws.finish(current)
    return current[PARAM] - values[PARAM], current


def _rk_update(statement, scheme: ExplicitRK):
    """The update of an explicit Runge–Kutta scheme (one stage: Euler, written in each term's own form)."""
    if scheme.stages == 1:
        def direct(o, hp, t, grad, param, state):
            names = tuple(state.__dict__)
            values = {PARAM: param, **state.__dict__}
            draws = _Draws(o, grad, values)
            terms = list(_run(statement, o, hp, t, _point(grad, values, draws)))
            structural = [term for term in terms if isinstance(term, STRUCTURAL)]
            new, delta = dict(values), None
            for term in terms:
                if not isinstance(term, INTEGRATING):
                    continue
                if term.target == PARAM and not any(PARAM in _targets(s) for s in structural):
                    delta = _exact_delta(o, term, values[PARAM], scheme.mirror)
                    if delta is not None:
                        continue
                new[term.target] = _step_term(o, term, values[term.target], 1, False, scheme.mirror)
            for term in structural:
                _apply_structural(o, term, new)
            draws.finish(new)
            if delta is None:
                delta = new[PARAM] - values[PARAM] if new[PARAM] is not values[PARAM] else ZERO
            return delta, {n: new[n] for n in names}

        def euler(o, hp, t, grad, param, state):
            return direct(o, hp, t, grad, param, state)
            yield  # pragma: no cover - makes this a generator like every staged update

        euler.direct = direct  # one stage: _drive calls it as a plain function
        return euler

    def staged(o, hp, t, grad, param, state):
        names = tuple(state.__dict__)
        base = {PARAM: param, **state.__dict__}
        increments: list[dict] = []
        kinds: dict[str, Any] = {}
        structural: list = []
        draws = _Draws(o, grad, base)
        for i in range(scheme.stages):
            row = scheme.a[i]
            if any(row):
                point_values = _combine(o, base, [(w, increments[j]) for j, w in enumerate(row[:i]) if w], kinds, structural,
                                        scheme.mirror)
                stage_grad = yield point_values[PARAM]
            else:
                point_values, stage_grad = base, grad
            clock = o.clip(t - 1 + scheme.c[i], 1.0, math.inf)
            terms = list(_run(statement, o, hp, clock, _point(stage_grad, point_values, draws)))
            if i == 0:
                kinds = {term.target: term for term in terms if isinstance(term, INTEGRATING)}
                structural = [term for term in terms if isinstance(term, STRUCTURAL)]
            k = {}
            for term in terms:
                if isinstance(term, INTEGRATING):
                    inc = term.increment(point_values[term.target])
                    k[term.target] = inc if (scheme.mirror or not isinstance(term, Mirror)) else point_values[term.target] * inc
            increments.append(k)
        new = _combine(o, base, [(w, increments[i]) for i, w in enumerate(scheme.b) if w], kinds, structural, scheme.mirror)
        additive = PARAM in kinds and not isinstance(kinds[PARAM], Mirror) and not any(PARAM in _targets(s) for s in structural)
        delta = _weighted([(w, increments[i][PARAM]) for i, w in enumerate(scheme.b) if w]) if additive else new[PARAM] - param
        draws.finish(new)
        return delta, {n: new[n] for n in names}

    return staged


def _weighted(pairs):
    total = ZERO
    for weight, value in pairs:
        total = total + (value if weight == 1 else weight * value)
    return total


def _combine(o, base: dict, pairs, kinds: dict, structural: list, mirror: bool) -> dict:
    """X + Σ w·K in each variable's stepping coordinates, then the projections and definitions."""
    out = dict(base)
    for name, term in kinds.items():
        total = _weighted([(w, k[name]) for w, k in pairs if name in k])
        if total is ZERO:
            continue
        if isinstance(term, Mirror) and mirror:
            out[name] = base[name] * _exp(o, total)
        else:
            out[name] = base[name] + total
    for term in structural:
        _apply_structural(o, term, out)
    return out


def _drive(staged: Callable) -> Callable:
    """``update(o, hp, t, grad, param, state, grad_fn=None)`` from a staged update: each intermediate
    parameter point it yields is answered with ``grad_fn(point)``. A staged update that never yields
    (one pass) carries its plain form as ``staged.direct``, which is called instead: torch.compile
    (dynamo) cannot read a generator's return value (``StopIteration.value``) without a graph break."""
    direct = getattr(staged, "direct", None)

    def update(o, hp, t, grad, param, state, grad_fn=None, _name="this optimizer"):
        if direct is not None:
            return direct(o, hp, t, grad, param, state)
        steps = staged(o, hp, t, grad, param, state)
        try:
            point = next(steps)
            while True:
                if grad_fn is None:
                    raise MissingGradient(
                        f"{_name} needs the gradient at an intermediate point of its step: pass a closure to "
                        "step(closure) in torch, grad_fn= to update(...) in optax or NumPy")
                point = steps.send(grad_fn(point))
        except StopIteration as done:
            return done.value

    return update


def _discrete(statement, scheme: Scheme) -> Callable:
    if isinstance(scheme, ExplicitRK):
        return _rk_update(statement, scheme)
    if isinstance(scheme, Splitting):
        return _splitting_update(statement, scheme)
    raise TypeError(f"Invalid scheme value: {scheme!r} (must be a dynopt.schemes scheme)")


# ----------------------------------------------------------------------------- the vector field


def _vector_field(statement, time_step):
    def vector_field(o, hp, time, grad, param, state):
        h = time_step(hp)
        clock = max(float(time) / float(h), 1.0)
        values = {PARAM: param, **state.__dict__}
        rates: dict[str, Any] = {}
        for term in _run(statement, o, hp, clock, _point(grad, values, _drift_only)):
            if isinstance(term, Define):
                rates[term.target] = term.fn(Namespace(**{n: rates.get(n, ZERO) for n in values}))
            elif isinstance(term, Normalize):
                flux = ZERO
                for name in term.targets:
                    flux = flux + rates.get(name, ZERO)
                if flux is not ZERO:
                    mean = o.sum_along(flux, term.axis) / term.total
                    for name in term.targets:
                        rates[name] = rates.get(name, ZERO) - values[name] * mean
            else:
                x = values[term.target]
                increment = term.increment(x)
                rates[term.target] = (x * increment if isinstance(term, Mirror) else increment) / h
        return rates.get(PARAM, ZERO), {n: rates.get(n, ZERO) for n in state.__dict__}

    return vector_field


# ----------------------------------------------------------------------------- specs from statements


def _update_of(statement, scheme: Scheme, name: str):
    staged = _discrete(statement, scheme)
    driven = _drive(staged)

    def update(o, hp, t, grad, param, state, grad_fn=None):
        return driven(o, hp, t, grad, param, state, grad_fn, name)

    return staged, update


def from_statement(*, statement: Callable, scheme: Scheme, formula: str, **fields) -> Spec:
    """A :class:`~dynopt.spec.Spec` whose ``update`` and ``vector_field`` are both derived from ``statement``.

    ``scheme`` is the optimizer's own discretization, ``formula`` its step in one line (for docs);
    the other keyword arguments are :class:`~dynopt.spec.Spec` fields (name, hyperparams, state,
    time_step, needs_params, ode, hyper_map, doc, …)."""
    staged, update = _update_of(statement, scheme, fields["name"])
    return Spec(update=update, staged_update=staged, vector_field=_vector_field(statement, fields["time_step"]),
                statement=statement, discretization=scheme, gradient_calls=scheme.gradient_calls,
                scheme=f"{scheme.name}: {formula}", **fields)


def discretize(spec: Spec, scheme: Scheme, *, name: str | None = None) -> Spec:
    """The optimizer that steps ``spec``'s ODE with ``scheme``: any statement of the zoo, or yours.

    The result is an ordinary spec: ``dynopt.torch.from_spec``, ``dynopt.jax.from_spec`` and
    ``dynopt.numpy.from_spec`` build it, with the hyperparameters, state and time step of
    ``spec``. A scheme with more than one gradient per step (Heun, RK4, leapfrog) needs the
    gradient at intermediate points: ``step(closure)`` in torch, ``update(..., grad_fn=...)`` in
    optax and NumPy.

    Raises ``TypeError`` for a spec that is not written as a statement (the meta step and
    NesterovSBC, whose rules are discrete by nature) or a scheme that is not a scheme."""
    if not isinstance(scheme, Scheme):
        raise TypeError(f"Invalid scheme value: {scheme!r} (must be a dynopt.schemes scheme, e.g. Heun())")
    if not isinstance(spec, Spec):
        raise TypeError(f"Invalid spec value: {spec!r} (must be a dynopt Spec)")
    if spec.statement is None:
        raise TypeError(f"{spec.name} is not written as an ODE statement (its rule is discrete by nature), "
                        "so it cannot be discretized with another scheme")
    name = name or f"{spec.name}{scheme.name}"
    staged, update = _update_of(spec.statement, scheme, name)
    jax_name = f"{spec.jax_name}_{scheme.name.lower()}"
    return replace(spec, name=name, jax_name=jax_name, update=update, staged_update=staged, discretization=scheme,
                   implies=_variant(spec, scheme=scheme.name),
                   gradient_calls=scheme.gradient_calls, scheme=scheme.describe(), modified_field=None,
                   optax=(),  # optax's views compute optax's rule, not this scheme
                   doc=f"{spec.name}'s ODE stepped by {scheme.describe()}.\n\n" + spec.doc)


# ----------------------------------------------------------------------------- soft batch


ACCUMULATED = "accumulated_grad"


def accumulate(spec: Spec, k: int, *, embed: bool = False, name: str | None = None) -> Spec:
    r"""Gradient accumulation ("soft batch"): one step of ``spec`` on the mean of ``k`` gradients.

    Each call adds its gradient to the state ``accumulated_grad``; the parameters and ``spec``'s
    state do not move, except every k-th call, which steps ``spec`` with the mean gradient and
    clears the sum. The step clock ``t`` the spec sees, and the count an optax schedule is
    evaluated at, count optimizer steps (calls // k), not micro-steps. In torch, an lr_scheduler
    is yours to step: call ``scheduler.step()`` once per k calls of ``optimizer.step()``.

    Equal to ``spec`` on the mean gradient (tests, to 1e-12), and in JAX to ``optax.MultiSteps``
    of the same optimizer. ``k`` must be an integer ≥ 1 (ValueError otherwise; a bool is a
    TypeError). Global reductions (the meta step's alignment) see the mean gradient.

    ``embed=True`` is Su's buffer-embedded form for momentum-type statements (a leaky integrator
    b ← μb + u driven by the gradient, and a drift of θ that reads only b): no extra buffer, the
    micro-gradients go straight into b::

        micro-step 1:      b ← μ·b + u/k
        micro-steps 2..k:  b ← b + u/k          θ moves at micro-step k only: θ ← θ − lr·b

    After k calls b = μ·b_old + mean(u), exactly the base's buffer on the mean gradient (u is
    affine in the gradient, θ being fixed meanwhile). Between steps b holds a partial sum, so a
    checkpoint taken mid-accumulation is not the base's state. ``ValueError`` for a statement
    with any other gradient-driven term (a moving average of g², a look-ahead that reads g).
    """
    if isinstance(k, bool) or not isinstance(k, int):
        if isinstance(k, float) and k.is_integer() and k >= 1:
            k = int(k)
        elif isinstance(k, (int, float)) and not isinstance(k, bool):
            raise ValueError(f"Invalid k value: {k!r} (the number of micro-batches must be an integer >= 1)")
        else:
            raise TypeError(f"Invalid k value: {k!r} (the number of micro-batches must be an integer >= 1)")
    if k < 1:
        raise ValueError(f"Invalid k value: {k!r} (the number of micro-batches must be an integer >= 1)")
    if not isinstance(spec, Spec):
        raise TypeError(f"Invalid spec value: {spec!r} (must be a dynopt Spec)")
    if spec.gradient_calls > 1:
        raise ValueError(f"{spec.name} takes several gradients per step; accumulate a one-gradient scheme")
    if not isinstance(embed, bool):
        raise TypeError(f"Invalid embed value: {embed!r} (must be a bool)")
    inner = _inner_clock(k)
    if embed:
        return _embedded(spec, k, inner, name)

    def state(hp):
        return spec.state(hp) + (ACCUMULATED,)

    def initial_state(o, hp, param):
        return {**spec.initial(o, hp, param), ACCUMULATED: o.zeros_like(param)}

    def mean_gradient(state, grad):
        return (state.accumulated_grad + grad) / k if k > 1 else grad

    def base_state(hp, state):
        return SimpleNamespace(**{n: v for n, v in state.__dict__.items() if n != ACCUMULATED})

    def update(o, hp, t, grad, param, state, **extra):
        last = (t % k) == 0
        if isinstance(last, bool) and not last:  # a concrete micro-step: only add the gradient
            return ZERO, {**base_state(hp, state).__dict__, ACCUMULATED: state.accumulated_grad + grad}
        delta, new = spec.update(o, hp, inner(t), mean_gradient(state, grad), param, base_state(hp, state), **extra)
        if isinstance(last, bool):
            return delta, {**new, ACCUMULATED: ZERO}
        held = {ACCUMULATED: state.accumulated_grad + grad}
        zeros = o.zeros_like(grad)
        out = {}
        for n, value in new.items():
            old = getattr(state, n)
            out[n] = o.select(last, _full(value, zeros), _full(old, zeros))
        out[ACCUMULATED] = o.select(last, zeros, held[ACCUMULATED])
        return o.select(last, _full(delta, zeros), zeros), out

    def reductions(o, hp, grad, param, state):
        return spec.reductions(o, hp, mean_gradient(state, grad), param, base_state(hp, state))

    return replace(
        spec,
        name=name or f"{spec.name}Accumulated{k}",
        jax_name=f"{spec.jax_name}_accumulated{k}",
        optax=(),  # optax's views compute optax's rule, not the accumulated one
        state=state,
        initial_state=initial_state,
        update=update,
        staged_update=None,
        reductions=None if spec.reductions is None else reductions,
        micro_steps=spec.micro_steps * k,
        implies=_variant(spec, soft_batch=spec.micro_steps * k),
        statement=None,
        modified_field=None,
        counts_steps=lambda hp: True,
        sparse_grads=False,
        needs_params=spec.needs_params,
        scheme=f"{spec.scheme}, on the mean of {k} gradients (soft batch)",
        doc=f"{spec.name} on the mean of {k} micro-batch gradients (dynopt.accumulate).\n\n" + accumulate.__doc__
        + "\n\n" + spec.doc,
    )


def _variant(spec: Spec, **flags) -> tuple:
    """``spec.implies`` with the flags of a derived optimizer (``VARIANT_FLAGS``): torch param groups carry them,
    so a checkpoint of the base does not load into the variant, nor the variant's into the base."""
    return tuple({**dict(spec.implies), **flags}.items())


def _full(value, zeros):
    return zeros if value is ZERO else value


def _inner_clock(k: int):
    def inner(t):
        return (t - 1) // k + 1 if k > 1 else t

    return inner



def _embedded(spec: Spec, k: int, inner, name: str | None) -> Spec:
    """Su's buffer-embedded accumulation of a momentum-type statement (see :func:`accumulate`)."""
    scheme = spec.discretization
    if spec.statement is None or not isinstance(scheme, Splitting) or scheme.steps is not None or scheme.lookahead:
        raise ValueError(f"accumulate(..., embed=True) needs a statement stepped by semi-implicit Euler in its own "
                         f"order, whose gradient enters only leaky integrators; {spec.name} is not one")
    if spec.reductions is not None:
        raise ValueError(f"accumulate(..., embed=True): {spec.name} has global reductions; use embed=False")

    def update(o, hp, t, grad, param, state):
        position = (t - 1) % k
        first, last = position == 0, position == k - 1
        values = {PARAM: param, **state.__dict__}
        stored = dict(values)
        draws = _Draws(o, grad, values)
        point = _point(grad, values, draws)
        delta = ZERO
        for term in _run(spec.statement, o, hp, inner(t), point):
            if isinstance(term, Leak) and term.target != PARAM:
                decay = o.select(first, term.decay, 1.0) if k > 1 else term.decay
                new = decay * stored[term.target] + term.input / k
                stored[term.target] = new
                setattr(point, term.target, new)
            elif isinstance(term, Drift) and term.target == PARAM:
                delta = _select_tree(o, last, term.by, grad)
            else:
                raise ValueError(f"accumulate(..., embed=True): {spec.name}'s statement has a {type(term).__name__} term "
                                 f"for {getattr(term, 'target', '?')!r}; only leaky integrators and the drift of θ embed")
        draws.finish(stored)
        return delta, {n: stored[n] for n in state.__dict__}

    return replace(
        spec,
        name=name or f"{spec.name}Embedded{k}",
        jax_name=f"{spec.jax_name}_embedded{k}",
        optax=(),
        update=update,
        staged_update=None,
        statement=None,
        modified_field=None,
        micro_steps=spec.micro_steps * k,
        implies=_variant(spec, soft_batch=spec.micro_steps * k, embedded=True),
        counts_steps=lambda hp: True,
        sparse_grads=False,
        scheme=f"{spec.scheme}, micro-gradients embedded in the buffer (soft batch of {k})",
        doc=f"{spec.name} on the mean of {k} micro-batch gradients, embedded in its buffer (dynopt.accumulate).\n\n"
        + accumulate.__doc__ + "\n\n" + spec.doc,
    )


def _select_tree(o, cond, value, like):
    if isinstance(cond, bool):
        return value if cond else ZERO
    zeros = o.zeros_like(like)
    return o.select(cond, _full(value, zeros), zeros)
