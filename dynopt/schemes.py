r"""Discretizations as data: the schemes that turn an optimizer's ODE into its step.

An optimizer written as an ODE *statement* (:mod:`dynopt.statement`) says how each variable moves
over one step of size h; a scheme says at which points those moves are evaluated and how they are
combined. ``dynopt.discretize(spec, scheme)`` pairs any statement of the zoo, or your own, with any
scheme, and the result runs on every backend.

Two families, both plain frozen data validated on construction:

* **Runge–Kutta** (:class:`ExplicitRK`, with :func:`Euler`, :func:`Heun`, :func:`RK4` and
  :func:`Midpoint`): a Butcher tableau (a, b, c). With K_i = h·f(X_n + Σ_j a_ij K_j) at the step
  clock t − 1 + c_i, the step is X_{n+1} = X_n + Σ_i b_i K_i. Every stage i > 1 needs the gradient
  at its own point: in torch through ``step(closure)``, in optax through ``update(...,
  grad_fn=...)``. The order is computed from the tableau (Butcher's conditions up to order 4).
* **Splitting** (:class:`Splitting`, with :func:`SemiImplicitEuler`, :func:`Lookahead` and
  :func:`Leapfrog`): the variables are updated in blocks, one after another, each block reading the
  values the earlier blocks already wrote. This is how heavy ball (b first, then θ), RMSprop and
  Adam (the averages first, then θ) are written.

A variable that the statement moves in mirror coordinates (:class:`dynopt.statement.Mirror`,
log θ for exponentiated gradient) is stepped in those coordinates, θ ← θ ⊙ exp(ΣK), which keeps
it positive; pass ``mirror=False`` to a Runge–Kutta scheme to step it additively in θ instead
(θ ← θ + θ ⊙ ΣK). Projections (:class:`dynopt.statement.Normalize`) run after each step and at
each stage point. :data:`MirrorEuler` is Euler in mirror coordinates, EG's scheme.

Orders are the classical orders for the ODE in the coordinates the scheme steps in: Euler 1,
Heun 2, RK4 4, semi-implicit Euler and Nesterov's look-ahead 1, leapfrog 2 (``tests/test_schemes.py``
fits them).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Sequence

__all__ = [
    "Scheme",
    "ExplicitRK",
    "Splitting",
    "SubStep",
    "Euler",
    "MirrorEuler",
    "Heun",
    "Midpoint",
    "RK4",
    "SemiImplicitEuler",
    "Lookahead",
    "Leapfrog",
    "stability_polynomial",
]

_TOL = 1e-12


class Scheme:
    """What every scheme declares: a ``name``, its ``order`` and how many gradients one step needs."""

    name: str
    order: int
    gradient_calls: int

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError


def _numbers(values, what: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"Invalid Butcher tableau: {what} must be a sequence of real numbers, got {values!r}") from None
    if not all(math.isfinite(v) for v in out):
        raise ValueError(f"Invalid Butcher tableau: {what} must be finite, got {values!r}")
    return out


def _rk_order(a: tuple[tuple[float, ...], ...], b: tuple[float, ...], c: tuple[float, ...]) -> int:
    """The largest p ≤ 4 for which the tableau satisfies Butcher's order conditions (1 once consistent)."""
    s = len(b)
    rng = range(s)

    def close(x: float, y: float) -> bool:
        return abs(x - y) <= 1e-10

    ac = [sum(a[i][j] * c[j] for j in rng) for i in rng]
    conditions = {
        2: [close(sum(b[i] * c[i] for i in rng), 1 / 2)],
        3: [close(sum(b[i] * c[i] ** 2 for i in rng), 1 / 3), close(sum(b[i] * ac[i] for i in rng), 1 / 6)],
        4: [
            close(sum(b[i] * c[i] ** 3 for i in rng), 1 / 4),
            close(sum(b[i] * c[i] * ac[i] for i in rng), 1 / 8),
            close(sum(b[i] * a[i][j] * c[j] ** 2 for i in rng for j in rng), 1 / 12),
            close(sum(b[i] * a[i][j] * ac[j] for i in rng for j in rng), 1 / 24),
        ],
    }
    order = 1
    for p in (2, 3, 4):
        if not all(conditions[p]):
            break
        order = p
    return order


@dataclass(frozen=True)
class ExplicitRK(Scheme):
    """An explicit Runge–Kutta method given by its Butcher tableau.

    Args:
        a: the s×s stage matrix, strictly lower triangular (explicit: stage i reads stages < i).
            Rows may be given shorter than s (missing entries are 0).
        b: the s weights, summing to 1 (consistency).
        c: the s nodes, each the sum of its row of ``a``.
        name: shown in docs and in the names of discretized optimizers.
        mirror: step mirror variables in their mirror (log) coordinates (default) or additively.

    Raises ``ValueError`` (or ``TypeError`` for non-numbers) naming what is wrong: a non-square or
    implicit ``a``, Σb ≠ 1, or c ≠ the row sums of ``a``. ``order`` is computed from the tableau.
    """

    a: Sequence[Sequence[float]]
    b: Sequence[float]
    c: Sequence[float]
    name: str = "ExplicitRK"
    mirror: bool = True
    order: int = field(init=False)
    gradient_calls: int = field(init=False)

    def __post_init__(self) -> None:
        b = _numbers(self.b, "b")
        c = _numbers(self.c, "c")
        s = len(b)
        if s == 0:
            raise ValueError("Invalid Butcher tableau: b is empty (a method needs at least one stage)")
        if len(c) != s:
            raise ValueError(f"Invalid Butcher tableau: c has {len(c)} entries, b has {s}")
        try:
            rows = [list(row) for row in self.a]
        except TypeError:
            raise TypeError(f"Invalid Butcher tableau: a must be a sequence of rows, got {self.a!r}") from None
        if len(rows) != s:
            raise ValueError(f"Invalid Butcher tableau: a has {len(rows)} rows, b has {s} entries")
        a = []
        for i, row in enumerate(rows):
            values = _numbers(row, f"row {i} of a")
            if len(values) > s:
                raise ValueError(f"Invalid Butcher tableau: row {i} of a has {len(values)} entries, more than {s} stages")
            values = values + (0.0,) * (s - len(values))
            late = [j for j in range(i, s) if values[j] != 0]
            if late:
                raise ValueError(f"Invalid Butcher tableau: a[{i}][{late[0]}] = {values[late[0]]!r} is on or above "
                                 "the diagonal, so the method is implicit (only explicit methods are supported)")
            a.append(values)
        if abs(sum(b) - 1) > _TOL:
            raise ValueError(f"Invalid Butcher tableau: the weights b must sum to 1 (consistency), they sum to {sum(b)!r}")
        for i in range(s):
            if abs(sum(a[i]) - c[i]) > _TOL:
                raise ValueError(f"Invalid Butcher tableau: c[{i}] = {c[i]!r} must equal the sum of row {i} of a, "
                                 f"{sum(a[i])!r}")
        if not isinstance(self.mirror, bool):
            raise TypeError(f"Invalid mirror value: {self.mirror!r} (must be a bool)")
        object.__setattr__(self, "a", tuple(tuple(row) for row in a))
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)
        object.__setattr__(self, "order", _rk_order(self.a, b, c))
        object.__setattr__(self, "gradient_calls", sum(1 for i in range(s) if any(self.a[i])) + 1)

    @property
    def stages(self) -> int:
        return len(self.b)

    def describe(self) -> str:
        coordinates = "" if self.mirror else ", mirror variables stepped additively"
        return f"{self.name} ({self.stages}-stage explicit Runge–Kutta, order {self.order}{coordinates})"

    def stability(self, z: complex) -> complex:
        """R(z) of the test equation y' = λy, z = hλ: one step multiplies y by R(z)."""
        return stability_polynomial(self)(z)


def stability_polynomial(scheme: ExplicitRK):
    """R(z) = 1 + z bᵀ(I − zA)⁻¹1 = Σ_k z^k bᵀA^{k−1}1 (a polynomial of degree s for an explicit method)."""
    s = scheme.stages
    coefficients = [1.0]
    power = [1.0] * s  # A^{k−1} 1
    for _ in range(s):
        coefficients.append(sum(bi * pi for bi, pi in zip(scheme.b, power)))
        power = [sum(scheme.a[i][j] * power[j] for j in range(s)) for i in range(s)]

    def R(z):
        return sum(coefficient * z**k for k, coefficient in enumerate(coefficients))

    R.coefficients = tuple(coefficients)
    return R


def Euler(*, mirror: bool = True) -> ExplicitRK:
    """Forward Euler: X_{n+1} = X_n + h f(X_n) (every variable from the old values). Order 1."""
    return ExplicitRK(((0.0,),), (1.0,), (0.0,), name="Euler", mirror=mirror)


MirrorEuler = Euler(mirror=True)
"""Euler in mirror coordinates, then the statement's projections: exponentiated gradient's scheme."""


def Heun(*, mirror: bool = True) -> ExplicitRK:
    """Heun's method (explicit trapezoid): K₁ = h f(X), K₂ = h f(X + K₁), X + (K₁ + K₂)/2. Order 2, two gradients."""
    return ExplicitRK(((0.0, 0.0), (1.0, 0.0)), (0.5, 0.5), (0.0, 1.0), name="Heun", mirror=mirror)


def Midpoint(*, mirror: bool = True) -> ExplicitRK:
    """The explicit midpoint rule: K₂ = h f(X + K₁/2), X + K₂. Order 2, two gradients."""
    return ExplicitRK(((0.0, 0.0), (0.5, 0.0)), (0.0, 1.0), (0.0, 0.5), name="Midpoint", mirror=mirror)


def RK4(*, mirror: bool = True) -> ExplicitRK:
    """The classical fourth-order Runge–Kutta method. Order 4, four gradients."""
    return ExplicitRK(((0, 0, 0, 0), (0.5, 0, 0, 0), (0, 0.5, 0, 0), (0, 0, 1, 0)),
                      (1 / 6, 1 / 3, 1 / 3, 1 / 6), (0, 0.5, 0.5, 1), name="RK4", mirror=mirror)


@dataclass(frozen=True)
class SubStep:
    """One block of a splitting: the ``variables`` it moves, by ``fraction`` of a step.

    ``variables`` None means every variable not moved by another sub-step; ``implicit`` solves
    the block's linear self-coupling (a leaky integrator's own decay) at the end of the sub-step
    instead of the start, which leapfrog needs for its order.
    """

    variables: tuple[str, ...] | None
    fraction: Fraction | float = 1
    implicit: bool = False


@dataclass(frozen=True)
class Splitting(Scheme):
    """Blocks of variables updated one after another (a partitioned, or semi-implicit, method).

    Args:
        steps: the sub-steps in order. ``None``: one sub-step per variable, in the order the
            statement writes them (so each reads what the earlier ones wrote).
        lookahead: later blocks read a leaky integrator advanced once more with the same input
            (b_ahead = μ·b_new + u): Nesterov's look-ahead.
        name, order: for docs; ``order`` is the scheme's classical order.
    """

    steps: tuple[SubStep, ...] | None = None
    lookahead: bool = False
    name: str = "SemiImplicitEuler"
    order: int = 1
    gradient_calls: int = field(init=False)

    def __post_init__(self) -> None:
        if self.steps is not None:
            steps = tuple(self.steps)
            if not steps or not all(isinstance(s, SubStep) for s in steps):
                raise TypeError(f"Invalid steps value: {self.steps!r} (must be a non-empty sequence of SubStep)")
            for s in steps:
                if not (isinstance(s.fraction, (int, float, Fraction)) and 0 < s.fraction <= 1):
                    raise ValueError(f"Invalid fraction value: {s.fraction!r} (must be in (0, 1])")
            object.__setattr__(self, "steps", steps)
        # a sub-step after the parameter moved needs the gradient at the new point
        calls = 1
        if self.steps is not None:
            param_named = any(s.variables is not None and "param" in s.variables for s in self.steps)
            moved = False
            for s in self.steps:
                if moved:
                    calls += 1
                    moved = False
                if "param" in (s.variables or (() if param_named else ("param",))):
                    moved = True
        object.__setattr__(self, "gradient_calls", calls)

    def describe(self) -> str:
        if self.steps is None:
            what = "blocks in the statement's order"
        else:
            what = ", ".join(f"{'/'.join(s.variables) if s.variables else 'rest'}×{s.fraction}" for s in self.steps)
        ahead = ", look-ahead" if self.lookahead else ""
        return f"{self.name} ({what}{ahead}, order {self.order})"


def SemiImplicitEuler(blocks: Sequence[str | Sequence[str]] | None = None) -> Splitting:
    """Semi-implicit (symplectic, partitioned) Euler: each block of variables moves by one step,
    reading what the blocks before it wrote. ``blocks`` gives their order (variable names, or
    tuples of names moved together from the same values); default: the statement's order.
    Order 1. A block after ``"param"`` needs the gradient at the new parameters (a closure)."""
    if blocks is None:
        return Splitting(None)
    if isinstance(blocks, str) or not isinstance(blocks, Sequence) or not blocks:
        raise TypeError(f"Invalid blocks value: {blocks!r} (must be a non-empty sequence of variable names or tuples)")
    steps = []
    for block in blocks:
        if not isinstance(block, (str, Sequence)):
            raise TypeError(f"Invalid blocks value: {blocks!r} (each block is a variable name or a tuple of names)")
        names = (block,) if isinstance(block, str) else tuple(block)
        if not names or not all(isinstance(n, str) for n in names):
            raise TypeError(f"Invalid blocks value: {blocks!r} (each block is a variable name or a tuple of names)")
        steps.append(SubStep(names))
    return Splitting(tuple(steps))


def Lookahead() -> Splitting:
    """Nesterov's look-ahead: semi-implicit Euler in the statement's order, where the blocks after a
    leaky integrator b ← μb + u read it one step ahead, μ·b_new + u. Order 1 (of the heavy-ball
    ODE; at the next order it adds Hessian damping)."""
    return Splitting(None, lookahead=True, name="Lookahead")


def Leapfrog(velocity: Sequence[str] | None = None) -> Splitting:
    """Leapfrog (velocity Verlet, Störmer–Verlet) for a second-order ODE written as θ' = g(b),
    b' = f(θ, b): half a step of the velocity variables (solving their own linear decay
    implicitly), a full step of θ, half a step of the velocity at the new θ. Order 2; two
    gradients per step. ``velocity``: the velocity variables (default: every variable but θ)."""
    names = None if velocity is None else tuple(velocity)
    if names is not None and (not names or "param" in names):
        raise ValueError(f"Invalid velocity value: {velocity!r} (non-empty, and θ ('param') is the position)")
    return Splitting((SubStep(names, Fraction(1, 2), implicit=True), SubStep(("param",)), SubStep(names, Fraction(1, 2))),
                     name="Leapfrog", order=2)
