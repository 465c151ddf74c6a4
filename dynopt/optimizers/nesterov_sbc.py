r"""Nesterov's accelerated gradient with the (k − 1)/(k + 2) momentum schedule (Su–Boyd–Candès).

Scheme (Su, Boyd, Candès 2016, eq. (2); x_0 = y_0 = θ_0, k = 1, 2, …; F = ∇L + λθ)::

    x_k = y_{k−1} − s·F(y_{k−1})
    y_k = x_k + (k − 1)/(k + 2) · (x_k − x_{k−1})

The parameter holds y (the point where the gradient is taken); the state is the look-ahead
offset d = y − x, so that x_{k−1} = y_{k−1} − d_{k−1} and::

    d_k = (k − 1)/(k + 2) · (d_{k−1} − s·F(y_{k−1})),     y_k = y_{k−1} − s·F(y_{k−1}) + d_k

(d_0 = 0; algebraically the same iterates as the x/y form). The momentum runs from 0 towards 1:
nothing is constant, and the step count k is part of the method.

ODE (Su–Boyd–Candès), time t = k·√s::

    X'' + (3/t) X' + F(X) = 0,   X(0) = θ_0,  X'(0) = 0

over (θ, d) with d ≈ √s·X' (d_k − d_{k−1} ≈ √s·(x_k − x_{k−1}) − …; y − x = (k − 1)/(k + 2)·(x_k − x_{k−1})
≈ √s X')::

    θ' = d/h,   d' = −(3/t) d − h F(θ),      h = √s

At t = 0 the friction 3/t is singular but the solution is not: X' ≈ X''(0)·t, so
(3/t)X' → 3X''(0) and X''(0) + 3X''(0) + F(θ_0) = 0, i.e. X''(0) = −F(θ_0)/4; the field uses
d'(0) = h·X''(0) = −h F(θ_0)/4 there. For L = λx²/2 the solution is the Bessel function
X(t) = x_0·2J₁(√λ t)/(√λ t).

Hyperparameter map: s = lr, h = √lr, step k at ODE time k·√lr. Su–Boyd–Candès prove
max_{k ≤ T/√s} ‖x_k − X(k√s)‖ → 0; the parameter y_k = x_k + O(√s) is also O(√s) from X(k√s)
(first order in h = √s, measured in ``tests/test_modified.py``).

Conventions: no torch.optim or optax counterpart (torch's and optax's Nesterov use a constant
momentum: :mod:`dynopt.optimizers.nesterov`). The step counter k is the optimizer's own
(``state["step"]`` in torch, the count in optax), so the schedule restarts when the optimizer
is rebuilt. The state is ``lookahead`` (d = y − x); x_k = θ − d.

References:
    Y. Nesterov, "A method for solving the convex programming problem with convergence rate O(1/k²)", 1983.
    W. Su, S. Boyd, E. J. Candès, "A Differential Equation for Modeling Nesterov's Accelerated
    Gradient Method: Theory and Insights", JMLR 17, 2016 (NeurIPS 2014), arXiv:1503.01243.
"""

from __future__ import annotations

from ..spec import Spec, is_static_zero, register
from ._common import MAXIMIZE, WEIGHT_DECAY, force, lr_hyper


def update(o, hp, t, grad, param, state):
    step = -hp.lr * force(hp, grad, param)  # x_k − y_{k−1}
    lookahead = (t - 1.0) / (t + 2.0) * (state.lookahead + step)  # floats: an integer count divides in float32 in JAX
    return step + lookahead, {"lookahead": lookahead}


def vector_field(o, hp, time, grad, param, state):
    h = hp.lr**0.5
    f = force(hp, grad, param)
    if time > 0:  # the ODE clock is a concrete float here, never a traced hyperparameter
        rate = -3 / time * state.lookahead - h * f
    else:  # the limit t → 0: d'(0) = h·X''(0) = −h F(θ_0)/4
        rate = -h / 4 * f
    return state.lookahead / h, {"lookahead": rate}


nesterov_sbc = register(
    Spec(
        name="NesterovSBC",
        hyperparams=(lr_hyper(1e-3), WEIGHT_DECAY, MAXIMIZE),
        state=lambda hp: ("lookahead",),
        update=update,
        vector_field=vector_field,
        time_step=lambda hp: hp.lr**0.5,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        ode="X'' + (3/t)X' + ∇L(X) = 0, X'(0) = 0 (X''(0) = −∇L(X₀)/4)",
        scheme="x ← y − s∇L(y); y ← x + (k−1)/(k+2)·(x − x_prev)",
        hyper_map="s = lr, t = k·√s",
        doc=__doc__,
        jax_name="nesterov_sbc",
        # dynopt.meta_step's first scale: the momentum (k−1)/(k+2) runs on the step count from the first step, so a
        # warm-up from s₀ = 0.01 spends the low-momentum steps at tiny steps (minibatch MLP on digits, worst loss over
        # lr 1e-4 … 1: 1.30× the base's best with s₀ = 0.01, 1.14× with 0.1; README, "Meta-learned step size")
        meta_defaults={"initial_scale": 0.1},
    )
)

__all__ = ["nesterov_sbc"]
