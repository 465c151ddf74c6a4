"""Toy 2-D losses, each written once with its analytic gradient, for any array namespace.

``value(xp, x, y)`` and ``grad(xp, x, y) -> (gx, gy)`` take the coordinates as arrays (or
tensors) of any matching shape and an array namespace ``xp`` (``numpy``, ``jax.numpy`` or the
``torch`` module); they use only arithmetic and ``xp.sin``/``xp.cos``, which all three share.
``value_np``/``grad_np`` are the float64 NumPy forms on a single point θ = (x, y).

The stated minimizers and minimum values come from the references in each docstring; the
Himmelblau minimizers were refined by Newton's method to machine precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["ToyLoss", "LOSSES", "quadratic", "rosenbrock", "beale", "himmelblau", "rastrigin", "saddle"]

Point = tuple[float, float]


@dataclass(frozen=True)
class ToyLoss:
    """A 2-D test loss: value, gradient, known minimizers, a start point and a plotting window.

    Attributes:
        name: registry key.
        value: ``(xp, x, y) -> L``.
        grad: ``(xp, x, y) -> (∂L/∂x, ∂L/∂y)``.
        minimizers: the global minimizers (x, y).
        minimum: L at every minimizer.
        start: where trajectories start.
        bounds: ((xmin, xmax), (ymin, ymax)) of the plotting window.
        log_contours: draw log-spaced contours of L − minimum (for steep valleys).
        title: a readable name with the formula.
    """

    name: str
    value: Callable[[Any, Any, Any], Any]
    grad: Callable[[Any, Any, Any], tuple[Any, Any]]
    minimizers: tuple[Point, ...]
    minimum: float
    start: Point
    bounds: tuple[Point, Point]
    log_contours: bool = False
    title: str = ""

    def value_np(self, theta: np.ndarray) -> float:
        """L(θ) for one float64 point θ of shape (2,)."""
        theta = np.asarray(theta, dtype=np.float64)
        return float(self.value(np, theta[0], theta[1]))

    def grad_np(self, theta: np.ndarray) -> np.ndarray:
        """∇L(θ) as a float64 array of shape (2,)."""
        theta = np.asarray(theta, dtype=np.float64)
        gx, gy = self.grad(np, theta[0], theta[1])
        return np.array([gx, gy], dtype=np.float64)


# ----------------------------------------------------------------------------- quadratic

# L = ½ (λ₁ u² + λ₂ v²) in coordinates (u, v) rotated by φ: condition number λ₁/λ₂ = 25.
_PHI = math.pi / 6
_C, _S = math.cos(_PHI), math.sin(_PHI)
_LAMBDA1, _LAMBDA2 = 1.0, 0.04


def _quadratic_value(xp, x, y):
    u, v = _C * x + _S * y, -_S * x + _C * y
    return 0.5 * (_LAMBDA1 * u**2 + _LAMBDA2 * v**2)


def _quadratic_grad(xp, x, y):
    u, v = _C * x + _S * y, -_S * x + _C * y
    du, dv = _LAMBDA1 * u, _LAMBDA2 * v
    return _C * du - _S * dv, _S * du + _C * dv


quadratic = ToyLoss(
    "quadratic", _quadratic_value, _quadratic_grad,
    minimizers=((0.0, 0.0),), minimum=0.0, start=(-2.0, 1.5), bounds=((-3.0, 3.0), (-2.5, 2.5)),
    log_contours=True, title="Rotated quadratic, condition number 25",
)


# ----------------------------------------------------------------------------- Rosenbrock
# L = (1 − x)² + 100 (y − x²)²; minimum 0 at (1, 1). H. H. Rosenbrock, The Computer Journal 3(3), 1960.


def _rosenbrock_value(xp, x, y):
    return (1 - x) ** 2 + 100 * (y - x**2) ** 2


def _rosenbrock_grad(xp, x, y):
    r = y - x**2
    return -2 * (1 - x) - 400 * x * r, 200 * r


rosenbrock = ToyLoss(
    "rosenbrock", _rosenbrock_value, _rosenbrock_grad,
    minimizers=((1.0, 1.0),), minimum=0.0, start=(-1.2, 1.0), bounds=((-2.0, 2.0), (-1.0, 3.0)),
    log_contours=True, title="Rosenbrock  (1 − x)² + 100 (y − x²)²",
)


# ----------------------------------------------------------------------------- Beale
# L = Σᵢ (cᵢ − x + x yⁱ)², c = (1.5, 2.25, 2.625); minimum 0 at (3, 0.5). E. M. L. Beale, 1958;
# see also M. Jamil and X.-S. Yang, "A literature survey of benchmark functions", 2013, f10.
_BEALE_C = (1.5, 2.25, 2.625)


def _beale_terms(x, y):
    return [(c - x + x * y ** (i + 1), i + 1) for i, c in enumerate(_BEALE_C)]


def _beale_value(xp, x, y):
    return sum(t**2 for t, _ in _beale_terms(x, y))


def _beale_grad(xp, x, y):
    terms = _beale_terms(x, y)
    gx = sum(2 * t * (y**n - 1) for t, n in terms)
    gy = sum(2 * t * n * x * y ** (n - 1) for t, n in terms)
    return gx, gy


beale = ToyLoss(
    "beale", _beale_value, _beale_grad,
    minimizers=((3.0, 0.5),), minimum=0.0, start=(1.0, 1.4), bounds=((-1.0, 4.5), (-2.5, 2.0)),
    log_contours=True, title="Beale  Σᵢ (cᵢ − x + x yⁱ)²",
)


# ----------------------------------------------------------------------------- Himmelblau
# L = (x² + y − 11)² + (x + y² − 7)²; four minima, all 0. D. M. Himmelblau, "Applied Nonlinear
# Programming", 1972. The three irrational minimizers below are Newton-refined (|∇L| < 1e-13).


def _himmelblau_value(xp, x, y):
    return (x**2 + y - 11) ** 2 + (x + y**2 - 7) ** 2


def _himmelblau_grad(xp, x, y):
    a, b = x**2 + y - 11, x + y**2 - 7
    return 4 * x * a + 2 * b, 2 * a + 4 * y * b


himmelblau = ToyLoss(
    "himmelblau", _himmelblau_value, _himmelblau_grad,
    minimizers=(
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.2831859912861696),
        (3.5844283403304917, -1.8481265269644036),
    ),
    minimum=0.0, start=(0.0, 0.0), bounds=((-6.0, 6.0), (-6.0, 6.0)),
    log_contours=True, title="Himmelblau  (x² + y − 11)² + (x + y² − 7)²",
)


# ----------------------------------------------------------------------------- Rastrigin
# L = 2A + Σ (xᵢ² − A cos 2πxᵢ), A = 10; minimum 0 at the origin, many local minima.
# L. A. Rastrigin, 1974; H. Mühlenbein et al., Parallel Computing 17, 1991.
_A = 10.0


def _rastrigin_value(xp, x, y):
    return 2 * _A + x**2 - _A * xp.cos(2 * math.pi * x) + y**2 - _A * xp.cos(2 * math.pi * y)


def _rastrigin_grad(xp, x, y):
    return 2 * x + 2 * math.pi * _A * xp.sin(2 * math.pi * x), 2 * y + 2 * math.pi * _A * xp.sin(2 * math.pi * y)


rastrigin = ToyLoss(
    "rastrigin", _rastrigin_value, _rastrigin_grad,
    minimizers=((0.0, 0.0),), minimum=0.0, start=(-2.3, 2.6), bounds=((-3.0, 3.0), (-3.0, 3.0)),
    title="Rastrigin (A = 10)",
)


# ----------------------------------------------------------------------------- saddle
# L = x²/2 − y²/2 + y⁴/4: a strict saddle at the origin, bounded below by the quartic.
# ∇L = (x, y³ − y) vanishes at (0, 0) (saddle) and (0, ±1), where L = −1/2 + 1/4 = −1/4 (minima).


def _saddle_value(xp, x, y):
    return 0.5 * x**2 - 0.5 * y**2 + 0.25 * y**4


def _saddle_grad(xp, x, y):
    return x, y**3 - y


saddle = ToyLoss(
    "saddle", _saddle_value, _saddle_grad,
    minimizers=((0.0, 1.0), (0.0, -1.0)), minimum=-0.25, start=(1.8, 0.02), bounds=((-2.0, 2.0), (-2.0, 2.0)),
    title="Saddle  x²/2 − y²/2 + y⁴/4",
)


LOSSES: dict[str, ToyLoss] = {loss.name: loss for loss in (quadratic, rosenbrock, beale, himmelblau, rastrigin, saddle)}
