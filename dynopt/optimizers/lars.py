r"""LARS: heavy-ball momentum on the gradient rescaled per parameter tensor by a trust ratio.

ODE (state θ and the buffer b; for each parameter tensor ("layer") ℓ separately; F = ∇L + λθ)::

    θ'' + γθ' + η ‖θ_ℓ‖ F_ℓ/(‖F_ℓ‖ + ε') = 0        (momentum μ = 1 − γh > 0)
    θ' = −η ‖θ_ℓ‖ F_ℓ/(‖F_ℓ‖ + ε')                   (momentum 0: a layer-wise normalized flow)

with η the trust coefficient (the ratio is 1 where ‖θ_ℓ‖ or ‖F_ℓ‖ is 0, and the force is F itself
when ``trust_ratio_mask`` is False). Each tensor is driven with a force of size η‖θ_ℓ‖, whatever its
gradient's scale: the heavy-ball ODE of :mod:`dynopt.optimizers.momentum` with a layer-wise
normalized force. The norms are reductions inside each parameter: in torch this optimizer always
runs on the reference path. The field is smooth away from θ_ℓ = 0 and F_ℓ = 0; order 1 (fitted
in tests/test_ode.py).

Scheme (optax's order; the buffer holds the lr-scaled steps, Sutskever's form)::

    u_t = g + λθ_{t−1}  (weight_decay_mask);   u_t ← r_t u_t,  r_t = η‖θ_{t−1}‖/(‖u_t‖ + ε)  (trust_ratio_mask)
    b_t = μ b_{t−1} + lr·u_t;   θ_t = θ_{t−1} − b_t       (nesterov: θ_t = θ_{t−1} − (lr·u_t + μ b_t))

Hyperparameter map: with momentum lr = h² and μ = 1 − γh (step k at ODE time k·√lr, b = h·θ');
momentum 0 (a literal 0): h = lr. The lr sits inside the buffer, so under a schedule this is optax's
form, not torch.optim.SGD's (which scales the whole buffer by the current lr); equal at constant lr.

Conventions: ``dynopt.jax.lars(learning_rate, weight_decay, weight_decay_mask, trust_coefficient,
eps, trust_ratio_mask, momentum, nesterov)`` equals ``optax.lars`` with the same arguments, in the
same positions, with the same defaults (0, True, 1e-3, 0, True, 0.9, False). The masks are taken as
bools only (True: every leaf, False: none); a pytree or callable mask is refused with a TypeError (in
JAX wrap with ``optax.masked``; in torch use param groups, e.g. weight_decay=0 for biases). A
schedule for weight_decay is not taken (use ``optax.inject_hyperparams``). The state is
``momentum_buffer`` (optax: ``trace``, which holds −b), absent when momentum is a literal 0.
torch.optim has no LARS; ``dynopt.torch.Lars`` takes the same hyperparameters (lr default 1.0,
the scale of the paper's base rates, which the trust coefficient 1e-3 multiplies).

References:
    Y. You, I. Gitman, B. Ginsburg, "Large Batch Training of Convolutional Networks", 2017,
    arXiv:1708.03888.
    I. Sutskever, J. Martens, G. Dahl, G. Hinton, "On the importance of initialization and momentum
    in deep learning", ICML 2013 (the buffer's form).
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, is_static_zero, nonnegative, register, unit_interval
from ..statement import Drift, Leak, from_statement
from ._common import lr_hyper
from .lamb import trust_ratio


def plain(hp) -> bool:
    """No momentum buffer: momentum is a literal 0."""
    return is_static_zero(hp.momentum)


def reads_params(hp) -> bool:
    return hp.trust_ratio_mask or (hp.weight_decay_mask and not is_static_zero(hp.weight_decay))


def layerwise_heavy_ball(o, hp, t, x):
    update = x.grad + hp.weight_decay * x.param if hp.weight_decay_mask else x.grad
    if hp.trust_ratio_mask:
        update = update * trust_ratio(o, x.param, update, hp.trust_coefficient, hp.eps)
    step = hp.lr * update
    if plain(hp):
        yield Drift("param", -step)  # θ ← θ − lr·r·u
        return
    yield Leak("momentum_buffer", hp.momentum, step)  # b ← μb + lr·r·u
    if hp.nesterov:
        yield Drift("param", -(step + hp.momentum * x.momentum_buffer))  # θ ← θ − (lr·r·u + μb)
    else:
        yield Drift("param", -x.momentum_buffer)  # θ ← θ − b


lars = register(
    from_statement(
        name="Lars",
        hyperparams=(
            lr_hyper(1.0),
            Hyper("weight_decay", 0.0, "weight decay λ, added to the gradient before the trust ratio", nonnegative),
            Hyper("weight_decay_mask", True, "apply the weight decay (a bool: every tensor or none)", static=True),
            Hyper("trust_coefficient", 0.001, "trust coefficient η: the step of a tensor is η·lr·‖θ‖", nonnegative),
            Hyper("eps", 0.0, "ε added to the norm of the direction in the trust ratio", interval(0.0),
                  label="epsilon value"),
            Hyper("trust_ratio_mask", True, "apply the trust ratio (a bool: every tensor or none)", static=True),
            Hyper("momentum", 0.9, "momentum μ = 1 − γh (0: no buffer)", unit_interval),
            Hyper("nesterov", False, "Nesterov's look-ahead: θ ← θ − (lr·r·u + μb)", static=True),
        ),
        state=lambda hp: () if plain(hp) else ("momentum_buffer",),
        statement=layerwise_heavy_ball,
        scheme=SemiImplicitEuler(),
        formula="u = g + λθ; r = η‖θ‖/(‖u‖ + ε) per tensor; b ← μb + lr·r·u; θ ← θ − b",
        time_step=lambda hp: hp.lr if plain(hp) else hp.lr**0.5,
        needs_params=reads_params,
        counts_steps=lambda hp: False,
        ode="θ'' + γθ' + η‖θ_ℓ‖F_ℓ/‖F_ℓ‖ = 0 per tensor (F = ∇L + λθ)",
        hyper_map="lr = h², μ = 1 − γh; momentum 0: h = lr",
        doc=__doc__,
    )
)
