r"""Adam (with AMSGrad and decoupled weight decay): RMSprop with a momentum average and bias correction.

ODE (state θ, the first moment m and the second moment v; F = ±∇L, plus λθ when the decay is
coupled; n = time/h)::

    m' = c₁ (F − m),   v' = c₂ (F⊙F − v),    c_i = (1 − β_i)/h
    θ' = −m̂ ⊘ (√v̂ + ε)  [− λθ, decoupled],   m̂ = m / (1 − β₁ⁿ),   v̂ = v / (1 − β₂ⁿ)

``amsgrad=True`` normalizes by the running maximum w of v instead (w = max_{s ≤ t} v(s)): in the
statement ``w ← max(w, v_new)``, i.e. h·w' = max(w, v + h·v') − w, which tends to w' = (v')₊ while
w = v and w' = 0 while w > v.

Scheme (torch.optim.Adam form)::

    m_t = β₁ m_{t−1} + (1 − β₁) F;     v_t = β₂ v_{t−1} + (1 − β₂) F⊙F;    w_t = max(w_{t−1}, v_t)  (amsgrad)
    θ_t = θ_{t−1} [− lr·λ·θ_{t−1}, decoupled] − lr/(1 − β₁ᵗ) · m_t ⊘ (√(v_t or w_t) / √(1 − β₂ᵗ) + ε)

Hyperparameter map: h = lr and c_i = (1 − β_i)/lr; step k at ODE time k·lr. As lr → 0 with the
betas fixed, the averages are fast and the flow is the sign-like θ' = −F ⊘ (|F| + ε) (Barakat &
Bianchi). In the ODE the bias correction of the first step is held on [0, h] (n is clamped at 1),
where m/(1 − β₁ⁿ) would otherwise be 0/0. Order 1 (fitted in tests/test_ode.py, AMSGrad and
decoupled decay included).

Conventions: ``dynopt.torch.Adam`` is a drop-in for ``torch.optim.Adam``: the same arguments in the
same positions (lr, betas, eps, weight_decay, amsgrad; ``maximize`` and ``decoupled_weight_decay``
keyword-only), defaults, state (``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq`` with amsgrad) and
numbers. ``decoupled_weight_decay=True`` is AdamW (:mod:`dynopt.optimizers.adamw`, whose class
fixes it), so an AdamW checkpoint loads into Adam and continues as AdamW, as in torch.optim; a
state_dict whose groups set ``decoupled_weight_decay`` but not ``amsgrad`` (torch.optim.RAdam's)
is refused. In optax: ``optax.adam(lr, b1, b2, eps)`` (eps_root = 0; chain
``optax.add_decayed_weights`` first for coupled decay), ``optax.adamw`` for decoupled decay.
``optax.amsgrad`` differs: it takes the maximum of the *bias-corrected* v̂, torch and dynopt of the
raw v (then correct it). ``dynopt.torch.Adam`` takes ``betas=(β₁, β₂)`` as torch; ``dynopt.jax.adam`` and
``dynopt.jax.amsgrad`` are optax's (``b1``, ``b2``, ``eps_root``, ``mu_dtype``, ``nesterov``; the optax views below).

References:
    D. P. Kingma and J. Ba, "Adam: A Method for Stochastic Optimization", ICLR 2015, arXiv:1412.6980.
    S. J. Reddi, S. Kale, S. Kumar, "On the Convergence of Adam and Beyond", ICLR 2018 (AMSGrad).
    I. Loshchilov and F. Hutter, "Decoupled Weight Decay Regularization", ICLR 2019, arXiv:1711.05101.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021, arXiv:1810.02263.
"""

from __future__ import annotations

from dataclasses import replace

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, is_static_zero, register
from ..statement import Drift, Relax, from_statement
from . import _optax as optax_args
from ._common import DECOUPLED, MAXIMIZE_KW, WEIGHT_DECAY, betas_hyper, decoupled_decay, eps_hyper, lr_hyper, moment_force

AMSGRAD = Hyper("amsgrad", False, "AMSGrad: normalize by the running maximum of the second moment", static=True)


def state(hp):
    return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if hp.amsgrad else ())


def moments(o, hp, t, x, decoupled):
    """Adam's terms; ``decoupled``: the weight decay is AdamW's (a drift of θ), not a force in the moments."""
    beta1, beta2 = hp.betas
    g = moment_force(hp, x.grad, x.param, decoupled)
    if hp.amsgrad:  # the new v, formed before its term so that the field sees v + h·v' too
        v_next = beta2 * x.exp_avg_sq + (1 - beta2) * (g * g)
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)F
    yield Relax("exp_avg_sq", beta2, g * g)  # v ← β₂v + (1 − β₂)F²
    second = x.exp_avg_sq
    if hp.amsgrad:
        yield Relax("max_exp_avg_sq", 0, o.maximum(x.max_exp_avg_sq, v_next))  # w ← max(w, v): decay 0 assigns
        second = x.max_exp_avg_sq
    step_size = hp.lr / (1 - beta1**t)
    denom = o.sqrt(second) / o.sqrt(1 - beta2**t) + hp.eps
    yield Drift("param", decoupled_decay(hp, x.param, decoupled) - step_size * x.exp_avg / denom)  # θ ← θ − lr·m̂/(√v̂ + ε)


def adaptive_moments(o, hp, t, x):
    yield from moments(o, hp, t, x, hp.decoupled_weight_decay)


# ----------------------------------------------------------------------------- optax's form (dynopt.jax)


def optax_moments(o, hp, t, x):
    """optax.scale_by_adam (``nesterov``: optax.nadam's form), then optax.adamw's decayed weights, then −lr."""
    beta1, beta2 = hp.b1, hp.b2
    g = x.grad
    yield Relax("mu", beta1, g)  # m ← β₁m + (1 − β₁)g
    yield Relax("nu", beta2, optax_args.abs_sq(o, g))  # v ← β₂v + (1 − β₂)|g|²
    if hp.nesterov:  # m̂ = β₁·m/(1 − β₁ᵗ⁺¹) + (1 − β₁)·g/(1 − β₁ᵗ)
        mu_hat = beta1 * (x.mu / (1 - beta1 ** (t + 1))) + (1 - beta1) * (g / (1 - beta1**t))
    else:
        mu_hat = x.mu / (1 - beta1**t)
    direction = mu_hat / (o.sqrt(x.nu / (1 - beta2**t) + hp.eps_root) + hp.eps)
    decay = getattr(hp, "weight_decay", 0)  # optax.adam has none
    if not is_static_zero(decay):
        direction = direction + decay * x.param  # optax.add_decayed_weights (adamw)
    yield Drift("param", -hp.lr * direction)  # θ ← θ − lr·(m̂/(√(v̂ + ε_root) + ε) [+ λθ])


def optax_amsgrad_moments(o, hp, t, x):
    """optax.scale_by_amsgrad: the running maximum of the bias-corrected v̂ (torch: of the raw v)."""
    beta1, beta2 = hp.b1, hp.b2
    g = x.grad
    yield Relax("mu", beta1, g)
    yield Relax("nu", beta2, optax_args.abs_sq(o, g))
    mu_hat = x.mu / (1 - beta1**t) if hp.bias_correction_mu else x.mu
    nu_eff = x.nu / (1 - beta2**t) if hp.bias_correction_nu else x.nu
    yield Relax("nu_max", 0, o.maximum(x.nu_max, nu_eff))  # ŵ ← max(ŵ, v̂): decay 0 assigns
    yield Drift("param", -hp.lr * (mu_hat / (o.sqrt(x.nu_max + hp.eps_root) + hp.eps)))


ADAM_ARGUMENTS = (optax_args.learning_rate(), optax_args.b1(), optax_args.b2(), optax_args.eps(1e-8), optax_args.EPS_ROOT,
                  optax_args.MU_DTYPE)
def adam_view(name: str, nesterov: bool, doc: str):
    """optax.adam, or optax.nadam with ``nesterov=True`` (optax: ``functools.partial(adam, nesterov=True)``)."""
    return optax_args.view(
        name, (*ADAM_ARGUMENTS, replace(optax_args.NESTEROV_KW, default=nesterov)), optax_moments,
        lambda hp: ("mu", "nu"), spec_name="NAdam" if nesterov else "Adam", dtypes=(("mu_dtype", "mu"),),
        formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·m̂/(√(v̂ + ε_root) + ε)",
        needs_params=lambda hp: False, doc=doc)


OPTAX_DOC = """``dynopt.jax.{name}``: optax.{name}'s arguments, defaults and numbers ({note}).

The torch.optim form (``betas``, coupled weight decay, AMSGrad of the raw v) is ``dynopt.torch.{torch}``, and
``dynopt.jax.from_spec(dynopt.optimizers.{spec})`` in JAX.

"""
OPTAX_ADAM = adam_view("adam", False, OPTAX_DOC.format(name="adam", note="b1, b2, eps, eps_root, mu_dtype; nesterov",
                                                       torch="Adam", spec="adam") + __doc__)
OPTAX_AMSGRAD = optax_args.view(
    "amsgrad",
    (*ADAM_ARGUMENTS, Hyper("bias_correction_mu", True, "bias-correct the first moment", static=True),
     Hyper("bias_correction_nu", True, "bias-correct the second moment before its running maximum", static=True)),
    optax_amsgrad_moments, lambda hp: ("mu", "nu", "nu_max"), spec_name="AMSGrad", dtypes=(("mu_dtype", "mu"),),
    formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; ŵ ← max(ŵ, v̂); θ ← θ − lr·m̂/(√(ŵ + ε_root) + ε)",
    needs_params=lambda hp: False,
    doc=OPTAX_DOC.format(name="amsgrad", note="the running maximum of the bias-corrected v̂", torch="Adam(amsgrad=True)",
                         spec="adam") + __doc__)


adam = register(
    from_statement(
        name="Adam",
        hyperparams=(
            lr_hyper(1e-3),
            betas_hyper(),
            eps_hyper(1e-8),
            WEIGHT_DECAY,
            AMSGRAD,
            MAXIMIZE_KW,
            replace(DECOUPLED, keyword_only=True),  # after torch.optim.Adam's `*`
        ),
        state=state,
        statement=adaptive_moments,
        scheme=SemiImplicitEuler(),
        formula="m ← β₁m + (1−β₁)g; v ← β₂v + (1−β₂)g²; θ ← θ − lr·m̂/(√v̂ + ε)",
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: not is_static_zero(hp.weight_decay),
        group_keys=("amsgrad", "decoupled_weight_decay"),  # torch.optim.RAdam's state_dict has the second only
        smooth=lambda hp: not hp.amsgrad,  # AMSGrad's running maximum
        ode="θ' = −m̂ ⊘ (√v̂ + ε), m' = c₁(∇L − m), v' = c₂(∇L² − v)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(OPTAX_ADAM, OPTAX_AMSGRAD),
    )
)
