r"""Adafactor: a preconditioned flow whose second moment is a factored (rank-one) estimate, with relative step sizes.

ODE (state θ; for a parameter of rank ≥ 2 the row and column factors R and C of the second moment, for a vector
or a scalar the second moment V itself; F = ±∇L; τ the ODE time, h = lr, n = τ/h the step clock)::

    R' = κ(τ)·(mean_cols(F⊙F) − R),     C' = κ(τ)·(mean_rows(F⊙F) − C),     κ(τ) = n^c / h   (c = beta2_decay ≤ 0)
    V' = κ(τ)·(F⊙F − V)                                                    (vectors and scalars)
    V̂ = R·C / max(mean(R), ε₁)                                            (matrices: the factored estimate)
    U = F ⊘ √max(V̂, ε₁²),    Û = U / max(1, RMS(U)/d)
    θ' = −(ρ(n)/h)·max(ε₂, RMS(θ))·Û − λθ,    ρ(n) = min(lr, 1/√n)

Per parameter (each of rank ≥ 2 factored over its last two dimensions, a batch of matrices over the leading
ones): R is the running mean of F⊙F over the columns (an m × 1 column per matrix), C over the rows (1 × n), and
V̂ = RC/mean(R) is the rank-one matrix whose row and column sums are those of the running mean of F⊙F: the
I-divergence projection of that mean onto rank one, which keeps O(m + n) numbers instead of O(mn) (Shazeer &
Stern, section 3). The flow is then a preconditioned gradient flow like RMSprop's θ' = −F ⊘ √V, with two changes
of scale. The step is relative: it is proportional to the root-mean-square of the parameter itself,
max(ε₂, RMS(θ)), so that the parameter's scale, not an absolute learning rate, sets how far it moves. And the
preconditioned direction U is clipped to RMS(Û) ≤ d ("update clipping", the threshold d ≥ 1), which bounds a
step taken with a stale, too-small second moment.

Non-autonomous: the decay of the moments follows the schedule β̂₂,ₙ = 1 − n^c (c = ``beta2_decay``, −0.8 by
default), so 1 − β̂₂ is 1 at the first step (the moment is then the first F⊙F, not a bias-corrected average)
and decays like n^c: the moments average over a window that grows with the step count, and the rate κ(τ) and
the relative step ρ(n) = min(lr, 1/√n) depend on time explicitly. The field is the statement's, evaluated at
the clock n = τ/h (clamped at 1, as for Adam's bias correction). Its terms are Lipschitz but not smooth (the
maxima, the clipping, the switch of ρ at n = 1/lr²), so it is declared non-smooth (``smooth``) and its order is
not fitted.

Scheme (semi-implicit Euler; torch.optim.Adafactor's order; R₀ = C₀ = V₀ = 0, ``t`` the step)::

    w_t = t^c;  ρ_t = min(lr, 1/√t);  α_t = max(ε₂, ‖θ_{t−1}‖/√numel)·ρ_t      (α from θ before the decay)
    R_t = R_{t−1} + w_t·(mean_cols(F⊙F) − R_{t−1})     (torch: lerp; mean_cols(F⊙F) = ‖F‖²_row / n)
    C_t = C_{t−1} + w_t·(mean_rows(F⊙F) − C_{t−1})
    V̂_t = (R_t @ C_t) / max(mean_rows(R_t), ε₁)       or   V_t = V_{t−1} + w_t·(F⊙F − V_{t−1})
    U_t = F ⊘ √max(V̂_t, ε₁²);   θ_t = θ_{t−1}(1 − lr·λ) − α_t/max(1, RMS(U_t)/d)·U_t

ε₁ = None (the default) is the machine epsilon of the parameter's dtype, ``torch.finfo(dtype).eps``.

Hyperparameter map: h = lr; 1 − β̂₂,ₙ = n^c, so κ = n^c/h; the step is lr-relative only through ρ ≤ lr (for
n ≥ 1/lr² it is 1/√n, independent of lr); step k at ODE time k·lr.

Conventions: ``dynopt.torch.Adafactor`` is a drop-in for ``torch.optim.Adafactor`` (torch 2.13): the same
arguments in the same positions and defaults (lr 1e-2, beta2_decay −0.8, eps (None, 1e-3), d 1.0, weight_decay
0.0, then keyword-only foreach and maximize), the same state per parameter (``step``; ``row_var`` of shape
(..., m, 1) and ``col_var`` of shape (..., 1, n) for a parameter of rank ≥ 2, ``variance`` of the parameter's
shape for rank 0 or 1), the same state_dict and numbers (1e-12 in float64, parameters and state). As in torch:
the weight decay is decoupled, θ ← θ(1 − lr·λ), with α_t computed from θ before it; ``lr`` only caps the
relative step (the paper's constant 0.01); ε₁ enters after the factors (clamping mean(R) and V̂), not inside
them as in the paper. Complex parameters and sparse gradients raise RuntimeError at the step. Two differences:
with ε₁ = None, torch takes the machine epsilon of the first parameter of a param group (its loop keeps it for
the next ones), dynopt the epsilon of each parameter's own dtype; they differ only in a group of mixed dtypes.
With a Tensor lr, torch forms α_t and 1 − lr·λ in the tensor's dtype (float32 for a float32 tensor), dynopt in
the parameter's (the lr's value taken exactly): they differ by float32 roundings (about 1e-8 relative).
Its flat and fused torch paths take the reference path (its state is not parameter-shaped; the step reduces
inside each parameter). ``dynopt.jax.adafactor_torch`` and ``dynopt.numpy.adafactor_torch`` are this rule in JAX
and NumPy (equal to torch in float64; optax and NumPy store None for the state a parameter does not hold). It
is not ``optax.adafactor``, another algorithm of the same paper's family (ε₁ inside the factors, a decay rate
schedule of its own, momentum, factoring only above a minimum size and along the two largest dimensions): there
is no ``dynopt.jax.adafactor``.

References:
    N. Shazeer and M. Stern, "Adafactor: Adaptive Learning Rates with Sublinear Memory Cost", ICML 2018,
    arXiv:1804.04235.
    I. Loshchilov and F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv:1711.05101.
"""

from __future__ import annotations

import math

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, interval, nonnegative, register
from ..statement import Drift, from_statement
from ._common import MAXIMIZE_KW, decoupled_decay, lr_hyper

FACTORED = ("row_var", "col_var")  # the state of a parameter of rank >= 2
UNFACTORED = ("variance",)  # the state of a vector or a scalar


def is_factored(shape) -> bool:
    """torch.optim.Adafactor factors the second moment of a parameter of rank >= 2 over its last two dimensions."""
    return len(shape) >= 2


def state_shape(name: str, shape: tuple) -> tuple | None:
    """``row_var`` (..., m, 1) and ``col_var`` (..., 1, n) for rank >= 2, ``variance`` the parameter's shape
    otherwise; None where the parameter does not hold the variable. Any other name (a wrapper's, such as
    ``dynopt.accumulate``'s ``accumulated_grad``) has the parameter's shape."""
    if name not in FACTORED + UNFACTORED:
        return shape
    if (name in FACTORED) != is_factored(shape):
        return None
    if name == "row_var":
        return shape[:-1] + (1,)
    if name == "col_var":
        return shape[:-2] + (1, shape[-1])
    return shape


def initial_state(o, hp, param):
    matrices = [is_factored(shape) for shape in o.shapes(param)]
    zeros = o.zeros_like(param)
    held = o.pick(zeros, matrices)
    return {"row_var": o.sum_along(held, -1), "col_var": o.sum_along(held, -2),
            "variance": o.pick(zeros, [not m for m in matrices])}


def factored_second_moment(o, hp, t, x):
    g = -x.grad if hp.maximize else x.grad
    shapes = o.shapes(g)
    matrices = [is_factored(shape) for shape in shapes]
    vectors = [not m for m in matrices]
    weight = t ** hp.beta2_decay  # 1 − β̂₂_t = t^c
    eps1, eps2 = hp.eps
    epsilons = o.machine_eps(g) if eps1 is None else None  # ε₁ = None: torch.finfo(dtype).eps of each parameter
    estimate_m, estimate_v = o.pick(g, matrices), o.pick(g, vectors)  # replaced below unless empty
    if any(matrices):
        gm = estimate_m
        # an empty matrix averages nothing: its means are 0 (torch.optim divides by zero there)
        rows = o.per_leaf([float(max(s[-2], 1)) for s, m in zip(shapes, matrices) if m])
        cols = o.per_leaf([float(max(s[-1], 1)) for s, m in zip(shapes, matrices) if m])
        # R ← R + w·(mean over the columns of F⊙F − R) (torch: lerp_ toward ‖F_row‖²/n); C likewise over the rows
        yield Drift("row_var", weight * (o.norm_along(gm, -1) ** 2 / cols - x.row_var))
        yield Drift("col_var", weight * (o.norm_along(gm, -2) ** 2 / rows - x.col_var))
        floor = eps1 if epsilons is None else o.per_leaf([e for e, m in zip(epsilons, matrices) if m])
        estimate_m = o.matmul(x.row_var, x.col_var) / o.maximum(o.sum_along(x.row_var, -2) / rows, floor)  # RC/mean(R)
    if any(vectors):
        yield Drift("variance", weight * (estimate_v * estimate_v - x.variance))  # V ← V + w·(F⊙F − V)
        estimate_v = x.variance
    floor = eps1 * eps1 if epsilons is None else o.per_leaf([e * e for e in epsilons])
    update = g / o.sqrt(o.maximum(o.join(matrices, estimate_m, estimate_v), floor))  # U = F ⊘ √max(V̂, ε₁²)
    root_numel = [math.sqrt(max(math.prod(s), 1)) for s in shapes]
    relative = o.maximum(o.norm_along(x.param, None) / o.per_leaf(root_numel), eps2)  # max(ε₂, RMS(θ))
    # α_t = max(ε₂, RMS(θ))·ρ_t with ρ_t = min(lr, 1/√t), selected without a Python branch on a traced value (a JAX
    # count, a tensor step under torch.compile) and formed in the parameter's precision
    alpha = o.select(hp.lr < 1 / t ** 0.5, relative * hp.lr, relative * (1 / t ** 0.5))
    clip = o.maximum(o.norm_along(update, None) / o.per_leaf([r * hp.d for r in root_numel]), 1.0)  # max(1, RMS(U)/d)
    # θ ← θ(1 − lr·λ) − α/max(1, RMS(U)/d)·U, α read from θ before the decay
    yield Drift("param", decoupled_decay(hp, x.param, True) - update * (alpha / clip))


NONPOSITIVE = Check(lambda v: v <= 0.0, "must be <= 0")

adafactor = register(
    from_statement(
        name="Adafactor",
        jax_name="adafactor_torch",  # optax.adafactor is another algorithm (see the docstring)
        hyperparams=(
            lr_hyper(1e-2),
            Hyper("beta2_decay", -0.8, "c: the second moment decays with 1 − β̂₂_t = t^c", NONPOSITIVE),
            Hyper("eps", (None, 1e-3), "(ε₁, ε₂): ε₁ floors mean(R) and V̂ (ε₁²); None is the machine epsilon of the "
                  "parameter's dtype; ε₂ floors RMS(θ) in the relative step", nonnegative, length=2, optional=(0,)),
            Hyper("d", 1.0, "clipping threshold d: the direction U is scaled down to RMS(U) <= d", interval(1.0),
                  label="clipping threshold d"),
            Hyper("weight_decay", 0.0, "decoupled weight decay λ: θ ← θ(1 − lr·λ) beside the step", nonnegative),
            MAXIMIZE_KW,
        ),
        state=lambda hp: FACTORED + UNFACTORED,
        state_shape=state_shape,
        initial_state=initial_state,
        statement=factored_second_moment,
        scheme=SemiImplicitEuler(),
        formula="R ← R + t^c(mean_cols g² − R), C likewise (vectors: V ← V + t^c(g² − V)); "
                "U = g/√max(RC/mean(R), ε₁²); θ ← θ(1 − lr·λ) − min(lr, 1/√t)·max(ε₂, RMS(θ))·U/max(1, RMS(U)/d)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: True,  # the relative step reads RMS(θ)
        complex_params=False,
        decoupled_decay=lambda hp: True,  # θ ← θ(1 − lr·λ) beside the step
        smooth=lambda hp: False,  # maxima, the update clipping, the switch of ρ at t = 1/lr²
        ode="θ' = −(ρ/h)·max(ε₂, RMS(θ))·clip_d(∇L ⊘ √V̂) − λθ, V̂ = RC/mean(R), R' = κ(mean_cols ∇L² − R), "
            "C' = κ(mean_rows ∇L² − C) (vectors: V' = κ(∇L² − V)); non-autonomous: κ = t^c/h, ρ = min(lr, 1/√t), t = time/h",
        hyper_map="h = lr, 1 − β̂₂ = t^c, κ = t^c/lr",
        doc=__doc__,
    )
)
