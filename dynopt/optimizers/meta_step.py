r"""Meta-learned step size: the log of the step is a state variable driven by the hypergradient.

``meta_step(base)`` wraps any spec (SGD, Momentum, Nesterov, RMSprop, Adam, or your own). The
base computes its step d_t with the scheduled lr; the wrapper scales it by a global s > 0 and
optional per-coordinate gains p > 0. Scheme::

    θ_t = θ_{t−1} + s_t · p_t ⊙ d_t,      u_t = p_t ⊙ d_t   (the step per unit of s)
    D_t = ρ · D_{t−1} + u_t,              D_0 = 0           (the trace of the steps; ρ = trace_decay)

Before the step, s and p learn from the hypergradient h_t = ⟨g_t, D_{t−1}⟩, where g_t = F(θ_{t−1})
is the current force (∇L + λθ with a coupled L2 penalty). A decoupled weight decay (AdamW's
−lr·λθ, or ``decoupled_weight_decay=True``) is scaled by s with the step but left out of g, u and
D: it is not a descent step on L, and a hypergradient that saw it would push s to its floor near
the optimum (MetaAdamW on minibatch digits: s fell to 1.3e-6, gap 0.04 against 0.002).
A multi-stage base (``dynopt.discretize(spec, Heun())``) runs its stages at the step lr·s, and u is
its step divided by s; so does a base whose step the meta step may not scale (``Spec.scalable_step``
False): EG, whose step θ ⊙ exp(−lr·F) scaled by s would leave θ off w⁺ − w⁻ and could make it negative, and
ASGD, whose average of the iterates would average the unscaled ones (its η then carries the previous step's s).
Neither kind takes per-coordinate gains. Since θ_{t−1} = θ_0 + Σ_k s_k u_k, h_t = Σ_k ρ^{t−1−k} ⟨g_t, u_k⟩ is
the derivative of L(θ_{t−1}) with respect to a change of s that persists over the past steps with
weights ρ^{t−1−k}, as a change of the lr persists through a momentum buffer (for heavy ball with
μ = ρ it is the derivative through the buffer); ρ = 0 is the one-step hypergradient
∂L(θ_{t−1})/∂s_{t−1} = ⟨g_t, u_{t−1}⟩ of Baydin et al. and Amid et al. Two rules (``rule=``):

``"eg"`` (default; exponentiated gradient on s, Amid et al. 2022, Su 2022, plus a brake)::

    log s_t = log s_{t−1} + min(−γ_s·c − (γ_↓ − γ_s)·b², δ),      c = cos(g_t, D_{t−1})
        b = (max(c, c_u) − c₀)₊/(1 − c₀) ∈ [0, 1],                 c_u = cos(g_t, u_{t−1})
    log p_t = log p_{t−1} − γ_p · g_t ⊙ D_{t−1} / (‖g_t‖ ‖D_{t−1}‖)

  While neither cosine exceeds c₀ (``brake_cos``, 0.5) this is the plain EG rule −γ_s·c, symmetric
  in c, so gradient noise (c scattered around 0) makes log s a driftless random walk. When a step
  clearly overshoots (a cosine → 1, the signature of an unstable mode) the brake ramps the decrease
  up to γ_↓ = ``shrink_lr`` (2.0) per step, quadratically in the excess b, so that the rare noise
  cosines just above c₀ barely brake while a real overshoot gets the full rate. The brake watches the
  last step u as well as the trace: the trace averages the alternating steps of an unstable stiff
  direction away (on full-batch softmax regression of digits, a brake on the trace alone let
  MetaSGD's s grow far past stability and collapse again, final gap 1.86). The brake is dynopt's
  choice, like Rprop's and the "bold driver"'s fast decrease: a step that is too small only costs
  time, one that is too large grows an unstable mode exponentially. Without it (γ_↓ = γ_s = 0.02,
  with the papers' ρ = 0 and s₀ = 1), MetaSGD from lr = 1e-3 on a quadratic of condition 25
  converges, keeps growing s while consecutive steps stay aligned along the slow direction,
  overshoots 2/λ_max and diverges at step 278; with it, it converges from lr = 1e-3, 1e-2 and
  0.1 (with every default too; without the brake the defaults diverge by step 229). With a
  weaker brake (γ_↓ = 0.5 or 1), MetaSGD with the other defaults diverged on Rosenbrock from
  the origin at lr = 1e-3: s grows while the iterate follows the valley floor, where the stiff
  direction across the valley is excited by round-off only; when that mode shows in the gradient,
  lr·s is several times its stability limit, and the brake must cut s by that factor within a
  step or two (γ_↓ = 2: up to e² per step). A brake at c₀ = 0 instead (any c > 0) would make noise drive
  log s down by (γ_↓ − γ_s)·E[b²] per step; with c₀ = 0.5 and the quadratic ramp that drift is
  negligible once the parameters have more than a few dozen coordinates (2000 steps of pure noise
  with the defaults: s/s₀ ends at 0.09 with 20 coordinates, 1.6 with 200), but in two dimensions
  noise alone still collapses s.

``"hd"`` (additive hypergradient descent, Baydin et al. 2018; against the last step, whatever ρ)::

    s_t = clip(s_{t−1} − γ_s ⟨g_t, u_{t−1}⟩,  s_{t−1}e^{−δ},  s_{t−1}e^{δ})

  This rule has no brake, and the trace would multiply its change by up to 1/(1 − ρ): with the
  trace, MetaNesterov under "hd" went non-finite within 1000 float32 steps on Rosenbrock with
  gradient noise (``tests/test_faults.py``'s long run), without it 100,000 steps stay finite. The
  trace still drives the gains under "hd".

then s is clipped into ``scale_range`` and p into ``gain_range``. So s and p are never negative;
under "eg" log s grows by at most min(γ_s, δ) and shrinks by at most max(γ_s, γ_↓) per step,
under "hd" |Δ log s| ≤ δ, and |Δ log p_i| ≤ γ_p. The norms and the dot product run over
*all* parameters (in torch: every param group), on the device, with no host synchronisation.
For SGD with s₀ = 1, d = −lr·g and "hd" is Baydin's SGD-HD α_t = α_{t−1} + β g_t·g_{t−1}
with α = lr·s and β = γ_s·lr² (likewise Adam-HD); ``tests/test_meta_step.py`` checks both against
implementations written from the paper.

The first step and the warm-up: s starts at s₀ = ``initial_scale`` (0.01) and p at 1, and D_0 = 0
leaves them unchanged at step 1, so the first step is s₀ (clipped into ``scale_range``) times the
base's first step; with ``initial_scale=1`` it is the base's step exactly. While the steps agree
with the descent (c < 0), s then grows by up to e^{γ_s} per step: from 0.01 to 1 in about 66 steps
at the default γ_s = 0.07, an automatic warm-up. Why not s₀ = 1: no rule that adapts after a step
can undo a first step that is far too large. One step of Adam at lr = 1 moves every weight by 1
(RMSprop's first step is 10·lr per coordinate); on a tanh MLP 64-32-10 on digits, one such step
followed by 999 steps of Adam at the best lr ends at a loss of 0.21, against 0.045 for tuned Adam
(at lr = 0.3 the same damage costs 0.05).

Why the trace (ρ = 0.97 by default): with minibatch gradients the one-step alignment of a step
that is too large is buried in noise. Measured on softmax regression of digits (batches of 64) at
lr = 1 over steps 30-300, the mean of c is 0.04 against the last step and 0.20 against the trace
(ρ = 0.9) for Adam (RMSprop 0.16 and 0.26, heavy ball 0.02 and 0.13), so with ρ = 0 s shrinks
about 5× slower than the step needs; pure noise stays unbiased (D is independent of the next
noise). The defaults γ_s = 0.07, ρ = 0.97, s₀ = 0.01 were chosen on that problem and on the MLP
above (1000 steps, λ = 1/n, initial lr 1e-4 … 1): the worst final gap to L* of every wrapper is
at most 0.0051 (it was 0.057 to 1.2 with the earlier defaults γ_s = 0.02, ρ = 0, s₀ = 1), and the
worst final MLP loss is within 1.11× of the base's best-tuned one (earlier: 2.3× to 106×).
A base may declare its own defaults for the meta step (``Spec.meta_defaults``), and ``meta_step(base, **defaults)``
sets them for any base: Lion and Rprop, sign methods whose fixed-size steps keep the alignment small (trace cosines
about −0.01 for Rprop on minibatches, +0.01 … +0.08 for Lion once its step is too large), take γ_s = 0.4 and
s₀ = 0.03 (with the generic ones: worst gap 0.138 for Rprop, and 1.88× Lion's best MLP loss; with theirs 0.027 and
1.17×); NesterovSBC, whose momentum runs on the step count from the first step, starts from s₀ = 0.1 (1.30× → 1.14×).

Param groups (torch): s is one scalar for every param group, so the hyperparameters that drive it
(``meta_lr``, ``rule``, ``shrink_lr``, ``brake_cos``, ``max_log_step``, ``scale_range``,
``initial_scale``; ``Hyper.shared``) must be the same in all groups: a group that sets another
value is refused with ValueError, at construction, in ``add_param_group``, and at the next step if
changed afterwards. The lr, the base's hyperparameters, ``gain_lr``, ``gain_range`` and
``trace_decay`` may differ per group. A reversed ``scale_range`` or ``gain_range`` (low > high) is
refused with ValueError on every backend.

Sharded parameters: when each rank steps only its own shard (torch's
``ZeroRedundancyOptimizer(optimizer_class=MetaAdam, shard_group=True)``, or JAX inside
``shard_map``/``pmap`` with ``axis_name=``), the three sums are all-reduced over the shards, so every
rank holds the same s. Under DDP, FSDP2 and ``jit`` with sharded arrays they already span the model.

Choices the papers leave open, made here: the alignment is cosine-normalized over all
parameters (a scalar s), the per-coordinate gains use the same global normalizer, the trace
includes the gains but not s, and s multiplies the scheduled lr, so an lr scheduler composes with
it (it never overwrites s).

ODE (continuum limit, with γ_s/h, γ_p/h and (1 − ρ)/h fixed, h the base's time step; scale_range
and gain_range are not applied)::

    θ' = s · p ⊙ V(θ, state),    D' = p ⊙ V − ((1 − ρ)/h) · D,
    (log s)' = Δ(cos(F, D))/h  ("eg"),   s' = −γ_s ⟨F, p⊙V⟩  ("hd"),   (log p)' = −(γ_p/h) F⊙D/(‖F‖‖D‖)

with V the base's θ-velocity (a step d = h·V), Δ(c) the "eg" change above (−γ_s·c plus the brake,
which watches cos(F, p⊙V) for the last step),
and the base's own state equations unchanged. D is the discrete recursion's Euler form
(D_t − D_{t−1} = h·D'); with ρ fixed as h → 0 it relaxes to p⊙V·h/(1 − ρ) at once and the
alignment becomes cos(F, p⊙V). For SGD, cos(F, −F) = −1, so in the continuum s only grows: the
self-correcting decrease of HD is an O(h) discrete effect.

Hyperparameter map: as the base (h from the base's lr), plus γ_s (meta_lr), γ_↓ (shrink_lr),
c₀ (brake_cos), γ_p (gain_lr), ρ (trace_decay), s₀ (initial_scale); the continuum keeps γ/h
("eg", gains) or γ_s ("hd") and (1 − ρ)/h fixed.

Conventions: no torch.optim or optax counterpart. Read the adapted scale with
``optimizer.global_scalars()["scale"]`` in torch and ``state.scale`` in JAX; the effective
learning rate is lr · scale (· gain). The state variable ``previous_direction`` holds the trace D
(with ρ = 0, the previous step u); it keeps its name so that earlier checkpoints load.

References:
    E. Amid, R. Anil, C. Fifty, M. K. Warmuth, "Step-size Adaptation Using Exponentiated Gradient
    Updates", 2022, arXiv:2202.00145.
    A. G. Baydin et al., "Online Learning Rate Adaptation with Hypergradient Descent", ICLR 2018,
    arXiv:1703.04782.
    Su Jianlin, "指数梯度下降 + 元学习 = 自适应学习率", kexue.fm/archives/8968, 2022.
"""

from __future__ import annotations

import dataclasses

from ..spec import Hyper, Spec, interval, is_static_zero, nonnegative, one_of, register
from ..statement import _drive
from ..tree import ZERO
from ._common import decoupled_decay, moment_force
from .adam import adam
from .momentum import momentum
from .nesterov import nesterov
from .rmsprop import rmsprop
from .sgd import sgd

TINY = 1e-30

META_HYPERPARAMS = (
    Hyper("meta_lr", 0.07, "γ_s: learning rate of log s (of s itself under rule='hd')", nonnegative, shared=True),
    Hyper("gain_lr", 0.0, "γ_p: learning rate of the per-coordinate log gains (0: no gains)", nonnegative),
    Hyper("rule", "eg", "'eg' (multiplicative, cosine alignment) or 'hd' (additive hypergradient)", one_of("eg", "hd"),
          static=True, shared=True),
    Hyper("shrink_lr", 2.0, "γ_↓: rate of log s when a step clearly overshoots (cos → 1; rule 'eg')", nonnegative, shared=True),
    Hyper("brake_cos", 0.5, "c₀: the cosine above which the brake γ_↓ engages (rule 'eg')", interval(-1.0, 1.0), shared=True),
    Hyper("max_log_step", 0.5, "δ: bound on the growth of log s per step (on |Δ log s| under rule 'hd')",
          interval(0.0, low_open=True), shared=True),
    Hyper("scale_range", (1e-6, 1e6), "bounds (low, high) of s", interval(0.0, low_open=True), length=2, ordered=True,
          shared=True),
    Hyper("gain_range", (1e-3, 1e3), "bounds (low, high) of each gain p_i", interval(0.0, low_open=True), length=2,
          ordered=True),
    Hyper("trace_decay", 0.97, "ρ: rule 'eg' and the gains take the hypergradient against the trace D ← ρD + u of "
          "the steps (0: the last step only, as Amid et al.; rule 'hd' always uses the last step)", interval(0.0, 1.0)),
    Hyper("initial_scale", 0.01, "s₀: the scale of the first step (1: the first step is the base's)",
          interval(0.0, low_open=True), shared=True),
)


def log_scale_change(o, hp, cosine, brake_cosine=None):
    """−γ_s·cos, plus the brake −(γ_↓ − γ_s)·((c_b − c₀)₊/(1 − c₀))² once a step clearly overshoots; the brake
    watches ``brake_cosine`` (default: ``cosine``)."""
    excess = (cosine if brake_cosine is None else brake_cosine) - hp.brake_cos
    overshoot = (excess + o.abs(excess)) / 2 / (1 - hp.brake_cos)  # (c_b − c₀)₊ / (1 − c₀), in [0, 1]
    return -hp.meta_lr * cosine - (hp.shrink_lr - hp.meta_lr) * overshoot * overshoot


def _larger(o, a, b):
    """max(a, b) of two scalars without a Python branch (a traced value has no truth value)."""
    return (a + b + o.abs(a - b)) / 2


def meta_hyperparams(base: Spec, defaults: dict) -> tuple[Hyper, ...]:
    """The meta step's hyperparameters with their defaults for ``base``: ``defaults`` (the caller's), else the base's
    ``meta_defaults``, else the generic ones; each checked like a value passed to the optimizer."""
    chosen = {**dict(base.meta_defaults), **defaults}
    known = {h.name: h for h in META_HYPERPARAMS}
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise TypeError(f"meta_step({base.name}) got unknown meta hyperparameter(s) {unknown}; expected some of "
                        f"{list(known)}")
    for name, value in chosen.items():
        known[name].validate(value, lambda v: True)
    return tuple(dataclasses.replace(h, default=chosen[h.name]) if h.name in chosen else h for h in META_HYPERPARAMS)


def meta_step(base: Spec, **defaults) -> Spec:
    """Wrap ``base`` with a meta-learned global step scale s and optional per-coordinate gains p.

    ``defaults`` replace the meta step's defaults (``meta_step(spec, meta_lr=0.2)``), which are otherwise the
    base's ``meta_defaults`` where it declares some (Lion, Rprop, NesterovSBC) and the generic ones."""
    meta_hyper = meta_hyperparams(base, defaults)

    def with_gains(hp) -> bool:
        return not is_static_zero(hp.gain_lr)

    def with_trace(hp) -> bool:
        """A trace buffer of its own: for rule "eg" or the gains, unless trace_decay = 0 (then D = u)."""
        return not is_static_zero(hp.trace_decay) and (hp.rule == "eg" or with_gains(hp))

    def state(hp):
        return (base.state(hp) + ("previous_direction",) + (("step_trace",) if with_trace(hp) else ())
                + (("gain",) if with_gains(hp) else ()))

    def initial_state(o, hp, param):
        extra = {"previous_direction": o.zeros_like(param)}
        if with_trace(hp):
            extra["step_trace"] = o.zeros_like(param)
        if with_gains(hp):
            extra["gain"] = o.zeros_like(param) + 1.0
        return {**base.initial(o, hp, param), **extra}

    def decoupled(hp) -> bool:
        """The base decays θ beside its step (AdamW): that drift is not the loss's, so the hypergradient leaves it out."""
        if base.decoupled_decay is not None:
            flag = base.decoupled_decay(hp)
        else:
            flag = dict(base.implies).get("decoupled_weight_decay", getattr(hp, "decoupled_weight_decay", False))
        return bool(flag) and not is_static_zero(getattr(hp, "weight_decay", 0))

    def loss_force(hp, grad, param):
        """±∇L, with the coupled L2 term λθ (part of the objective) but not a decoupled decay."""
        return moment_force(hp, grad, param, decoupled(hp))

    def reductions(o, hp, grad, param, state):
        g, u = loss_force(hp, grad, param), state.previous_direction
        sums = {"gu": o.dot(g, u), "gg": o.dot(g, g), "uu": o.dot(u, u)}
        if with_trace(hp):
            sums |= {"gD": o.dot(g, state.step_trace), "DD": o.dot(state.step_trace, state.step_trace)}
        return sums

    def alignment(o, hp, totals):
        """(⟨g, D⟩, ‖g‖‖D‖, cos(g, D), cos(g, u)): against the trace D and the last step u."""
        norm_g = o.sqrt(totals["gg"])
        last = totals["gu"] / (norm_g * o.sqrt(totals["uu"]) + TINY)
        if not with_trace(hp):
            return totals["gu"], norm_g * o.sqrt(totals["uu"]) + TINY, last, last
        normalizer = norm_g * o.sqrt(totals["DD"]) + TINY
        return totals["gD"], normalizer, totals["gD"] / normalizer, last

    def adapt_scale(o, hp, scale, totals):
        _, _, cosine, last = alignment(o, hp, totals)
        if hp.rule == "eg":  # the trace drives s; the brake also watches the last step (a trace hides an oscillation)
            change = log_scale_change(o, hp, cosine, _larger(o, cosine, last))
            # growth ≤ δ; the decrease is at most max(γ_s, γ_↓) by construction (the low bound never binds)
            new = scale * o.exp(o.clip(change, -(hp.meta_lr + hp.shrink_lr), hp.max_log_step))
        else:  # Baydin's additive rule, against the last step: it has no brake, and a trace would amplify it
            bound = o.exp(hp.max_log_step)
            new = o.clip(scale - hp.meta_lr * totals["gu"], scale / bound, scale * bound)
        return o.clip(new, *hp.scale_range)

    def update(o, hp, t, grad, param, state, totals, grad_fn=None):
        if base.gradient_calls > 1:
            return _drive(lambda *args: staged(*args, totals))(o, hp, t, grad, param, state, grad_fn, name)
        scale = adapt_scale(o, hp, state.scale, totals)
        if not base.scalable_step:  # EG, ASGD: the base itself at lr·s keeps θ > 0, θ = w⁺ − w⁻, ASGD's average
            refuse_gains(hp, f"a base whose step the meta step scales ({base.name} runs at lr·s)")
            delta, new = base.update(o, at_scale(hp, scale), t, grad, param, state)
            return record_at_scale(hp, param, state, scale, delta, new)
        delta, new = base.update(o, hp, t, grad, param, state)
        return record(o, hp, grad, param, state, totals, scale, delta, new)

    def refuse_gains(hp, needed):
        if with_gains(hp):
            raise ValueError(f"{name}: gain_lr={hp.gain_lr!r}, but per-coordinate gains need {needed}; use gain_lr=0")

    def at_scale(hp, scale):
        """The base's hyperparameters with the effective learning rate lr·s."""
        return type(hp)(**{**vars(hp), "lr": hp.lr * scale})

    def staged(o, hp, t, grad, param, state, totals):
        """A multi-stage base (dynopt.discretize): its stages at the effective step, lr·s, so that the stage
        points are the scheme's for that step; u = step / s (s > 0)."""
        refuse_gains(hp, f"a base with one gradient per step ({base.name} takes {base.gradient_calls})")
        scale = adapt_scale(o, hp, state.scale, totals)
        delta, new = yield from base.staged_update(o, at_scale(hp, scale), t, grad, param, state)
        return record_at_scale(hp, param, state, scale, delta, new)

    def record_at_scale(hp, param, state, scale, delta, new):
        """The step of a base run at lr·s, with u = step / s and the trace recorded (no gains)."""
        new = {**new, "scale": scale}
        unit = ZERO if delta is ZERO else delta / scale
        if decoupled(hp):
            unit = unit - decoupled_decay(hp, param, True)
        new["previous_direction"] = unit
        if with_trace(hp):
            new["step_trace"] = hp.trace_decay * state.step_trace + unit
        return delta, new

    def record(o, hp, grad, param, state, totals, scale, delta, new):
        """The scaled step, with the last step u and its trace D recorded (and the gains applied). A decoupled
        decay (AdamW's −lr·λθ) is scaled with the step but left out of u and D: it is not a descent step on L,
        and a hypergradient that saw it would shrink s to the floor near the optimum (measured: MetaAdamW's
        scale fell to 1.3e-6 on minibatch digits, gap 0.04 against 0.002)."""
        new = {**new, "scale": scale}
        trace = state.step_trace if with_trace(hp) else state.previous_direction
        drive = delta - decoupled_decay(hp, param, True) if decoupled(hp) else delta
        if with_gains(hp):
            g = loss_force(hp, grad, param)
            _, normalizer, _, _ = alignment(o, hp, totals)
            gain = state.gain * o.exp(-hp.gain_lr * (g * trace) / normalizer)
            new["gain"] = gain = o.minimum(o.maximum(gain, hp.gain_range[0]), hp.gain_range[1])
            delta, drive = gain * delta, gain * drive
        new["previous_direction"] = drive  # u_t, the step per unit of s
        if with_trace(hp):
            new["step_trace"] = hp.trace_decay * state.step_trace + drive  # D_t = ρD_{t−1} + u_t
        return scale * delta, new

    def vector_field(o, hp, time, grad, param, state):
        velocity, rates = base.vector_field(o, hp, time, grad, param, state)
        h = base.time_step(hp)
        f = loss_force(hp, grad, param)
        if decoupled(hp):  # the trace and the alignment see the loss's part of the step (as in update)
            velocity_of_loss = velocity - decoupled_decay(hp, param, True) / h
        else:
            velocity_of_loss = velocity
        if with_gains(hp):
            velocity, velocity_of_loss = state.gain * velocity, state.gain * velocity_of_loss
        direction = velocity_of_loss  # u = h·direction per step
        rates = {**rates, "previous_direction": o.zeros_like(param)}  # the last step: read as h·direction, held
        last = o.dot(f, direction) / (o.norm(f) * o.norm(direction) + TINY)
        if with_trace(hp):  # D_t = ρD_{t−1} + u_t: D' = direction − ((1 − ρ)/h)·D
            trace = state.step_trace
            rates["step_trace"] = direction - (1 - hp.trace_decay) / h * trace
            normalizer = o.norm(f) * o.norm(trace) + TINY
            cosine = o.dot(f, trace) / normalizer
        else:
            trace, normalizer, cosine = direction, o.norm(f) * o.norm(direction) + TINY, last
        if hp.rule == "eg":
            rates["scale"] = state.scale * log_scale_change(o, hp, cosine, _larger(o, cosine, last)) / h
        else:  # s_t = s_{t−1} − γ_s⟨g_t, u_{t−1}⟩ with u = h·direction
            rates["scale"] = -hp.meta_lr * o.dot(f, direction)
        if with_gains(hp):
            rates["gain"] = -state.gain * (hp.gain_lr / h) * (f * trace) / normalizer
        return state.scale * velocity, rates

    name = f"Meta{base.name}"
    return Spec(
        name=name,
        gradient_calls=base.gradient_calls,
        staged_update=staged if base.gradient_calls > 1 else None,
        discretization=base.discretization,
        jax_name=f"meta_{base.jax_name}",
        hyperparams=base.hyperparams + meta_hyper,
        state=state,
        initial_state=initial_state,
        scalars=lambda hp: {**base.scalars(hp), "scale": hp.initial_scale},
        effective_lr=lambda hp, scalars: hp.lr * scalars["scale"],
        reductions=reductions,
        check_param=base.check_param,
        update=update,
        vector_field=vector_field,
        time_step=base.time_step,
        needs_params=base.needs_params,
        implies=base.implies,  # MetaNesterov's checkpoint says nesterov=True: MetaMomentum refuses it
        counts_steps=base.counts_steps,
        constraints=base.constraints,  # SGD's nesterov needs momentum, Rprop's etas straddle 1, ...
        group_keys=base.group_keys,
        state_shape=base.state_shape,  # the base's state of its own shape (Adafactor's factors); the meta state: θ's
        complex_params=base.complex_params,
        random_seed=base.random_seed,  # a base that draws noise (NoisySGD) keeps its random stream
        smooth=base.smooth,
        ode=f"{base.ode}; θ' scaled by s·p, D' = θ'/s − ((1 − ρ)/h)·D, (log s)' = −(γ/h)·cos(∇L, D)",
        scheme=f"{base.name} step × s·p; log s ← log s − γ·cos(g_t, D_{{t−1}}), D ← ρD + u",
        hyper_map=f"{base.hyper_map}; s₀ = initial_scale, p₀ = 1, γ_s = meta_lr, ρ = trace_decay",
        doc=f"{base.name} with a meta-learned step size.\n\n" + __doc__ + f"\n\nThe base, {base.name}:\n\n" + base.doc,
    )


meta_sgd = register(meta_step(sgd))
meta_momentum = register(meta_step(momentum))
meta_nesterov = register(meta_step(nesterov))
meta_rmsprop = register(meta_step(rmsprop))
meta_adam = register(meta_step(adam))

__all__ = ["meta_step", "meta_sgd", "meta_momentum", "meta_nesterov", "meta_rmsprop", "meta_adam"]
