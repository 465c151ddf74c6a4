r"""Adam: RMSprop with a momentum average and bias correction, written through the public spec API.

This file is the proof that a new optimizer is one file: it uses only :mod:`dynopt.spec` and
the shared force; both backends and the ODE driver pick it up with no change.

ODE (state θ, the first moment m and the second moment v; F = ∇L + λθ; n = time/h)::

    m' = c₁ (F − m),   v' = c₂ (F⊙F − v),    c_i = (1 − β_i)/h
    θ' = −m̂ ⊘ (√v̂ + ε),   m̂ = m / (1 − β₁ⁿ),   v̂ = v / (1 − β₂ⁿ)

Scheme (torch.optim.Adam form)::

    m_t = β₁ m_{t−1} + (1 − β₁) F;     v_t = β₂ v_{t−1} + (1 − β₂) F⊙F
    θ_t = θ_{t−1} − lr/(1 − β₁ᵗ) · m_t ⊘ (√v_t / √(1 − β₂ᵗ) + ε)

Hyperparameter map: h = lr and c_i = (1 − β_i)/lr; step k at ODE time k·lr. As lr → 0 with the
betas fixed, the averages are fast and the flow is the sign-like θ' = −F ⊘ (|F| + ε). In the
ODE the bias correction of the first step is held on [0, h] (n is clamped at 1), where
m/(1 − β₁ⁿ) would otherwise be 0/0.

Conventions: equals ``torch.optim.Adam(params, lr, betas, eps, weight_decay, maximize=...)``
(coupled L2 weight decay, no amsgrad) and ``optax.adam(lr, b1, b2, eps)`` (eps_root = 0; chain
``optax.add_decayed_weights`` first for weight decay). The hyperparameter is ``betas=(β₁, β₂)``
on both backends, as in torch.

References:
    D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, arXiv:1412.6980.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm", 2021.
"""

from __future__ import annotations

from ..spec import Hyper, Spec, interval, is_static_zero, register, unit_interval
from ._common import MAXIMIZE, WEIGHT_DECAY, force, lr_hyper, relax


def update(o, hp, t, grad, param, state):
    beta1, beta2 = hp.betas
    g = force(hp, grad, param)
    exp_avg = beta1 * state.exp_avg + (1 - beta1) * g
    exp_avg_sq = beta2 * state.exp_avg_sq + (1 - beta2) * g * g
    step_size = hp.lr / (1 - beta1**t)
    denom = o.sqrt(exp_avg_sq) / o.sqrt(1 - beta2**t) + hp.eps
    return -step_size * exp_avg / denom, {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}


def vector_field(o, hp, time, param, state, grad):
    beta1, beta2 = hp.betas
    h = hp.lr
    n = max(time / h, 1.0)
    g = force(hp, grad, param)
    m_hat = state.exp_avg / (1 - beta1**n)
    v_hat = state.exp_avg_sq / (1 - beta2**n)
    rates = {"exp_avg": relax(state.exp_avg, g, beta1, h), "exp_avg_sq": relax(state.exp_avg_sq, g * g, beta2, h)}
    return -m_hat / (o.sqrt(v_hat) + hp.eps), rates


adam = register(
    Spec(
        name="Adam",
        hyperparams=(
            lr_hyper(1e-3),
            Hyper("betas", (0.9, 0.999), "decays (β₁, β₂) of the two moments", unit_interval, length=2),
            Hyper("eps", 1e-8, "ε added to the root of the second moment", interval(0.0), label="epsilon value"),
            WEIGHT_DECAY,
            MAXIMIZE,
        ),
        state=lambda hp: ("exp_avg", "exp_avg_sq"),
        update=update,
        vector_field=vector_field,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ' = −m̂ ⊘ (√v̂ + ε), m' = c₁(∇L − m), v' = c₂(∇L² − v)",
        scheme="Euler with bias correction: m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·m̂/(√v̂ + ε)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
    )
)
