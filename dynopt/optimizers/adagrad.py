r"""Adagrad: the gradient flow preconditioned by the root of the accumulated squared gradients.

ODE (state θ and the sum s of squared forces; F = ∇L + λθ, −∇L + λθ when maximize). With the ODE
clock h = lr² and S = lr²·s (the time integral of F⊙F)::

    S' = F⊙F,      θ' = −F ⊘ ((1 + κτ)(√S + ε·lr)),      κ = lr_decay/lr²

As lr → 0 with κ and S(0) fixed this is θ' = −∇L ⊘ ((1 + κτ)√S), S' = ∇L⊙∇L: the AdaGrad ODE, the
limit the ODE method gives for Adagrad (Gadat & Gavra; Barakat & Bianchi's construction for Adam,
with the moving average replaced by the sum). It starts singular when S(0) = 0 (S ≈ F₀²τ, θ' ≈ −sign(F₀)/√τ,
an integrable singularity): the first steps move each coordinate by about lr whatever the
gradient's size. In the discrete variables (what the statement integrates)::

    h·s' = F⊙F,    h·θ' = −lr/(1 + (n − 1)·lr_decay) · F ⊘ (√s + ε),    n = τ/h

Scheme (torch.optim.Adagrad form; s₀ = initial_accumulator_value)::

    s_t = s_{t−1} + F⊙F
    θ_t = θ_{t−1} − lr/(1 + (t − 1)·lr_decay) · F ⊘ (√s_t + ε)

Hyperparameter map: h = lr² (step k at ODE time k·lr²), S = lr²·s, κ = lr_decay/lr², S(0) =
lr²·initial_accumulator_value. Order 1 (fitted in tests/test_ode.py with S(0) > 0): the squared
clock is what keeps θ' of order one, since after k steps √s grows like √k.

Conventions: ``dynopt.torch.Adagrad`` is a drop-in for ``torch.optim.Adagrad``: arguments (lr 1e-2,
lr_decay, weight_decay, initial_accumulator_value, eps 1e-10; ``maximize`` keyword-only), state
(``sum``) and numbers. Differences: torch creates the state when the optimizer is built, dynopt at
the first step (a torch.optim.Adagrad state_dict with step 0 loads and continues); torch's
``foreach`` is positional after eps, dynopt's keyword-only. Sparse gradients are stepped in their
dense form: the same numbers as torch's sparse path (an entry without gradient does not move and
keeps its sum), except that weight_decay, which torch refuses with a sparse gradient, applies to
every entry. ``optax.adagrad`` differs: ε inside the root (F/√(s + ε)), default
initial_accumulator_value 0.1 and eps 1e-7, and no lr_decay.

References:
    J. Duchi, E. Hazan, Y. Singer, "Adaptive Subgradient Methods for Online Learning and Stochastic
    Optimization", JMLR 12, 2011.
    S. Gadat and I. Gavra, "Asymptotic Study of Stochastic Adaptive Algorithm in Non-convex
    Landscape", JMLR 23(228), 2022 (Adagrad and RMSprop by the ODE method).
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021, arXiv:1810.02263.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, is_static_zero, nonnegative, register
from ..statement import Drift, from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, eps_hyper, force, lr_hyper


def initial_state(o, hp, param):
    return {"sum": o.zeros_like(param) + hp.initial_accumulator_value}


def accumulated_squares(o, hp, t, x):
    g = force(hp, x.grad, x.param)
    yield Drift("sum", g * g)  # s ← s + F²
    clr = hp.lr / (1 + (t - 1) * hp.lr_decay)
    yield Drift("param", -clr * g / (o.sqrt(x.sum) + hp.eps))  # θ ← θ − lr_t·F/(√s + ε)


def optax_initial_state(o, hp, param):
    return {"sum_of_squares": o.zeros_like(param) + hp.initial_accumulator_value}


def optax_accumulated_squares(o, hp, t, x):
    """optax.scale_by_rss: s ← s + |g|², θ ← θ − lr·g/√(s + ε) (0 where s = 0)."""
    g = x.grad
    yield Drift("sum_of_squares", optax_args.abs_sq(o, g))
    positive = o.sign(x.sum_of_squares)  # 1 where s > 0, 0 where s = 0 (optax: where(s > 0, rsqrt(s + ε), 0))
    inverse = positive / o.sqrt(x.sum_of_squares + hp.eps + (1 - positive))
    yield Drift("param", -hp.lr * (inverse * g))


OPTAX_ADAGRAD = optax_args.view(
    "adagrad",
    (optax_args.learning_rate(), Hyper("initial_accumulator_value", 0.1, "s₀, the starting sum of squares", nonnegative),
     optax_args.eps(1e-7, "ε added to the sum of squares inside the root")),
    optax_accumulated_squares, lambda hp: ("sum_of_squares",), spec_name="Adagrad", initial_state=optax_initial_state,
    formula="s ← s + g²; θ ← θ − lr·g/√(s + ε)", needs_params=lambda hp: False,
    doc="``dynopt.jax.adagrad``: optax.adagrad's arguments, defaults (initial_accumulator_value 0.1, eps 1e-7) and "
        "numbers: ε inside the root, no lr_decay. torch.optim.Adagrad's form is ``dynopt.torch.Adagrad``.\n\n" + __doc__)


adagrad = register(
    from_statement(
        name="Adagrad",
        hyperparams=(
            lr_hyper(1e-2),
            Hyper("lr_decay", 0.0, "lr_t = lr/(1 + (t − 1)·lr_decay)", nonnegative),
            WEIGHT_DECAY,
            Hyper("initial_accumulator_value", 0.0, "s₀, the starting value of the sum of squares", nonnegative),
            eps_hyper(1e-10, "ε added to the root of the sum of squares"),
            MAXIMIZE_KW,
        ),
        state=lambda hp: ("sum",),
        initial_state=initial_state,
        statement=accumulated_squares,
        scheme=SemiImplicitEuler(),
        formula="s ← s + g²; θ ← θ − lr/(1 + (t−1)·lr_decay)·g/(√s + ε)",
        time_step=lambda hp: hp.lr * hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        sparse_grads=True,  # an entry without gradient keeps θ and s, as torch's sparse path
        ode="θ' = −∇L ⊘ √S, S' = ∇L²",
        hyper_map="h = lr², S = lr²·s",
        doc=__doc__,
        optax=(OPTAX_ADAGRAD,),
    )
)
