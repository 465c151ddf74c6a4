r"""ASGD: averaged SGD, a decaying-step gradient flow with its Polyak–Ruppert average as an auxiliary ODE.

ODE (state θ, the averaged iterate a = ``ax``, and the step η and averaging rate μ that torch.optim
keeps per parameter; F = ∇L + λ_wθ, −∇L + λ_wθ when maximize; n = time/h, τ₀ = h·t0)::

    θ' = −g(τ)·(F + λθ),              g(τ) = (1 + λτ)^{−α}            (η_n = lr·g(nh))
    a' = (θ − a)/max(h, τ − τ₀)        i.e.  a = θ until τ₀, then ((τ − τ₀)·a)' = θ

The first equation is a gradient flow with an extra friction λθ and a step that decays like
τ^{−α} (α ∈ (1/2, 1] is the Robbins–Monro regime); the second is the Polyak–Ruppert average
a(τ) = (1/(τ − τ₀))∫_{τ₀}^{τ} θ, written as an auxiliary ODE (Polyak & Juditsky): it does not feed
back into θ. Before τ₀ it tracks θ at rate 1/h (a = θ in the limit).

Scheme (torch.optim.ASGD form; η₁ = lr, μ₁ = 1)::

    θ_t = θ_{t−1}(1 − λη_t) − η_t F
    a_t = a_{t−1} + μ_t (θ_t − a_{t−1})            (a_t = θ_t while μ_t = 1)
    η_{t+1} = lr/(1 + λ·lr·t)^α,   μ_{t+1} = 1/max(1, t − t0)

Hyperparameter map: h = lr, λ and α as they are, τ₀ = t0·lr; step k at ODE time k·lr. Order 1
(fitted in tests/test_ode.py with t0 = τ₀/h).

Conventions: ``dynopt.torch.ASGD`` is a drop-in for ``torch.optim.ASGD``: arguments (lr 1e-2, lambd
1e-4, alpha 0.75, t0 1e6, weight_decay; torch's positional ``foreach``, ``maximize``,
``differentiable`` and ``capturable`` are keyword-only), state (``eta``, ``mu``, 0-dim tensors per
parameter, and ``ax``) and numbers. As in torch, η_{t+1} is computed with the lr of step t, so under
a scheduler the step lags the schedule by one step. Precision: torch keeps ``eta`` and ``mu`` in its
default scalar dtype (float32 unless ``torch.set_default_dtype(torch.float64)``), which rounds the
step size itself; dynopt keeps them in the parameter's precision (at least float32), as torch does
after loading a state_dict. With float64 parameters the two agree to 1e-12 when torch's default
dtype is float64, to about 1e-7 when it is float32. There is no ASGD in optax.

References:
    B. T. Polyak and A. B. Juditsky, "Acceleration of Stochastic Approximation by Averaging",
    SIAM J. Control Optim. 30(4), 1992.
    L. Bottou, "Stochastic Gradient Descent Tricks", Neural Networks: Tricks of the Trade, 2012
    (the step schedule lr/(1 + λ·lr·t)^α).
    H. J. Kushner and G. G. Yin, "Stochastic Approximation and Recursive Algorithms and
    Applications", Springer, 2003 (the ODE method for decaying steps and averaging).
"""

from __future__ import annotations

import math

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, register
from ..statement import Drift, Relax, from_statement
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, force, lr_hyper

REAL = Check(lambda x: x == x, "must be a number, not NaN")  # torch.optim.ASGD checks nothing more


def averaged_gradient_flow(o, hp, t, x):
    g = force(hp, x.grad, x.param)
    eta = o.select(t == 1, hp.lr, x.eta)  # η₁ = lr (torch creates the state with the lr of the first step)
    yield Drift("param", -hp.lambd * eta * x.param - eta * g)  # θ ← θ(1 − λη) − ηF
    yield Relax("ax", 1 - x.mu, x.param)  # a ← a + μ(θ_t − a), the new θ (Gauss–Seidel): a ← θ_t exactly while μ = 1
    yield Relax("eta", 0, hp.lr / (1 + hp.lambd * hp.lr * t) ** hp.alpha)  # η_{t+1} (decay 0 assigns)
    yield Relax("mu", 0, 1 / o.clip(t - hp.t0, 1.0, math.inf))  # μ_{t+1} = 1/max(1, t − t0)


asgd = register(
    from_statement(
        name="ASGD",
        hyperparams=(
            lr_hyper(1e-2),
            Hyper("lambd", 1e-4, "λ: the decay of the step η_t = lr/(1 + λ·lr·t)^α, and the friction λθ", REAL),
            Hyper("alpha", 0.75, "α: the power of the step's decay", REAL),
            Hyper("t0", 1e6, "the step at which averaging starts", REAL),
            WEIGHT_DECAY,
            MAXIMIZE_KW,
        ),
        state=lambda hp: ("ax",),
        scalars=lambda hp: {"eta": hp.lr if isinstance(hp.lr, (int, float)) else 0.0, "mu": 1.0},  # η₁ is read from lr at step 1
        scalars_per_param=True,  # torch.optim.ASGD: eta and mu per parameter
        statement=averaged_gradient_flow,
        scheme=SemiImplicitEuler(),
        formula="θ ← θ(1 − λη) − ηg; a ← a + μ(θ − a); η ← lr/(1 + λ·lr·t)^α; μ ← 1/max(1, t − t0)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: True,  # the friction λθ (λ = lambd > 0 by default)
        scalable_step=False,  # η = lr/(1 + λ·lr·t)^α, and the average a of the iterates: the meta step runs it at lr·s
        ode="θ' = −(1 + λt)^{−α}(∇L + λθ), a' = (θ − a)/(t − t₀) (Polyak–Ruppert average)",
        hyper_map="h = lr, t₀ = t0·lr",
        doc=__doc__,
    )
)
