"""Discrete trajectories of an optimizer on a 2-D toy loss, with the ODE flow they discretize.

``run(spec, hyper, loss, steps)`` iterates the optimizer from ``loss.start`` with the loss's
analytic gradient on the NumPy oracle, ``torch.optim`` or optax backend, and (optionally)
integrates the spec's reference flow on the same ODE time grid (:func:`dynopt.ode.times`).
A run that leaves the ball of radius :data:`DIVERGED_NORM` is stopped and NaN-padded.
Importing this module imports neither torch nor jax.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from . import ode
from .losses import LOSSES, ToyLoss
from .spec import LR, REGISTRY, Spec

__all__ = ["Trajectory", "run", "jax_x64", "DIVERGED_NORM", "BACKENDS"]

DIVERGED_NORM = 1e6
BACKENDS = ("numpy", "torch", "jax")


@dataclass(frozen=True)
class Trajectory:
    """One optimizer run: iterates θ_k, losses L(θ_k) and ODE times t_k for k = 0..steps.

    Rows after a divergence are NaN; ``diverged_at`` is the first such step (None if none).
    ``flow_iterates``/``flow_losses`` sample the reference ODE at ``flow_times`` (the same
    grid as ``times``), or are None when no flow was asked for or the solver failed.
    """

    name: str
    loss: str
    spec: str
    hyper: dict[str, Any]
    iterates: np.ndarray
    losses: np.ndarray
    times: np.ndarray
    flow_iterates: np.ndarray | None = None
    flow_times: np.ndarray | None = None
    flow_losses: np.ndarray | None = None
    diverged_at: int | None = None
    backend: str = "numpy"

    @property
    def steps(self) -> int:
        return len(self.iterates) - 1

    @property
    def final_loss(self) -> float:
        """L at the last step, +inf if the run diverged."""
        return float(self.losses[-1]) if self.diverged_at is None else float("inf")

    @property
    def label(self) -> str:
        """``name (lr=…)`` for legends."""
        return f"{self.name} (lr={self.hyper[LR]:.3g})"


def jax_x64():
    """Context manager enabling float64 in JAX (``jax.experimental.enable_x64`` where it exists)."""
    import jax

    legacy = getattr(getattr(jax, "experimental", None), "enable_x64", None)
    return legacy() if legacy is not None else jax.enable_x64(True)


def _stopped(theta: np.ndarray) -> bool:
    return not np.all(np.isfinite(theta)) or float(np.linalg.norm(theta)) > DIVERGED_NORM


def _run_numpy(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, out: np.ndarray) -> None:
    from .numpy import from_spec

    opt = from_spec(spec)(**hyper)
    theta = out[0].copy()
    state = opt.init([theta])
    for k in range(1, steps + 1):
        with np.errstate(all="ignore"):
            (update,), state = opt.update([loss.grad_np(theta)], state, [theta])
            theta = theta + update
        if _stopped(theta):
            return
        out[k] = theta


def _run_torch(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, out: np.ndarray) -> None:
    import torch

    from .torch import from_spec

    p = torch.tensor(out[0], dtype=torch.float64)
    opt = from_spec(spec)([p], **hyper)
    for k in range(1, steps + 1):
        with torch.no_grad():
            gx, gy = loss.grad(torch, p[0], p[1])
            p.grad = torch.stack([gx, gy])
        opt.step()
        theta = p.detach().numpy().copy()
        if _stopped(theta):
            return
        out[k] = theta


@functools.lru_cache(maxsize=64)
def _jax_runner(spec: Spec, rest: tuple, loss: ToyLoss, steps: int):
    """A jitted ``(lr, θ₀) -> iterates`` for one configuration; the lr is traced (no recompiles)."""
    import jax
    import jax.numpy as jnp

    from .jax import from_spec

    factory = from_spec(spec)

    @jax.jit
    def iterate(lr, theta0):
        opt = factory(lr, **dict(rest))

        def step(carry, _):
            theta, state = carry
            gx, gy = loss.grad(jnp, theta[0], theta[1])
            (update,), state = opt.update([jnp.stack([gx, gy])], state, [theta])
            theta = theta + update
            return (theta, state), theta

        _, thetas = jax.lax.scan(step, (theta0, opt.init([theta0])), None, length=steps)
        return thetas

    return iterate


def _run_jax(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, out: np.ndarray) -> None:
    import jax.numpy as jnp

    from .jax import from_spec

    rest = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in hyper.items() if k != LR))
    with jax_x64():
        theta0 = jnp.asarray(out[0])
        from_spec(spec)(hyper[LR], **dict(rest)).init([theta0])  # eager: hyperparameter and parameter checks
        thetas = np.asarray(_jax_runner(spec, rest, loss, steps)(jnp.float64(hyper[LR]), theta0))
    for k, theta in enumerate(thetas, start=1):
        if _stopped(theta):
            return
        out[k] = theta


_RUNNERS = {"numpy": _run_numpy, "torch": _run_torch, "jax": _run_jax}


def _losses(loss: ToyLoss, iterates: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.asarray(loss.value(np, iterates[:, 0], iterates[:, 1]), dtype=np.float64)


def run(
    spec: Spec | str,
    hyper: Mapping[str, Any],
    loss: ToyLoss | str,
    steps: int,
    *,
    with_flow: bool = True,
    backend: str = "numpy",
    name: str | None = None,
    flow_rtol: float = 1e-10,
    flow_method: str = "LSODA",
) -> Trajectory:
    """Run ``spec`` with hyperparameters ``hyper`` (``lr`` included) for ``steps`` steps on ``loss``.

    Args:
        spec, loss: objects or registry names (``"Adam"``, ``"rosenbrock"``).
        with_flow: also integrate the reference ODE flow on the same time grid.
        backend: ``"numpy"`` (the oracle), ``"torch"`` (the generated ``torch.optim`` class) or
            ``"jax"`` (the optax transform, float64, jitted).
        name: the trajectory's name (the spec's name by default).
        flow_rtol, flow_method: tolerance (absolute: 1e-3 of it) and ``solve_ivp`` method of the
            flow. LSODA switches to a stiff solver where it must: the adaptive flows (RMSprop,
            Adam) near a minimizer are stiff and cost DOP853 ~100x more for the same accuracy.
    """
    spec = REGISTRY[spec] if isinstance(spec, str) else spec
    loss = LOSSES[loss] if isinstance(loss, str) else loss
    if backend not in _RUNNERS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {BACKENDS}")
    hyper = dict(hyper)
    iterates = np.full((steps + 1, 2), np.nan)
    iterates[0] = loss.start
    _RUNNERS[backend](spec, hyper, loss, steps, iterates)
    stopped = np.flatnonzero(np.isnan(iterates[:, 0]))
    flow_iterates = flow_times = flow_losses = None
    if with_flow:
        flow_times, flow_iterates = _flow(spec, hyper, loss, steps, flow_rtol, flow_method)
        flow_losses = None if flow_iterates is None else _losses(loss, flow_iterates)
    return Trajectory(
        name=name or spec.name,
        loss=loss.name,
        spec=spec.name,
        hyper=hyper,
        iterates=iterates,
        losses=_losses(loss, iterates),
        times=ode.times(spec, hyper, steps),
        flow_iterates=flow_iterates,
        flow_times=flow_times,
        flow_losses=flow_losses,
        diverged_at=int(stopped[0]) if stopped.size else None,
        backend=backend,
    )


def _flow(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, rtol: float, method: str):
    """The reference flow on the step grid, or (times, None) if the solver fails."""
    grid = ode.times(spec, hyper, steps)
    try:
        with np.errstate(all="ignore"):
            sol = ode.flow(spec, hyper, lambda ps: [loss.grad_np(ps[0])], [np.asarray(loss.start, float)], steps,
                           rtol=rtol, atol=rtol * 1e-3, method=method)
    except RuntimeError:
        return grid, None
    return sol.times, sol.params[0]

