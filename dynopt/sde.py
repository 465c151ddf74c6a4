"""Stochastic gradients and the SDE view of SGD (design brief 0.3, A1(3), C16).

A minibatch gradient is ĝ = ∇L + ξ with E[ξ] = 0. Here ξ is Gaussian and isotropic: each
per-sample gradient carries N(0, σ²I) noise and a batch of B samples averages B independent
draws, so Cov(ξ) = (σ²/B)·I. Forward Euler with such gradients (SGD) is, at weak order 1, the
stochastic modified equation (SME) on the clock t = k·lr::

    dΘ = −∇L(Θ) dt + √(lr·σ²/B) dW_t,       temperature T = lr·σ²/(2B)

whose stationary law is the Boltzmann density p(θ) ∝ exp(−L(θ)/T). On L = aθ²/2 both are
Gaussian and their variances are known in closed form:

* SGD (an AR(1) chain θ ← (1 − lr·a)θ − lr·ξ), exactly: lr·s²/(a(2 − lr·a)), s² = σ²/B;
* the SDE (Ornstein–Uhlenbeck): lr·s²/(2a) = T/a, the lr → 0 limit of the former.

So lr and B enter only through lr/B at leading order, with an O(lr·a) relative correction.

Randomness is always explicit: a NumPy ``Generator`` (or an int seed for one) or a JAX PRNG key,
never a global RNG. JAX is imported only when a key is passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from .numpy import from_spec
from .spec import Spec

__all__ = [
    "GradientNoise",
    "noisy_grad",
    "run_noisy",
    "euler_maruyama",
    "temperature",
    "sgd_stationary_variance",
    "sde_stationary_variance",
]

GradFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def _is_generator(rng: Any) -> bool:
    return isinstance(rng, np.random.Generator)


def _generator(rng: Any) -> Any:
    """A NumPy Generator from a Generator or an int seed; anything else is taken as a JAX key."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    return rng


@dataclass(frozen=True)
class GradientNoise:
    """Isotropic Gaussian gradient noise: per-sample standard deviation ``std`` (σ), batches of
    ``batch_size`` (B) independent samples averaged, so the noise variance is σ²/B per coordinate."""

    std: float
    batch_size: int = 1

    def __post_init__(self) -> None:
        if not self.std >= 0:
            raise ValueError(f"Invalid noise std: {self.std!r} (must be >= 0)")
        if not (isinstance(self.batch_size, (int, np.integer)) and self.batch_size >= 1):
            raise ValueError(f"Invalid batch size: {self.batch_size!r} (must be an int >= 1)")

    @property
    def variance(self) -> float:
        """σ²/B: the variance of each coordinate of the minibatch noise."""
        return self.std**2 / self.batch_size

    def sample(self, rng: np.random.Generator, like: Sequence[np.ndarray]) -> list[np.ndarray]:
        """One minibatch noise draw shaped like ``like``: the mean of B per-sample N(0, σ²) draws."""
        return [self.std * rng.standard_normal((self.batch_size, *np.shape(x))).mean(axis=0) for x in like]

    def sample_jax(self, key, like: Sequence[Any]) -> list[Any]:
        """The same with a JAX PRNG key (split once per leaf); pure, so jit-able. Use a fresh key per step."""
        import jax
        import jax.numpy as jnp

        keys = jax.random.split(key, len(like))
        return [self.std * jax.random.normal(k, (self.batch_size, *jnp.shape(x)), dtype=jnp.result_type(x)).mean(axis=0)
                for k, x in zip(keys, like)]


def noisy_grad(grad_fn: GradFn, noise: GradientNoise, rng: np.random.Generator | int) -> GradFn:
    """``grad_fn`` plus fresh minibatch noise at every call, drawn from the NumPy Generator ``rng``."""
    rng = _generator(rng)
    if not _is_generator(rng):
        raise TypeError("noisy_grad takes a numpy Generator or an int seed; for JAX use GradientNoise.sample_jax")

    def noisy(theta: list[np.ndarray]) -> list[np.ndarray]:
        grads = [np.asarray(g, dtype=np.float64) for g in grad_fn(theta)]
        return [g + xi for g, xi in zip(grads, noise.sample(rng, grads))]

    return noisy


def _noise_source(noise: GradientNoise, rng: Any) -> Callable[[list[np.ndarray]], list[np.ndarray]]:
    """A stateful ``draw(like)`` over a NumPy Generator, or over a JAX key split once per step."""
    rng = _generator(rng)
    if _is_generator(rng):
        return lambda like: noise.sample(rng, like)
    import jax

    box = [rng]

    def draw(like):
        box[0], key = jax.random.split(box[0])
        return [np.asarray(x, dtype=np.float64) for x in noise.sample_jax(key, like)]

    return draw


def run_noisy(
    spec: Spec,
    hyper: dict[str, Any],
    grad_fn: GradFn,
    params: Sequence[np.ndarray],
    steps: int,
    noise: GradientNoise,
    rng: Any,
    *,
    record: Sequence[int] | None = None,
) -> dict[int, list[np.ndarray]]:
    """Run any spec on the NumPy oracle with noisy gradients ``grad_fn(θ) + ξ``.

    Args:
        rng: a NumPy Generator, an int seed, or a JAX PRNG key (split once per step).
        record: the steps k (0..steps) at which θ_k is kept (default: every step). Each
            coordinate of a parameter is an independent chain when the loss is separable, so a
            long parameter vector gives many independent samples at once.

    Returns:
        ``{k: θ_k}`` for every recorded k.
    """
    opt = from_spec(spec)(**hyper)
    theta = [np.asarray(p, dtype=np.float64).copy() for p in params]
    state = opt.init(theta)
    draw = _noise_source(noise, rng)
    keep = set(range(steps + 1)) if record is None else set(record)
    out = {0: [x.copy() for x in theta]} if 0 in keep else {}
    for k in range(1, steps + 1):
        grads = [np.asarray(g, dtype=np.float64) for g in grad_fn(theta)]
        grads = [g + xi for g, xi in zip(grads, draw(grads))]
        updates, state = opt.update(grads, state, theta)
        theta = [x + u for x, u in zip(theta, updates)]
        if k in keep:
            out[k] = [x.copy() for x in theta]
    return out


def euler_maruyama(
    grad_fn: GradFn,
    params: Sequence[np.ndarray],
    lr: float,
    steps: int,
    noise: GradientNoise,
    rng: Any,
    *,
    substeps: int = 1,
    record: Sequence[int] | None = None,
) -> dict[int, list[np.ndarray]]:
    """Euler–Maruyama on SGD's SME dΘ = −∇L dt + √(lr·σ²/B) dW, sampled at t = k·lr.

    Each of the ``steps`` intervals of length lr is split into ``substeps`` steps dt = lr/substeps,
    each adding √(lr·σ²/B · dt)·N(0, 1). With ``substeps = 1`` it is SGD in distribution (same drift
    step, same noise variance lr²σ²/B); as ``substeps`` grows it converges to the SDE.
    Returns ``{k: Θ(k·lr)}`` for the recorded k (default: all).
    """
    if substeps < 1:
        raise ValueError(f"substeps must be >= 1, got {substeps}")
    draw = _noise_source(GradientNoise(1.0), rng)  # standard normals
    dt = lr / substeps
    diffusion = np.sqrt(lr * noise.variance * dt)
    theta = [np.asarray(p, dtype=np.float64).copy() for p in params]
    keep = set(range(steps + 1)) if record is None else set(record)
    out = {0: [x.copy() for x in theta]} if 0 in keep else {}
    for k in range(1, steps + 1):
        for _ in range(substeps):
            grads = grad_fn(theta)
            theta = [x - dt * np.asarray(g, dtype=np.float64) + diffusion * z for x, g, z in zip(theta, grads, draw(theta))]
        if k in keep:
            out[k] = [x.copy() for x in theta]
    return out


def temperature(lr: float, noise: GradientNoise) -> float:
    """T = lr·σ²/(2B): the SME is overdamped Langevin dΘ = −∇L dt + √(2T) dW."""
    return lr * noise.variance / 2


def sgd_stationary_variance(lr: float, curvature: float, noise: GradientNoise) -> float:
    """Exact stationary variance of SGD on L = aθ²/2 (AR(1)): lr·s²/(a(2 − lr·a)), s² = σ²/B; needs 0 < lr·a < 2."""
    if not 0 < lr * curvature < 2:
        raise ValueError(f"SGD on aθ²/2 is stationary only for 0 < lr·a < 2, got lr·a = {lr * curvature}")
    return lr * noise.variance / (curvature * (2 - lr * curvature))


def sde_stationary_variance(lr: float, curvature: float, noise: GradientNoise) -> float:
    """Stationary variance of the SME on L = aθ²/2 (Ornstein–Uhlenbeck): lr·s²/(2a) = T/a."""
    return temperature(lr, noise) / curvature
