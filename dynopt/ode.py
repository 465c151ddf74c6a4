"""The continuous-time reference flow of any spec.

``flow(spec, hyper, grad_fn, params, steps)`` integrates the spec's vector field over
(θ, state) from the same initial point as the discrete optimizer (state variables start at
zero, as the discrete state does) with a high-order Runge-Kutta solver (DOP853) at tight
tolerances, and returns it on the grid of ODE times that the discrete steps visit:
step k sits at ``time = k * h`` with ``h = spec.time_step(hp)`` (see :func:`times`, the one
place where that map is applied).

``flow(..., modified=True)`` integrates the spec's *modified* equation instead
(``Spec.modified_field``): the field that the iterates follow to one order higher in h, which
needs Hessian-vector products. Pass ``hvp_fn(θ, v) -> ∇²L(θ)·v`` (lists of arrays) when you have
them; otherwise :func:`finite_difference_hvp` builds them from ``grad_fn`` by a central
difference, (∇L(θ + δv) − ∇L(θ − δv)) / 2δ with δ = ``fd_step``·(1 + ‖θ‖)/‖v‖ and
``fd_step`` = 6e-6 ≈ ε_mach^{1/3} by default: truncation O(δ²‖v‖²‖∇³L‖) and round-off
O(ε_mach‖∇L‖/δ) balance there, a relative error of about 1e-10 on smooth losses. That error
enters the modified field multiplied by h.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
from scipy.integrate import solve_ivp

from ._backends.numpy_oracle import MATH
from .spec import Spec
from .tree import ZERO

__all__ = ["Flow", "flow", "times", "time_step", "finite_difference_hvp", "FD_STEP"]

FD_STEP = 6e-6  # ≈ (machine epsilon)^(1/3): the relative step of the central-difference Hessian-vector product


def time_step(spec: Spec, hyper: dict[str, Any]) -> float:
    """ODE time advanced by one discrete step of ``spec`` with hyperparameters ``hyper``."""
    return float(spec.time_step(spec.namespace(hyper)))


def times(spec: Spec, hyper: dict[str, Any], steps: int) -> np.ndarray:
    """The ODE times ``k * h`` of steps ``k = 0..steps``."""
    return np.arange(steps + 1) * time_step(spec, hyper)


@dataclass(frozen=True)
class Flow:
    """A solution sampled at ``times``: ``params[i]`` has shape ``(len(times), *shape_i)``."""

    times: np.ndarray
    params: list[np.ndarray]
    state: dict[str, Any]  # state variables: lists of (len(times), *shape) arrays; scalars: (len(times),)
    nfev: int


class _Layout:
    """Packs groups of arrays (params, each state variable, each scalar) into one vector and back."""

    def __init__(self, groups: Sequence[Sequence[np.ndarray]]):
        self.shapes = [[np.shape(x) for x in group] for group in groups]

    def split(self, flat: np.ndarray) -> list[list[np.ndarray]]:
        groups, offset = [], 0
        for shapes in self.shapes:
            leaves = []
            for shape in shapes:
                size = int(np.prod(shape))
                leaves.append(flat[offset : offset + size].reshape(shape))
                offset += size
            groups.append(leaves)
        return groups

    @staticmethod
    def join(groups: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        return np.concatenate([np.ravel(x) for leaves in groups for x in leaves])


def finite_difference_hvp(
    grad_fn: Callable[[list[np.ndarray]], list[np.ndarray]], step: float = FD_STEP
) -> Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]]:
    """``hvp(θ, v) ≈ ∇²L(θ)·v`` by the central difference of ``grad_fn`` described in the module docstring."""

    def hvp(theta: list[np.ndarray], v: list[np.ndarray]) -> list[np.ndarray]:
        theta = [np.asarray(x, dtype=np.float64) for x in theta]
        v = [np.asarray(x, dtype=np.float64) for x in v]
        v_norm = float(np.sqrt(sum(np.sum(x * x) for x in v)))
        if v_norm == 0.0:
            return [np.zeros_like(x) for x in theta]
        theta_norm = float(np.sqrt(sum(np.sum(x * x) for x in theta)))
        delta = step * (1.0 + theta_norm) / v_norm
        plus = grad_fn([x + delta * y for x, y in zip(theta, v)])
        minus = grad_fn([x - delta * y for x, y in zip(theta, v)])
        return [(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) / (2 * delta) for a, b in zip(plus, minus)]

    return hvp


def flow(
    spec: Spec,
    hyper: dict[str, Any],
    grad_fn: Callable[[list[np.ndarray]], list[np.ndarray]],
    params: Sequence[np.ndarray],
    steps: int,
    *,
    state: dict[str, Sequence[np.ndarray]] | None = None,
    rtol: float = 1e-11,
    atol: float = 1e-13,
    method: str = "DOP853",
    modified: bool = False,
    hvp_fn: Callable[[list[np.ndarray], list[np.ndarray]], list[np.ndarray]] | None = None,
    fd_step: float = FD_STEP,
) -> Flow:
    """Integrate ``spec``'s continuous dynamics from ``params`` for the time of ``steps`` steps.

    Args:
        spec, hyper: the optimizer and its hyperparameters (``lr`` sets the time step h).
        grad_fn: maps a list of float64 arrays θ to the list ∇L(θ).
        params: the initial θ (list of arrays).
        steps: the flow is returned at ``times(spec, hyper, steps)``.
        state: initial values of some state variables (lists of arrays) or scalars; the others
            start where the discrete optimizer starts (``spec.initial``, zeros by default).
        method: any ``scipy.integrate.solve_ivp`` method. The default DOP853 is accurate but slow
            on stiff flows (RMSprop or Adam near a minimum, where v is small): pass ``"LSODA"`` there.
            RMSprop and Adam started from v = 0 are singular at t = 0 (θ' ~ 1/√t); their flows
            are regular when v starts at ∇L(θ₀)².
        modified: integrate ``spec.modified_field`` (the modified equation, one order higher in
            h) instead of ``spec.vector_field``; ValueError if the spec states none.
        hvp_fn: ``hvp_fn(θ, v)`` = ∇²L(θ)·v over lists of arrays, used by the modified field;
            default: :func:`finite_difference_hvp` of ``grad_fn`` with relative step ``fd_step``.
    """
    spec.validate(hyper)
    if modified and spec.modified_field is None:
        raise ValueError(f"{spec.name} states no modified equation (Spec.modified_field is None)")
    if modified and hvp_fn is None:
        hvp_fn = finite_difference_hvp(grad_fn, fd_step)
    hp = spec.namespace(hyper)
    fields, scalars = spec.state(hp), tuple(spec.scalars(hp))
    theta0 = [np.asarray(p, dtype=np.float64) for p in params]
    initial = spec.initial(MATH, hp, MATH.tree(theta0))
    start = {f: initial[f].leaves for f in fields} | {n: [np.float64(v)] for n, v in spec.scalars(hp).items()}
    for name, value in (state or {}).items():
        start[name] = [np.asarray(x, dtype=np.float64) for x in (value if name in fields else [value])]
    names = fields + scalars
    y0_groups = [theta0] + [start[n] for n in names]
    layout = _Layout(y0_groups)
    grid = times(spec, hyper, steps)

    def rhs(time: float, y: np.ndarray) -> np.ndarray:
        theta, *values = layout.split(y)
        grads = [np.asarray(g, dtype=np.float64) for g in grad_fn(theta)]
        current = SimpleNamespace(**{f: MATH.tree(v) for f, v in zip(fields, values)},
                                  **{n: v[0] for n, v in zip(scalars, values[len(fields):])})
        if modified:
            def hvp(v, theta=theta):
                return v if v is ZERO else MATH.tree([np.asarray(x, dtype=np.float64) for x in hvp_fn(theta, v.leaves)])

            d_theta, d_state = spec.modified_field(MATH, hp, time, MATH.tree(grads), MATH.tree(theta), current, hvp)
        else:
            d_theta, d_state = spec.vector_field(MATH, hp, time, MATH.tree(grads), MATH.tree(theta), current)
        rates = [d_state[f].leaves for f in fields] + [[np.asarray(d_state[n], dtype=np.float64)] for n in scalars]
        return layout.join([d_theta.leaves] + rates)

    y0 = layout.join(y0_groups)
    solution = solve_ivp(rhs, (0.0, grid[-1]), y0, method=method, t_eval=grid, rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"the reference flow of {spec.name} failed: {solution.message}")
    samples = [layout.split(column) for column in solution.y.T]
    stacked = [[np.stack([sample[g][i] for sample in samples]) for i in range(len(shapes))]
               for g, shapes in enumerate(layout.shapes)]
    state_out = {f: stacked[1 + i] for i, f in enumerate(fields)}
    state_out |= {n: stacked[1 + len(fields) + i][0] for i, n in enumerate(scalars)}
    return Flow(grid, stacked[0], state_out, solution.nfev)
