r"""NAdam: Adam with Nesterov's look-ahead on the first moment and Dozat's momentum schedule.

ODE (state θ, m, v as Adam's, and the product Π of the momentum coefficients; F = ±∇L, plus λθ
when the decay is coupled; n = time/h)::

    m' = c₁ (F − m),   v' = c₂ (F⊙F − v),    c_i = (1 − β_i)/h
    h·Π' = Π(μ_n − 1),          μ_n = β₁(1 − ½·0.96^{nψ})            (Π(0) = 1)
    θ' = −[(1 − μ_n)/(1 − Π) · F + μ_{n+1}/(1 − Π μ_{n+1}) · m] ⊘ (√v̂ + ε)   [− λθ, decoupled]

The step mixes the current force and the momentum as Nesterov's look-ahead does (Dozat), with
the momentum cache μ_n rising from β₁/2 towards β₁ as 0.96^{nψ} decays (ψ = momentum_decay).
With h → 0 at fixed c_i and κ = ψ/h, μ(τ) = β₁(1 − ½·0.96^{κτ}) and Π decays at rate
(1 − μ)/h, so after an initial layer of width O(h) the flow is
θ' = −[(1 − μ(τ))F + μ(τ) m] ⊘ (√v̂ + ε): Barakat & Bianchi's Adam flow driven by a time-dependent
mix of the force and its average (derived here from Dozat's update; we know of no paper on NAdam's
ODE itself).

Scheme (torch.optim.NAdam form)::

    Π_t = Π_{t−1} μ_t;   m_t = β₁ m_{t−1} + (1 − β₁) F;   v_t = β₂ v_{t−1} + (1 − β₂) F⊙F
    θ_t = θ_{t−1} [− lr·λ·θ_{t−1}] − lr·(1 − μ_t)/(1 − Π_t) · F ⊘ D − lr·μ_{t+1}/(1 − Π_t μ_{t+1}) · m_t ⊘ D,
    D = √(v_t/(1 − β₂ᵗ)) + ε

Hyperparameter map: h = lr, c_i = (1 − β_i)/lr, κ = momentum_decay/lr; step k at ODE time k·lr.
Order 1 (fitted in tests/test_ode.py with ψ = κh).

Conventions: ``dynopt.torch.NAdam`` is a drop-in for ``torch.optim.NAdam``: arguments (lr 2e-3,
betas, eps, weight_decay, momentum_decay 4e-3, decoupled_weight_decay; ``maximize`` keyword-only),
state (``mu_product``, a 0-dim tensor per parameter, ``exp_avg``, ``exp_avg_sq``) and numbers.
Precision: torch keeps ``mu_product`` in its default scalar dtype (float32 unless
``torch.set_default_dtype(torch.float64)``) and rounds it there each step; dynopt keeps it in the
parameter's precision (at least float32), as torch does after loading a state_dict. With float64
parameters the two agree to 1e-12 when torch's default dtype is float64 and to about 1e-7 when it
is float32 (torch's rounding). ``optax.nadam`` is another variant (a constant μ = β₁, no schedule).

References:
    T. Dozat, "Incorporating Nesterov Momentum into Adam", ICLR 2016 workshop.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021, arXiv:1810.02263.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, is_static_zero, nonnegative, register
from ..statement import Drift, Relax, from_statement
from ._common import DECOUPLED, MAXIMIZE_KW, WEIGHT_DECAY, betas_hyper, decoupled_decay, eps_hyper, lr_hyper, moment_force
from .adam import adam_view


def momentum_cache(hp, t):
    """Dozat's μ_t = β₁(1 − ½·0.96^{tψ})."""
    return hp.betas[0] * (1 - 0.5 * 0.96 ** (t * hp.momentum_decay))


def nesterov_moments(o, hp, t, x):
    beta1, beta2 = hp.betas
    g = moment_force(hp, x.grad, x.param)
    mu, mu_next = momentum_cache(hp, t), momentum_cache(hp, t + 1)
    product = x.mu_product * mu  # Π_t, formed before its term so that the field sees it too
    yield Relax("mu_product", 0, product)  # Π ← Π·μ_t (decay 0 assigns)
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)F
    yield Relax("exp_avg_sq", beta2, g * g)  # v ← β₂v + (1 − β₂)F²
    denom = o.sqrt(x.exp_avg_sq / (1 - beta2**t)) + hp.eps
    now = hp.lr * (1 - mu) / (1 - product)
    ahead = hp.lr * mu_next / (1 - product * mu_next)
    yield Drift("param", decoupled_decay(hp, x.param) - (now * g + ahead * x.exp_avg) / denom)


nadam = register(
    from_statement(
        name="NAdam",
        hyperparams=(
            lr_hyper(2e-3),
            betas_hyper(),
            eps_hyper(1e-8),
            WEIGHT_DECAY,
            Hyper("momentum_decay", 4e-3, "ψ in Dozat's momentum schedule μ_t = β₁(1 − ½·0.96^{tψ})", nonnegative),
            DECOUPLED,
            MAXIMIZE_KW,
        ),
        state=lambda hp: ("exp_avg", "exp_avg_sq"),
        scalars=lambda hp: {"mu_product": 1.0},
        scalars_per_param=True,  # torch.optim.NAdam: one mu_product per parameter
        statement=nesterov_moments,
        scheme=SemiImplicitEuler(),
        formula="Π ← Π·μ_t; m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; "
                "θ ← θ − lr·[(1−μ_t)/(1−Π)·g + μ_{t+1}/(1−Πμ_{t+1})·m]/(√v̂ + ε)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ' = −[(1 − μ)∇L + μ m] ⊘ (√v̂ + ε), m' = c₁(∇L − m), v' = c₂(∇L² − v)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr, κ = momentum_decay/lr",
        doc=__doc__,
        optax=(adam_view("nadam", True, "``dynopt.jax.nadam``: optax.nadam, i.e. ``optax.adam(..., nesterov=True)``: "
                         "m̂ = β₁·m/(1 − β₁ᵗ⁺¹) + (1 − β₁)·g/(1 − β₁ᵗ), not torch.optim.NAdam's momentum_decay schedule "
                         "(that one is ``dynopt.torch.NAdam``, and ``dynopt.jax.from_spec(dynopt.optimizers.nadam)``).\n\n"
                         + __doc__),),
    )
)
