r"""Nesterov momentum: the heavy-ball ODE with a look-ahead (gradient-corrected) scheme.

ODE (state θ and the buffer b; F(θ) = ∇L(θ) + λθ), the same as heavy ball at lowest order::

    θ'' + γ θ' + F(θ) = 0        i.e.  θ' = −h·b,   b' = (F(θ) − (1 − μ) b) / h

Scheme (torch.optim.SGD(nesterov=True) form)::

    b_t = μ b_{t−1} + F(θ_{t−1})
    θ_t = θ_{t−1} − lr · (F(θ_{t−1}) + μ b_t)

Two-step form: θ_{t+1} − θ_t = μ(θ_t − θ_{t−1}) − lr[g_t + μ(g_t − g_{t−1})]: heavy ball plus a
gradient-difference correction, which at O(h) adds Hessian damping. The modified ODE is
(1 − γh/2)θ'' + γθ' + h∇²L(θ)θ' + ∇L = 0.

Modified equation (``modified_field``; F_n − F_{n−1} = h J_F θ' + O(h²) in the two-step form)::

    (1 − γh/2) θ'' + γ θ' + h J_F(θ) θ' + F(θ) = O(h²)
    i.e.  θ' = −h·b,   b' = (F − (1 − μ) b − lr·J_F b) / (h (1 + μ)/2)

J_F = ∇²L + λI. Without the Hessian-damping term h J_F θ' the error stays O(h). Matching the
start: θ_{−1} on the modified solution gives b_0 = −((θ_0 − θ_{−1})/lr + F(θ_{−1}))/μ ≈ −3F(θ_0)/(2μ)
for θ'(0) = 0 (the two-step form needs both θ_{−1} and F(θ_{−1})).

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

from ..schemes import Lookahead
from ..spec import is_static_zero, register
from ..statement import from_statement
from ._common import MAXIMIZE, WEIGHT_DECAY, force, force_jacobian, lr_hyper, momentum_hyper
from .momentum import heavy_ball, modified_heavy_ball_flow


def modified_field(o, hp, time, grad, param, state, hvp):
    buffer = state.momentum_buffer
    drive = force(hp, grad, param) - hp.lr * force_jacobian(hp, hvp, buffer)  # θ' = −h·b: h J_F θ' = −lr J_F b
    return modified_heavy_ball_flow(hp, buffer, drive)


nesterov = register(
    from_statement(
        name="Nesterov",
        hyperparams=(lr_hyper(1e-3), momentum_hyper(0.9, positive=True), WEIGHT_DECAY, MAXIMIZE),
        state=lambda hp: ("momentum_buffer",),
        statement=heavy_ball,  # the heavy-ball ODE; only the scheme differs
        scheme=Lookahead(),
        formula="b ← μb + ∇L(θ); θ ← θ − lr·(μb + ∇L(θ))",
        modified_field=modified_field,
        time_step=lambda hp: hp.lr**0.5,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        implies={"nesterov": True, "dampening": 0},  # torch.optim.SGD(momentum=μ, nesterov=True)
        counts_steps=lambda hp: False,
        sparse_grads=True,
        ode="θ'' + γθ' + ∇L(θ) = 0 (+ h∇²L θ' at next order)",
        hyper_map="lr = h², μ = 1 − γh",
        doc=__doc__,
    )
)
