"""Toy losses with a 2-D picture, each written once with its analytic gradient, for any array namespace.

``value(xp, *coords)`` and ``grad(xp, *coords) -> (g_1, …, g_d)`` take the d coordinates of θ as
arrays (or tensors) of any matching shape and an array namespace ``xp`` (``numpy``, ``jax.numpy``
or the ``torch`` module); they use only arithmetic and ``xp.sin``/``xp.cos``, which all three
share. ``value_np``/``grad_np`` are the float64 NumPy forms on a single point θ.

Most losses are 2-D (θ = (x, y), d = 2). :data:`portfolio` is constrained to the probability
simplex in R³ (``simplex=True``, d = 3): θ = (w₁, w₂, w₃) with wᵢ > 0 and Σwᵢ = 1, the home of
exponentiated gradient (``EG(variant="simplex")``). Its picture is the (w₁, w₂) plane with
w₃ = 1 − w₁ − w₂ implied (:meth:`ToyLoss.lift`, :meth:`ToyLoss.project`); the simplex is the
triangle w₁, w₂ ≥ 0, w₁ + w₂ ≤ 1 of that plane.

The stated minimizers and minimum values come from the references in each docstring; the
Himmelblau minimizers were refined by Newton's method to machine precision, the portfolio
minimizer is derived in closed form below.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["ToyLoss", "LOSSES", "quadratic", "rosenbrock", "beale", "himmelblau", "rastrigin", "saddle", "portfolio"]

Point = tuple[float, ...]


@dataclass(frozen=True)
class ToyLoss:
    """A test loss with a 2-D picture: value, gradient, known minimizers, a start and a plotting window.

    Attributes:
        name: registry key.
        value: ``(xp, *coords) -> L``.
        grad: ``(xp, *coords) -> (∂L/∂θ₁, …, ∂L/∂θ_d)``.
        minimizers: the global minimizers, as points θ of the parameter space (d coordinates);
            with ``simplex``, the minimizers of L restricted to the simplex.
        minimum: L at every minimizer.
        start: where trajectories start (d coordinates; on the simplex when ``simplex``).
        bounds: ((xmin, xmax), (ymin, ymax)) of the plotting window, in plane coordinates.
        log_contours: draw log-spaced contours of L − minimum (for steep valleys).
        title: a readable name with the formula.
        simplex: θ = (w₁, w₂, w₃) lives on the probability simplex; the plane shows (w₁, w₂).
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
    simplex: bool = False

    @property
    def dim(self) -> int:
        """d, the number of coordinates of θ (2, or 3 on the simplex)."""
        return len(self.start)

    def value_np(self, theta: np.ndarray) -> float:
        """L(θ) for one float64 point θ of shape (d,)."""
        theta = np.asarray(theta, dtype=np.float64)
        return float(self.value(np, *theta))

    def grad_np(self, theta: np.ndarray) -> np.ndarray:
        """∇L(θ) as a float64 array of shape (d,)."""
        theta = np.asarray(theta, dtype=np.float64)
        return np.array(self.grad(np, *theta), dtype=np.float64)

    def values(self, points: np.ndarray) -> np.ndarray:
        """L at each row of a float64 array of points of shape (n, d)."""
        points = np.asarray(points, dtype=np.float64)
        return np.asarray(self.value(np, *points.T), dtype=np.float64)

    def lift(self, x, y) -> tuple:
        """Plane coordinates to θ: (x, y), or (w₁, w₂, 1 − w₁ − w₂) on the simplex."""
        return (x, y, 1 - x - y) if self.simplex else (x, y)

    def project(self, points: np.ndarray) -> np.ndarray:
        """θ (shape (..., d)) to plane coordinates (shape (..., 2)): the first two coordinates."""
        return np.asarray(points)[..., :2]

    def plane_value(self, xp, x, y):
        """L at the lifted plane point(s) (x, y), for contour plots."""
        return self.value(xp, *self.lift(x, y))

    def inside(self, x, y) -> np.ndarray:
        """Which plane points are admissible: all of them, or the simplex triangle."""
        x, y = np.asarray(x), np.asarray(y)
        if not self.simplex:
            return np.ones(np.broadcast(x, y).shape, dtype=bool)
        return (x >= 0) & (y >= 0) & (x + y <= 1)


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


# ----------------------------------------------------------------------------- portfolio (simplex)
# Mean–variance portfolio (H. Markowitz, "Portfolio Selection", J. Finance 7(1), 1952) with risk
# aversion 1: three assets, weights w on the probability simplex Δ = {w > 0, w₁ + w₂ + w₃ = 1},
#
#     L(w) = ½ wᵀΣw − μᵀw,   Σ = [[4, 1, ½], [1, 2, 0], [½, 0, 1]],   μ = (2, 0.7, 0.05),
#
# riskier assets paying more. Σ is positive definite (leading minors 4, 7, 6.5), so L is strictly
# convex and has one minimizer on Δ. Unconstrained, ∇L = Σw − μ vanishes at Σ⁻¹μ = (0.5, 0.1, −0.2),
# off the simplex: the constraint is active. For an interior minimizer of L on Δ the KKT conditions
# read Σw − μ = ν·1 and 1ᵀw = 1, so w = Σ⁻¹(μ + ν1) with ν = (1 − 1ᵀΣ⁻¹μ)/(1ᵀΣ⁻¹1). Here ν = 2/5 and
#
#     w* = (1/2, 3/10, 1/5):  Σw* = (2.4, 1.1, 0.45) = μ + (2/5)·1,  every w*ᵢ > 0,
#
# so w* is interior, satisfies KKT with zero multipliers for w ≥ 0, and by convexity is the global
# minimizer on Δ. L* = ½w*ᵀ(μ + ν1) − μᵀw* = ½ν − ½μᵀw* = 0.2 − 0.61 = −0.41 (μᵀw* = 1.22).
# The start (0.1, 0.1, 0.8) is mostly the low-risk third asset.
_SIGMA = ((4.0, 1.0, 0.5), (1.0, 2.0, 0.0), (0.5, 0.0, 1.0))
_MU = (2.0, 0.7, 0.05)


def _portfolio_grad(xp, *w):
    return tuple(sum(row[j] * w[j] for j in range(3)) - _MU[i] for i, row in enumerate(_SIGMA))


def _portfolio_value(xp, *w):
    risk = sum(_SIGMA[i][j] * w[i] * w[j] for i in range(3) for j in range(3))
    return 0.5 * risk - sum(m * wi for m, wi in zip(_MU, w))


portfolio = ToyLoss(
    "portfolio", _portfolio_value, _portfolio_grad,
    minimizers=((0.5, 0.3, 0.2),), minimum=-0.41, start=(0.1, 0.1, 0.8), bounds=((-0.05, 1.05), (-0.05, 1.05)),
    log_contours=True, title="Portfolio on the simplex  ½ wᵀΣw − μᵀw", simplex=True,
)


LOSSES: dict[str, ToyLoss] = {
    loss.name: loss for loss in (quadratic, rosenbrock, beale, himmelblau, rastrigin, saddle, portfolio)
}
