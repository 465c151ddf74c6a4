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
       optax.rmsprop differs by default: decay 0.9 and ε *inside* the square root, and with momentum
       it keeps the lr inside the buffer (Sutskever form) while torch applies the lr to the whole
       buffer (the same numbers for a constant lr, not under a schedule). ``dynopt.jax.rmsprop`` is
       optax's (``decay``, ``eps_in_sqrt=True``, ``initial_scale``, ``momentum=None``, ``nesterov``,
       ``bias_correction``: the optax view below); ``dynopt.torch.RMSprop`` is torch's, and
       ``eps_in_sqrt=True`` there gives optax's ε placement.

References:
    T. Tieleman and G. Hinton, Lecture 6.5 RMSprop, COURSERA: Neural Networks for Machine Learning, 2012.
    A. Graves, "Generating Sequences With Recurrent Neural Networks", 2013 (the centered form).
    Su Jianlin, "从动力学角度看优化算法 (二): 自适应学习率算法", kexue.fm/archives/6234, 2018.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, is_static_zero, register, unit_interval
from ..statement import Drift, Leak, Relax, from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, force, lr_hyper, momentum_hyper


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


def preconditioned_flow(o, hp, t, x):
    g = force(hp, x.grad, x.param)
    yield Leak("square_avg", hp.alpha, (1 - hp.alpha) * g * g)  # v ← αv + (1 − α)F², rounded as torch.optim does
    if hp.centered:
        yield Relax("grad_avg", hp.alpha, g)  # ḡ ← αḡ + (1 − α)F
    variance = x.square_avg - x.grad_avg * x.grad_avg if hp.centered else x.square_avg
    direction = g / scale(o, hp, variance)
    if "momentum_buffer" in state(hp):
        yield Leak("momentum_buffer", hp.momentum, direction)  # b ← μb + F/D
        direction = x.momentum_buffer
    yield Drift("param", -hp.lr * direction)  # θ ← θ − lr·(F/D or b)


def optax_state(hp):
    return ("nu",) + (("mu",) if hp.centered else ()) + (("trace",) if hp.momentum is not None else ())


def optax_initial_state(o, hp, param):
    zeros = o.zeros_like(param)
    return {"nu": zeros + hp.initial_scale, **{name: zeros for name in optax_state(hp)[1:]}}


def optax_preconditioned_flow(o, hp, t, x):
    """optax.rmsprop: scale_by_rms (or scale_by_stddev when centered), then −lr, then optax.trace (momentum)."""
    g = x.grad
    yield Relax("nu", hp.decay, optax_args.abs_sq(o, g))  # v ← ρv + (1 − ρ)|g|²
    nu = x.nu / (1 - hp.decay**t) if hp.bias_correction else x.nu
    if hp.centered:
        yield Relax("mu", hp.decay, g)  # ḡ ← ρḡ + (1 − ρ)g
        mu = x.mu / (1 - hp.decay**t) if hp.bias_correction else x.mu
        nu = nu - optax_args.abs_sq(o, mu)
    scaling = 1 / o.sqrt(nu + hp.eps) if hp.eps_in_sqrt else 1 / (o.sqrt(nu) + hp.eps)
    step = -hp.lr * (scaling * g)
    if hp.momentum is not None:  # optax.trace of the lr-scaled step: b ← μb − lr·g/D (the lr inside the buffer)
        yield Leak("trace", hp.momentum, step)
        step = step + hp.momentum * x.trace if hp.nesterov else x.trace
    yield Drift("param", step)


OPTAX_RMSPROP = optax_args.view(
    "rmsprop",
    (optax_args.learning_rate(), Hyper("decay", 0.9, "decay ρ of the mean square", unit_interval),
     optax_args.eps(1e-8, "ε added to the mean square inside the root (eps_in_sqrt) or to the root"),
     Hyper("initial_scale", 0.0, "v₀, the starting mean square", interval(0.0)),
     Hyper("eps_in_sqrt", True, "ε inside the square root", static=True),
     Hyper("centered", False, "divide by the standard deviation √(v − ḡ²)", static=True),
     Hyper("momentum", None, "momentum μ of optax.trace over the lr-scaled step (None: no momentum)", interval(0.0)),
     Hyper("nesterov", False, "Nesterov's form of the momentum", static=True),
     Hyper("bias_correction", False, "bias-correct the moving averages", static=True)),
    optax_preconditioned_flow, optax_state, spec_name="RMSprop", initial_state=optax_initial_state,
    needs_params=lambda hp: False, formula="v ← ρv + (1−ρ)g²; θ ← θ − lr·g/√(v + ε) (momentum: b ← μb − lr·g/√(v + ε))",
    doc="``dynopt.jax.rmsprop``: optax.rmsprop's arguments, defaults and numbers: decay 0.9, ε inside the root "
        "(eps_in_sqrt=True), initial_scale, centered, momentum (None: none) on the lr-scaled step, nesterov, "
        "bias_correction. torch.optim.RMSprop's form (α = 0.99, ε outside the root) is ``dynopt.torch.RMSprop``.\n\n"
        + __doc__)


rmsprop = register(
    from_statement(
        name="RMSprop",
        hyperparams=(
            lr_hyper(1e-2),
            Hyper("alpha", 0.99, "decay α of the mean square (c = (1 − α)/h)", unit_interval),
            Hyper("eps", 1e-8, "ε added to the root mean square", interval(0.0, low_open=False), label="epsilon value"),
            Hyper("eps_in_sqrt", False, "put ε inside the square root (optax/Keras/TF form)", static=True,
                  keyword_only=True),  # not in torch.optim.RMSprop: positional calls bind as there
            WEIGHT_DECAY,
            momentum_hyper(0.0),
            Hyper("centered", False, "divide by the standard deviation √(v − ḡ²) instead of √v", static=True),
            MAXIMIZE_KW,
        ),
        state=state,
        statement=preconditioned_flow,
        scheme=SemiImplicitEuler(),
        formula="v ← αv + (1−α)g²; θ ← θ − lr·g/(√v + ε)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ' = −∇L ⊘ (√v + ε), v' = c(∇L² − v)",
        hyper_map="h = lr, c = (1 − α)/lr",
        doc=__doc__,
        optax=(OPTAX_RMSPROP,),
    )
)
