"""Pieces of maths that several optimizer definitions share."""

from __future__ import annotations

from dataclasses import replace

from ..spec import Hyper, interval, is_static_zero, nonnegative, unit_interval
from ..tree import ZERO

__all__ = ["force", "force_jacobian", "relax", "lr_hyper", "momentum_hyper", "WEIGHT_DECAY", "MAXIMIZE", "MAXIMIZE_KW",
           "DECOUPLED", "betas_hyper", "beta_pair", "OPTAX_BETAS", "eps_hyper", "moment_force", "decoupled_decay"]


def lr_hyper(default: float) -> Hyper:
    return Hyper("lr", default, "learning rate γ (the step of the discretization)", nonnegative, label="learning rate")


WEIGHT_DECAY = Hyper("weight_decay", 0.0, "coupled L2 penalty λ: the force becomes ∇L + λθ", nonnegative)
MAXIMIZE = Hyper("maximize", False, "ascend instead of descend: the force becomes −∇L", static=True)
MAXIMIZE_KW = replace(MAXIMIZE, keyword_only=True)  # torch.optim puts maximize after `*`
DECOUPLED = Hyper("decoupled_weight_decay", False, "decoupled (AdamW) weight decay: θ ← θ(1 − lr·λ) beside the step, "
                  "instead of the L2 force λθ inside the moments", static=True)


# dynopt.meta_step's defaults over Lion and Rprop (Spec.meta_defaults). Their steps have a fixed size per coordinate
# whatever the gradient's, so the scale's alignment (the cosine of the gradient with the trace of the steps) stays
# small: about −0.01 for Rprop on minibatches, +0.01 … +0.08 for Lion once its step is too large. With the generic
# meta_lr = 0.07 and initial_scale = 0.01 the scale moved too slowly for issue 13's criteria on minibatch digits
# (Rprop: worst gap 0.138 > 0.1; Lion: 1.88× its best-tuned MLP loss > 1.2×); these pass them (README, "Meta-learned
# step size"; tests/test_meta_step.py).
SIGN_STEP_META = {"meta_lr": 0.4, "initial_scale": 0.03}


def betas_hyper(default=(0.9, 0.999), doc: str = "decays (β₁, β₂) of the two moments", check=unit_interval,
                formerly: tuple[str, ...] = ()) -> Hyper:
    return Hyper("betas", default, doc, check, length=2, formerly=formerly)


OPTAX_BETAS = ("b1", "b2")  # the names of the optax-zoo optimizers' betas in dynopt.torch before it took torch's


def beta_pair(hp):
    """(β₁, β₂): torch's ``betas`` of a spec, or optax's ``b1`` and ``b2`` of its optax view (one statement serves
    both)."""
    return tuple(hp.betas) if hasattr(hp, "betas") else (hp.b1, hp.b2)


def eps_hyper(default: float, doc: str = "ε added to the root of the second moment") -> Hyper:
    return Hyper("eps", default, doc, interval(0.0), label="epsilon value")


def moment_force(hp, grad, param, decoupled=None):
    """The force the moments average: ±∇L, plus the coupled L2 term λθ unless the decay is decoupled."""
    decoupled = getattr(hp, "decoupled_weight_decay", False) if decoupled is None else decoupled
    if decoupled:
        return -grad if getattr(hp, "maximize", False) else grad
    return force(hp, grad, param)


def decoupled_decay(hp, param, decoupled=None):
    """−lr·λ·θ, the decoupled (AdamW) decay of one step (torch: θ ← θ(1 − lr·λ)), or ZERO (free to add) when coupled."""
    decoupled = getattr(hp, "decoupled_weight_decay", False) if decoupled is None else decoupled
    return -hp.lr * (hp.weight_decay * param) if decoupled else ZERO  # λθ first: a float32 scheduled lr times λ would round


def momentum_hyper(default: float, *, positive: bool = False) -> Hyper:
    check = interval(0.0, 1.0, low_open=positive)
    return Hyper("momentum", default, "momentum μ = 1 − γh (γ is the friction of the ODE)", check)


def force(hp, grad, param):
    """The force F(θ) = ±∇L(θ) + λθ that drives every optimizer (torch order: negate, then decay).

    ``grad`` is ∇L at ``param``; ``hp.maximize`` flips its sign, ``hp.weight_decay`` adds the
    coupled L2 term, exactly as torch.optim applies ``maximize`` and ``weight_decay``.
    """
    g = -grad if getattr(hp, "maximize", False) else grad
    return g + getattr(hp, "weight_decay", 0) * param


def relax(average, target, decay, h):
    """Continuous form of the moving average ``a ← decay·a + (1 − decay)·x``: ȧ = (1 − decay)/h · (x − a)."""
    return (1 - decay) / h * (target - average)


def force_jacobian(hp, hvp, v):
    """J_F·v for the force F = ±∇L + λθ: ±∇²L·v + λv (``hvp`` is the Hessian-vector product of L)."""
    hv = hvp(v)
    return (-hv if getattr(hp, "maximize", False) else hv) + getattr(hp, "weight_decay", 0) * v


def buffer_damping(hp, t):
    """torch's (1 − τ) on the force entering the momentum buffer: none at the first step (b_1 = F) or without
    momentum, and a literal τ = 0 is no factor at all (with t a tensor, as in a compiled step, the product would
    otherwise stay a multiplication by 1 in the loop)."""
    dampening = getattr(hp, "dampening", 0)
    return 1 if is_static_zero(dampening) else 1 - dampening * (t > 1) * (hp.momentum != 0)
