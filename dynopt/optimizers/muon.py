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
``dynopt.jax.muon_torch`` is this rule as an optax transformation.

optax's form, ``dynopt.jax.contrib.muon`` (a second view of this file: the same flow, optax's discretization),
equals ``optax.contrib.muon`` (optax 0.2.8) with the same arguments, positions and defaults and the same
numbers (1e-12 in float64, tests/test_optax_noisy_muon.py). On each 2-D leaf (the per-leaf choice is by rank,
``Spec.state_shape``: the leaf holds ``mu``, the others ``adam_mu`` and ``adam_nu``; or by
``muon_weight_dimension_numbers``, below)::

    m_t = βm_{t−1} + (1 − β)g_t                                   (b̃ = m̂: bias-corrected)
    b̃_t = β·m_t/(1 − β^{t+1}) + (1 − β)·g_t/(1 − β^t)   (nesterov)   or   m_t/(1 − β^t)
    O_t = NS_k^{(a,b,c)}(b̃_t/(‖b̃_t‖_F + ε))  in the leaf's own dtype (not bfloat16), X ← aX + (bA + cA²)X, A = XXᵀ
    θ_t = θ_{t−1} − lr·(ρ·O_t + λθ_{t−1}),   ρ = √max(1, B/A), or √max(A, B)·consistent_rms

(A × B the leaf's shape; ``adaptive``: O_t scaled by ⟨b̃_t, O_t⟩). ``ns_coeffs`` may be a table of one (a, b, c)
per iteration (a list of triples, or the preset "dion", Ahn et al.'s five): the iteration then runs the table's
rows, ``ns_steps`` only bounds its length (a longer table is a ValueError, as in optax). ``preconditioning`` is the
normalization of the input: "frobenius" (above), "spectral" (X₀ = b̃/(σ_max(b̃) + ε)), or, inside the first
iteration through its Gram matrix A = XXᵀ (none when ns_steps = 0), "aol" (row i of X scaled by
1/√max(Σ_j|A_ij|, δ), A by the same scales on both sides) and "schatten" (X scaled by 1/√max(‖A‖_F, δ), the
Schatten-4 norm), δ = 1e-8 (optax's constant, not ``eps``). ``muon_weight_dimension_numbers`` (optax's
``MuonDimensionNumbers``: the reduction and output axes of a leaf, every other axis a batch axis; per leaf as a
pytree, a prefix of the params, or a callable params -> pytree; None for an Adam leaf) chooses the Muon leaves,
of any rank >= 2: a leaf of rank > 2 is permuted to (batch, reduction, output) axes and reshaped to a batch of
A × B matrices (A, B the products of the reduction and output sizes: the fans ρ uses), each orthogonalized on its
own, then reshaped back (``o.permute``, ``o.reshape``); a 2-D leaf is orthogonalized as it is (optax ignores its
axes there but scales by them). Every other leaf takes optax.adamw with
``adam_b1``, ``adam_b2``, ``eps``, ``adam_eps_root``, ``adam_weight_decay``, ``adam_learning_rate`` (None: the
lr) and the same ``nesterov`` (then NAdamW's m̂). ``weight_decay_mask`` masks λ (a pytree of bools or a callable),
``mu_dtype`` types both first moments. ``learning_rate`` and ``adam_learning_rate`` may each be a schedule
(``Hyper(schedule=True)``: evaluated at the count). Every numeric argument, ``ns_steps`` included, can be injected by
``optax.inject_hyperparams``: an injected ``ns_steps`` is traced under jit and the iterations then run as a device
loop (``o.repeat``), with the same numbers; ``ns_coeffs``, ``preconditioning`` and ``muon_weight_dimension_numbers``
are not numbers and stay static (inject_hyperparams keeps them static itself). The state is one tuple
``(count, mu, adam_mu, adam_nu)`` with None where a leaf does not hold a variable, not optax's partition state.

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
from typing import NamedTuple

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, interval, is_static_zero, nonnegative, one_of, register, unit_interval
from ..statement import Drift, Relax, from_statement
from ..tree import ZERO, Tree
from . import _optax as optax_args
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


# ----------------------------------------------------------------------------- optax.contrib.muon (dynopt.jax.contrib)

OPTAX_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
# the per-iteration coefficients of Ahn et al., "Dion: Distributed Orthonormalized Updates" (arXiv:2504.05295)
DION_COEFFICIENTS = ((4.0848, -6.8946, 2.9270), (3.9505, -6.3029, 2.6377), (3.7418, -5.5913, 2.3037),
                     (2.8769, -3.1427, 1.2046), (2.8366, -3.0525, 1.2012))
OPTAX_PRESETS = {"standard": OPTAX_COEFFICIENTS, "dion": DION_COEFFICIENTS}
PRECONDITIONINGS = ("frobenius", "spectral", "aol", "schatten")
FIRST_STEP_FLOOR = 1e-8  # optax's floor of the AOL and Schatten-4 scales (a constant, not the eps argument)


def optax_newton_schulz(o, m, coefficients, steps, preconditioning, eps):
    """optax's orthogonalization, per leaf, in the leaf's dtype, on the wide orientation: a normalization
    (``preconditioning``), then X ← aX + (bA + cA²)X with A = XXᵀ, ``steps`` times with one (a, b, c), or once per row
    of a table of them (``coefficients``; ``steps`` then only bounded its length).

    frobenius: X₀ = M/(‖M‖_F + ε); spectral: X₀ = M/(σ_max(M) + ε); aol and schatten normalize inside the first
    iteration instead, through its Gram matrix A = XXᵀ: aol scales row i of X by s_i = 1/√max(Σ_j|A_ij|, δ) (so A
    becomes SAS), schatten scales X by s = 1/√max(‖A‖_F, δ) (‖A‖_F = ‖X‖²_S4, so A becomes s²A), δ = 1e-8; with no
    iteration they leave M as it is. ``steps`` may be traced (injected by optax.inject_hyperparams under jit): the
    iterations then run as a device loop, the first one peeled off for aol and schatten."""
    tall = [shape[-2] > shape[-1] for shape in o.shapes(m)]
    x = o.transpose(m, tall)
    matrix = (-2, -1)  # each matrix of a batch (a leaf of rank 3: muon_weight_dimension_numbers) on its own
    if preconditioning == "frobenius":
        x = x / (o.norm_along(x, matrix) + eps)
    elif preconditioning == "spectral":
        x = x / (o.spectral_norm(x) + eps)

    def iteration(x, row, first):
        a, b, c = row
        gram = o.matmul(x, o.transpose(x))
        if first and preconditioning == "aol":
            s = 1 / o.sqrt(o.maximum(o.sum_along(o.abs(gram), -1), FIRST_STEP_FLOOR))  # one scale per row
            x, gram = x * s, gram * s * o.transpose(s)
        elif first and preconditioning == "schatten":
            s = 1 / o.sqrt(o.maximum(o.norm_along(gram, matrix), FIRST_STEP_FLOOR))
            x, gram = x * s, gram * s**2
        poly = b * gram + c * o.matmul(gram, gram)
        return a * x + o.matmul(poly, x)

    if isinstance(coefficients[0], tuple):  # a table: its own schedule
        rows = coefficients
    elif o.static_int(steps) is not None:
        rows = (coefficients,) * o.static_int(steps)
    else:  # a traced count: the same iterations in a device loop
        if preconditioning in ("aol", "schatten"):
            x = o.select(steps > 0, iteration(x, coefficients, True), x)
            steps = steps - 1  # -1 when there is none: a loop to -1 runs no iteration
        return o.transpose(o.repeat(steps, lambda x: iteration(x, coefficients, False), x), tall)
    for i, row in enumerate(rows):
        x = iteration(x, row, i == 0)
    return o.transpose(x, tall)


class Layout(NamedTuple):
    """A Muon leaf as optax sees it: its fan-in and fan-out (the sizes of its reduction and output axes), and how it
    becomes a batch of (fan-in × fan-out) matrices: axes permuted to (batch, reduction, output), then reshaped to
    ``flat``; back through ``permuted`` (the shape after the permutation) and ``inverse``. None: a 2-D leaf, its own
    matrix (optax orthogonalizes every 2-D leaf as (0, 1) whatever its dimension numbers; they set its fans)."""

    fan_in: int
    fan_out: int
    axes: tuple | None = None
    flat: tuple | None = None
    permuted: tuple | None = None
    inverse: tuple | None = None


def is_dimension_numbers(node) -> bool:
    """optax's ``MuonDimensionNumbers`` (or any node with its two fields): a value of muon_weight_dimension_numbers."""
    return hasattr(node, "reduction_axis") and hasattr(node, "output_axis")


def _normalized(axes, rank) -> tuple:
    return tuple(a % rank for a in ((axes,) if isinstance(axes, int) else axes))


def layouts(shapes, dimension_numbers) -> list:
    """Per leaf its :class:`Layout` if Muon takes it, else None (Adam): by rank (the 2-D leaves) when
    ``dimension_numbers`` is None, else where the leaf's dimension numbers are not None."""
    if dimension_numbers is not None and (type(dimension_numbers) is not tuple or len(dimension_numbers) != len(shapes)):
        raise TypeError("muon_weight_dimension_numbers must be resolved to one value per leaf, which only "
                        "dynopt.jax.contrib.muon does (OptaxView.leafwise); other backends take None")
    out = []
    for i, shape in enumerate(shapes):
        numbers = None if dimension_numbers is None else dimension_numbers[i]
        if dimension_numbers is None:
            out.append(Layout(*shape) if len(shape) == 2 else None)
            continue
        if numbers is None:
            out.append(None)
            continue
        rank = len(shape)
        if rank < 2:
            raise ValueError(f"Invalid muon_weight_dimension_numbers value: Muon leaves must have rank >= 2, leaf {i} "
                             f"has shape {shape} ({numbers})")
        reduction, output = _normalized(numbers.reduction_axis, rank), _normalized(numbers.output_axis, rank)
        fan_in, fan_out = math.prod(shape[a] for a in reduction), math.prod(shape[a] for a in output)
        if rank == 2:
            out.append(Layout(fan_in, fan_out))
            continue
        if set(reduction) & set(output):
            raise ValueError(f"Invalid muon_weight_dimension_numbers value: leaf {i} of shape {shape} has reduction axes "
                             f"{reduction} and output axes {output}, which must be disjoint ({numbers})")
        batch = tuple(a for a in range(rank) if a not in reduction and a not in output)
        axes = batch + reduction + output
        flat = (math.prod(shape[a] for a in batch), fan_in, fan_out)
        out.append(Layout(fan_in, fan_out, axes, flat, tuple(shape[a] for a in axes),
                          tuple(sorted(range(rank), key=axes.__getitem__))))
    return out


def _full(o, value, like):
    return o.zeros_like(like) if value is ZERO else value


def optax_muon(o, hp, t, x):
    """optax.contrib.muon: Muon on the 2-D leaves (or on those muon_weight_dimension_numbers gives axes), optax.adamw on
    the others."""
    g = x.grad
    layout = layouts(o.shapes(g), hp.muon_weight_dimension_numbers)
    matrix = [chosen is not None for chosen in layout]
    other = [not chosen for chosen in matrix]
    mine = [chosen for chosen in layout if chosen is not None]
    gm, ga = o.pick(g, matrix), o.pick(g, other)
    beta = hp.beta
    yield Relax("mu", beta, gm)  # m ← βm + (1 − β)g
    if hp.nesterov:
        mu_hat = beta * (x.mu / (1 - beta ** (t + 1))) + (1 - beta) * (gm / (1 - beta**t))
    else:
        mu_hat = x.mu / (1 - beta**t)
    mu_hat = o.cast(mu_hat, gm)  # in the leaf's dtype, as optax (a float64 bias correction would promote it)
    batch = o.reshape(o.permute(mu_hat, [m.axes for m in mine]), [m.flat for m in mine])  # matrices (batches of them)
    ortho = optax_newton_schulz(o, batch, hp.ns_coeffs, hp.ns_steps, hp.preconditioning, hp.eps)
    ortho = o.permute(o.reshape(ortho, [m.permuted for m in mine]), [m.inverse for m in mine])
    if hp.adaptive:  # scaled by the dual norm ⟨b̃, O⟩ of each leaf
        ortho = ortho * o.sum_along(mu_hat * ortho, None)
    if hp.consistent_rms is None:
        direction = ortho * o.per_leaf([math.sqrt(max(1, m.fan_out / m.fan_in)) if m.fan_in else 1.0 for m in mine])
    else:
        direction = ortho * o.per_leaf([math.sqrt(max(m.fan_in, m.fan_out)) * hp.consistent_rms for m in mine])
    decay = o.pick(hp.weight_decay, matrix) if isinstance(hp.weight_decay, Tree) else hp.weight_decay
    if not is_static_zero(decay):
        direction = direction + decay * o.pick(x.param, matrix)  # optax.add_decayed_weights (masked)
    # optax.adamw on the other leaves (nesterov: NAdamW's m̂)
    b1, b2 = hp.adam_b1, hp.adam_b2
    yield Relax("adam_mu", b1, ga)
    yield Relax("adam_nu", b2, optax_args.abs_sq(o, ga))
    if hp.nesterov:
        m_hat = b1 * (x.adam_mu / (1 - b1 ** (t + 1))) + (1 - b1) * (ga / (1 - b1**t))
    else:
        m_hat = x.adam_mu / (1 - b1**t)
    adam = m_hat / (o.sqrt(x.adam_nu / (1 - b2**t) + hp.adam_eps_root) + hp.eps)
    if not is_static_zero(hp.adam_weight_decay):
        adam = adam + hp.adam_weight_decay * o.pick(x.param, other)
    adam_lr = hp.lr if hp.adam_learning_rate is None else hp.adam_learning_rate
    step = o.join(matrix, _full(o, -hp.lr * direction, gm), _full(o, -adam_lr * adam, ga))
    yield Drift("param", step)  # θ ← θ − lr·(ρ·O + λθ) on matrices, − lr_adam·(m̂/(√v̂ + ε) + λ_adam·θ) elsewhere


def coefficient_table(value):
    """``ns_coeffs`` as a triple (a, b, c) or a table ((a, b, c), ...) of Python floats; None if it is neither."""
    if isinstance(value, str) or value is None:
        return None
    try:
        rows = [tuple(float(v) for v in row) for row in value]
    except TypeError:  # flat: one triple
        try:
            flat = tuple(float(v) for v in value)
        except (TypeError, ValueError):
            return None
        return flat if len(flat) == 3 else None
    except ValueError:
        return None
    return tuple(rows) if rows and all(len(row) == 3 for row in rows) else None


def _known(steps, otherwise: int) -> int:
    """``steps`` as an int, or ``otherwise`` when it is traced (inject_hyperparams under jit: checked at init)."""
    try:
        return int(steps)
    except TypeError:  # a tracer's int() (jax.errors.ConcretizationTypeError is a TypeError)
        return otherwise


def optax_muon_arguments(arguments: dict) -> dict:
    """optax's arguments as the view's hyperparameters: ``ns_coeffs`` a triple or a table of Python floats (a
    preset resolved); a table longer than ``ns_steps`` is refused as optax refuses it (it runs the whole table)."""
    coefficients = arguments.pop("ns_coeffs")
    if isinstance(coefficients, str):
        if coefficients not in OPTAX_PRESETS:
            raise ValueError(f"Invalid ns_coeffs value: {coefficients!r} (unknown preset; optax has 'standard' and 'dion')")
        coefficients = OPTAX_PRESETS[coefficients]
    coefficients = coefficient_table(coefficients)
    if isinstance(coefficients[0], tuple) and len(coefficients) > _known(arguments["ns_steps"], len(coefficients)):
        raise ValueError(f"Invalid ns_coeffs value: a table of {len(coefficients)} iterations for ns_steps="
                         f"{arguments['ns_steps']} (optax requires at most ns_steps rows, then runs all of them)")
    return {"lr": arguments.pop("learning_rate"), "ns_coeffs": coefficients, **arguments}


def _coefficients(value) -> bool:
    return value in OPTAX_PRESETS if isinstance(value, str) else coefficient_table(value) is not None


def _optax_state_shape(name, shape):
    """``mu`` on the 2-D leaves (Muon's), ``adam_mu`` and ``adam_nu`` on the others (Adam's)."""
    return shape if (len(shape) == 2) == (name == "mu") else None


def _optax_initial_state(o, hp, param):
    """Zeros, each variable over the leaves that hold it (in order); with muon_weight_dimension_numbers, one leaf per
    parameter, None where it does not hold the variable (``OptaxView.leafwise``)."""
    if hp.muon_weight_dimension_numbers is not None:
        muon = [chosen is not None for chosen in layouts(o.shapes(param), hp.muon_weight_dimension_numbers)]
        zeros = o.zeros_like(param).leaves
        mu, adam = (o.tree([z if chosen == wanted else None for z, chosen in zip(zeros, muon)]) for wanted in (True, False))
        return {"mu": mu, "adam_mu": adam, "adam_nu": o.tree(list(adam.leaves))}
    matrix = [len(shape) == 2 for shape in o.shapes(param)]
    muon, adam = o.pick(param, matrix), o.pick(param, [not chosen for chosen in matrix])
    return {"mu": o.zeros_like(muon), "adam_mu": o.zeros_like(adam), "adam_nu": o.zeros_like(adam)}


def _reads_params(hp) -> bool:
    return not (is_static_zero(hp.weight_decay) and is_static_zero(hp.adam_weight_decay))


OPTAX_CONTRIB_MUON = optax_args.view(
    "muon",
    (optax_args.learning_rate(),
     Hyper("ns_coeffs", OPTAX_COEFFICIENTS, "(a, b, c) of the quintic Newton–Schulz map, a table of one (a, b, c) "
           "per iteration (then ns_steps is only its bound), or a preset, 'standard' or 'dion' (a table)",
           Check(_coefficients, "must be three numbers (a, b, c), a table of such triples, or 'standard' or 'dion'"),
           static=True),
     Hyper("ns_steps", 5, "k, the number of Newton–Schulz iterations",
           Check(lambda v: v >= 0 and float(v).is_integer(), "must be an integer >= 0")),
     Hyper("beta", 0.95, "decay β of the momentum m", unit_interval),
     optax_args.eps(1e-8, "ε of the Frobenius normalization and of Adam's denominator"),
     optax_args.weight_decay(0.0, "decoupled weight decay λ of the Muon leaves: λθ added before the lr"),
     Hyper("weight_decay_mask", None, "pytree of bools (or params -> pytree) of the leaves that take weight_decay",
           optax_args.ANY, static=True),
     optax_args.MU_DTYPE,
     Hyper("nesterov", True, "Nesterov momentum (Muon's b̃ and Adam's m̂)", static=True, keyword_only=True),
     Hyper("adaptive", False, "scale each orthogonalized leaf by ⟨b̃, O⟩", static=True, keyword_only=True),
     Hyper("preconditioning", "frobenius", "the normalization of Newton–Schulz's input: 'frobenius', 'spectral', "
           "or 'aol' or 'schatten' (in its first iteration)", Check(
               lambda v: isinstance(v, str) and v in PRECONDITIONINGS, "must be one of 'frobenius', 'spectral', 'aol', "
               "'schatten'"), static=True, keyword_only=True),
     Hyper("adam_b1", 0.9, "β₁ of Adam on the other leaves", unit_interval, keyword_only=True),
     Hyper("adam_b2", 0.999, "β₂ of Adam on the other leaves", unit_interval, keyword_only=True),
     Hyper("adam_eps_root", 0.0, "ε inside Adam's root", interval(0.0), keyword_only=True),
     Hyper("adam_weight_decay", 0.0, "AdamW's decoupled weight decay on the other leaves", nonnegative,
           keyword_only=True),
     Hyper("adam_learning_rate", None, "Adam's learning rate (None: learning_rate); a number or a schedule",
           nonnegative, keyword_only=True, schedule=True),
     Hyper("muon_weight_dimension_numbers", None, "which leaves Muon takes and how: None (every 2-D leaf), or "
           "MuonDimensionNumbers (reduction and output axes; the others batch) per leaf, None for Adam, as a pytree "
           "(a prefix of the params) or a callable params -> pytree", optax_args.ANY, static=True, keyword_only=True),
     Hyper("consistent_rms", None, "None: the scale √max(1, B/A); a number c: √max(A, B)·c", nonnegative,
           keyword_only=True)),
    optax_muon, lambda hp: ("mu", "adam_mu", "adam_nu"), spec_name="Muon", namespace="contrib",
    formula="m ← βm + (1−β)g; θ ← θ − lr·(ρ·NS_k(m̂) + λθ) on matrices; AdamW on the other leaves",
    doc="``dynopt.jax.contrib.muon``: optax.contrib.muon's arguments and numbers.\n\n" + __doc__,
    dtypes=(("mu_dtype", "mu"), ("mu_dtype", "adam_mu")), masks=(("weight_decay_mask", "weight_decay"),),
    to_spec=optax_muon_arguments, needs_params=_reads_params, state_shape=_optax_state_shape,
    initial_state=_optax_initial_state, leafwise=(("muon_weight_dimension_numbers", is_dimension_numbers),))


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
        decoupled_decay=lambda hp: True,  # θ ← θ(1 − lr·λ) beside the step (the meta step leaves it out of its alignment)
        ode="θ' = −ρ·polar(b̃) − λθ, b' = c(∇L − b) (steepest descent under the spectral norm)",
        hyper_map="h = lr, c = (1 − μ)/lr",
        doc=__doc__,
        optax=(OPTAX_CONTRIB_MUON,),  # optax.contrib.muon: dynopt.jax.contrib.muon (dynopt.jax keeps muon_torch)
    )
)
