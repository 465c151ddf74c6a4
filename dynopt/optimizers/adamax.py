r"""Adamax: Adam with the second moment replaced by an exponentially decayed running maximum of |∇L|.

ODE (state θ, the first moment m and the decayed maximum u; F = ∇L + λθ, −∇L + λθ when maximize)::

    m' = c₁ (F − m),          c₁ = (1 − β₁)/h
    h·u' = max(β₂u, |F| + ε) − u,   i.e.  u' = −c₂u while u > |F| + ε (c₂ = (1 − β₂)/h), and u jumps
                                     up to |F| + ε otherwise: u tracks the decayed running maximum
    θ' = −m̂ ⊘ u,              m̂ = m / (1 − β₁ⁿ)

The limit is the ℓ∞ (max-norm) counterpart of Adam's preconditioned flow: each coordinate moves
at speed |m̂_i|/u_i ≤ 1, with u_i = max over the past of e^{−c₂(τ−s)}(|F_i(s)| + ε). The max
makes the field non-smooth where β₂u = |F| + ε; away from those switching times the iterates
follow it at first order.

Scheme (torch.optim.Adamax form)::

    m_t = β₁ m_{t−1} + (1 − β₁) F;     u_t = max(β₂ u_{t−1}, |F| + ε)
    θ_t = θ_{t−1} − lr/(1 − β₁ᵗ) · m_t ⊘ u_t

Hyperparameter map: h = lr and c_i = (1 − β_i)/lr; step k at ODE time k·lr. Order 1 (fitted in
tests/test_ode.py on a run where u stays above |F| + ε, the smooth regime). Where u tracks |F| + ε
the field relaxes u at rate 1/h, a sliding mode with the decay: the iterates keep u = |F| + ε
exactly, the flow within O(h) of it.

Conventions: ``dynopt.torch.Adamax`` is a drop-in for ``torch.optim.Adamax``: arguments (lr 2e-3,
betas, eps, weight_decay; ``maximize`` keyword-only), state (``exp_avg``, ``exp_inf``) and
numbers; ε is added to |F| inside the maximum. ``optax.adamax(lr, b1, b2, eps)`` is the same rule
(no weight decay: chain ``optax.add_decayed_weights`` first).

References:
    D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, section 7.1
    (AdaMax), arXiv:1412.6980.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021 (the moment ODEs).
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import is_static_zero, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, betas_hyper, eps_hyper, force, lr_hyper


def infinity_moments(o, hp, t, x):
    beta1, beta2 = hp.betas
    g = force(hp, x.grad, x.param)
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)F
    yield Relax("exp_inf", 0, o.maximum(beta2 * x.exp_inf, o.abs(g) + hp.eps))  # u ← max(β₂u, |F| + ε): decay 0 assigns
    yield Drift("param", -(hp.lr / (1 - beta1**t)) * x.exp_avg / x.exp_inf)  # θ ← θ − lr·m̂ ⊘ u


def optax_infinity_moments(o, hp, t, x):
    """optax.scale_by_adamax: u ← max(β₂u, |g| + ε), θ ← θ − lr·(m/(1 − β₁ᵗ))/u."""
    g = x.grad
    yield Relax("mu", hp.b1, g)
    yield Relax("nu", 0, o.maximum(hp.b2 * x.nu, o.abs(g) + hp.eps))  # decay 0 assigns
    yield Drift("param", -hp.lr * ((x.mu / (1 - hp.b1**t)) / x.nu))


OPTAX_ADAMAX = optax_args.view(
    "adamax", (optax_args.learning_rate(), optax_args.b1(), optax_args.b2(), optax_args.eps(1e-8, "ε added to |g|")),
    optax_infinity_moments, lambda hp: ("mu", "nu"), spec_name="Adamax",
    formula="m ← β₁m + (1−β₁)g; u ← max(β₂u, |g| + ε); θ ← θ − lr·m̂ ⊘ u", needs_params=lambda hp: False,
    doc="``dynopt.jax.adamax``: optax.adamax's arguments (b1, b2, eps; no weight decay) and numbers. "
        "torch.optim.Adamax's form is ``dynopt.torch.Adamax``.\n\n" + __doc__)


adamax = register(
    from_statement(
        name="Adamax",
        hyperparams=(lr_hyper(2e-3), betas_hyper(), eps_hyper(1e-8, "ε added to |∇L| inside the maximum"), WEIGHT_DECAY,
                     MAXIMIZE_KW),
        state=lambda hp: ("exp_avg", "exp_inf"),
        statement=infinity_moments,
        scheme=SemiImplicitEuler(),
        formula="m ← β₁m + (1−β₁)g; u ← max(β₂u, |g| + ε); θ ← θ − lr·m̂ ⊘ u",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        smooth=lambda hp: False,  # the running maximum
        ode="θ' = −m̂ ⊘ u, m' = c₁(∇L − m), u = decayed running max of |∇L| + ε",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(OPTAX_ADAMAX,),
    )
)
