r"""signSGD: forward Euler on the sign gradient flow, the steepest descent flow of the ℓ∞ norm.

ODE (state θ alone)::

    θ' = −sign(∇L(θ))

Each coordinate moves at unit speed against its partial derivative: the steepest descent flow for
the ℓ∞ norm, d/dt L = −‖∇L‖₁. The field is discontinuous on the surfaces ∂L/∂θ_i = 0, so it is
not smooth (``smooth`` is False) and trajectories are understood in Filippov's sense: on a surface
the flow slides along it. What converges is the finite-time convergence of the flow (Cortés 2006):
for L μ-strongly convex, d/dt (L − L*) ≤ −‖∇L‖₂ ≤ −√(2μ(L − L*)), so the flow reaches the minimizer
by T* ≤ √(2(L(θ₀) − L*)/μ) and stays there. The discrete iterates follow the flow exactly between
sign changes (the step is constant there, so Euler is exact) and, after about T*/h steps, chatter
in an O(h) neighbourhood of the minimizer (each coordinate overshoots by at most one step);
tests/test_zoo_optax_new.py measures both on a quadratic.

Scheme (forward Euler)::

    θ_t = θ_{t−1} − lr·sign(g_t)

Hyperparameter map: h = lr, step k at ODE time k·lr.

Conventions: ``dynopt.jax.sign_sgd(learning_rate)`` equals ``optax.sign_sgd(learning_rate)``
(``scale_by_sign`` then the learning rate; no state but the count). sign(0) = 0: a coordinate
whose gradient is exactly 0 does not move. torch.optim has no signSGD; ``dynopt.torch.SignSGD``
takes the same hyperparameters (lr default 1e-3). No weight decay or maximize, as in optax: chain
``optax.add_decayed_weights`` first in JAX.

References:
    J. Bernstein, Y.-X. Wang, K. Azizzadenesheli, A. Anandkumar, "signSGD: Compressed Optimisation
    for Non-Convex Problems", ICML 2018, arXiv:1802.04434.
    J. Cortés, "Finite-time convergent gradient flows with applications to network consensus",
    Automatica 42(11), 2006.
    A. F. Filippov, "Differential Equations with Discontinuous Righthand Sides", Kluwer, 1988.
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import register
from ..statement import Drift, from_statement
from ._common import lr_hyper


def sign_flow(o, hp, t, x):
    yield Drift("param", -hp.lr * o.sign(x.grad))  # θ ← θ − lr·sign(g)


sign_sgd = register(
    from_statement(
        name="SignSGD",
        jax_name="sign_sgd",
        hyperparams=(lr_hyper(1e-3),),
        state=lambda hp: (),
        statement=sign_flow,
        scheme=SemiImplicitEuler(),
        formula="θ ← θ − lr·sign(g)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        counts_steps=lambda hp: False,
        smooth=lambda hp: False,  # a sign flow
        ode="θ' = −sign(∇L) (the ℓ∞ steepest-descent flow; finite-time convergence)",
        hyper_map="h = lr",
        doc=__doc__,
    )
)
