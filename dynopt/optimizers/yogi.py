r"""Yogi: Adam whose second moment moves by an additive, sign-controlled step instead of a relaxation.

ODE (state θ, the first moment m and the second moment v; n = time/h)::

    m' = c₁ (∇L − m),   v' = −c₂ sign(v − ∇L²) ⊙ ∇L²,    c_i = (1 − β_i)/h
    θ' = −m̂ ⊘ (√v̂ + ε),   m̂ = m / (1 − β₁ⁿ),   v̂ = v / (1 − β₂ⁿ)

Where Adam relaxes v toward ∇L² at a rate proportional to |v − ∇L²| (v' = c₂(∇L² − v)), Yogi moves
v toward ∇L² at the rate c₂∇L², whatever the gap: a large v decays slowly (the effective learning
rate cannot jump up), a small one grows as fast as Adam's. The field is discontinuous on the
surfaces v_i = ∇_iL² (``smooth`` is False); away from them the iterates follow it at first order
(fitted in tests/test_ode.py from v₀ above ∇L², where the sign stays +1), on them v chatters
within O(h·c₂∇L²) of ∇L² (a sliding mode, Filippov).

Scheme (semi-implicit Euler in optax's order; m₀ = v₀ = 1e-6 as optax initialises them)::

    m_t = β₁ m_{t−1} + (1 − β₁) g;     v_t = v_{t−1} − (1 − β₂) sign(v_{t−1} − g²) g²
    θ_t = θ_{t−1} − lr · m̂_t ⊘ (√v̂_t + ε),   m̂_t = m_t/(1 − β₁ᵗ),  v̂_t = v_t/(1 − β₂ᵗ)

Hyperparameter map: h = lr, c_i = (1 − β_i)/lr; step k at ODE time k·lr.

Conventions: ``dynopt.jax.yogi(learning_rate, b1, b2, eps)`` equals ``optax.yogi`` with the same
arguments and defaults (b1 0.9, b2 0.999, eps 1e-3; optax's alias fixes eps_root = 0 and the
initial accumulators 1e-6, and so does dynopt). The state is ``exp_avg`` and ``exp_avg_sq``
(optax: ``mu``, ``nu``). torch.optim has no Yogi; ``dynopt.torch.Yogi(params, lr, betas, eps)`` takes
torch's name for the two decays, ``betas=(β₁, β₂)`` (as torch.optim.Adam; so ``OneCycleLR`` cycles β₁), and
optax's defaults (lr 1e-2, the paper's; eps 1e-3).

References:
    M. Zaheer, S. J. Reddi, D. Sachan, S. Kale, S. Kumar, "Adaptive Methods for Nonconvex
    Optimization", NeurIPS 2018.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021 (the moment ODEs).
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, register, unit_interval
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import OPTAX_BETAS, beta_pair, betas_hyper, lr_hyper

B2 = Hyper("b2", 0.999, "β₂: v moves by (1 − β₂)·g² per step (c₂ = (1 − β₂)/h)", unit_interval)
EPS = Hyper("eps", 1e-3, "ε added to √v̂", interval(0.0), label="epsilon value")
FORMULA = "m ← β₁m + (1−β₁)g; v ← v − (1−β₂)·sign(v − g²)·g²; θ ← θ − lr·m̂/(√v̂ + ε)"
INITIAL = 1e-6  # optax.scale_by_yogi's initial_accumulator_value, which optax.yogi does not expose


def initial_state(o, hp, param):
    start = o.zeros_like(param) + INITIAL
    return {"exp_avg": start, "exp_avg_sq": start}


def additive_moments(o, hp, t, x):
    g, (beta1, beta2) = x.grad, beta_pair(hp)
    square = g * g
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)g
    yield Drift("exp_avg_sq", -(1 - beta2) * o.sign(x.exp_avg_sq - square) * square)  # v ← v − (1 − β₂)sign(v − g²)g²
    mean = x.exp_avg / (1 - beta1**t)
    second = x.exp_avg_sq / (1 - beta2**t)
    yield Drift("param", -hp.lr * (mean / (o.sqrt(second) + hp.eps)))  # θ ← θ − lr·m̂/(√v̂ + ε)


# dynopt.jax.yogi: optax.yogi's arguments in optax's order (b1 and b2 apart)
OPTAX_YOGI = optax_args.view(
    "yogi", (optax_args.learning_rate(), optax_args.b1(), B2, EPS), additive_moments, lambda hp: ("exp_avg", "exp_avg_sq"),
    spec_name="Yogi", formula=FORMULA, doc=__doc__, initial_state=initial_state, needs_params=lambda hp: False)


yogi = register(
    from_statement(
        name="Yogi",
        hyperparams=(
            lr_hyper(1e-2),
            betas_hyper((0.9, 0.999), "decays (β₁, β₂): of the first moment, and v moves by (1 − β₂)·g² per step "
                        "(c_i = (1 − β_i)/h)", formerly=OPTAX_BETAS),
            EPS,
        ),
        state=lambda hp: ("exp_avg", "exp_avg_sq"),
        initial_state=initial_state,
        statement=additive_moments,
        scheme=SemiImplicitEuler(),
        formula=FORMULA,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        smooth=lambda hp: False,  # the sign in v's step
        ode="θ' = −m̂ ⊘ (√v̂ + ε), m' = c₁(∇L − m), v' = −c₂·sign(v − ∇L²)·∇L²",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(OPTAX_YOGI,),
    )
)
