r"""Signum: signSGD on a moving average of the gradients (sign momentum).

ODE (state θ and the gradient average m)::

    m' = c (∇L − m),   c = (1 − β)/h
    θ' = −sign(m)

The parameters follow the sign flow of the averaged gradient: a sign flow with a first-order lag
filter in front of it. The field is discontinuous on the surfaces m_i = 0 (``smooth`` is False);
between sign changes of m the iterates follow the flow exactly in θ (a constant step) and at first
order in m; at a surface the flow is a sliding mode (Filippov) and what converges is, as for
signSGD (:mod:`dynopt.optimizers.sign_sgd`), the approach to the minimizer in finite time and the
O(h) chatter around it afterwards.

Scheme (semi-implicit Euler: m first, θ from the new m)::

    m_t = β m_{t−1} + (1 − β) g_t;     θ_t = θ_{t−1} − lr·sign(m_t)

Hyperparameter map: h = lr and c = (1 − β)/lr; step k at ODE time k·lr. The average is not
bias-corrected: its sign does not need it.

Conventions: ``dynopt.jax.signum(learning_rate, beta, accumulator_dtype)`` equals
``optax.signum`` with the same arguments (``optax.ema(beta, debias=False, accumulator_dtype)``,
``scale_by_sign``, the learning rate); ``accumulator_dtype`` is the dtype the average is stored in.
The state is ``exp_avg`` (optax: ``ema``). torch.optim has no Signum; ``dynopt.torch.Signum(params, lr,
momentum)`` takes torch's name for β, ``momentum`` (default 0.9; so ``OneCycleLR`` cycles it as it cycles
SGD's), lr default 1e-3, the average in the parameter's dtype.

References:
    J. Bernstein, Y.-X. Wang, K. Azizzadenesheli, A. Anandkumar, "signSGD: Compressed Optimisation
    for Non-Convex Problems", ICML 2018, arXiv:1802.04434 (Signum).
    A. F. Filippov, "Differential Equations with Discontinuous Righthand Sides", Kluwer, 1988.
"""

from __future__ import annotations

from dataclasses import replace

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, register, unit_interval
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import lr_hyper

BETA = Hyper("beta", 0.9, "decay β of the gradient average (c = (1 − β)/h)", unit_interval)
MOMENTUM = replace(BETA, name="momentum", formerly=("beta",))  # torch's name for it (dynopt.torch.Signum's beta before)
FORMULA = "m ← βm + (1−β)g; θ ← θ − lr·sign(m)"


def averaged_sign_flow(o, hp, t, x):
    beta = hp.momentum if hasattr(hp, "momentum") else hp.beta  # the spec's torch name, or the optax view's
    yield Relax("exp_avg", beta, x.grad)  # m ← βm + (1 − β)g
    yield Drift("param", -hp.lr * o.sign(x.exp_avg))  # θ ← θ − lr·sign(m)


# dynopt.jax.signum: optax.signum's arguments, accumulator_dtype (the average's dtype) included
OPTAX_SIGNUM = optax_args.view(
    "signum", (optax_args.learning_rate(), BETA, replace(optax_args.MU_DTYPE, name="accumulator_dtype",
                                                         doc="dtype of the average m (None: the parameters' dtype)")),
    averaged_sign_flow, lambda hp: ("exp_avg",), spec_name="Signum", formula=FORMULA, doc=__doc__,
    dtypes=(("accumulator_dtype", "exp_avg"),), needs_params=lambda hp: False)


signum = register(
    from_statement(
        name="Signum",
        hyperparams=(lr_hyper(1e-3), MOMENTUM),
        state=lambda hp: ("exp_avg",),
        statement=averaged_sign_flow,
        scheme=SemiImplicitEuler(),
        formula=FORMULA,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        counts_steps=lambda hp: False,
        smooth=lambda hp: False,  # a sign flow
        ode="θ' = −sign(m), m' = c(∇L − m)",
        hyper_map="h = lr, c = (1 − β)/lr",
        doc=__doc__,
        optax=(OPTAX_SIGNUM,),
    )
)
