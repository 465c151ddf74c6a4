r"""RMSprop: a preconditioned gradient flow with a second state variable.

ODE (state θ, the mean square v, and optionally the mean ḡ and the buffer b; F = ∇L + λθ)::

    v' = c (F⊙F − v),   c = (1 − α)/h          ḡ' = c (F − ḡ)            (centered only)
    θ' = −F ⊘ D,        D = √(v − ḡ²) + ε   (√(v − ḡ² + ε) with eps_in_sqrt)
    with momentum μ:    θ' = −b,  b' = (F ⊘ D − (1 − μ) b) / h

Scheme: partitioned Euler, v first and θ from the new v (torch.optim.RMSprop form)::

    v_t = α v_{t−1} + (1 − α) F⊙F;     D_t = √v_t + ε
    θ_t = θ_{t−1} − lr · F ⊘ D_t                   (momentum: b_t = μ b_{t−1} + F ⊘ D_t; θ_t = θ_{t−1} − lr·b_t)

Hyperparameter map: h = lr and c = (1 − α)/lr. With α fixed and lr → 0 the averages are fast
and the iterates follow θ' = −F ⊘ (|F| + ε), the sign-like flow; the coupled ODE above is the
limit with (1 − α)/lr fixed. Order 1. v_0 = 0 as in torch: the first step moves each
coordinate by about lr/√(1 − α).

Conventions:
    * Defaults are torch's (α = 0.99, ε = 1e-8 outside the square root): ``dynopt.torch.RMSprop``
      equals ``torch.optim.RMSprop`` for every setting of alpha, eps, weight_decay, momentum,
      centered and maximize.

    .. warning::
       optax.rmsprop differs by default: decay 0.9 and ε *inside* the square root. To reproduce
       ``optax.rmsprop(lr, decay=d, eps=e, centered=c, momentum=m)`` use
       ``dynopt.jax.rmsprop(lr, alpha=d, eps=e, eps_in_sqrt=True, centered=c, momentum=m)``.
       With momentum, optax keeps the lr inside the buffer (Sutskever form) while dynopt, like
       torch, applies the lr to the whole buffer: the two agree exactly for a constant lr and
       differ under a schedule.

References:
    T. Tieleman and G. Hinton, Lecture 6.5 RMSprop, COURSERA: Neural Networks for Machine Learning, 2012.
    A. Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (the centered form).
    Su Jianlin, "从动力学角度看优化算法 (二): 自适应学习率算法", kexue.fm/archives/6234, 2018.
"""

from __future__ import annotations

from ..spec import Hyper, Spec, interval, is_static_zero, register, unit_interval
from ._common import MAXIMIZE, WEIGHT_DECAY, force, lr_hyper, momentum_hyper, relax


def state(hp):
    names = ["square_avg"]
    if hp.centered:
        names.append("grad_avg")
    if not is_static_zero(hp.momentum):
        names.append("momentum_buffer")
    return tuple(names)


def scale(o, hp, variance):
    """D = √v + ε, or √(v + ε) with eps_in_sqrt."""
    return o.sqrt(variance + hp.eps) if hp.eps_in_sqrt else o.sqrt(variance) + hp.eps


def variance(hp, square_avg, grad_avg):
    return square_avg - grad_avg * grad_avg if hp.centered else square_avg


def update(o, hp, t, grad, param, state):
    g = force(hp, grad, param)
    new = {"square_avg": hp.alpha * state.square_avg + (1 - hp.alpha) * g * g}
    if hp.centered:
        new["grad_avg"] = hp.alpha * state.grad_avg + (1 - hp.alpha) * g
    step = g / scale(o, hp, variance(hp, new["square_avg"], new.get("grad_avg")))
    if "momentum_buffer" in state.__dict__:
        step = new["momentum_buffer"] = hp.momentum * state.momentum_buffer + step
    return -hp.lr * step, new


def vector_field(o, hp, time, param, state, grad):
    h = hp.lr
    g = force(hp, grad, param)
    rates = {"square_avg": relax(state.square_avg, g * g, hp.alpha, h)}
    if hp.centered:
        rates["grad_avg"] = relax(state.grad_avg, g, hp.alpha, h)
    direction = g / scale(o, hp, variance(hp, state.square_avg, getattr(state, "grad_avg", None)))
    if "momentum_buffer" in state.__dict__:
        rates["momentum_buffer"] = (direction - (1 - hp.momentum) * state.momentum_buffer) / h
        return -state.momentum_buffer, rates
    return -direction, rates


rmsprop = register(
    Spec(
        name="RMSprop",
        hyperparams=(
            lr_hyper(1e-2),
            Hyper("alpha", 0.99, "decay α of the mean square (c = (1 − α)/h)", unit_interval),
            Hyper("eps", 1e-8, "ε added to the root mean square", interval(0.0, low_open=False), label="epsilon value"),
            Hyper("eps_in_sqrt", False, "put ε inside the square root (optax/Keras/TF form)", static=True),
            WEIGHT_DECAY,
            momentum_hyper(0.0),
            Hyper("centered", False, "divide by the standard deviation √(v − ḡ²) instead of √v", static=True),
            MAXIMIZE,
        ),
        state=state,
        update=update,
        vector_field=vector_field,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ' = −∇L ⊘ (√v + ε), v' = c(∇L² − v)",
        scheme="partitioned Euler, v first: v ← αv + (1−α)g²; θ ← θ − lr·g/(√v + ε)",
        hyper_map="h = lr, c = (1 − α)/lr",
        doc=__doc__,
    )
)
