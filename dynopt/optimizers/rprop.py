r"""Rprop: a sign flow whose per-coordinate speeds grow while the gradient keeps its sign.

ODE (state θ, the step sizes s and the previous gradient p; g = ∇L, −∇L when maximize). With the
ODE clock h = lr, s = h·σ and the etas η₋ = 1 − b·h, η₊ = 1 + a·h::

    θ_i' = −σ_i · sign(g_i)                         (a sign flow with per-coordinate speeds σ)
    σ_i' = a·σ_i  while g_i keeps its sign,  σ_i ← η₋σ_i (and θ_i pauses one step) where it flips,
    σ clipped to [s_min, s_max]/h

For the signed gradient the flow is non-smooth: away from the surfaces g_i = 0 it is the smooth
ODE above (the statement's field, with p relaxing to the gradient in time h), and the iterates
follow it at first order (fitted in tests/test_ode.py on an ascent, where no sign changes). On a
surface g_i = 0 the flow is a sliding mode (Filippov): the discrete iterates chatter across it
within about one step size (each flip multiplies s_i by η₋, each agreement by η₊), so what
converges as h → 0 is not a trajectory but the time at which each coordinate reaches its surface
and the distance to it afterwards, both O(h) (tests/test_ode.py tests both).

Scheme (torch.optim.Rprop form; s₀ = lr, p₀ = 0)::

    σ = sign(g ⊙ p_{t−1});   s_t = clip(s_{t−1} ⊙ (η₊ where σ > 0, η₋ where σ < 0, 1 where σ = 0), s_min, s_max)
    g̃ = g with the entries where σ < 0 set to 0
    θ_t = θ_{t−1} − s_t ⊙ sign(g̃);   p_t = g̃

Hyperparameter map: h = lr (the initial step size; torch.optim.Rprop reads lr only when it creates
the state, so a scheduler has no effect), s = h·σ, log η₊ ≈ a·h, log η₋ ≈ −b·h, step k at ODE time
k·lr. With the default etas (0.5, 1.2) the speeds change by O(1) factors per step: the ODE is the
limit of small eta steps, a smoothed view of Rprop.

Conventions: ``dynopt.torch.Rprop`` is a drop-in for ``torch.optim.Rprop``: arguments (lr 1e-2,
etas (0.5, 1.2) with 0 < etaminus < 1 < etaplus (ValueError otherwise), step_sizes (1e-6, 50);
``maximize`` keyword-only), state (``prev``, ``step_size``) and numbers. The three-way factor is
formed arithmetically from σ ∈ {−1, 0, 1} (exact), not by masked assignment. A non-finite
gradient: torch's sign(NaN) is 0 and sign(±inf) is ±1, so in torch (as in torch.optim.Rprop) the
coordinate pauses or takes one bounded step and stays finite; NumPy's and JAX's sign(NaN) is NaN,
so there it becomes NaN. ``optax.rprop`` is a
different variant (among other things it does not change or clip the step size where σ = 0).

References:
    M. Riedmiller and H. Braun, "A Direct Adaptive Method for Faster Backpropagation Learning: The
    RPROP Algorithm", IEEE ICNN 1993.
    L. Balles and P. Hennig, "Dissecting Adam: The Sign, Magnitude and Variance of Stochastic
    Gradients", ICML 2018, arXiv:1705.07774 (sign-based methods).
    A. F. Filippov, "Differential Equations with Discontinuous Righthand Sides", Kluwer, 1988.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, SIGN_STEP_META, lr_hyper


def initial_state(o, hp, param):
    zeros = o.zeros_like(param)
    return {"prev": zeros, "step_size": zeros + hp.lr}  # torch: full_like(p, lr) when the state is created


def resilient_sign_flow(o, hp, t, x):
    g = -x.grad if hp.maximize else x.grad
    eta_minus, eta_plus = hp.etas
    smallest, largest = hp.step_sizes
    agree = o.sign(g * x.prev)  # σ ∈ {−1, 0, 1}
    size = o.abs(agree)
    grow, flip = (size + agree) / 2, (size - agree) / 2  # [σ > 0], [σ < 0], exactly
    factor = eta_plus * grow + eta_minus * flip + (1 - size)
    yield Relax("step_size", 0, o.minimum(o.maximum(x.step_size * factor, smallest), largest))  # s ← clip(s·η): assigns
    kept = g * (1 - flip)  # the gradient, zero where its sign flipped
    yield Relax("prev", 0, kept)  # p ← g̃
    yield Drift("param", -o.sign(kept) * x.step_size)  # θ ← θ − s·sign(g̃)


def constraints(values):
    etas = values.get("etas")
    if etas is not None and not 0.0 < etas[0] < 1.0 < etas[1]:
        return "etas", "must satisfy 0 < etaminus < 1 < etaplus"
    return None


def optax_initial_state(o, hp, param):
    zeros = o.zeros_like(param)
    return {"step_sizes": zeros + hp.lr, "prev_updates": zeros}  # optax: full_like(params, learning_rate), unclipped


def optax_resilient_sign_flow(o, hp, t, x):
    """optax.scale_by_rprop: a step size changes (and is clipped) only where g·p ≠ 0; p ← s·sign(g), and the step
    applies the p of the previous step (optax 0.2.8: the first step moves nothing), 0 where the sign flipped."""
    g = x.grad
    agree = o.sign(g * x.prev_updates)  # σ ∈ {−1, 0, 1}
    size = o.abs(agree)
    grow, flip = (size + agree) / 2, (size - agree) / 2  # [σ > 0], [σ < 0], exactly
    scaled = x.step_sizes * (hp.eta_plus * grow + hp.eta_minus * flip)
    clipped = o.minimum(o.maximum(scaled, hp.min_step_size), hp.max_step_size)
    yield Relax("step_sizes", 0, size * clipped + (1 - size) * x.step_sizes)  # kept where σ = 0 (decay 0 assigns)
    previous = x.prev_updates
    yield Relax("prev_updates", 0, (1 - flip) * (x.step_sizes * o.sign(g)))  # p ← s·sign(g), 0 where the sign flipped
    yield Drift("param", -((1 - flip) * previous))  # optax applies the previous p (0 where the sign flipped)


OPTAX_RPROP = optax_args.view(
    "rprop",
    (optax_args.learning_rate(),
     Hyper("eta_minus", 0.5, "step-size factor after a sign flip", interval(0.0, 1.0, low_open=True)),
     Hyper("eta_plus", 1.2, "step-size factor after an agreement", interval(1.0, low_open=True)),
     Hyper("min_step_size", 1e-6, "the smallest step size", interval(0.0)),
     Hyper("max_step_size", 50.0, "the largest step size", interval(0.0))),
    optax_resilient_sign_flow, lambda hp: ("step_sizes", "prev_updates"), spec_name="Rprop",
    initial_state=optax_initial_state, needs_params=lambda hp: False,
    formula="σ = sign(g·p); s ← clip(s·η(σ)) where σ ≠ 0; θ ← θ − p·[σ ≥ 0]; p ← s·sign(g)·[σ ≥ 0]",
    doc="``dynopt.jax.rprop``: optax.rprop's arguments (eta_minus, eta_plus, min_step_size, max_step_size; the "
        "learning rate is the initial step size) and numbers: a step size is clipped only when it changes. "
        "torch.optim.Rprop's form is ``dynopt.torch.Rprop``.\n\n" + __doc__)


rprop = register(
    from_statement(
        name="Rprop",
        hyperparams=(
            lr_hyper(1e-2),
            Hyper("etas", (0.5, 1.2), "(η₋, η₊): step-size factors after a sign flip and after an agreement",
                  interval(0.0, low_open=True), length=2, label="eta values"),
            Hyper("step_sizes", (1e-6, 50), "(s_min, s_max): the bounds of the step sizes", length=2),
            MAXIMIZE_KW,
        ),
        state=lambda hp: ("prev", "step_size"),
        initial_state=initial_state,
        statement=resilient_sign_flow,
        scheme=SemiImplicitEuler(),
        formula="s ← clip(s·η(sign(g·p))); θ ← θ − s·sign(g̃); p ← g̃ (g̃ = 0 where the sign flipped)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        constraints=constraints,
        smooth=lambda hp: False,  # a sign flow
        ode="θ' = −σ ⊙ sign(∇L), (log σ)' = a while sign(∇L) holds (a sign flow)",
        hyper_map="h = lr, s = h·σ, η± = 1 ± O(h)",
        doc=__doc__,
        optax=(OPTAX_RPROP,),
        meta_defaults=SIGN_STEP_META,
    )
)
