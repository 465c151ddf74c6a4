r"""Heavy-ball (Polyak) momentum: semi-implicit Euler on a damped Newtonian ODE.

ODE (state θ and the momentum buffer b; F(θ) = ∇L(θ) + λθ)::

    θ'' + γ θ' + (1 − τ) F(θ) = 0        i.e.  θ' = −h·b,   b' = ((1 − τ)F(θ) − (1 − μ) b) / h

Scheme (torch.optim.SGD form, t = 1, 2, …)::

    b_t = μ b_{t−1} + (1 − τ) F(θ_{t−1})      (b_1 = F(θ_0): torch's first buffer is the gradient)
    θ_t = θ_{t−1} − lr · b_t

Hyperparameter map: lr = h², μ = 1 − γh, so h = √lr and step k sits at ODE time t = k·√lr
(the "second-order" clock: one step advances √lr ≫ lr). The velocity is θ' = −h·b.
Order 1 in h against the ODE; O(h²) against the modified ODE (1 − γh/2)θ'' + γθ' + ∇L = 0
when the initial velocity is matched.

Modified equation (``modified_field``; Taylor expansion of the two-step form
θ_{n+1} − 2θ_n + θ_{n−1} + γh(θ_n − θ_{n−1}) = −h²(1 − τ)F(θ_n))::

    (1 − γh/2) θ'' + γ θ' + (1 − τ) F(θ) = O(h²)
    i.e.  θ' = −h·b,   b' = ((1 − τ)F − (1 − μ) b) / (h (1 + μ)/2)       (1 − γh/2 = (1 + μ)/2)

Matching the start: the discrete b_0 that puts θ_{−1} = θ_0 − lr·b_0 on the modified solution
through θ_0 with θ'(0) = 0 is b_0 = −F(θ_0)/(1 + μ) + O(h); the default b_0 = 0 (torch's
b_1 = g_1) costs O(h) even against the modified equation (both measured in tests/test_modified.py).

For fixed μ and lr → 0 the iterates instead follow the gradient flow θ' = −∇L/(1 − μ) on the
clock t = k·lr.

Conventions:
    * ``dynopt.torch.Momentum(params, lr, momentum=μ, dampening=τ)`` equals
      ``torch.optim.SGD(params, lr, momentum=μ, dampening=τ)`` including the first buffer b_1 = g_1.
    * ``dynopt.jax.momentum(lr, momentum=μ)`` equals ``optax.sgd(lr, momentum=μ)``; optax has no
      dampening (τ must be 0 to compare).
    * The lr multiplies the whole buffer (torch/optax form). Under a schedule this gives
      Δθ_t = (γ_t/γ_{t−1}) μ Δθ_{t−1} − γ_t g_t, unlike Sutskever/Keras (Δθ_t = μΔθ_{t−1} − γ_t g_t);
      the two agree for a constant lr.
    * As in torch, dampening has no effect when momentum is 0 (the step is then plain SGD).
    * The momentum default is 0.9 (torch's SGD defaults to 0, which would make this plain SGD).

References:
    B. T. Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
    Su Jianlin, "从动力学角度看优化算法 (一)", kexue.fm/archives/5655, 2018.
    Shi, Du, Jordan, Su, "Understanding the Acceleration Phenomenon via High-Resolution ODEs", 2018.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, is_static_zero, register, unit_interval
from ..statement import Drift, Leak, from_statement
from ._common import MAXIMIZE, WEIGHT_DECAY, buffer_damping, force, lr_hyper, momentum_hyper


def heavy_ball(o, hp, t, x):
    damping = buffer_damping(hp, t)  # torch: b_1 = F, and no dampening without momentum
    yield Leak("momentum_buffer", hp.momentum, damping * force(hp, x.grad, x.param))  # b ← μb + (1 − τ)F(θ)
    yield Drift("param", -hp.lr * x.momentum_buffer)  # θ ← θ − lr·b


def modified_heavy_ball_flow(hp, buffer, drive):
    """(1 − γh/2)θ'' + γθ' = −drive in buffer units: θ' = −h·b, b' = (drive − (1 − μ)b)/(h(1 + μ)/2), h = √lr."""
    h = hp.lr**0.5
    return -h * buffer, {"momentum_buffer": (drive - (1 - hp.momentum) * buffer) / h * (2 / (1 + hp.momentum))}


def modified_field(o, hp, time, grad, param, state, hvp):
    return modified_heavy_ball_flow(hp, state.momentum_buffer, (1 - hp.dampening) * force(hp, grad, param))


momentum = register(
    from_statement(
        name="Momentum",
        hyperparams=(
            lr_hyper(1e-3),
            momentum_hyper(0.9),
            Hyper("dampening", 0.0, "dampening τ: the force enters the buffer as (1 − τ)F", unit_interval),
            WEIGHT_DECAY,
            MAXIMIZE,
        ),
        state=lambda hp: ("momentum_buffer",),
        statement=heavy_ball,
        scheme=SemiImplicitEuler(),
        formula="b ← μb + ∇L(θ); θ ← θ − lr·b",
        modified_field=modified_field,
        time_step=lambda hp: hp.lr**0.5,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        implies={"nesterov": False},  # torch.optim.SGD(momentum=μ) is heavy ball with nesterov=False
        counts_steps=lambda hp: False,  # t enters only as t > 1 (the first buffer)
        sparse_grads=True,
        ode="θ'' + γθ' + ∇L(θ) = 0",
        hyper_map="lr = h², μ = 1 − γh",
        doc=__doc__,
    )
)
