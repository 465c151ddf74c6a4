r"""Noisy SGD: Euler–Maruyama for Langevin dynamics whose temperature is annealed.

ODE (the drift; the SDE, with W a standard Wiener process, t the ODE time, k = t/h the step)::

    θ' = −∇L(θ)
    dθ = −∇L(θ) dt + √(h·σ²(k)) dW,        σ²(k) = η / k^γ

The drift is the gradient flow; the diffusion is that of SGD's stochastic modified equation
(:mod:`dynopt.sde`) for a gradient noise of variance σ² per coordinate, here added on purpose
rather than coming from a minibatch: ``dynopt.sde.GradientNoise(std=σ(k))``, at temperature
T(k) = h·σ²(k)/2 (``dynopt.sde.temperature``). With γ = 0 the temperature is fixed and the chain
samples, at leading order in h, the Gibbs density ∝ exp(−L/T) (stochastic gradient Langevin
dynamics, Welling and Teh 2011, whose noise variance is tied to h instead: their ε = h, noise
variance ε); with γ > 0 the temperature decays like k^−γ, an annealing, which Neelakantan et al.
(2015) found to help very deep networks train (η ∈ {0.01, 0.3, 1}, γ = 0.55). On L = aθ²/2 with
γ = 0 the iterates are an AR(1) chain with stationary variance h·η/(a(2 − h·a))
(``dynopt.sde.sgd_stationary_variance``), tested in tests/test_optax_noisy_muon.py.

The statement reads the noise as ``x.noise`` (ξ ~ N(0, I), parameter-shaped, one draw per step
from the spec's random stream, ``Spec.random_seed``); the vector field reads ξ = 0, so it is the
SDE's drift −∇L, and a higher-order scheme (``dynopt.discretize``) uses the same ξ in every stage
(additive noise: stochastic Heun is then strong order 1).

Scheme (Euler–Maruyama; t the step, 1 at the first)::

    σ_t = √(η / t^γ),   ξ_t ~ N(0, I)
    θ_t = θ_{t−1} − lr·(g_t + σ_t ξ_t)

Hyperparameter map: h = lr (step k at ODE time k·lr); the noise per step lr·σ_k·ξ is √h·σ_k times
the Wiener increment √h·ξ. Order 1 in h for the drift (weak order 1 in distribution).

Conventions: ``dynopt.jax.noisy_sgd(learning_rate, eta, gamma, key, *, seed)`` equals
``optax.noisy_sgd`` (optax 0.2.8) with the same arguments, positions and defaults (eta 0.01, gamma
0.55; ``key`` an int or a JAX PRNG key, None: 0 with a warning; ``seed`` its deprecated name, a
DeprecationWarning, and a ValueError with both) and the same numbers: the same key splits (the key
into the next key and a sample key, the sample key into one key per leaf in the tree's order) and
the same ``jax.random.normal`` draws, so the updates agree to rounding. The state is
``(count, rng_key)``, optax's ``AddNoiseState`` in one tuple. torch.optim has no noisy SGD:
``dynopt.torch.NoisySGD(params, lr, eta, gamma, key)`` takes an int seed ``key`` (default 0) and
draws with one ``torch.Generator`` per parameter, seeded from (key, the parameter's position in the
param groups) and kept in the state (``state[p]["rng_key"]``, the generator's state as a uint8
tensor), so a checkpoint resumes the very same draws; it never touches torch's global RNG. Its
noise (like ``dynopt.numpy.noisy_sgd``'s, drawn from a NumPy PCG64 generator) is another stream
than JAX's: the three backends agree in distribution, not draw for draw (with eta = 0 they agree
exactly, as SGD).

References:
    A. Neelakantan, L. Vilnis, Q. V. Le, I. Sutskever, L. Kaiser, K. Kurach, J. Martens, "Adding
    Gradient Noise Improves Learning for Very Deep Networks", 2015, arXiv:1511.06807.
    M. Welling and Y. W. Teh, "Bayesian Learning via Stochastic Gradient Langevin Dynamics",
    ICML 2011.
    P. E. Kloeden and E. Platen, "Numerical Solution of Stochastic Differential Equations",
    Springer, 1992 (Euler–Maruyama).
    Q. Li, C. Tai, W. E, "Stochastic Modified Equations and Adaptive Stochastic Gradient
    Algorithms", ICML 2017, arXiv:1511.06251.
"""

from __future__ import annotations

import math
import warnings

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, nonnegative, register
from ..statement import Drift, from_statement
from . import _optax as optax_args
from ._common import lr_hyper

ETA = Hyper("eta", 0.01, "η: the noise variance at the first step (σ₁² = η)", nonnegative)
GAMMA = Hyper("gamma", 0.55, "γ: the variance decays as σ_t² = η/t^γ", Check(lambda x: not math.isnan(x), "must not be NaN"))
SEED = Check(lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0, "must be an int >= 0")
FORMULA = "σ ← √(η/t^γ); θ ← θ − lr·(g + σξ), ξ ~ N(0, I)"


def langevin(o, hp, t, x):
    noise = x.noise  # ξ ~ N(0, I), one draw per step (0 in the vector field: its drift)
    std = o.sqrt(hp.eta / t**hp.gamma)  # σ_t = √(η/t^γ), t = 1 at the first step
    yield Drift("param", -hp.lr * (x.grad + std * noise))  # θ ← θ − lr·(g + σξ)


def _is_key(value) -> bool:
    """An int, or a JAX array of an integer or PRNG-key dtype (what ``jax.random.key`` or optax takes), or None."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return True
    dtype = getattr(value, "dtype", None)  # read without importing a framework: a typed key's dtype is key<impl>
    return dtype is not None and (str(dtype).startswith("key<") or getattr(dtype, "kind", "") in ("i", "u"))




def optax_key(arguments: dict) -> dict:
    """optax's ``key``/``seed`` as the spec's ``key``: ``seed`` is deprecated, both is a ValueError, neither is 0."""
    key, seed = arguments.pop("key"), arguments.pop("seed")
    for name, value in (("key", key), ("seed", seed)):
        if not _is_key(value):
            raise TypeError(f"Invalid {name} value: {value!r} (must be an int, a JAX PRNG key or None)")
    if seed is not None:
        warnings.warn("noisy_sgd: 'seed' is deprecated (as in optax); pass key= instead", DeprecationWarning, stacklevel=5)
        if key is not None:
            raise ValueError(f"Invalid seed value: {seed!r} (give key or seed, not both; got key={key!r})")
        key = seed
    if key is None:
        warnings.warn("noisy_sgd: no key given, the noise is seeded with key=0 (optax does the same, and plans to "
                      "require a key)", stacklevel=5)
        key = 0
    return {"lr": arguments.pop("learning_rate"), **arguments, "key": key}


OPTAX_NOISY_SGD = optax_args.view(
    "noisy_sgd",
    (optax_args.learning_rate(), ETA, GAMMA,
     Hyper("key", None, "the PRNG key of the noise (an int seed or a JAX key; None: 0, with a warning)", optax_args.ANY,
           static=True),
     Hyper("seed", None, "deprecated name of key (an int)", optax_args.ANY, static=True, keyword_only=True)),
    langevin, lambda hp: (), spec_name="NoisySGD", formula=FORMULA, doc=__doc__, to_spec=optax_key,
    needs_params=lambda hp: False, random_seed=lambda hp: hp.key, drop=("seed",))


noisy_sgd = register(
    from_statement(
        name="NoisySGD",
        jax_name="noisy_sgd",
        hyperparams=(lr_hyper(1e-3), ETA, GAMMA,
                     Hyper("key", 0, "seed of the noise (torch: of each parameter's torch.Generator)", SEED, static=True)),
        state=lambda hp: (),
        statement=langevin,
        scheme=SemiImplicitEuler(),
        formula=FORMULA,
        time_step=lambda hp: hp.lr,
        needs_params=lambda hp: False,
        random_seed=lambda hp: hp.key,
        ode="dθ = −∇L dt + √(lr·η/k^γ) dW (Langevin dynamics, annealed temperature)",
        hyper_map="h = lr, σ_k² = η/k^γ",
        doc=__doc__,
        optax=(OPTAX_NOISY_SGD,),
    )
)
