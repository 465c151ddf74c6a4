r"""Meta-learned step size: the log of the step is a state variable driven by the hypergradient.

``meta_step(base)`` wraps any spec (SGD, Momentum, Nesterov, RMSprop, Adam, or your own). The
base computes its step d_t with the scheduled lr; the wrapper scales it by a global s > 0 and
optional per-coordinate gains p > 0. Scheme::

    θ_t = θ_{t−1} + s_t · p_t ⊙ d_t,          u_t = p_t ⊙ d_t  (the step per unit of s)

Before the step, s and p learn from the hypergradient ∂L(θ_{t−1})/∂s_{t−2} = ⟨g_t, u_{t−1}⟩,
where g_t = F(θ_{t−1}) is the current force (∇L + λθ). Two rules (``rule=``):

``"eg"`` (default; exponentiated gradient on s, Amid et al. 2022, Su 2022, plus a brake)::

    log s_t = log s_{t−1} + clip(−γ_s·c − (γ_↓ − γ_s)·(c − c₀)₊/(1 − c₀), ±δ),   c = cos(g_t, u_{t−1})
    log p_t = log p_{t−1} − γ_p · g_t ⊙ u_{t−1} / (‖g_t‖ ‖u_{t−1}‖)

  For c ≤ c₀ (``brake_cos``, 0.5) this is the plain EG rule −γ_s·c, symmetric in c, so gradient
  noise (c scattered around 0) makes log s a driftless random walk. When a step clearly
  overshoots (c → 1, the signature of an unstable mode) the brake ramps the decrease up to
  γ_↓ = ``shrink_lr`` (0.5) per step. The brake is dynopt's choice, like Rprop's and the "bold
  driver"'s fast decrease: a step that is too small only costs time, one that is too large grows
  an unstable mode exponentially. Without it (γ_↓ = γ_s = 0.02), MetaSGD from lr = 1e-3 on a
  quadratic of condition 25 converges, keeps growing s while consecutive steps stay aligned along
  the slow direction, overshoots 2/λ_max and diverges at step 278; with it, it converges from lr =
  1e-3, 1e-2 and 0.1. A brake at c₀ = 0 instead (any c > 0) would make noise drive log s down by
  (γ_↓ − γ_s)·E[c₊] per step; with c₀ = 0.5 that drift is negligible once the parameters have more
  than a few dozen coordinates (2000 steps of pure noise: s ends at 0.15 with 20 coordinates, 1.1
  with 200), but in two dimensions noise alone still collapses s.

``"hd"`` (additive hypergradient descent, Baydin et al. 2018)::

    s_t = clip(s_{t−1} − γ_s ⟨g_t, u_{t−1}⟩,  s_{t−1}e^{−δ},  s_{t−1}e^{δ})

then s is clipped into ``scale_range`` and p into ``gain_range``. So s and p are never negative;
under "eg" log s grows by at most min(γ_s, δ) and shrinks by at most min(max(γ_s, γ_↓), δ) per
step, under "hd" |Δ log s| ≤ δ, and |Δ log p_i| ≤ γ_p.
The norms and the dot product run over *all* parameters (in torch: every param group), on the
device, with no host synchronisation. s_0 = 1 and p_0 = 1, so the first step is the base's.

Choices the papers leave open, made here: the alignment is cosine-normalized over all
parameters (a scalar s), the per-coordinate gains use the same global normalizer, the previous
step u includes the gains but not s, and s multiplies the scheduled lr, so an lr scheduler
composes with it (it never overwrites s). For SGD, d = −lr·g and "hd" is Baydin's
α_t = α_{t−1} + β g_t·g_{t−1} with α = lr·s and β = γ_s·lr².

ODE (continuum limit, with γ_s/h and γ_p/h fixed, h the base's time step; scale_range and
gain_range are not applied)::

    θ' = s · p ⊙ V(θ, state),   (log s)' = Δ(cos(F, p⊙V))/h,   (log p)' = −(γ_p/h) F⊙(p⊙V)/(‖F‖‖p⊙V‖)

with V the base's θ-velocity, Δ(c) the "eg" change above (−γ_s·c plus the brake), and the base's
own state equations unchanged; u is a discrete
variable (the last step) and is held fixed by the flow. For SGD, cos(F, −F) = −1, so in the
continuum s only grows: the self-correcting decrease of HD is an O(h) discrete effect.

Hyperparameter map: as the base (h from the base's lr), plus γ_s (meta_lr), γ_↓ (shrink_lr),
c₀ (brake_cos), γ_p (gain_lr); the continuum keeps γ/h fixed.

Conventions: no torch.optim or optax counterpart. Read the adapted scale with
``optimizer.global_scalars()["scale"]`` in torch and ``state.scale`` in JAX; the effective
learning rate is lr · scale (· gain).

References:
    E. Amid, R. Anil, C. Fifty, M. K. Warmuth, "Step-size Adaptation Using Exponentiated Gradient
    Updates", 2022, arXiv:2202.00145.
    A. G. Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
    arXiv:1703.04782.
    Su Jianlin, "指数梯度下降 + 元学习 = 自适应学习率", kexue.fm/archives/8968, 2022.
"""

from __future__ import annotations

from ..spec import Hyper, Spec, interval, is_static_zero, nonnegative, one_of, register
from ._common import force
from .adam import adam
from .momentum import momentum
from .nesterov import nesterov
from .rmsprop import rmsprop
from .sgd import sgd

TINY = 1e-30

META_HYPERPARAMS = (
    Hyper("meta_lr", 0.02, "γ_s: learning rate of log s (of s itself under rule='hd')", nonnegative),
    Hyper("gain_lr", 0.0, "γ_p: learning rate of the per-coordinate log gains (0: no gains)", nonnegative),
    Hyper("rule", "eg", "'eg' (multiplicative, cosine alignment) or 'hd' (additive hypergradient)", one_of("eg", "hd"), static=True),
    Hyper("shrink_lr", 0.5, "γ_↓: rate of log s when a step clearly overshoots (cos → 1; rule 'eg')", nonnegative),
    Hyper("brake_cos", 0.5, "c₀: the cosine above which the brake γ_↓ engages (rule 'eg')", interval(-1.0, 1.0)),
    Hyper("max_log_step", 0.5, "δ: bound on |Δ log s| per step", interval(0.0, low_open=True)),
    Hyper("scale_range", (1e-6, 1e6), "bounds of s", interval(0.0, low_open=True), length=2),
    Hyper("gain_range", (1e-3, 1e3), "bounds of each gain p_i", interval(0.0, low_open=True), length=2),
)


def log_scale_change(o, hp, cosine):
    """−γ_s·cos, plus the brake −(γ_↓ − γ_s)·(cos − c₀)₊/(1 − c₀) once a step clearly overshoots."""
    excess = cosine - hp.brake_cos
    overshoot = (excess + o.abs(excess)) / 2 / (1 - hp.brake_cos)  # (cos − c₀)₊ / (1 − c₀), in [0, 1]
    return -hp.meta_lr * cosine - (hp.shrink_lr - hp.meta_lr) * overshoot


def meta_step(base: Spec) -> Spec:
    """Wrap ``base`` with a meta-learned global step scale s and optional per-coordinate gains p."""

    def with_gains(hp) -> bool:
        return not is_static_zero(hp.gain_lr)

    def state(hp):
        return base.state(hp) + ("previous_direction",) + (("gain",) if with_gains(hp) else ())

    def initial_state(o, hp, param):
        extra = {"previous_direction": o.zeros_like(param)}
        if with_gains(hp):
            extra["gain"] = o.zeros_like(param) + 1.0
        return {**base.initial(o, hp, param), **extra}

    def reductions(o, hp, grad, param, state):
        g, u = force(hp, grad, param), state.previous_direction
        return {"gu": o.dot(g, u), "gg": o.dot(g, g), "uu": o.dot(u, u)}

    def adapt_scale(o, hp, scale, totals):
        if hp.rule == "eg":
            cosine = totals["gu"] / (o.sqrt(totals["gg"]) * o.sqrt(totals["uu"]) + TINY)
            new = scale * o.exp(o.clip(log_scale_change(o, hp, cosine), -hp.max_log_step, hp.max_log_step))
        else:
            bound = o.exp(hp.max_log_step)
            new = o.clip(scale - hp.meta_lr * totals["gu"], scale / bound, scale * bound)
        return o.clip(new, *hp.scale_range)

    def update(o, hp, t, grad, param, state, totals):
        scale = adapt_scale(o, hp, state.scale, totals)
        delta, new = base.update(o, hp, t, grad, param, state)
        new = {**new, "scale": scale}
        if with_gains(hp):
            g, u = force(hp, grad, param), state.previous_direction
            normalizer = o.sqrt(totals["gg"]) * o.sqrt(totals["uu"]) + TINY
            gain = state.gain * o.exp(-hp.gain_lr * (g * u) / normalizer)
            new["gain"] = gain = o.minimum(o.maximum(gain, hp.gain_range[0]), hp.gain_range[1])
            delta = gain * delta
        new["previous_direction"] = delta
        return scale * delta, new

    def vector_field(o, hp, time, param, state, grad):
        velocity, rates = base.vector_field(o, hp, time, param, state, grad)
        h = base.time_step(hp)
        f = force(hp, grad, param)
        direction = state.gain * velocity if with_gains(hp) else velocity
        normalizer = o.norm(f) * o.norm(direction) + TINY
        rates = {**rates, "previous_direction": o.zeros_like(param)}
        if hp.rule == "eg":
            cosine = o.dot(f, direction) / normalizer
            rates["scale"] = state.scale * log_scale_change(o, hp, cosine) / h
        else:
            rates["scale"] = -hp.meta_lr * o.dot(f, direction)
        if with_gains(hp):
            rates["gain"] = -state.gain * (hp.gain_lr / h) * (f * direction) / normalizer
        return state.scale * direction, rates

    return Spec(
        name=f"Meta{base.name}",
        jax_name=f"meta_{base.jax_name}",
        hyperparams=base.hyperparams + META_HYPERPARAMS,
        state=state,
        initial_state=initial_state,
        scalars=lambda hp: {**base.scalars(hp), "scale": 1.0},
        effective_lr=lambda hp, scalars: hp.lr * scalars["scale"],
        reductions=reductions,
        check_param=base.check_param,
        update=update,
        vector_field=vector_field,
        time_step=base.time_step,
        needs_params=base.needs_params,
        ode=f"{base.ode}; θ' scaled by s·p, (log s)' = −(γ/h)·cos(∇L, θ')",
        scheme=f"{base.name} step × s·p; log s ← log s − γ·cos(g_t, u_{{t−1}})",
        hyper_map=f"{base.hyper_map}; s₀ = p₀ = 1, γ_s = meta_lr",
        doc=f"{base.name} with a meta-learned step size.\n\n" + __doc__ + f"\n\nThe base, {base.name}:\n\n" + base.doc,
    )


meta_sgd = register(meta_step(sgd))
meta_momentum = register(meta_step(momentum))
meta_nesterov = register(meta_step(nesterov))
meta_rmsprop = register(meta_step(rmsprop))
meta_adam = register(meta_step(adam))

__all__ = ["meta_step", "meta_sgd", "meta_momentum", "meta_nesterov", "meta_rmsprop", "meta_adam"]
