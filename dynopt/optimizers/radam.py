r"""RAdam: Adam whose adaptive step is rectified by a time-dependent gain, after an SGD-with-momentum warm-up.

ODE (state θ, m, v as Adam's; F = ±∇L, plus λθ when the decay is coupled; n = time/h)::

    m' = c₁ (F − m),   v' = c₂ (F⊙F − v),    c_i = (1 − β_i)/h
    θ' = −√r(n) · m̂ ⊘ (√v̂ + ε)  [− λθ, decoupled]       while ρ_n > 5
    θ' = −m̂                      [− λθ, decoupled]       while ρ_n ≤ 5 (the warm-up)

with ρ_∞ = 2/(1 − β₂) − 1, ρ_n = ρ_∞ − 2n β₂ⁿ/(1 − β₂ⁿ) (the length of the approximated simple
moving average) and r(n) = (ρ_n − 4)(ρ_n − 2)ρ_∞ / ((ρ_∞ − 4)(ρ_∞ − 2)ρ_n). In the limit h → 0 with
c₂ fixed (β₂ = 1 − c₂h, n = τ/h) the warm-up shrinks to the first five steps (ODE time O(h)) and the
gain tends to r(τ) = 1 − c₂τ/(e^{c₂τ} − 1) (derived here from Liu et al.'s formulas): RAdam's
flow is Barakat & Bianchi's Adam flow with the gain √r(τ), which rises from 0 to 1 on the time
scale 1/c₂ of the second moment.

Scheme (torch.optim.RAdam form)::

    m_t = β₁ m_{t−1} + (1 − β₁) F;   v_t = β₂ v_{t−1} + (1 − β₂) F⊙F;   m̂ = m_t/(1 − β₁ᵗ)
    θ_t = θ_{t−1} [− lr·λ·θ_{t−1}, decoupled] − lr · m̂ · √(1 − β₂ᵗ)/(√v_t + ε) · √r_t    if ρ_t > 5
    θ_t = θ_{t−1} [− lr·λ·θ_{t−1}, decoupled] − lr · m̂                                  otherwise

Hyperparameter map: h = lr, c_i = (1 − β_i)/lr; step k at ODE time k·lr. Order 1 (fitted in
tests/test_ode.py).

Conventions: ``dynopt.torch.RAdam`` is a drop-in for ``torch.optim.RAdam``: arguments (lr, betas,
eps, weight_decay, decoupled_weight_decay; ``maximize`` keyword-only), defaults, state
(``exp_avg``, ``exp_avg_sq``) and numbers. The branch on ρ_t > 5 is a select, not a Python branch,
so a traced β₂ (``optax.inject_hyperparams``) works. ``optax.radam`` differs in ε: it divides m̂
by √v̂ + ε, torch and dynopt by √v̂ + ε/√(1 − β₂ᵗ) (m̂·√(1 − β₂ᵗ)/(√v + ε)); it also rectifies at
ρ_t ≥ 5 where torch and dynopt need ρ_t > 5, and has no weight decay.

References:
    L. Liu, H. Jiang, P. He, W. Chen, X. Liu, J. Gao, J. Han, "On the Variance of the Adaptive
    Learning Rate and Beyond", ICLR 2020, arXiv:1908.03265.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021, arXiv:1810.02263.
"""

from __future__ import annotations

import math

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, is_static_zero, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import DECOUPLED, MAXIMIZE_KW, WEIGHT_DECAY, betas_hyper, decoupled_decay, eps_hyper, lr_hyper, moment_force

THRESHOLD = 5.0  # torch.optim.RAdam and optax.radam: rectify once the SMA length exceeds 5


def rectified_moments(o, hp, t, x):
    beta1, beta2 = hp.betas
    g = moment_force(hp, x.grad, x.param)
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)F
    yield Relax("exp_avg_sq", beta2, g * g)  # v ← β₂v + (1 − β₂)F²
    correction2 = 1 - beta2**t
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * t * beta2**t / correction2
    rectify = rho_t > THRESHOLD
    m_hat = x.exp_avg / (1 - beta1**t)
    if rectify is False:  # concretely in the warm-up (a traced ρ selects below)
        step = m_hat * hp.lr
    else:
        # ρ clipped at 5 from below: exact where the rectified branch is taken (ρ_∞ ≥ ρ_t > 5), finite elsewhere
        rho, rho_max = o.clip(rho_t, THRESHOLD, math.inf), o.clip(rho_inf, THRESHOLD, math.inf)
        gain = o.sqrt((rho - 4) * (rho - 2) * rho_max / ((rho_max - 4) * (rho_max - 2) * rho))
        adaptive = m_hat * hp.lr * (correction2**0.5 / (o.sqrt(x.exp_avg_sq) + hp.eps)) * gain
        step = adaptive if rectify is True else o.select(rectify, adaptive, m_hat * hp.lr)
    yield Drift("param", decoupled_decay(hp, x.param) - step)  # θ ← θ − lr·m̂·(√r·√(1 − β₂ᵗ)/(√v + ε), or 1)


def optax_rectified_moments(o, hp, t, x):
    """optax.scale_by_radam: rectify where ρ_t ≥ threshold (torch: ρ_t > 5), ε_root inside the root, nesterov."""
    beta1, beta2 = hp.b1, hp.b2
    g = x.grad
    yield Relax("mu", beta1, g)
    yield Relax("nu", beta2, optax_args.abs_sq(o, g))
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    power = beta2**t
    rho = rho_inf - 2 * t * power / (1 - power)
    if hp.nesterov:
        mu_hat = beta1 * (x.mu / (1 - beta1 ** (t + 1))) + (1 - beta1) * (g / (1 - beta1**t))
    else:
        mu_hat = x.mu / (1 - beta1**t)
    # NaN for ρ_t < 4, as optax: a threshold below 4 takes it (the default 5 never does)
    rectified = o.sqrt((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho))
    adaptive = rectified * mu_hat / (o.sqrt(x.nu / (1 - power) + hp.eps_root) + hp.eps)
    yield Drift("param", -hp.lr * o.select(rho >= hp.threshold, adaptive, mu_hat))


OPTAX_RADAM = optax_args.view(
    "radam",
    (optax_args.learning_rate(), optax_args.b1(), optax_args.b2(), optax_args.eps(1e-8), optax_args.EPS_ROOT,
     Hyper("threshold", 5.0, "rectify where the SMA length ρ_t ≥ threshold", interval(-math.inf)),
     optax_args.NESTEROV_KW),
    optax_rectified_moments, lambda hp: ("mu", "nu"), spec_name="RAdam",
    formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·(r_t·m̂/(√(v̂ + ε_root) + ε) if ρ_t ≥ threshold else m̂)",
    needs_params=lambda hp: False,
    doc="``dynopt.jax.radam``: optax.radam's arguments, defaults and numbers (``threshold``, ``eps_root``, ``nesterov``; "
        "rectified where ρ_t ≥ threshold). torch.optim.RAdam's form is ``dynopt.torch.RAdam``.\n\n" + __doc__)


radam = register(
    from_statement(
        name="RAdam",
        hyperparams=(lr_hyper(1e-3), betas_hyper(), eps_hyper(1e-8), WEIGHT_DECAY, DECOUPLED, MAXIMIZE_KW),
        state=lambda hp: ("exp_avg", "exp_avg_sq"),
        statement=rectified_moments,
        scheme=SemiImplicitEuler(),
        formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·m̂·√r_t·√(1−β₂ᵗ)/(√v + ε) (θ ← θ − lr·m̂ while ρ_t ≤ 5)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        smooth=lambda hp: False,  # the switch at ρ_t = 5 (a jump in time)
        ode="θ' = −√r(t)·m̂ ⊘ (√v̂ + ε), m' = c₁(∇L − m), v' = c₂(∇L² − v)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(OPTAX_RADAM,),
    )
)
