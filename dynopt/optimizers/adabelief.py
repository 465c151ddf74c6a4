r"""AdaBelief: Adam with the second moment of the gradient's deviation from its average (the "belief").

ODE (state θ, the first moment m and the variance s of g − m; n = time/h)::

    m' = c₁ (∇L − m),   s' = c₂ ((∇L − m)² − s) + ρ,    c_i = (1 − β_i)/h,  ρ = eps_root/h
    θ' = −m̂ ⊘ (√ŝ + ε),   m̂ = m / (1 − β₁ⁿ),   ŝ = s / (1 − β₂ⁿ)

The same moment ODE as Adam's (Barakat & Bianchi) with ∇L² replaced by (∇L − m)²: where the
gradient agrees with its average (low "surprise") ŝ is small and the step large, where it
oscillates the step shrinks. As lr → 0 with the betas fixed the averages are fast, m → ∇L and
s → eps_root/(1 − β₂): the flow becomes the rescaled gradient flow θ' = −∇L/(√(eps_root/(1 − β₂)) + ε),
unlike Adam's sign-like limit. Order 1 (fitted in tests/test_ode.py). In the ODE the bias
corrections of the first step are held on [0, h] (n clamped at 1).

Scheme (semi-implicit Euler in optax's order)::

    m_t = β₁ m_{t−1} + (1 − β₁) g;     s_t = β₂ s_{t−1} + (1 − β₂)(g − m_t)² + eps_root
    θ_t = θ_{t−1} − lr · m̂_t ⊘ (√ŝ_t + ε),   m̂_t = m_t/(1 − β₁ᵗ),  ŝ_t = s_t/(1 − β₂ᵗ)
    nesterov:   m̂_t = β₁ m_t/(1 − β₁ᵗ⁺¹) + (1 − β₁) g/(1 − β₁ᵗ)

Hyperparameter map: h = lr, c_i = (1 − β_i)/lr, eps_root = h·ρ; step k at ODE time k·lr.

Conventions: ``dynopt.jax.adabelief(learning_rate, b1, b2, eps, eps_root, nesterov=...)`` equals
``optax.adabelief`` with the same arguments and defaults (b1 0.9, b2 0.999, eps 1e-16, eps_root
1e-16, nesterov False): eps_root is added to s and kept in the state, as in optax and in the
authors' PyTorch code (their ``eps``), and eps outside the root. The state is ``exp_avg`` and
``exp_avg_var`` (optax: ``mu``, ``nu``); the sum b₂s + ((1 − β₂)(g − m)² + eps_root) is formed in
that order (optax adds eps_root last: a difference of at most one rounding). torch.optim has no
AdaBelief; ``dynopt.torch.AdaBelief(params, lr, betas, eps, eps_root, *, nesterov)`` takes torch's name
for the two decays, ``betas=(β₁, β₂)`` (as torch.optim.Adam and the authors' code; so ``OneCycleLR`` cycles
β₁), and optax's defaults (lr 1e-3, eps 1e-16, eps_root 1e-16).

References:
    J. Zhuang, T. Tang, Y. Ding, S. Tatikonda, N. Dvornek, X. Papademetris, J. S. Duncan,
    "AdaBelief Optimizer: Adapting Stepsizes by the Belief in Observed Gradients", NeurIPS 2020,
    arXiv:2010.07468.
    A. Barakat and P. Bianchi, "Convergence and Dynamical Behavior of the ADAM Algorithm for
    Nonconvex Stochastic Optimization", SIAM J. Optim. 31(1), 2021 (the moment ODEs).
"""

from __future__ import annotations

from ..schemes import SemiImplicitEuler
from ..spec import Hyper, interval, register, unit_interval
from ..statement import Drift, Leak, Relax, from_statement
from . import _optax as optax_args
from ._common import OPTAX_BETAS, beta_pair, betas_hyper, lr_hyper

B2 = Hyper("b2", 0.999, "decay β₂ of the belief s, the average of (g − m)² (c₂ = (1 − β₂)/h)", unit_interval)
EPS = Hyper("eps", 1e-16, "ε added to √ŝ", interval(0.0), label="epsilon value")
EPS_ROOT = Hyper("eps_root", 1e-16, "added to s at every step (kept in the state)", interval(0.0))
NESTEROV = Hyper("nesterov", False, "Nesterov's look-ahead in the first moment", static=True, keyword_only=True)
FORMULA = "m ← β₁m + (1−β₁)g; s ← β₂s + (1−β₂)(g − m)² + ε_root; θ ← θ − lr·m̂/(√ŝ + ε)"


def belief_moments(o, hp, t, x):
    g, (beta1, beta2) = x.grad, beta_pair(hp)
    yield Relax("exp_avg", beta1, g)  # m ← β₁m + (1 − β₁)g
    error = g - x.exp_avg  # the new m in the step, the current one in the field
    yield Leak("exp_avg_var", beta2, (1 - beta2) * (error * error) + hp.eps_root)  # s ← β₂s + (1 − β₂)(g − m)² + eps_root
    if hp.nesterov:
        mean = beta1 * (x.exp_avg / (1 - beta1 ** (t + 1))) + (1 - beta1) * (g / (1 - beta1**t))
    else:
        mean = x.exp_avg / (1 - beta1**t)
    var = x.exp_avg_var / (1 - beta2**t)
    yield Drift("param", -hp.lr * (mean / (o.sqrt(var) + hp.eps)))  # θ ← θ − lr·m̂/(√ŝ + ε)


# dynopt.jax.adabelief: optax.adabelief's arguments in optax's order (b1 and b2 apart, nesterov keyword-only)
OPTAX_ADABELIEF = optax_args.view(
    "adabelief", (optax_args.learning_rate(), optax_args.b1(), B2, EPS, EPS_ROOT, NESTEROV), belief_moments,
    lambda hp: ("exp_avg", "exp_avg_var"), spec_name="AdaBelief", formula=FORMULA, doc=__doc__,
    needs_params=lambda hp: False)


adabelief = register(
    from_statement(
        name="AdaBelief",
        hyperparams=(
            lr_hyper(1e-3),
            betas_hyper((0.9, 0.999), "decays (β₁, β₂) of the first moment and of the belief s, the average of "
                        "(g − m)² (c_i = (1 − β_i)/h)", formerly=OPTAX_BETAS),
            EPS,
            EPS_ROOT,
            NESTEROV,
        ),
        state=lambda hp: ("exp_avg", "exp_avg_var"),
        statement=belief_moments,
        scheme=SemiImplicitEuler(),
        formula=FORMULA,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        ode="θ' = −m̂ ⊘ (√ŝ + ε), m' = c₁(∇L − m), s' = c₂((∇L − m)² − s)",
        hyper_map="h = lr, c_i = (1 − β_i)/lr",
        doc=__doc__,
        optax=(OPTAX_ADABELIEF,),
    )
)
