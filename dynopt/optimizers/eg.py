r"""Exponentiated gradient: forward Euler in mirror (log) coordinates.

Four variants (``variant=``), all with h = lr and F = ∇L + λθ (−∇L with maximize):

``"positive"`` (EGU, unnormalized; θ > 0)::

    ODE:    (log θ)' = −F,  i.e.  θ' = −θ ⊙ F
    scheme: θ_t = θ_{t−1} ⊙ exp(−lr·F)

``"simplex"`` (normalized EG; θ > 0 and Σ θ = U along ``axis``, or over the whole tensor)::

    ODE:    θ' = −θ ⊙ (F − ⟨θ, F⟩/U)            (the replicator flow)
    scheme: θ_t = U · θ_{t−1} ⊙ exp(−lr·F) / Σ(θ_{t−1} ⊙ exp(−lr·F))

``"signed"`` (EGU±, Kivinen–Warmuth; any sign): θ = w⁺ − w⁻ with w± > 0 kept in the state::

    ODE:    w⁺' = −w⁺ ⊙ F,   w⁻' = w⁻ ⊙ F,   θ' = −(w⁺ + w⁻) ⊙ F
    scheme: w⁺_t = w⁺_{t−1} ⊙ exp(−lr·F),   w⁻_t = w⁻_{t−1} ⊙ exp(lr·F),   θ_t = w⁺_t − w⁻_t

  w⁺ ⊙ w⁻ is conserved exactly by the ODE and to round-off by the scheme.

``"signed_simplex"`` (EG±; Σ(w⁺ + w⁻) = U along ``axis``)::

    ODE:    w⁺' = −w⁺ ⊙ (F − ⟨θ, F⟩/U),   w⁻' = w⁻ ⊙ (F + ⟨θ, F⟩/U)
    scheme: w±_t = U · w±_{t−1} ⊙ exp(∓lr·F) / Σ(w⁺_{t−1} ⊙ exp(−lr·F) + w⁻_{t−1} ⊙ exp(lr·F))

Hyperparameter map: h = lr, step k at ODE time k·lr. Order 1. EG is mirror descent with the
entropy: the proximal step argmin ⟨g, θ⟩ + KL(θ‖θ_{t−1})/lr, whose flow is θ' = −θ ⊙ ∇L, not
the gradient flow on log θ (that one would be θ' = −θ² ⊙ ∇L).

Modified equation (``modified_field``): Euler in the dual coordinates z = log θ (log w±) has the
modified field ż = G − (h/2) G′G. For EGU, ż = −F(e^z) and G′G = J_F (θ⊙F), so::

    θ' = −θ ⊙ Φ,      Φ = F + (h/2) J_F q,      J_F = ∇²L + λI,

with q = θ⊙F. Every variant is its own ODE with F replaced by Φ; only q changes:
``simplex`` q = θ⊙(F − ⟨θ, F⟩/U) (F composed with the softmax is shift-invariant, so the
normalization can be postponed and the Jacobian of θ = U·softmax(z) enters), ``signed``
q = (w⁺ + w⁻)⊙F, ``signed_simplex`` q = (w⁺ + w⁻)⊙F − θ⟨θ, F⟩/U (sums along ``axis``).
This is not the mirror flow of a modified loss in general.

Start and constraints:
    * ``positive`` and ``simplex`` need every entry of every parameter > 0 (ValueError otherwise,
      naming the param group and index); a ``simplex`` axis that the parameter lacks is a ValueError.
    * In JAX the check runs in ``init``, and only outside ``jit``: a jitted ``init`` sees tracers,
      raises nothing, and EG runs on the entries as they are. With ``positive`` a zero entry stays 0
      and a negative one keeps its sign and is multiplied by exp(−lr·F) too, so it moves up the loss;
      ``simplex`` also divides by Σθ, which may be ≤ 0 (inf, NaN, flipped signs); a missing axis
      is then jax's ValueError when ``update`` is traced. Call ``init`` outside ``jit`` to be checked.
    * A positive parameter that starts off the simplex is projected onto it (rescaled to sum U,
      the KL projection) by the first step, which therefore moves it by more than lr·F.
    * ``signed`` variants split θ₀ as w± = (√(θ₀² + 4c²) ± θ₀)/2, so w⁺ − w⁻ = θ₀ and w⁺ ⊙ w⁻ = c²
      with c = ``init_scale``; a small c biases towards sparse solutions. ``signed_simplex`` then
      rescales w± to total U at the first step.
    * Kivinen and Warmuth scale the exponent of EG± by U; here lr absorbs that factor.
    * Exponentials are shifted by their maximum along the normalized axis, so a large lr·F cannot
      overflow; an entry whose factor underflows (lr·F ≳ 700 in float64) becomes 0.

Conventions: no torch.optim or optax counterpart (pytorch/pytorch#30386 asks for one). The
state of the signed variants is ``w_plus`` and ``w_minus``.

References:
    J. Kivinen and M. K. Warmuth, "Exponentiated Gradient versus Gradient Descent for Linear
    Predictors", Information and Computation 132, 1997.
    Su Jianlin, "指数梯度下降 + 元学习 = 自适应学习率", kexue.fm/archives/8968, 2022.
"""

from __future__ import annotations

from ..schemes import MirrorEuler
from ..spec import Hyper, interval, one_of, optional_int, register
from ..statement import Define, Mirror, Normalize, from_statement
from ._common import MAXIMIZE, WEIGHT_DECAY, force, force_jacobian, lr_hyper

SIGNED = ("signed", "signed_simplex")
NORMALIZED = ("simplex", "signed_simplex")


def state(hp):
    return ("w_plus", "w_minus") if hp.variant in SIGNED else ()


def initial_state(o, hp, param):
    if hp.variant not in SIGNED:
        return {}
    root = o.sqrt(param * param + 4 * hp.init_scale * hp.init_scale)
    return {"w_plus": (root + param) / 2, "w_minus": (root - param) / 2}


def check_param(o, hp, leaf):
    if hp.variant in NORMALIZED and hp.axis is not None:
        ndim = o.leaf_ndim(leaf)
        if not -ndim <= hp.axis < ndim:
            return f"axis {hp.axis} does not exist for a parameter with {ndim} dimension(s)"
    if hp.variant not in SIGNED and o.leaf_min(leaf) <= 0:
        return f"variant {hp.variant!r} needs positive entries, the smallest is {o.leaf_min(leaf)!r}"
    return None


def mirror_descent(o, hp, t, x):
    exponent = -hp.lr * force(hp, x.grad, x.param)  # the Euler step of log θ (log w±)
    normalized = hp.variant in NORMALIZED
    if hp.variant not in SIGNED:
        shift = o.max_along(exponent, hp.axis) if normalized else 0  # against overflow; the projection removes it
        yield Mirror("param", exponent, shift)  # θ ← θ ⊙ exp(−lr·F)
        if normalized:
            yield Normalize(("param",), hp.axis, hp.total)  # θ ← U·θ/Σθ
        return
    shift = o.max_along(o.abs(exponent), hp.axis) if normalized else 0
    yield Mirror("w_plus", exponent, shift)  # w⁺ ← w⁺ ⊙ exp(−lr·F)
    yield Mirror("w_minus", -exponent, shift)  # w⁻ ← w⁻ ⊙ exp(lr·F)
    if normalized:
        yield Normalize(("w_plus", "w_minus"), hp.axis, hp.total)  # w± ← U·w±/Σ(w⁺ + w⁻)
    yield Define("param", lambda v: v.w_plus - v.w_minus)  # θ = w⁺ − w⁻


def modified_field(o, hp, time, grad, param, state, hvp):
    f = force(hp, grad, param)
    if hp.variant == "positive":
        q = param * f
    elif hp.variant == "simplex":
        q = param * (f - o.sum_along(param * f, hp.axis) / hp.total)
    else:
        q = (state.w_plus + state.w_minus) * f
        if hp.variant == "signed_simplex":
            q = q - param * (o.sum_along(param * f, hp.axis) / hp.total)
    return mirror_flow(o, hp, param, state, f + hp.lr / 2 * force_jacobian(hp, hvp, q))


def mirror_flow(o, hp, param, state, f):
    """The mirror (replicator) flow of each variant, driven by ``f`` (the force, or its modified form)."""
    if hp.variant == "positive":
        return -param * f, {}
    if hp.variant == "simplex":
        return -param * (f - o.sum_along(param * f, hp.axis) / hp.total), {}
    mean = o.sum_along(param * f, hp.axis) / hp.total if hp.variant == "signed_simplex" else 0
    d_plus, d_minus = -state.w_plus * (f - mean), state.w_minus * (f + mean)
    return d_plus - d_minus, {"w_plus": d_plus, "w_minus": d_minus}


eg = register(
    from_statement(
        name="EG",
        hyperparams=(
            lr_hyper(0.1),
            Hyper("variant", "positive", "positive (EGU), simplex, signed (EGU±) or signed_simplex (EG±)",
                  one_of("positive", "simplex", "signed", "signed_simplex"), static=True),
            Hyper("axis", None, "axis along which simplex variants normalize (None: the whole tensor)", optional_int(), static=True),
            Hyper("total", 1.0, "total weight U of the simplex variants", interval(0.0, low_open=True)),
            Hyper("init_scale", 1.0, "c in the split w± = (√(θ² + 4c²) ± θ)/2 of the signed variants", interval(0.0, low_open=True)),
            WEIGHT_DECAY,
            MAXIMIZE,
        ),
        state=state,
        initial_state=initial_state,
        check_param=check_param,
        scalable_step=False,  # θ ⊙ exp(−lr·F): the meta step runs EG at lr·s (θ stays > 0, θ = w⁺ − w⁻)
        statement=mirror_descent,
        scheme=MirrorEuler,
        formula="θ ← θ⊙exp(−lr∇L), then normalize (simplex)",
        modified_field=modified_field,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: True,
        ode="(log θ)' = −∇L (θ' = −θ⊙∇L; replicator flow on the simplex)",
        hyper_map="h = lr",
        doc=__doc__,
    )
)

__all__ = ["eg"]
