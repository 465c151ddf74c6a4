r"""SGD: forward Euler on the gradient flow.

ODE (state θ)::

    θ' = −F(θ),        F(θ) = ∇L(θ) + λθ   (−∇L(θ) + λθ when maximize)

Scheme: forward (explicit) Euler with step h = lr::

    θ_t = θ_{t−1} − lr · F(θ_{t−1})

Hyperparameter map: h = lr, so step k sits at ODE time t = k·lr. Order 1: the iterates stay
O(lr) from the flow on a fixed time interval, and O(lr²) from the modified flow
θ' = −∇(L + lr/4·‖∇L‖²) (implicit gradient regularisation).

Modified equation (``modified_field``; backward error analysis of Euler, f̃ = f − (h/2) f′f)::

    θ' = −F − (h/2) J_F F,      J_F = ∇²L + λI   (−∇²L + λI when maximize)

which for λ = 0 is θ' = −∇(L + (h/4)‖∇L‖²).

Conventions: identical to ``torch.optim.SGD(params, lr, weight_decay=λ, maximize=...)`` with
momentum 0, and to ``optax.sgd(learning_rate)`` (chain ``optax.add_decayed_weights(λ)`` first for
weight decay). State: only the step counter.

References:
    Su Jianlin, "从动力学角度看优化算法 (一)", kexue.fm/archives/5655, 2018.
    Barrett & Dherin, "Implicit Gradient Regularization", ICLR 2021, arXiv:2009.11162.
"""

from __future__ import annotations

from ..spec import Spec, is_static_zero, register
from ._common import MAXIMIZE, WEIGHT_DECAY, force, force_jacobian, lr_hyper


def update(o, hp, t, grad, param, state):
    return -hp.lr * force(hp, grad, param), {}


def vector_field(o, hp, time, param, state, grad):
    return -force(hp, grad, param), {}


def modified_field(o, hp, time, param, state, grad, hvp):
    f = force(hp, grad, param)
    return -f - hp.lr / 2 * force_jacobian(hp, hvp, f), {}


sgd = register(
    Spec(
        name="SGD",
        hyperparams=(lr_hyper(1e-3), WEIGHT_DECAY, MAXIMIZE),
        state=lambda hp: (),
        update=update,
        vector_field=vector_field,
        modified_field=modified_field,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ' = −∇L(θ)",
        scheme="forward Euler: θ ← θ − h∇L(θ)",
        hyper_map="h = lr",
        doc=__doc__,
    )
)
