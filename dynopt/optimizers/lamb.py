r"""LAMB: Adam's direction, rescaled per parameter tensor by the trust ratio ‖θ‖/‖direction‖.

ODE (state θ, m, v as Adam's; for each parameter tensor ("layer") ℓ separately; n = time/h)::

    m' = c₁ (∇L − m),   v' = c₂ (∇L² − v),    c_i = (1 − β_i)/h
    u = m̂ ⊘ (√(v̂ + ε_root) + ε) + λθ,         m̂ = m / (1 − β₁ⁿ),   v̂ = v / (1 − β₂ⁿ)
    θ_ℓ' = −‖θ_ℓ‖ · u_ℓ / ‖u_ℓ‖                (−u_ℓ where θ_ℓ = 0 or u_ℓ = 0)

A layer-wise normalized flow: each tensor moves at the speed ‖θ_ℓ'‖ = ‖θ_ℓ‖ whatever the scale of its
gradients, in Adam's direction (plus the decoupled decay λθ). The norms are reductions inside each
parameter, not over the whole model: in torch this optimizer always runs on the reference path
(one kernel per tensor; the flat buckets would mix tensors). The field is smooth away from θ_ℓ = 0
and u_ℓ = 0, where the ratio switches to 1; order 1 (fitted in tests/test_ode.py).

Scheme (semi-implicit Euler in optax's order)::

    m_t = β₁ m_{t−1} + (1 − β₁) g;    v_t = β₂ v_{t−1} + (1 − β₂) g²
    u_t = m_t/(1 − β₁ᵗ) ⊘ (√(v_t/(1 − β₂ᵗ) + ε_root) + ε) + λ θ_{t−1}
    θ_t = θ_{t−1} − lr · r_t u_t,    r_t = ‖θ_{t−1}‖/‖u_t‖ per tensor (1 where either norm is 0)

Hyperparameter map: h = lr, c_i = (1 − β_i)/lr; step k at ODE time k·lr.

Conventions: ``dynopt.jax.lamb(learning_rate, b1, b2, eps, eps_root, weight_decay)`` equals
``optax.lamb`` with the same arguments and defaults (b1 0.9, b2 0.999, eps 1e-6, eps_root 0,
weight_decay 0): ``scale_by_adam``, ``add_decayed_weights``, ``scale_by_trust_ratio`` (min_norm 0,
trust coefficient 1), the learning rate, and ``mask`` (a pytree of bools like the parameters, or a
callable of them: the leaves that take the decay). A "layer" is a leaf of the parameter pytree in
JAX and a parameter tensor in torch. A schedule for weight_decay is not taken (TypeError; use
``optax.inject_hyperparams``). The state is ``exp_avg``, ``exp_avg_sq`` (optax: ``mu``, ``nu``).
torch.optim has no LAMB; ``dynopt.torch.Lamb(params, lr, betas, eps, eps_root, weight_decay)`` takes the
numeric hyperparameters with torch's name for the two decays, ``betas=(β₁, β₂)`` (as torch.optim.Adam and
timm; so ``OneCycleLR`` cycles β₁), and optax's defaults (lr 1e-3, eps 1e-6, weight_decay 0); for a mask give
the excluded tensors their own param group with weight_decay=0.

References:
    Y. You, J. Li, S. Reddi, J. Hseu, S. Kumar, S. Bhojanapalli, X. Song, J. Demmel, K. Keutzer,
    C.-J. Hsieh, "Large Batch Optimization for Deep Learning: Training BERT in 76 minutes",
    ICLR 2020, arXiv:1904.00962.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021 (the moment ODEs).
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, nonnegative, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import OPTAX_BETAS, beta_pair, betas_hyper, lr_hyper

REST = (
    Hyper("eps", 1e-6, "ε added to the root of the second moment", interval(0.0), label="epsilon value"),
    Hyper("eps_root", 0.0, "ε_root added to v̂ inside the root", interval(0.0)),
    Hyper("weight_decay", 0.0, "decoupled weight decay λ, added to the direction before the trust ratio", nonnegative),
)
HYPERS = (lr_hyper(1e-3), betas_hyper(formerly=OPTAX_BETAS), *REST)
FORMULA = "m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; u = m̂/(√v̂ + ε) + λθ; θ ← θ − lr·(‖θ‖/‖u‖)·u per tensor"


def trust_ratio(o, param, update, coefficient=1, eps=0):
    """Per parameter tensor: coefficient·‖θ‖/(‖u‖ + eps), and 1 where ‖θ‖ or ‖u‖ is 0 (optax's
    ``scale_by_trust_ratio`` with min_norm 0). A tree of one element per tensor (kept dims); the switch
    is arithmetic (both factors are exact where the norms are positive), so no select is needed."""
    p_norm = o.sqrt(o.sum_along(param * param, None))
    u_norm = o.sqrt(o.sum_along(update * update, None))
    keep = o.sign(p_norm) * o.sign(u_norm)  # 1 where both norms are positive, else 0
    other = 1 - keep
    return (coefficient * p_norm * keep + other) / ((u_norm + eps) * keep + other)


def layerwise_adam(o, hp, t, x):
    g, (beta1, beta2) = x.grad, beta_pair(hp)
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)g
    yield Relax("exp_avg_sq", beta2, g * g)  # v ← β₂v + (1 − β₂)g²
    mean = x.exp_avg / (1 - beta1**t)
    second = x.exp_avg_sq / (1 - beta2**t)
    update = mean / (o.sqrt(second + hp.eps_root) + hp.eps) + hp.weight_decay * x.param
    yield Drift("param", -hp.lr * (update * trust_ratio(o, x.param, update)))  # θ ← θ − lr·r·u


# dynopt.jax.lamb: optax.lamb's arguments in optax's order, mask (of the decay) included
OPTAX_LAMB = optax_args.view(
    "lamb", (optax_args.learning_rate(), optax_args.b1(), optax_args.b2(), *REST, optax_args.MASK), layerwise_adam,
    lambda hp: ("exp_avg", "exp_avg_sq"), spec_name="Lamb", formula=FORMULA, doc=__doc__,
    masks=(("mask", "weight_decay"),), needs_params=lambda hp: True)


lamb = register(
    from_statement(
        name="Lamb",
        hyperparams=HYPERS,
        state=lambda hp: ("exp_avg", "exp_avg_sq"),
        statement=layerwise_adam,
        scheme=SemiImplicitEuler(),
        formula=FORMULA,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: True,  # the trust ratio reads ‖θ‖
        ode="θ_ℓ' = −‖θ_ℓ‖·u_ℓ/‖u_ℓ‖, u = m̂ ⊘ (√v̂ + ε) + λθ, m' = c₁(∇L − m), v' = c₂(∇L² − v)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(OPTAX_LAMB,),
    )
)
