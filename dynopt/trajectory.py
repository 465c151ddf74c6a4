"""Discrete trajectories of an optimizer on a toy loss, with the ODE flow they discretize.

``run(spec, hyper, loss, steps)`` iterates the optimizer from ``loss.start`` with the loss's
analytic gradient on the NumPy oracle, ``torch.optim`` or optax backend, and (optionally)
integrates the spec's reference flow on the same ODE time grid (:func:`dynopt.ode.times`).
The parameter is one float64 vector of the loss's dimension: (x, y) for the 2-D losses, the
3 weights of a simplex loss (run ``EG`` with ``variant="simplex"`` there).
A run that leaves the ball of radius :data:`DIVERGED_NORM` is stopped and NaN-padded.
Every step's scalar step size is recorded (``Trajectory.step_sizes``): the spec's own
:meth:`~dynopt.spec.Spec.step_size` of the lr in effect and the global scalars, read through each
backend's public API (``state.values`` in NumPy, ``optimizer.global_scalars()`` and
``param_groups[0]["lr"]`` in torch, the state's fields in optax). For the meta-step wrappers
that is lr · s.
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

    ``iterates`` has shape (steps + 1, d), d the loss's dimension. Rows after a divergence are
    NaN; ``diverged_at`` is the first such step (None if none). ``step_sizes`` has shape
    (steps,): entry k − 1 is the scalar step size of step k (θ_{k−1} → θ_k), the lr in effect
    times the meta-learned scale s_k where the optimizer has one (per-coordinate factors such as
    Adam's preconditioner or meta-step gains are not included); it is recorded up to and
    including the step that diverged, NaN after. ``flow_iterates``/``flow_losses`` sample the
    reference ODE at ``flow_times`` (the same grid as ``times``), or are None when no flow was
    asked for or the solver failed.
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
    step_sizes: np.ndarray | None = None

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


def _step_size(spec: Spec, hyper: dict, lr, scalars) -> Any:
    """The spec's own effective lr (``Spec.step_size``) given the lr in effect and its global scalars."""
    return spec.step_size(spec.namespace({**hyper, LR: lr}), scalars)


def _run_numpy(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, out: np.ndarray, sizes: np.ndarray) -> None:
    from .numpy import from_spec

    opt = from_spec(spec)(**hyper)
    names = tuple(spec.scalars(spec.namespace(hyper)))
    theta = out[0].copy()
    state = opt.init([theta])
    for k in range(1, steps + 1):
        lr = opt.hyper[LR]
        lr = lr(state.count) if callable(lr) else lr  # the lr in effect at this step
        with np.errstate(all="ignore"):
            (update,), state = opt.update([loss.grad_np(theta)], state, [theta])
            theta = theta + update
            sizes[k - 1] = _step_size(spec, hyper, lr, {n: state.values[n] for n in names})
        if _stopped(theta):
            return
        out[k] = theta


def _run_torch(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, out: np.ndarray, sizes: np.ndarray) -> None:
    import torch

    from .torch import from_spec

    p = torch.tensor(out[0], dtype=torch.float64)
    opt = from_spec(spec)([p], **hyper)
    for k in range(1, steps + 1):
        with torch.no_grad():
            p.grad = torch.stack(list(loss.grad(torch, *p.unbind())))
        lr = float(opt.param_groups[0]["lr"])  # the lr in effect at this step
        opt.step()
        sizes[k - 1] = _step_size(spec, hyper, lr, {n: float(v) for n, v in opt.global_scalars().items()})
        theta = p.detach().numpy().copy()
        if _stopped(theta):
            return
        out[k] = theta


@functools.lru_cache(maxsize=64)
def _jax_runner(spec: Spec, rest: tuple, loss: ToyLoss, steps: int):
    """A jitted ``(lr, θ₀) -> (iterates, step sizes)`` for one configuration; the lr is traced (no recompiles)."""
    import jax
    import jax.numpy as jnp

    from .jax import from_spec

    factory = from_spec(spec)
    names = tuple(spec.scalars(spec.namespace({LR: 1.0, **dict(rest)})))

    @jax.jit
    def iterate(lr, theta0):
        opt = factory(lr, **dict(rest))

        def step(carry, _):
            theta, state = carry
            grads = loss.grad(jnp, *(theta[i] for i in range(loss.dim)))
            (update,), state = opt.update([jnp.stack(grads)], state, [theta])
            theta = theta + update
            return (theta, state), (theta, _step_size(spec, dict(rest), lr, {n: getattr(state, n) for n in names}))

        _, (thetas, sizes) = jax.lax.scan(step, (theta0, opt.init([theta0])), None, length=steps)
        return thetas, sizes

    return iterate


def _run_jax(spec: Spec, hyper: dict, loss: ToyLoss, steps: int, out: np.ndarray, sizes: np.ndarray) -> None:
    import jax.numpy as jnp

    from .jax import from_spec

    rest = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in hyper.items() if k != LR))
    with jax_x64():
        theta0 = jnp.asarray(out[0])
        from_spec(spec)(hyper[LR], **dict(rest)).init([theta0])  # eager: hyperparameter and parameter checks
        thetas, step_sizes = _jax_runner(spec, rest, loss, steps)(jnp.float64(hyper[LR]), theta0)
    for k, (theta, size) in enumerate(zip(np.asarray(thetas), np.asarray(step_sizes)), start=1):
        sizes[k - 1] = size
        if _stopped(theta):
            return
        out[k] = theta


_RUNNERS = {"numpy": _run_numpy, "torch": _run_torch, "jax": _run_jax}


def _losses(loss: ToyLoss, iterates: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return loss.values(iterates)


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
        spec, loss: objects or registry names (``"Adam"``, ``"rosenbrock"``, ``"portfolio"``).
            On a simplex loss, ``EG`` with ``variant="simplex"`` keeps the iterates on the
            simplex; any other optimizer runs unconstrained in R³ (and leaves it).
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
    iterates = np.full((steps + 1, loss.dim), np.nan)
    iterates[0] = loss.start
    step_sizes = np.full(steps, np.nan)
    _RUNNERS[backend](spec, hyper, loss, steps, iterates, step_sizes)
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
        step_sizes=step_sizes,
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

