r"""Muon: momentum, orthogonalized by a Newton–Schulz iteration: steepest descent under the spectral norm.

ODE (state θ, a matrix, and the momentum buffer b; n = time/h)::

    b' = c (∇L − b),                         c = (1 − μ)/h
    θ' = −ρ(shape)·polar(b̃) − λθ,           b̃ = (1 − μ)∇L + μb  (nesterov)  or  b̃ = b

where polar(M) = UVᵀ for M = UΣVᵀ (the orthogonal polar factor) is the steepest-descent direction
of a matrix under the spectral norm: argmax_{‖D‖₂ ≤ 1} ⟨M, D⟩ = UVᵀ (Bernstein & Newhouse, "Old
optimizer, new norm"). Muon is this flow of the momentum average, discretized by semi-implicit Euler;
without momentum it is a spectral-norm sign descent, the matrix analogue of signSGD, whose field is
non-smooth where singular values cross zero (and discontinuous at M = 0), as sign(g) is at g = 0.
The step does not compute polar(b̃) exactly: k iterations of the quintic Newton–Schulz map
X ← aX + (bXXᵀ + c(XXᵀ)²)X from X₀ = b̃/max(‖b̃‖_F, ε), whose coefficients (3.4445, −4.7750, 2.0315)
push the singular values into about [0.7, 1.2] fast rather than converge to 1 (Jordan et al.), in
bfloat16 as torch.optim.Muon computes it. The field of the statement is that map (a polynomial in
X₀, with the bfloat16 rounding), so it is piecewise constant between rounding boundaries: it is
declared non-smooth (``smooth``) and its order is not fitted (tests/test_ode.py says why).

Scheme (torch.optim.Muon form; b₀ = 0)::

    b_t = b_{t−1} + (1 − μ)(g − b_{t−1})                         (torch: buf.lerp_(g, 1 − μ))
    b̃_t = b_t − (1 − μ)(b_t − g)  (nesterov)   or   b̃_t = b_t  (torch: g.lerp(b_t, μ))
    O_t = NS_k^{(a,b,c)}(b̃_t; ε)  in bfloat16, on the wide orientation (transposed when rows > columns)
    θ_t = θ_{t−1} − lr·λ·θ_{t−1} − lr·ρ(A, B)·O_t

with ρ(A, B) = √max(1, A/B) (``adjust_lr_fn`` None or "original", Jordan's) or 0.2·√max(A, B)
("match_rms_adamw", Moonshot's, to match AdamW's update RMS), A × B the parameter's shape.

Hyperparameter map: h = lr, c = (1 − μ)/lr; step k at ODE time k·lr. The per-leaf matrix algebra
(``o.matmul``, ``o.transpose``, ``o.cast``, ``o.norm_along``) is generic tree maths: the torch
backend runs it with torch.optim's own kernels (``torch.addmm`` in bfloat16: the same numbers as
torch.optim.Muon, 1e-12 in float64), NumPy and JAX in bfloat16 with float32 accumulation and one
rounding per product, JAX rounding every bfloat16 intermediate explicitly under jit. These agree
with torch to 1e-12 except where a float32 sum, accumulated in another order than torch's kernel,
lies within its rounding error of a bfloat16 rounding boundary: that entry then differs by one
bfloat16 ulp (rare for small matrices, measured in tests/test_adafactor_muon.py; more frequent for
large ones). Its flat and fused torch paths fall back to the reference path
(``opt.execution.reason``: "the spec reduces inside a parameter").

Conventions: ``dynopt.torch.Muon`` is a drop-in for ``torch.optim.Muon`` (torch 2.13): the same
arguments in the same positions (lr 1e-3, weight_decay 0.1, momentum 0.95, nesterov True,
ns_coefficients, eps 1e-7, ns_steps 5, adjust_lr_fn None), state (``momentum_buffer``; dynopt also
keeps ``step``, which torch.optim ignores when it loads dynopt's state_dict) and numbers. Only 2-D
parameters: any other raises ValueError when the optimizer is built ("Muon only supports 2D
parameters ..."), in every backend; complex parameters and sparse gradients raise RuntimeError at
the step. torch checks ``ns_steps < 100`` at the step, dynopt when the optimizer is built.
``dynopt.jax.muon_torch`` is this rule as an optax transformation; it is not ``optax.contrib.muon``,
which orthogonalizes Nesterov momentum of the form μb + g with its own coefficients and scale, and
steps the other leaves with Adam.

References:
    K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein, "Muon: An optimizer
    for hidden layers in neural networks", 2024, https://kellerjordan.github.io/posts/muon/.
    J. Bernstein and L. Newhouse, "Old Optimizer, New Norm: An Anthology", 2024, arXiv:2409.20325.
    J. Liu et al. (Moonshot AI), "Muon is Scalable for LLM Training", 2025, arXiv:2502.16982.
    N. J. Higham, "Functions of Matrices: Theory and Computation", SIAM, 2008 (Newton–Schulz
    iterations for the polar decomposition).
"""

from __future__ import annotations

import math

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, is_static_zero, nonnegative, one_of, register
from ..statement import Drift, from_statement
from ..tree import ZERO
from ._common import lr_hyper

COMPUTE_DTYPE = "bfloat16"  # torch.optim.Muon's Newton–Schulz precision
ADJUST_LR = (None, "original", "match_rms_adamw")


def newton_schulz(o, m, coefficients, steps, eps):
    """k quintic Newton–Schulz iterations toward the polar factor of each leaf (a matrix), in bfloat16."""
    a, b, c = coefficients
    tall = [shape[-2] > shape[-1] for shape in o.shapes(m)]
    x = o.transpose(o.cast(m, COMPUTE_DTYPE), tall)  # the wide orientation: the Gram matrix is the small one
    x = x / o.maximum(o.norm_along(x, None), eps)  # ‖X‖₂ ≤ ‖X‖_F ≤ 1
    for _ in range(steps):
        gram = o.matmul(x, o.transpose(x))
        poly = o.matmul(gram, gram, alpha=c, beta=b, add=gram)  # bA + cA²
        x = o.matmul(poly, x, beta=a, add=x)  # aX + (bA + cA²)X
    return o.cast(o.transpose(x, tall), m)


def lr_ratio(shape, adjust_lr_fn) -> float:
    rows, cols = shape[:2]
    if not rows or not cols:  # an empty matrix: nothing moves (torch.optim.Muon divides by zero here)
        return 1.0
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def orthogonalized_momentum(o, hp, t, x):
    g = x.grad
    # b ← μb + (1 − μ)g, in torch's lerp form b + (1 − μ)(g − b) (the same ODE as Relax, the same float rounding)
    yield Drift("momentum_buffer", (1 - hp.momentum) * (g - x.momentum_buffer))
    b = x.momentum_buffer
    direction = b - (1 - hp.momentum) * (b - g) if hp.nesterov else b  # torch: g.lerp(b, μ), g + μ(b − g)
    ortho = newton_schulz(o, direction, hp.ns_coefficients, hp.ns_steps, hp.eps)
    # lr·ρ and 1 − lr·λ formed as torch.optim.Muon forms them (in a Tensor lr's dtype when lr is one)
    adjusted = o.per_leaf([hp.lr * lr_ratio(shape, hp.adjust_lr_fn) for shape in o.shapes(g)])
    decay = ZERO if is_static_zero(hp.weight_decay) else ((1 - hp.lr * hp.weight_decay) - 1) * x.param
    yield Drift("param", decay - ortho * adjusted)  # θ ← θ(1 − lr·λ) − lr·ρ·O


def check_param(o, hp, leaf):
    if o.leaf_ndim(leaf) != 2:
        shape = "torch.Size([" + ", ".join(str(n) for n in getattr(leaf, "shape", ())) + "])"
        return f"Muon only supports 2D parameters whereas we found a parameter with size: {shape}"
    return None


NS_STEPS = Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 100,
                 "must be an int in [0, 100): torch.optim.Muon takes fewer than 100 Newton–Schulz steps")

muon = register(
    from_statement(
        name="Muon",
        jax_name="muon_torch",  # optax.contrib.muon is another rule (see the docstring)
        hyperparams=(
            lr_hyper(1e-3),
            Hyper("weight_decay", 0.1, "decoupled weight decay λ: θ ← θ(1 − lr·λ) beside the step", nonnegative),
            Hyper("momentum", 0.95, "momentum μ of the buffer b ← μb + (1 − μ)g", nonnegative),
            Hyper("nesterov", True, "orthogonalize the look-ahead g + μ(b − g) instead of b", static=True),
            Hyper("ns_coefficients", (3.4445, -4.7750, 2.0315), "(a, b, c) of the quintic Newton–Schulz map "
                  "X ← aX + (bXXᵀ + c(XXᵀ)²)X", length=3),
            Hyper("eps", 1e-7, "ε: the Frobenius norm of the first iterate is clamped below at ε", label="epsilon value"),
            Hyper("ns_steps", 5, "k, the number of Newton–Schulz iterations", NS_STEPS, static=True),
            Hyper("adjust_lr_fn", None, "the lr scale ρ by shape A × B: None or 'original' √max(1, A/B), "
                  "'match_rms_adamw' 0.2·√max(A, B)", one_of(*ADJUST_LR), static=True),
        ),
        state=lambda hp: ("momentum_buffer",),
        statement=orthogonalized_momentum,
        scheme=SemiImplicitEuler(),
        formula="b ← μb + (1−μ)g; θ ← θ(1 − lr·λ) − lr·ρ·NS_k(g + μ(b − g) or b)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        check_param=check_param,
        counts_steps=lambda hp: False,  # torch.optim.Muon keeps no step counter
        complex_params=False,
        smooth=lambda hp: False,  # a polar factor (a matrix sign), computed in bfloat16
        ode="θ' = −ρ·polar(b̃) − λθ, b' = c(∇L − b) (steepest descent under the spectral norm)",
        hyper_map="h = lr, c = (1 − μ)/lr",
        doc=__doc__,
    )
)
