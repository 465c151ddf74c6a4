r"""Lion (EvoLved Sign Momentum): a sign flow of an interpolated momentum, with decoupled weight decay.

ODE (state θ and the gradient average m; λ the weight decay)::

    m' = c₂ (∇L − m),                       c₂ = (1 − β₂)/h
    θ' = −sign(β₁ m + (1 − β₁) ∇L) − λθ

This is the continuous-time Lion of Chen, Liang, Liu and Liu (2024), Lion-𝒦 with 𝒦 = ‖·‖₁ (∇𝒦 =
sign), in optax's sign convention (their momentum is −m, their α = γ = c₂ and ε = (1 − β₁)/c₂, so
that their m̃ = m − ε(α∇L + γm) is −(β₁m + (1 − β₁)∇L)). They show that it decreases the Lyapunov
function H(θ, m) = αL(θ) + (γ/λ)𝒦*(λθ) + (1 − ελ)/(1 + εγ)·(𝒦*(λθ) + 𝒦(m) − λmᵀθ), with 𝒦* the
indicator of the box ‖θ‖∞ ≤ 1, and so solves the constrained problem

    min L(θ)   subject to   ‖θ‖∞ ≤ 1/λ.

In a first phase the box is reached: d/dt |θ_i| ≤ 1 − λ|θ_i|, so the excess of |θ_i| over 1/λ
decays at least like e^{−λt} and the box is invariant; then L is minimized inside it. The field is
discontinuous where β₁m + (1 − β₁)∇L has a zero coordinate (``smooth`` is False): between such
switches the iterates follow it at first order in h (the decay −λθ and the average m; the sign
step itself is exact); at a switch the flow is a sliding mode (Filippov). The discrete iterates
keep both properties exactly: |θ_t| ≤ (1 − lr·λ)|θ_{t−1}| + lr, so for lr·λ ≤ 1 the box is
invariant and the excess outside it shrinks by 1 − lr·λ per step (tests/test_zoo_optax_new.py).

Scheme (the direction from the old m, then m, then θ)::

    u_t = sign(β₁ m_{t−1} + (1 − β₁) g_t);     m_t = β₂ m_{t−1} + (1 − β₂) g_t
    θ_t = θ_{t−1} − lr·(u_t + λ θ_{t−1})

Hyperparameter map: h = lr, c₂ = (1 − β₂)/lr, β₁ fixed (an interpolation weight, not a rate),
λ the friction of θ; step k at ODE time k·lr.

Conventions: ``dynopt.jax.lion(learning_rate, b1, b2, mu_dtype, weight_decay, mask)`` equals
``optax.lion`` with the same arguments, positions and defaults (b1 0.9, b2 0.99, weight_decay 1e-3;
the decay is added to the sign step and scaled by the lr, as in optax and the paper): ``mu_dtype``
is the dtype the average is stored in, ``mask`` (a pytree of bools like the parameters, or a
callable of them) the leaves that take the decay. A schedule for ``weight_decay`` is not taken
(TypeError; use ``optax.inject_hyperparams``). The state is ``exp_avg`` (optax: ``mu``).
torch.optim has no Lion; ``dynopt.torch.Lion(params, lr, betas, weight_decay)`` takes the numeric
hyperparameters with torch's name for the two decays, ``betas=(β₁, β₂)`` (as torch.optim.Adam and the
PyTorch Lions of the paper's authors and of lion-pytorch; so ``OneCycleLR`` cycles β₁), and optax's defaults
(lr 1e-4, betas (0.9, 0.99), weight_decay 1e-3, where those PyTorch Lions default to no decay); a mask is a param
group with weight_decay=0; the state is in the parameter's dtype.

References:
    X. Chen, C. Liang, D. Huang, E. Real, K. Wang, Y. Liu, H. Pham, X. Dong, T. Luong,
    C.-J. Hsieh, Y. Lu, Q. V. Le, "Symbolic Discovery of Optimization Algorithms", NeurIPS 2023,
    arXiv:2302.06675.
    L. Chen, B. Liu, K. Liang, Q. Liu, "Lion Secretly Solves Constrained Optimization: As Lyapunov
    Predicts", ICLR 2024, arXiv:2310.05898.
    A. F. Filippov, "Differential Equations with Discontinuous Righthand Sides", Kluwer, 1988.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, is_static_zero, nonnegative, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import OPTAX_BETAS, SIGN_STEP_META, beta_pair, betas_hyper, lr_hyper

WEIGHT = interval(0.0, 1.0, high_open=False)  # [0, 1]
B1 = Hyper("b1", 0.9, "β₁: the weight of the average in the signed direction β₁m + (1 − β₁)g", WEIGHT)
B2 = Hyper("b2", 0.99, "β₂: decay of the gradient average m (c₂ = (1 − β₂)/h)", WEIGHT)
BETAS = betas_hyper((0.9, 0.99), "(β₁, β₂): the weight of the average in the signed direction β₁m + (1 − β₁)g, and "
                    "the decay of the gradient average m (c₂ = (1 − β₂)/h)", WEIGHT, formerly=OPTAX_BETAS)
WEIGHT_DECAY = Hyper("weight_decay", 1e-3, "decoupled weight decay λ: θ ← θ − lr·(u + λθ)", nonnegative)
FORMULA = "u ← sign(β₁m + (1−β₁)g); m ← β₂m + (1−β₂)g; θ ← θ − lr·(u + λθ)"


def sign_momentum(o, hp, t, x):
    beta1, beta2 = beta_pair(hp)
    direction = o.sign((1 - beta1) * x.grad + beta1 * x.exp_avg)  # from the old m, as optax and the paper
    yield Relax("exp_avg", beta2, x.grad)  # m ← β₂m + (1 − β₂)g
    yield Drift("param", -hp.lr * (direction + hp.weight_decay * x.param))  # θ ← θ − lr·(u + λθ)


def reads_params(hp):
    return not is_static_zero(hp.weight_decay)


# dynopt.jax.lion: optax.lion's arguments in optax's order, mu_dtype (the state's dtype) and mask (of the decay) included
OPTAX_LION = optax_args.view(
    "lion", (optax_args.learning_rate(), B1, B2, optax_args.MU_DTYPE, WEIGHT_DECAY, optax_args.MASK), sign_momentum,
    lambda hp: ("exp_avg",), spec_name="Lion", formula=FORMULA, doc=__doc__, dtypes=(("mu_dtype", "exp_avg"),),
    masks=(("mask", "weight_decay"),), needs_params=reads_params)


lion = register(
    from_statement(
        name="Lion",
        hyperparams=(lr_hyper(1e-4), BETAS, WEIGHT_DECAY),
        state=lambda hp: ("exp_avg",),
        statement=sign_momentum,
        scheme=SemiImplicitEuler(),
        formula=FORMULA,
        time_step=lambda hp: hp.lr,
        needs_params=reads_params,
        counts_steps=lambda hp: False,
        smooth=lambda hp: False,  # a sign flow
        decoupled_decay=lambda hp: True,  # θ ← θ − lr·(u + λθ): the decay beside the signed step
        ode="θ' = −sign(β₁m + (1 − β₁)∇L) − λθ, m' = c₂(∇L − m) (solves min L s.t. ‖θ‖∞ ≤ 1/λ)",
        hyper_map="h = lr, c₂ = (1 − β₂)/lr",
        doc=__doc__,
        optax=(OPTAX_LION,),
        meta_defaults=SIGN_STEP_META,
    )
)
