r"""SGD, as torch.optim.SGD: the gradient flow, or with momentum the heavy-ball ODE.

One class, three ODEs, as torch.optim.SGD switches between them with ``momentum`` and ``nesterov``
(F(θ) = ∇L(θ) + λθ, −∇L(θ) + λθ when maximize):

``momentum=0`` (the default): the gradient flow, forward Euler with h = lr::

    ODE:    θ' = −F(θ)
    scheme: θ_t = θ_{t−1} − lr·F(θ_{t−1})

``momentum=μ > 0``: the heavy-ball ODE (:mod:`dynopt.optimizers.momentum`), semi-implicit Euler::

    ODE:    θ'' + γθ' + (1 − τ)F(θ) = 0,    i.e. θ' = −h·b,  b' = ((1 − τ)F − (1 − μ)b)/h
    scheme: b_t = μ b_{t−1} + (1 − τ)F(θ_{t−1})      (b_1 = F(θ_0), as torch)
            θ_t = θ_{t−1} − lr·b_t

``nesterov=True`` (μ > 0, τ = 0): the same ODE with Nesterov's look-ahead (:mod:`dynopt.optimizers.nesterov`)::

    scheme: b_t = μ b_{t−1} + F(θ_{t−1});   θ_t = θ_{t−1} − lr·(F(θ_{t−1}) + μ b_t)

  The look-ahead is written into the statement (θ's drift reads F + μ·b_new), so the statement's
  field is θ' = −h(F + μb): the heavy-ball field plus h²F, the same ODE at leading order. The
  named view ``Nesterov`` keeps the heavy-ball statement and steps it with the ``Lookahead`` scheme.

Hyperparameter map: h = lr without momentum (step k at ODE time k·lr); with momentum lr = h² and
μ = 1 − γh (step k at ODE time k·√lr). Order 1 in h in each case (fitted in tests/test_ode.py).
Without momentum, O(lr²) from the modified flow θ' = −∇(L + lr/4·‖∇L‖²) (implicit gradient
regularisation).

Modified equation (``modified_field``): without momentum, Euler's f̃ = f − (h/2) f′f::

    θ' = −F − (h/2) J_F F,      J_F = ∇²L + λI   (−∇²L + λI when maximize)

which for λ = 0 is θ' = −∇(L + (h/4)‖∇L‖²); with momentum, the heavy-ball and Nesterov modified
equations of :mod:`dynopt.optimizers.momentum` and :mod:`dynopt.optimizers.nesterov`.

Conventions: ``dynopt.torch.SGD`` is a drop-in for ``torch.optim.SGD``: the same arguments in the
same positions (``maximize`` keyword-only), defaults (lr 1e-3, momentum 0, dampening 0,
weight_decay 0, nesterov False), validation (momentum ≥ 0, weight_decay ≥ 0; nesterov needs
momentum > 0 and dampening 0: ValueError), state (``momentum_buffer`` only when momentum ≠ 0, plus
dynopt's ``step``; a torch.optim.SGD state_dict, which has no step counter, loads and resumes) and
sparse gradients (stepped in their dense form). As in torch, dampening is not applied to the first
buffer and has no effect when momentum is 0, and momentum ≥ 1 is accepted (negative friction).
In optax: ``optax.sgd(lr, momentum=μ or None, nesterov=...)`` (no dampening; chain
``optax.add_decayed_weights(λ)`` first for weight decay). ``Momentum`` and ``Nesterov`` are the
named ODE views of the momentum cases (momentum default 0.9).

References:
    H. Robbins and S. Monro, "A Stochastic Approximation Method", 1951.
    B. T. Polyak, "Some methods of speeding up the convergence of iteration methods", 1964.
    Sutskever, Martens, Dahl, Hinton, "On the importance of initialization and momentum", ICML 2013.
    Su Jianlin, "从动力学角度看优化算法 (一)", kexue.fm/archives/5655, 2018.
    Barrett & Dherin, "Implicit Gradient Regularization", ICLR 2021, arXiv:2009.11162.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, is_static_zero, nonnegative, register
from ..statement import Drift, Leak, from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, buffer_damping, force, force_jacobian, lr_hyper
from .momentum import modified_field as heavy_ball_modified_field
from .nesterov import modified_field as nesterov_modified_field


def plain(hp) -> bool:
    """No momentum buffer: momentum is a literal 0 (a traced 0 keeps the buffer, which then equals F)."""
    return is_static_zero(hp.momentum)


def gradient_flow(o, hp, t, x):
    f = force(hp, x.grad, x.param)
    if plain(hp):
        yield Drift("param", -hp.lr * f)  # θ ← θ − lr·F(θ)
        return
    damping = buffer_damping(hp, t)  # torch: b_1 = F, and no dampening without momentum
    yield Leak("momentum_buffer", hp.momentum, damping * f)  # b ← μb + (1 − τ)F(θ)
    if hp.nesterov:
        yield Drift("param", -hp.lr * (f + hp.momentum * x.momentum_buffer))  # θ ← θ − lr·(F + μb), the look-ahead
    else:
        yield Drift("param", -hp.lr * x.momentum_buffer)  # θ ← θ − lr·b


def modified_field(o, hp, time, grad, param, state, hvp):
    if not plain(hp):
        field = nesterov_modified_field if hp.nesterov else heavy_ball_modified_field
        return field(o, hp, time, grad, param, state, hvp)
    f = force(hp, grad, param)
    return -f - hp.lr / 2 * force_jacobian(hp, hvp, f), {}


def constraints(values):
    if values.get("nesterov") and "momentum" in values and values["momentum"] <= 0:
        return "nesterov", f"Nesterov momentum requires a momentum > 0, got momentum={values['momentum']!r}"
    if values.get("nesterov") and "dampening" in values and values["dampening"] != 0:
        return "nesterov", f"Nesterov momentum requires zero dampening, got dampening={values['dampening']!r}"
    return None


def optax_gradient_flow(o, hp, t, x):
    """optax.sgd: optax.trace when momentum is not None (b ← μb + g; nesterov: g + μb), then −lr."""
    g = x.grad
    if hp.momentum is None:
        yield Drift("param", -hp.lr * g)
        return
    yield Leak("trace", hp.momentum, g)
    yield Drift("param", -hp.lr * (g + hp.momentum * x.trace if hp.nesterov else x.trace))


OPTAX_SGD = optax_args.view(
    "sgd",
    (optax_args.learning_rate(), Hyper("momentum", None, "momentum μ (None: plain SGD, no buffer)", nonnegative),
     Hyper("nesterov", False, "Nesterov's look-ahead", static=True),
     Hyper("accumulator_dtype", None, "dtype of the momentum buffer (None: the parameters' dtype)", optax_args.ANY,
           static=True)),
    optax_gradient_flow, lambda hp: () if hp.momentum is None else ("trace",), spec_name="SGD",
    dtypes=(("accumulator_dtype", "trace"),), needs_params=lambda hp: False,
    formula="θ ← θ − lr·g; with momentum b ← μb + g, θ ← θ − lr·b (nesterov: θ ← θ − lr·(g + μb))",
    doc="``dynopt.jax.sgd``: optax.sgd's arguments and numbers (momentum=None: no buffer; accumulator_dtype; no "
        "dampening or weight decay: chain optax.add_decayed_weights). torch.optim.SGD's form is "
        "``dynopt.torch.SGD``.\n\n" + __doc__)


sgd = register(
    from_statement(
        name="SGD",
        hyperparams=(
            lr_hyper(1e-3),
            Hyper("momentum", 0.0, "momentum μ = 1 − γh (0: plain SGD, the gradient flow)", nonnegative),
            Hyper("dampening", 0.0, "dampening τ: the force enters the buffer as (1 − τ)F (not at the first step)",
                  Check(lambda x: x == x, "must be a number, not NaN")),  # torch.optim.SGD checks nothing more
            WEIGHT_DECAY,
            Hyper("nesterov", False, "Nesterov's look-ahead (needs momentum > 0 and dampening 0)", static=True),
            MAXIMIZE_KW,
        ),
        state=lambda hp: () if plain(hp) else ("momentum_buffer",),
        statement=gradient_flow,
        scheme=SemiImplicitEuler(),
        formula="θ ← θ − lr·∇L(θ); with momentum b ← μb + ∇L(θ), θ ← θ − lr·b (nesterov: θ ← θ − lr·(∇L + μb))",
        modified_field=modified_field,
        time_step=lambda hp: hp.lr if plain(hp) else hp.lr**0.5,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        constraints=constraints,
        counts_steps=lambda hp: False,  # t enters only as t > 1 (the first buffer)
        sparse_grads=True,
        ode="θ' = −∇L(θ); with momentum θ'' + γθ' + ∇L(θ) = 0",
        hyper_map="h = lr; with momentum lr = h², μ = 1 − γh",
        doc=__doc__,
        optax=(OPTAX_SGD,),
    )
)
