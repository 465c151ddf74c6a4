"""SGD with Gaussian gradient noise against its SDE (design brief 0.3, C16), on L = aθ²/2.

Statistics. Each coordinate of a long parameter vector is an independent chain (the loss is
separable and the noise independent per coordinate), started at θ = 0, so θ_k is exactly
Gaussian with mean 0 and variance V_k = V(1 − (1 − lr·a)^{2k}). We run k ≥ K steps with
(1 − lr·a)^{2K} ≤ 1e-5 (the residual bias is < 0.01 standard errors) and estimate V by
v̂ = mean(θ²) over N chains (the mean is known to be 0). For Gaussian samples Var(v̂) = 2V²/N
exactly, so the standard error is SE = V·√(2/N): N = 100,000 gives 0.45% relative. Every
comparison allows 5 SE (a two-sided false-alarm probability of 6e-7; the seeds are fixed anyway),
and a difference is called resolved only when it exceeds 5 SE beyond that allowance.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import dynopt
from dynopt.sde import (
    GradientNoise,
    euler_maruyama,
    noisy_grad,
    run_noisy,
    sde_stationary_variance,
    sgd_stationary_variance,
    temperature,
)

A = 1.0          # curvature a of L = aθ²/2
SIGMA = 1.0      # per-sample gradient noise σ
CHAINS = 100_000
Z = 5.0          # tolerance in standard errors


def quadratic_grad(theta):
    return [A * theta[0]]


def burn_in(lr: float, tol: float = 1e-5) -> int:
    """The smallest K with (1 − lr·a)^{2K} ≤ tol: V_K is then V within a relative tol."""
    return math.ceil(math.log(tol) / (2 * math.log(abs(1 - lr * A))))


def stationary_sample(lr: float, noise: GradientNoise, rng, chains: int = CHAINS) -> np.ndarray:
    steps = burn_in(lr)
    out = run_noisy(dynopt.sgd, {"lr": lr}, quadratic_grad, [np.zeros(chains)], steps, noise, rng, record=[steps])
    return out[steps][0]


def variance_and_se(sample: np.ndarray) -> tuple[float, float]:
    """v̂ = mean(θ²) (the mean is 0 by symmetry) and its standard error v̂·√(2/N) (Gaussian samples)."""
    v = float(np.mean(sample**2))
    return v, v * math.sqrt(2 / sample.size)


def test_closed_forms():
    """lr·s²/(a(2 − lr·a)) solves V = (1 − lr·a)²V + lr²s² (the AR(1) fixed point), and tends to
    the OU variance lr·s²/(2a) = T/a with T = lr·σ²/(2B) as lr → 0."""
    noise = GradientNoise(SIGMA, batch_size=4)
    for lr in (0.3, 0.1, 0.01):
        v = sgd_stationary_variance(lr, A, noise)
        assert v == pytest.approx((1 - lr * A) ** 2 * v + lr**2 * noise.variance, rel=1e-12)
        assert sde_stationary_variance(lr, A, noise) == pytest.approx(temperature(lr, noise) / A)
    assert sgd_stationary_variance(1e-6, A, noise) / sde_stationary_variance(1e-6, A, noise) == pytest.approx(1, abs=1e-6)
    with pytest.raises(ValueError, match="stationary only"):
        sgd_stationary_variance(2.5, A, noise)
    with pytest.raises(ValueError, match="batch size"):
        GradientNoise(1.0, batch_size=0)


def test_minibatch_noise_has_variance_sigma2_over_b():
    """The batch mechanism itself: the mean of B per-sample N(0, σ²) draws has variance σ²/B."""
    rng = np.random.default_rng(1)
    for batch in (1, 3, 8):
        noise = GradientNoise(2.0, batch_size=batch)
        sample = noise.sample(rng, [np.zeros(CHAINS)])[0]
        v, se = variance_and_se(sample)
        assert abs(v - 4.0 / batch) <= Z * se
    g = noisy_grad(quadratic_grad, GradientNoise(0.0), 0)
    assert np.array_equal(g([np.ones(3)])[0], A * np.ones(3))


def test_stationary_variance_is_the_ar1_value_and_tends_to_the_sde_limit():
    """C16: the measured variance equals the exact AR(1) value lr·s²/(a(2 − lr·a)) within 5 SE for
    every lr; the SDE value lr·s²/(2a) is off by a resolved O(lr) amount at lr = 0.2 and 0.1
    (relative lr·a/(2 − lr·a) = 11% and 5.3%, i.e. 25 and 12 SE), and within 5 SE at lr = 0.02."""
    rng = np.random.default_rng(2024)
    noise = GradientNoise(SIGMA)
    for lr in (0.2, 0.1, 0.02):
        v, se = variance_and_se(stationary_sample(lr, noise, rng))
        exact, limit = sgd_stationary_variance(lr, A, noise), sde_stationary_variance(lr, A, noise)
        assert abs(v - exact) <= Z * se, (lr, v, exact, se)
        if lr >= 0.1:
            assert abs(v - limit) > 2 * Z * se, (lr, v, limit, se)
        else:
            assert abs(v - limit) <= Z * se, (lr, v, limit, se)


def test_lr_and_batch_size_enter_through_lr_over_b_at_leading_order():
    """(lr, B) = (0.025, 1), (0.05, 2), (0.1, 4), (0.2, 8) share lr/B, hence the SDE temperature:
    each variance is the exact AR(1) value with s² = σ²/B (within 5 SE), all are within the O(lr)
    correction lr·a of the common leading-order value T/a, and that correction is resolved only at
    the largest lr. Against that, the same lr with B = 1 and B = 4 differs by the factor 4."""
    rng = np.random.default_rng(7)
    common = None
    deviations = {}
    for lr, batch in ((0.025, 1), (0.05, 2), (0.1, 4), (0.2, 8)):
        noise = GradientNoise(SIGMA, batch_size=batch)
        v, se = variance_and_se(stationary_sample(lr, noise, rng))
        assert abs(v - sgd_stationary_variance(lr, A, noise)) <= Z * se
        leading = sde_stationary_variance(lr, A, noise)
        common = leading if common is None else common
        assert leading == pytest.approx(common, rel=1e-12)  # the SDE sees lr/B only
        deviations[lr] = (v / leading - 1, se / leading)
        assert abs(v / leading - 1) <= lr * A + Z * se / leading
    small, large = deviations[0.025], deviations[0.2]
    assert abs(small[0]) <= Z * small[1]          # lr = 0.025: indistinguishable from T/a
    assert large[0] > 2 * Z * large[1]             # lr = 0.2: the O(lr) correction is resolved
    v1, se1 = variance_and_se(stationary_sample(0.1, GradientNoise(SIGMA, 1), rng))
    v4, se4 = variance_and_se(stationary_sample(0.1, GradientNoise(SIGMA, 4), rng))
    ratio, ratio_se = v1 / v4, (v1 / v4) * math.hypot(se1 / v1, se4 / v4)
    assert abs(ratio - 4) <= Z * ratio_se


def test_euler_maruyama_converges_to_the_sde_variance():
    """Euler–Maruyama on dΘ = −aΘ dt + √(lr·s²) dW with dt = lr/m is an AR(1) chain with variance
    lr·s²/(a(2 − a·dt)): m = 1 is SGD's value, and m = 16 is within 5 SE of the OU limit."""
    rng = np.random.default_rng(11)
    lr, noise = 0.2, GradientNoise(SIGMA, batch_size=2)
    measured = {}
    for substeps in (1, 16):
        steps = burn_in(lr / substeps) // substeps + 1
        out = euler_maruyama(quadratic_grad, [np.zeros(CHAINS)], lr, steps, noise, rng, substeps=substeps, record=[steps])
        v, se = variance_and_se(out[steps][0])
        dt = lr / substeps
        assert abs(v - lr * noise.variance / (A * (2 - A * dt))) <= Z * se
        measured[substeps] = (v, se)
    limit = sde_stationary_variance(lr, A, noise)
    assert abs(measured[16][0] - limit) <= Z * measured[16][1]
    assert abs(measured[1][0] - limit) > 2 * Z * measured[1][1]


def test_jax_keys_are_explicit_and_reproducible():
    """A JAX key drives the same runs: one key gives identical iterates, another key different
    ones, and the stationary variance is the AR(1) value within 5 SE."""
    import jax

    noise = GradientNoise(SIGMA, batch_size=2)
    lr, chains = 0.1, 20_000
    a = stationary_sample(lr, noise, jax.random.key(0), chains)
    b = stationary_sample(lr, noise, jax.random.key(0), chains)
    c = stationary_sample(lr, noise, jax.random.key(1), chains)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    v, se = variance_and_se(a)
    assert abs(v - sgd_stationary_variance(lr, A, noise)) <= Z * se
    same_seed = [stationary_sample(lr, noise, np.random.default_rng(5), 1000) for _ in range(2)]
    assert np.array_equal(*same_seed)
