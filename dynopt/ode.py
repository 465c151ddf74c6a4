"""The continuous-time reference flow of any spec.

``flow(spec, hyper, grad_fn, params, steps)`` integrates the spec's vector field over
(θ, state) from the same initial point as the discrete optimizer (state variables start at
zero, as the discrete state does) with a high-order Runge-Kutta solver (DOP853) at tight
tolerances, and returns it on the grid of ODE times that the discrete steps visit:
step k sits at ``time = k * h`` with ``h = spec.time_step(hp)`` (see :func:`times`, the one
place where that map is applied).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Callable, Sequence

import numpy as np
from scipy.integrate import solve_ivp

from ._backends.numpy_oracle import MATH
from .spec import Spec

__all__ = ["Flow", "flow", "times", "time_step"]


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
    state: dict[str, list[np.ndarray]]
    nfev: int


class _Layout:
    """Packs lists of arrays (params, then each state variable) into one flat vector and back."""

    def __init__(self, shapes: Sequence[tuple[int, ...]], fields: Sequence[str]):
        self.shapes, self.fields = list(shapes), list(fields)
        self.sizes = [int(np.prod(s)) for s in shapes]
        self.block = sum(self.sizes)

    def split(self, flat: np.ndarray) -> list[list[np.ndarray]]:
        groups, offset = [], 0
        for _ in range(1 + len(self.fields)):
            leaves = []
            for shape, size in zip(self.shapes, self.sizes):
                leaves.append(flat[offset : offset + size].reshape(shape))
                offset += size
            groups.append(leaves)
        return groups

    @staticmethod
    def join(groups: Sequence[Sequence[np.ndarray]]) -> np.ndarray:
        return np.concatenate([np.ravel(x) for leaves in groups for x in leaves]) if groups else np.zeros(0)


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
) -> Flow:
    """Integrate ``spec``'s continuous dynamics from ``params`` for the time of ``steps`` steps.

    Args:
        spec, hyper: the optimizer and its hyperparameters (``lr`` sets the time step h).
        grad_fn: maps a list of float64 arrays θ to the list ∇L(θ).
        params: the initial θ (list of arrays).
        steps: the flow is returned at ``times(spec, hyper, steps)``.
        state: initial state variables; zeros (the discrete optimizer's start) by default.
    """
    spec.validate(hyper)
    hp = spec.namespace(hyper)
    fields = spec.state(hp)
    theta0 = [np.asarray(p, dtype=np.float64) for p in params]
    state0 = {f: [np.asarray(x, dtype=np.float64) for x in (state or {}).get(f, [np.zeros_like(p) for p in theta0])] for f in fields}
    layout = _Layout([p.shape for p in theta0], fields)
    grid = times(spec, hyper, steps)

    def rhs(time: float, y: np.ndarray) -> np.ndarray:
        theta, *values = layout.split(y)
        grads = [np.asarray(g, dtype=np.float64) for g in grad_fn(theta)]
        current = SimpleNamespace(**{f: MATH.tree(v) for f, v in zip(fields, values)})
        d_theta, d_state = spec.vector_field(MATH, hp, time, MATH.tree(theta), current, MATH.tree(grads))
        return layout.join([d_theta.leaves] + [d_state[f].leaves for f in fields])

    y0 = layout.join([theta0] + [state0[f] for f in fields])
    solution = solve_ivp(rhs, (0.0, grid[-1]), y0, method=method, t_eval=grid, rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"the reference flow of {spec.name} failed: {solution.message}")
    samples = [layout.split(column) for column in solution.y.T]
    stacked = [[np.stack([s[g][i] for s in samples]) for i in range(len(theta0))] for g in range(1 + len(fields))]
    return Flow(grid, stacked[0], dict(zip(fields, stacked[1:])), solution.nfev)
