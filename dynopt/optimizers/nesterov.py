r"""Nesterov momentum: the heavy-ball ODE with a look-ahead (gradient-corrected) scheme.

ODE (state θ and the buffer b; F(θ) = ∇L(θ) + λθ), the same as heavy ball at lowest order::

    θ'' + γ θ' + F(θ) = 0        i.e.  θ' = −h·b,   b' = (F(θ) − (1 − μ) b) / h

Scheme (torch.optim.SGD(nesterov=True) form)::

    b_t = μ b_{t−1} + F(θ_{t−1})
    θ_t = θ_{t−1} − lr · (F(θ_{t−1}) + μ b_t)

Two-step form: θ_{t+1} − θ_t = μ(θ_t − θ_{t−1}) − lr[g_t + μ(g_t − g_{t−1})]: heavy ball plus a
gradient-difference correction, which at O(h) adds Hessian damping. The modified ODE is
(1 − γh/2)θ'' + γθ' + h∇²L(θ)θ' + ∇L = 0.

Hyperparameter map: as heavy ball, lr = h², μ = 1 − γh, step k at ODE time k·√lr.
Order 1 against the heavy-ball ODE.

Conventions: equals ``torch.optim.SGD(params, lr, momentum=μ, nesterov=True)`` and
``optax.sgd(lr, momentum=μ, nesterov=True)``. Momentum must be in (0, 1): zero momentum is
rejected, as torch rejects nesterov without momentum. There is no dampening (torch requires
dampening 0 for Nesterov).

References:
    Y. Nesterov, "A method for solving the convex programming problem with convergence rate O(1/k²)", 1983.
    Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and momentum", ICML 2013.
    Su, Boyd, Candès, "A Differential Equation for Modeling Nesterov's Accelerated Gradient Method", 2014.
"""

from __future__ import annotations

from ..spec import Spec, is_static_zero, register
from ._common import MAXIMIZE, WEIGHT_DECAY, force, lr_hyper, momentum_hyper
from .momentum import heavy_ball_flow


def update(o, hp, t, grad, param, state):
    g = force(hp, grad, param)
    buffer = hp.momentum * state.momentum_buffer + g
    return -hp.lr * (g + hp.momentum * buffer), {"momentum_buffer": buffer}


def vector_field(o, hp, time, param, state, grad):
    return heavy_ball_flow(hp, state.momentum_buffer, force(hp, grad, param))


nesterov = register(
    Spec(
        name="Nesterov",
        hyperparams=(lr_hyper(1e-3), momentum_hyper(0.9, positive=True), WEIGHT_DECAY, MAXIMIZE),
        state=lambda hp: ("momentum_buffer",),
        update=update,
        vector_field=vector_field,
        time_step=lambda hp: hp.lr**0.5,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ'' + γθ' + ∇L(θ) = 0 (+ h∇²L θ' at next order)",
        scheme="look-ahead Euler: b ← μb + ∇L(θ); θ ← θ − lr·(∇L(θ) + μb)",
        hyper_map="lr = h², μ = 1 − γh",
        doc=__doc__,
    )
)
