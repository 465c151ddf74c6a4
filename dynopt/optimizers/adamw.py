r"""AdamW: Adam with decoupled weight decay.

ODE (state θ, m, v as Adam's; F = ±∇L, without the decay; n = time/h)::

    m' = c₁ (F − m),   v' = c₂ (F⊙F − v),    c_i = (1 − β_i)/h
    θ' = −m̂ ⊘ (√v̂ + ε) − λθ

The decay is a linear friction on θ beside the preconditioned flow, not a force inside the moments
(coupled L2, Adam's ``weight_decay``), so its strength does not depend on the gradient scale.

Scheme (torch.optim.AdamW form)::

    θ ← θ(1 − lr·λ);   m_t = β₁ m_{t−1} + (1 − β₁) F;   v_t = β₂ v_{t−1} + (1 − β₂) F⊙F
    θ_t = θ − lr/(1 − β₁ᵗ) · m_t ⊘ (√v_t / √(1 − β₂ᵗ) + ε)        (amsgrad: √ of max(w, v_t))

Hyperparameter map: h = lr, c_i = (1 − β_i)/lr, λ the friction of θ; step k at ODE time k·lr.
Order 1 (fitted in tests/test_ode.py).

Conventions: ``dynopt.torch.AdamW`` is a drop-in for ``torch.optim.AdamW`` (weight_decay default
1e-2, amsgrad, ``maximize`` keyword-only), and equals ``dynopt.torch.Adam(...,
decoupled_weight_decay=True)``. Its param groups carry ``decoupled_weight_decay=True``, so
torch.optim.AdamW and Adam load its state_dict; an Adam state_dict (``decoupled_weight_decay=False``)
is refused with a ValueError naming the flag (torch.optim.AdamW would silently switch it on).
optax: ``optax.adamw(lr, b1, b2, eps, weight_decay=λ)``, which also scales the decay by the lr;
optax's default weight_decay is 1e-4, torch's and dynopt's 1e-2.

References:
    I. Loshchilov and F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv:1711.05101.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021, arXiv:1810.02263.
"""

from __future__ import annotations

from dataclasses import replace

from ..schemes import SemiImplicitEuler
from ..spec import is_static_zero, register
from ..statement import from_statement
from . import _optax as optax_args
from ._common import MAXIMIZE_KW, WEIGHT_DECAY, betas_hyper, eps_hyper, lr_hyper
from .adam import ADAM_ARGUMENTS, AMSGRAD, OPTAX_DOC, moments, optax_moments, state


def decoupled_moments(o, hp, t, x):
    yield from moments(o, hp, t, x, True)


def adamw_view(name: str, nesterov: bool):
    """optax.adamw, or optax.nadamw with ``nesterov=True``: λθ added to Adam's direction before the lr, on the leaves
    ``mask`` selects."""
    note = "λθ added to Adam's direction, then times −lr; mask" + ("; nesterov=True" if nesterov else "")
    return optax_args.view(
        name, (*ADAM_ARGUMENTS, optax_args.weight_decay(1e-4), optax_args.MASK,
               optax_args.NESTEROV_KW if not nesterov else replace(optax_args.NESTEROV_KW, default=True)),
        optax_moments, lambda hp: ("mu", "nu"), spec_name="NAdamW" if nesterov else "AdamW",
        dtypes=(("mu_dtype", "mu"),), masks=(("mask", "weight_decay"),),
        formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·(m̂/(√(v̂ + ε_root) + ε) + λθ)",
        doc=OPTAX_DOC.format(name=name, note=note, torch="AdamW", spec="adamw") + __doc__)


adamw = register(
    from_statement(
        name="AdamW",
        hyperparams=(
            lr_hyper(1e-3),
            betas_hyper(),
            eps_hyper(1e-8),
            replace(WEIGHT_DECAY, default=1e-2, doc="decoupled weight decay λ: θ ← θ(1 − lr·λ) each step"),
            AMSGRAD,
            MAXIMIZE_KW,
        ),
        state=state,
        statement=decoupled_moments,
        scheme=SemiImplicitEuler(),
        formula="θ ← θ(1 − lr·λ); m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·m̂/(√v̂ + ε)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        implies={"decoupled_weight_decay": True},  # torch.optim.AdamW writes it; an Adam state_dict is refused
        group_keys=("amsgrad", "decoupled_weight_decay"),
        smooth=lambda hp: not hp.amsgrad,  # AMSGrad's running maximum
        ode="θ' = −m̂ ⊘ (√v̂ + ε) − λθ, m' = c₁(∇L − m), v' = c₂(∇L² − v)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(adamw_view("adamw", False), adamw_view("nadamw", True)),
    )
)
