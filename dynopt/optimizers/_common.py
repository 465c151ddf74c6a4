"""Pieces of maths that several optimizer definitions share."""

from __future__ import annotations

from ..spec import Hyper, interval, nonnegative

__all__ = ["force", "force_jacobian", "relax", "lr_hyper", "momentum_hyper", "WEIGHT_DECAY", "MAXIMIZE"]


def lr_hyper(default: float) -> Hyper:
    return Hyper("lr", default, "learning rate γ (the step of the discretization)", nonnegative, label="learning rate")


WEIGHT_DECAY = Hyper("weight_decay", 0.0, "coupled L2 penalty λ: the force becomes ∇L + λθ", nonnegative)
MAXIMIZE = Hyper("maximize", False, "ascend instead of descend: the force becomes −∇L", static=True)


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
