r"""Adadelta: a preconditioned flow whose step carries the units of θ, from two moving averages.

ODE (state θ, the mean square v of the force and the mean square u of the steps; F = ∇L + λθ,
−∇L + λθ when maximize)::

    v' = c (F⊙F − v),     u' = c (Δ⊙Δ − u),     θ' = −Δ,      c = (1 − ρ)/h
    Δ = √(u + ε) ⊘ √(v + ε) ⊙ F

The ratio √(u + ε)/√(v + ε) gives Δ the units of θ (Zeiler's "unit correction"): the step is a
moving RMS of past steps divided by a moving RMS of gradients. It is the same construction as
the ODEs of RMSprop and Adam (fast moving averages as relaxation equations; Barakat & Bianchi,
da Silva & Gazeau), with a second average fed by the flow itself; we know of no paper that
studies Adadelta's ODE on its own.

Scheme (torch.optim.Adadelta form; semi-implicit: v first, Δ from the new v and the old u)::

    v_t = ρ v_{t−1} + (1 − ρ) F⊙F
    Δ_t = √(u_{t−1} + ε) ⊘ √(v_t + ε) ⊙ F
    u_t = ρ u_{t−1} + (1 − ρ) Δ_t⊙Δ_t
    θ_t = θ_{t−1} − lr·Δ_t

Hyperparameter map: h = lr, c = (1 − ρ)/lr; step k at ODE time k·lr. With ρ fixed and lr → 0 the
averages are fast. Order 1 (fitted in tests/test_ode.py from averages started at F₀²). From the
default start u = v = 0 the field has u ≡ v, Δ = F, while the first steps see v ≈ c·h·F² against
u = 0 (Δ ≈ √ε/√(chF² + ε)·F): the iterates reach the asymptotic regime only for h ≪ ε/(c·F²).

Conventions: ``dynopt.torch.Adadelta`` is a drop-in for ``torch.optim.Adadelta``: arguments (lr 1.0,
rho 0.9 in [0, 1], eps 1e-6, weight_decay; ``maximize`` keyword-only, torch's positional ``foreach``
keyword-only), state (``square_avg``, ``acc_delta``) and numbers. ``optax.adadelta(lr, rho, eps)``
is the same rule (no weight decay: chain ``optax.add_decayed_weights`` first).

References:
    M. D. Zeiler, "ADADELTA: An Adaptive Learning Rate Method", 2012, arXiv:1212.5701.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021.
    A. Belotto da Silva and M. Gazeau, "A General System of Differential Equations to Model First-Order
    Adaptive Algorithms", JMLR 21, 2020, arXiv:1810.13108.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, is_static_zero, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, eps_hyper, force, lr_hyper


def unit_corrected_flow(o, hp, t, x):
    g = force(hp, x.grad, x.param)
    yield Relax("square_avg", hp.rho, g * g)  # v ← ρv + (1 − ρ)F²
    delta = o.sqrt(x.acc_delta + hp.eps) / o.sqrt(x.square_avg + hp.eps) * g  # Δ = √(u + ε)/√(v + ε)·F
    yield Relax("acc_delta", hp.rho, delta * delta)  # u ← ρu + (1 − ρ)Δ²
    yield Drift("param", -hp.lr * delta)  # θ ← θ − lr·Δ


def optax_unit_corrected_flow(o, hp, t, x):
    """optax.adadelta: g ← g + λθ (on the leaves weight_decay_mask selects), then optax.scale_by_adadelta, then −lr."""
    g = x.grad
    if not is_static_zero(hp.weight_decay):
        g = g + hp.weight_decay * x.param
    yield Relax("e_g", hp.rho, optax_args.abs_sq(o, g))
    delta = o.sqrt(x.e_x + hp.eps) / o.sqrt(x.e_g + hp.eps) * g
    yield Relax("e_x", hp.rho, optax_args.abs_sq(o, delta))
    yield Drift("param", -hp.lr * delta)


def _adadelta_learning_rate(arguments):
    """optax: learning_rate=None applies no scaling (the update is +Δ); as lr that is −1."""
    lr = arguments.pop("learning_rate")
    return {"lr": -1.0 if lr is None else lr, **arguments}


OPTAX_ADADELTA = optax_args.view(
    "adadelta",
    (optax_args.learning_rate(None),
     Hyper("rho", 0.9, "decay ρ of both moving averages", interval(0.0, 1.0, high_open=False)),
     optax_args.eps(1e-6, "ε added inside both roots"),
     optax_args.weight_decay(0.0, "weight decay λ: λθ added to the gradient"),
     Hyper("weight_decay_mask", None, "pytree of bools (or params -> pytree) of the leaves that take weight decay",
           optax_args.ANY, static=True)),
    optax_unit_corrected_flow, lambda hp: ("e_g", "e_x"), spec_name="Adadelta",
    masks=(("weight_decay_mask", "weight_decay"),), to_spec=_adadelta_learning_rate,
    formula="v ← ρv + (1−ρ)g²; Δ = √(u + ε)/√(v + ε)·g; u ← ρu + (1−ρ)Δ²; θ ← θ − lr·Δ",
    doc="``dynopt.jax.adadelta``: optax.adadelta's arguments (learning_rate=None: no scaling, as optax), defaults and "
        "numbers. torch.optim.Adadelta's form is ``dynopt.torch.Adadelta``.\n\n" + __doc__)


adadelta = register(
    from_statement(
        name="Adadelta",
        hyperparams=(
            lr_hyper(1.0),
            Hyper("rho", 0.9, "decay ρ of both moving averages (c = (1 − ρ)/h)", interval(0.0, 1.0, high_open=False)),
            eps_hyper(1e-6, "ε added inside both roots"),
            WEIGHT_DECAY,
            MAXIMIZE_KW,
        ),
        state=lambda hp: ("square_avg", "acc_delta"),
        statement=unit_corrected_flow,
        scheme=SemiImplicitEuler(),
        formula="v ← ρv + (1−ρ)g²; Δ = √(u + ε)/√(v + ε)·g; u ← ρu + (1−ρ)Δ²; θ ← θ − lr·Δ",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="θ' = −Δ, Δ = √(u + ε)/√(v + ε)·∇L, v' = c(∇L² − v), u' = c(Δ² − u)",
        hyper_map="h = lr, c = (1 − ρ)/lr",
        doc=__doc__,
        optax=(OPTAX_ADADELTA,),
    )
)
