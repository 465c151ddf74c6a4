"""``dynopt.jax.noisy_sgd`` against ``optax.noisy_sgd``, ``dynopt.jax.contrib.muon`` against ``optax.contrib.muon``,
and the noise of NoisySGD in every backend.

The oracle for the JAX factory is optax itself, run side by side on the same pytrees, gradients, keys and
schedules: every step's updates and the state (the count, the PRNG key's data) must agree to 1e-12 in float64 and
1e-6 in float32, eagerly, under ``jax.jit`` and with each numeric argument injected alone by
``optax.inject_hyperparams``; the signatures (names, positions, defaults, keyword-only ``seed``) must be optax's,
and so must the behaviour on bad or missing keys. torch and NumPy draw from their own streams (a torch.Generator
per parameter, a PCG64 generator): their draws are tested by their statistics, with tolerances derived from the
sample size here, by the stationary variance of the AR(1) chain noisy SGD is on a quadratic
(``dynopt.sde.sgd_stationary_variance``), and, in torch, by a checkpoint that resumes the very same draws. With
eta = 0 every backend is SGD exactly.

``optax.contrib.muon`` is the oracle of ``dynopt.jax.contrib.muon`` the same way, on a pytree mixing matrices
(Muon) with vectors, scalars and a 3-D leaf (Adam): 1e-12 of each leaf's scale in float64 over a grid of options
(the Newton–Schulz iteration runs in the leaf's dtype in both); in float32 the iteration amplifies a one-ulp
difference of its input (its slope at 0 is a = 3.4445, so up to a^5 ≈ 500 ulps after 5 iterations), hence 1e-3.
The same holds for per-iteration coefficient tables (the "dion" preset), the four preconditionings and
``muon_weight_dimension_numbers`` (pytrees, prefixes and callables of MuonDimensionNumbers, the 3-D leaf as a batch
of matrices), also under ``optax.inject_hyperparams``; what optax refuses (a table longer than ns_steps, a Muon leaf
of rank < 2, overlapping axes) dynopt refuses with a ValueError naming the argument. (The rank-2 leaf "w" is
ill-conditioned: "aol" with ``adaptive`` amplifies one rounding past 1e-12 over five steps, so that pair is not in
the grid.)
"""

from __future__ import annotations

import copy
import inspect
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import dynopt
import dynopt.jax as dj
import dynopt.numpy as dn
import dynopt.torch as dt
from dynopt.sde import GradientNoise, sgd_stationary_variance

jax.config.update("jax_enable_x64", True)

TOL = {jnp.float64: 1e-12, jnp.float32: 1e-6}


def tree(dtype):
    return {"w": jnp.linspace(-1.0, 1.0, 6, dtype=dtype).reshape(2, 3), "b": [jnp.arange(4, dtype=dtype), jnp.asarray(0.3, dtype)],
            "e": jnp.zeros((0,), dtype)}


def grads_at(params, k):
    return jax.tree.map(lambda x: jnp.sin(1.3 * x + 0.2 * k) + 0.1 * x, params)


def key_data(key):
    return np.asarray(jax.random.key_data(key))


def run(opt, dtype, steps=5, jit=False, params=None, final=False):
    """(updates, state) of each step from ``params`` (default: ``tree(dtype)``); with ``final``, also the parameters."""
    params = tree(dtype) if params is None else params
    state = opt.init(params)
    update = jax.jit(opt.update) if jit else opt.update
    history = []
    for k in range(steps):
        updates, state = update(grads_at(params, k), state, params)
        params = optax.apply_updates(params, updates)
        history.append((updates, state))
    return (history, params) if final else history


def noise_state(state):
    """(count, key) of optax's chain state (add_noise's state first) or of dynopt's."""
    if isinstance(state, tuple) and hasattr(state[0], "rng_key"):
        state = state[0]
    if hasattr(state, "inner_state"):  # inject_hyperparams
        return noise_state(state.inner_state)
    return int(state.count), key_data(state.rng_key)


def assert_same_run(ours, theirs, dtype):
    for k, ((u, s), (v, r)) in enumerate(zip(ours, theirs)):
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
            assert a.shape == b.shape
            np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=TOL[dtype],
                                       atol=TOL[dtype], err_msg=f"step {k}")
        (count, key), (count2, key2) = noise_state(s), noise_state(r)
        assert count == count2 and np.array_equal(key, key2), f"step {k}: the state differs"


CONFIGS = [
    dict(learning_rate=0.1, key=0),
    dict(learning_rate=0.05, eta=0.3, gamma=0.2, key=7),
    dict(learning_rate=0.02, eta=1.0, gamma=0.0, key=jax.random.key(3)),
    dict(learning_rate=optax.linear_schedule(0.1, 0.01, 4), eta=0.5, key=11),
    dict(learning_rate=0.1, eta=0.0, key=2),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("index", range(len(CONFIGS)))
def test_noisy_sgd_equals_optax(index, dtype, jit):
    kwargs = CONFIGS[index]
    assert_same_run(run(dj.noisy_sgd(**kwargs), dtype, jit=jit), run(optax.noisy_sgd(**kwargs), dtype, jit=jit), dtype)


def test_positional_arguments_and_the_deprecated_seed_equal_optax():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        pairs = [(dj.noisy_sgd(0.1, 0.2, 0.3, 5), optax.noisy_sgd(0.1, 0.2, 0.3, 5)),
                 (dj.noisy_sgd(0.1, seed=4), optax.noisy_sgd(0.1, seed=4))]
    for ours, theirs in pairs:
        assert_same_run(run(ours, jnp.float64), run(theirs, jnp.float64), jnp.float64)


@pytest.mark.parametrize("name", ["learning_rate", "eta", "gamma", "key"])
def test_inject_hyperparams_each_argument_alone(name):
    kwargs = dict(learning_rate=0.1, eta=0.2, gamma=0.4, key=3)
    static = [n for n in kwargs if n != name]
    ours, theirs = (optax.inject_hyperparams(f, static_args=static)(**kwargs) for f in (dj.noisy_sgd, optax.noisy_sgd))
    assert_same_run(run(ours, jnp.float64, jit=True), run(theirs, jnp.float64, jit=True), jnp.float64)
    if name != "key":  # a value changed in the injected state takes effect at the next step, as in optax
        runs = []
        for opt in (ours, theirs):
            params = tree(jnp.float64)
            state = opt.init(params)
            state.hyperparams[name] = jnp.asarray(state.hyperparams[name]) * 0.5
            runs.append(opt.update(grads_at(params, 0), state, params)[0])
        for a, b in zip(*map(jax.tree.leaves, runs)):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_signature_and_state_are_optax_s():
    ours, theirs = inspect.signature(dj.noisy_sgd), inspect.signature(optax.noisy_sgd)
    mine = [(p.name, p.kind, p.default) for p in ours.parameters.values() if p.name != "skip_nonfinite"]
    assert mine == [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
    state = dj.noisy_sgd(0.1, key=0).init(tree(jnp.float32))
    assert state._fields == ("count", "rng_key")
    assert state.count.dtype == jnp.int32 and jax.dtypes.issubdtype(state.rng_key.dtype, jax.dtypes.prng_key)


def test_missing_key_warns_as_optax_and_seeds_zero():
    with pytest.warns(UserWarning, match="key"):
        ours = dj.noisy_sgd(0.1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = optax.noisy_sgd(0.1)
    assert_same_run(run(ours, jnp.float64), run(theirs, jnp.float64), jnp.float64)
    with pytest.warns(DeprecationWarning, match="seed"):
        dj.noisy_sgd(0.1, seed=1)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(key=1, seed=2), ValueError, "seed"),  # optax: "Only one of seed or key can be specified."
    (dict(key="a"), TypeError, "key"),
    (dict(key=1.5), TypeError, "key"),
    (dict(key=0, eta=-0.1), ValueError, "eta"),
    (dict(key=0, eta="x"), TypeError, "eta"),
    (dict(key=0, gamma=float("nan")), ValueError, "gamma"),
    (dict(key=0, learning_rate=-1.0), ValueError, "learning rate"),
])
def test_bad_noisy_sgd_arguments_name_the_argument(kwargs, error, words):
    kwargs = {"learning_rate": 0.1, **kwargs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with pytest.raises(error, match=words):
            dj.noisy_sgd(**kwargs)


def test_torch_and_numpy_bad_keys():
    w = torch.nn.Parameter(torch.ones(3))
    for bad in (-1, 1.5, "a"):
        with pytest.raises(ValueError, match="Invalid key value"):
            dt.NoisySGD([w], key=bad)
        with pytest.raises(ValueError, match="Invalid key value"):
            dn.noisy_sgd(0.1, key=bad)


# ----------------------------------------------------------------------------- eta = 0 is SGD, in every backend


def test_without_noise_every_backend_is_sgd():
    rng = np.random.default_rng(0)
    start = [rng.normal(size=(3, 2)), rng.normal(size=4)]
    grads = [[rng.normal(size=x.shape) for x in start] for _ in range(4)]
    ref = [torch.nn.Parameter(torch.tensor(x)) for x in start]
    ours = [torch.nn.Parameter(torch.tensor(x)) for x in start]
    mine = [torch.nn.Parameter(torch.tensor(x)) for x in start]  # dynopt's SGD on the same (reference) path
    sgd, noisy, plain = (torch.optim.SGD(ref, lr=0.1), dt.NoisySGD(ours, lr=0.1, eta=0.0, gamma=0.7, key=5),
                         dt.SGD(mine, lr=0.1, flat=False))
    numpy_opt, jax_opt = dn.noisy_sgd(0.1, eta=0.0), dj.noisy_sgd(0.1, eta=0.0, key=5)
    theta, state = [x.copy() for x in start], numpy_opt.init(start)
    params, jstate = [jnp.asarray(x) for x in start], jax_opt.init([jnp.asarray(x) for x in start])
    for gs in grads:
        for group in (ref, ours, mine):
            for p, g in zip(group, gs):
                p.grad = torch.tensor(g)
        sgd.step()
        noisy.step()
        plain.step()
        updates, state = numpy_opt.update(gs, state, theta)
        theta = [x + u for x, u in zip(theta, updates)]
        updates, jstate = jax_opt.update([jnp.asarray(g) for g in gs], jstate, params)
        params = optax.apply_updates(params, updates)
    for a, b, m, c, d in zip(ref, ours, mine, theta, params):
        assert torch.equal(b, m)  # torch.optim.SGD adds lr·g in one rounding (add_ with alpha), dynopt in two
        for x in (b.detach().numpy(), c, np.asarray(d)):
            np.testing.assert_allclose(x, a.detach().numpy(), rtol=0, atol=1e-14)


# ----------------------------------------------------------------------------- the noise's statistics

N = 200_000  # entries per draw
STEPS = (1, 2, 3)


def _bounds(variance, n=N, z=5.0):
    """Five standard errors of the sample mean and the sample variance of n normal draws of this variance."""
    return z * math.sqrt(variance / n), z * variance * math.sqrt(2.0 / (n - 1))


def _check(noise, t, eta, gamma):
    variance = eta / t**gamma  # optax: σ_t² = η/t^γ, t = 1 at the first step
    mean_bound, var_bound = _bounds(variance, noise.size)
    assert abs(noise.mean()) <= mean_bound, (t, noise.mean(), mean_bound)
    assert abs(noise.var(ddof=1) - variance) <= var_bound, (t, noise.var(ddof=1), variance, var_bound)


def _noise_torch(eta, gamma, lr=0.5):
    p = torch.nn.Parameter(torch.zeros(N, dtype=torch.float64))
    opt = dt.NoisySGD([p], lr=lr, eta=eta, gamma=gamma, key=1)
    out = []
    for _ in STEPS:
        before = p.detach().clone()
        p.grad = torch.zeros_like(p)
        opt.step()
        out.append(((p.detach() - before) / -lr).numpy())
    return out


def _noise_of(factory, zeros, eta, gamma, lr=0.5):
    """The noise of each step, from the updates of a zero gradient: update = −lr·(0 + σ_k ξ_k)."""
    opt = factory(lr, eta=eta, gamma=gamma, key=1)
    params = [zeros(N)]
    state = opt.init(params)
    out = []
    for _ in STEPS:
        updates, state = opt.update([zeros(N)], state, params)
        out.append(np.asarray(updates[0]) / -lr)
    return out


def _noise_numpy(eta, gamma, lr=0.5):
    return _noise_of(dn.noisy_sgd, np.zeros, eta, gamma, lr)


def _noise_jax(eta, gamma, lr=0.5):
    return _noise_of(dj.noisy_sgd, jnp.zeros, eta, gamma, lr)


@pytest.mark.parametrize("draw", [_noise_torch, _noise_numpy, _noise_jax], ids=["torch", "numpy", "jax"])
def test_the_noise_is_centred_with_optax_s_annealed_variance(draw):
    eta, gamma = 0.3, 0.55
    draws = draw(eta, gamma)
    for t, noise in zip(STEPS, draws):
        _check(noise, t, eta, gamma)
    # successive draws are independent: their correlation is within 5/√n of 0
    assert abs(np.corrcoef(draws[0], draws[1])[0, 1]) <= 5 / math.sqrt(N)


def test_torch_parameters_draw_independent_noise_and_leave_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a, b = (torch.nn.Parameter(torch.zeros(N // 2, dtype=torch.float64)) for _ in range(2))
    opt = dt.NoisySGD([a, b], lr=1.0, eta=1.0, key=0)
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    opt.step()
    assert torch.equal(torch.rand(3), expected)
    assert abs(np.corrcoef(a.detach().numpy(), b.detach().numpy())[0, 1]) <= 5 / math.sqrt(N // 2)


def test_stationary_variance_is_sgd_s_with_gradient_noise_of_variance_eta():
    """γ = 0: a fixed temperature. On L = aθ²/2 noisy SGD is SGD with gradient noise N(0, η): the AR(1) chain
    θ ← (1 − lr·a)θ − lr·σξ, whose stationary variance is lr·η/(a(2 − lr·a)) (dynopt.sde), reached after
    burn-in ((1 − lr·a)^(2k) → 0); the coordinates are independent chains."""
    lr, a, eta, n = 0.2, 1.5, 0.4, 50_000
    opt = dn.noisy_sgd(lr, eta=eta, gamma=0.0, key=3)
    theta = [np.ones(n)]
    state = opt.init(theta)
    for _ in range(150):  # (1 − 0.3)^300: the initial value is forgotten
        updates, state = opt.update([a * theta[0]], state, theta)
        theta = [theta[0] + updates[0]]
    expected = sgd_stationary_variance(lr, a, GradientNoise(std=math.sqrt(eta)))
    _, bound = _bounds(expected, n)
    assert abs(theta[0].var(ddof=1) - expected) <= bound, (theta[0].var(), expected, bound)


# ----------------------------------------------------------------------------- torch: checkpoints


def _torch_run(steps, opt=None, params=None, key=4):
    if params is None:
        params = [torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)),
                  torch.nn.Parameter(torch.ones(4, dtype=torch.float32))]
        opt = dt.NoisySGD(params, lr=0.1, eta=0.5, gamma=0.3, key=key)
    for k in steps:
        for p in params:
            p.grad = torch.cos(p.detach() + k)
        opt.step()
    return params, opt


def test_torch_checkpoint_resumes_the_same_noise():
    params, opt = _torch_run(range(3))
    saved_params = [p.detach().clone() for p in params]
    saved = copy.deepcopy(opt.state_dict())
    assert saved["state"][0]["rng_key"].dtype == torch.uint8  # the torch.Generator's state
    _torch_run(range(3, 7), opt, params)
    # a fresh optimizer, loaded from the checkpoint, continues with the very same draws
    fresh = [torch.nn.Parameter(p.clone()) for p in saved_params]
    loaded = dt.NoisySGD(fresh, lr=0.1, eta=0.5, gamma=0.3, key=4)
    loaded.load_state_dict(saved)
    _torch_run(range(3, 7), loaded, fresh)
    for a, b in zip(params, fresh):
        assert torch.equal(a, b)
    # another key draws other noise
    other, _ = _torch_run(range(3), key=5)
    assert not torch.equal(other[0], _torch_run(range(3))[0][0])


def test_torch_state_dict_must_carry_the_stream():
    params, opt = _torch_run(range(1))
    saved = copy.deepcopy(opt.state_dict())
    del saved["state"][0]["rng_key"]
    fresh = [torch.nn.Parameter(p.detach().clone()) for p in params]
    with pytest.raises(ValueError, match="rng_key"):
        dt.NoisySGD(fresh, lr=0.1).load_state_dict(saved)


def test_torch_compiled_step_runs_eagerly_and_equals_the_eager_step():
    runs = []
    for compiled in (False, True):
        params, opt = _torch_run(range(1))
        step = torch.compile(opt.step, backend="eager") if compiled else opt.step
        for k in range(1, 3):
            for p in params:
                p.grad = torch.cos(p.detach() + k)
            step()
        runs.append(params)
    for a, b in zip(*runs):
        assert torch.equal(a, b)


def test_a_multi_stage_scheme_reads_one_draw_per_step():
    """Heun on noisy SGD's statement: both stages read the same ξ (the key moves once per step), so with a constant
    gradient and a constant variance (γ = 0; else the stages sit at different times of the annealing) the step is
    Euler–Maruyama's."""
    heun = dynopt.discretize(dynopt.REGISTRY["NoisySGD"], dynopt.schemes.Heun())
    opt, euler = dn.from_spec(heun)(0.1, eta=0.5, gamma=0.0, key=2), dn.noisy_sgd(0.1, eta=0.5, gamma=0.0, key=2)
    theta = [np.ones(5)]
    s1, s2 = opt.init(theta), euler.init(theta)
    for _ in range(3):
        u1, s1 = opt.update([np.full(5, 0.7)], s1, theta, grad_fn=lambda p: [np.full(5, 0.7)])
        u2, s2 = euler.update([np.full(5, 0.7)], s2, theta)
        np.testing.assert_allclose(u1[0], u2[0], rtol=0, atol=1e-15)
    assert s1.values["rng_key"] == s2.values["rng_key"]


# ----------------------------------------------------------------------------- optax.contrib.muon


def mixed(dtype):
    """Two matrices (one tall, one wide: Muon), a vector, a scalar and a 3-D leaf (Adam)."""
    return {"w": jnp.linspace(-1.0, 1.0, 12, dtype=dtype).reshape(4, 3), "v": jnp.cos(jnp.arange(10, dtype=dtype)).reshape(2, 5),
            "b": [jnp.arange(4, dtype=dtype) * 0.1, jnp.asarray(0.3, dtype)], "c": jnp.linspace(0.5, 1.0, 8, dtype=dtype).reshape(2, 2, 2)}


def run_mixed(opt, dtype, steps=5, jit=False):
    """``run`` on the mixed pytree: the updates of each step and the final parameters."""
    history, params = run(opt, dtype, steps, jit, params=mixed(dtype), final=True)
    return [updates for updates, _ in history], params


def assert_close_runs(ours, theirs, tol):
    for k, (u, v) in enumerate(zip(ours[0] + [ours[1]], theirs[0] + [theirs[1]])):
        assert jax.tree.structure(u) == jax.tree.structure(v)
        for a, b in zip(jax.tree.leaves(u), jax.tree.leaves(v)):
            a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
            assert np.max(np.abs(a - b), initial=0.0) <= tol * max(np.max(np.abs(b), initial=0.0), 1e-30), k


MUON_CONFIGS = [
    {},
    dict(nesterov=False),
    dict(weight_decay=0.1, adam_weight_decay=0.05),
    dict(adaptive=True),
    dict(consistent_rms=0.2),
    dict(adam_learning_rate=0.01, ns_steps=3, beta=0.9, eps=1e-6, adam_b1=0.8, adam_b2=0.99, adam_eps_root=1e-8),
    dict(ns_coeffs="standard"),
    dict(ns_coeffs=(3.0, -3.2, 1.2), ns_steps=0),
    dict(weight_decay=0.1, weight_decay_mask=lambda p: jax.tree.map(lambda x: x.shape == (4, 3), p)),
    dict(mu_dtype=jnp.float32),
    # per-iteration coefficients: a preset table, a table shorter than ns_steps (it runs its own rows only)
    dict(ns_coeffs="dion"),
    dict(ns_coeffs=((3.0, -3.2, 1.2), (2.0, -1.5, 0.5)), ns_steps=4, nesterov=False),
    dict(ns_coeffs=[[3.4445, -4.7750, 2.0315]] * 3, ns_steps=3, adaptive=True),
    # the normalizations of Newton–Schulz's input
    dict(preconditioning="spectral", eps=1e-6),
    dict(preconditioning="aol"),
    dict(preconditioning="schatten", ns_coeffs="dion", consistent_rms=0.2),
    dict(preconditioning="aol", ns_steps=0),  # aol and schatten normalize in the first iteration: none here
    dict(preconditioning="schatten", ns_coeffs=((3.0, -3.2, 1.2),), ns_steps=2, adaptive=True),
]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("index", range(len(MUON_CONFIGS)))
def test_contrib_muon_equals_optax(index, dtype, jit):
    kwargs = MUON_CONFIGS[index]
    tol = 1e-12 if dtype == jnp.float64 else 1e-3
    assert_close_runs(run_mixed(dynopt.jax.contrib.muon(0.05, **kwargs), dtype, jit=jit),
                      run_mixed(optax.contrib.muon(0.05, **kwargs), dtype, jit=jit), tol)


def test_contrib_muon_with_a_schedule_and_positional_arguments_equals_optax():
    schedule = optax.linear_schedule(0.1, 0.01, 4)
    args = (schedule, (3.4445, -4.7750, 2.0315), 4, 0.9, 1e-7, 0.02)
    assert_close_runs(run_mixed(dynopt.jax.contrib.muon(*args), jnp.float64),
                      run_mixed(optax.contrib.muon(*args), jnp.float64), 1e-12)


@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("name", ["learning_rate", "ns_steps", "beta", "eps", "weight_decay", "adam_b1", "adam_b2",
                                  "adam_eps_root", "adam_weight_decay", "adam_learning_rate", "consistent_rms"])
def test_contrib_muon_inject_hyperparams_each_argument_alone(name, jit):
    kwargs = dict(learning_rate=0.05, ns_steps=4, beta=0.9, eps=1e-7, weight_decay=0.01, adam_b1=0.85, adam_b2=0.99,
                  adam_eps_root=1e-9, adam_weight_decay=0.02, adam_learning_rate=0.03, consistent_rms=0.2)
    static = [n for n in kwargs if n != name]
    ours, theirs = (optax.inject_hyperparams(f, static_args=static)(**kwargs)
                    for f in (dynopt.jax.contrib.muon, optax.contrib.muon))
    assert_close_runs(run_mixed(ours, jnp.float64, jit=jit), run_mixed(theirs, jnp.float64, jit=jit), 1e-12)


@pytest.mark.parametrize("steps", [0, 1, 3])
@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_contrib_muon_ns_steps_injected_under_jit_loops_on_the_device(preconditioning, steps):
    """Injected by inject_hyperparams (its default: every numeric argument), ns_steps is traced under jit: the
    iterations run as a device loop (aol and schatten peel off the first one), with optax's numbers, 0 steps included;
    an injected ns_steps changed between steps takes effect without a new trace."""
    kwargs = dict(learning_rate=0.05, ns_steps=steps, preconditioning=preconditioning, adaptive=True)
    ours, theirs = (optax.inject_hyperparams(f)(**kwargs) for f in (dynopt.jax.contrib.muon, optax.contrib.muon))
    assert_close_runs(run_mixed(ours, jnp.float64, jit=True), run_mixed(theirs, jnp.float64, jit=True), 1e-12)
    params = mixed(jnp.float64)
    step = jax.jit(ours.update)
    state = ours.init(params)
    state.hyperparams["ns_steps"] = jnp.asarray(steps + 2)
    updates, _ = step(grads_at(params, 0), state, params)
    reference = optax.contrib.muon(0.05, ns_steps=steps + 2, preconditioning=preconditioning, adaptive=True)
    expected, _ = reference.update(grads_at(params, 0), reference.init(params), params)
    assert_close_runs(([updates], params), ([expected], params), 1e-12)
    assert step._cache_size() == 1


@pytest.mark.parametrize("jit", [False, True])
def test_contrib_muon_adam_learning_rate_as_a_schedule_equals_optax(jit):
    """optax.contrib.muon evaluates a schedule given as adam_learning_rate at the count, as the learning rate's."""
    kwargs = dict(learning_rate=optax.linear_schedule(0.1, 0.01, 4), adam_learning_rate=optax.cosine_decay_schedule(0.05, 5))
    assert_close_runs(run_mixed(dynopt.jax.contrib.muon(**kwargs), jnp.float64, jit=jit),
                      run_mixed(optax.contrib.muon(**kwargs), jnp.float64, jit=jit), 1e-12)


@pytest.mark.parametrize("preconditioning", ["frobenius", "spectral", "aol", "schatten"])
def test_contrib_muon_inject_hyperparams_with_a_coefficient_table(preconditioning):
    """A table and a preconditioning are not numbers: inject_hyperparams keeps them static, the others injected."""
    kwargs = dict(learning_rate=0.05, ns_coeffs="dion", ns_steps=6, beta=0.9, preconditioning=preconditioning)
    ours, theirs = (optax.inject_hyperparams(f, static_args=("ns_steps",))(**kwargs)
                    for f in (dynopt.jax.contrib.muon, optax.contrib.muon))
    assert_close_runs(run_mixed(ours, jnp.float64, jit=True), run_mixed(theirs, jnp.float64, jit=True), 1e-12)


MDN = optax.contrib.MuonDimensionNumbers
DIMENSION_NUMBERS = [
    # the 3-D leaf as a batch of two 2 × 2 matrices (batch axis 0), a 2-D leaf left to Adam
    {"w": MDN(), "v": None, "b": None, "c": MDN(reduction_axis=1, output_axis=2)},
    # a 2-D leaf with its axes swapped (its fans, not its orthogonalization), several axes in one, no batch
    {"w": MDN(1, 0), "v": MDN(), "b": None, "c": MDN(reduction_axis=(0,), output_axis=(1, 2))},
    # negative axes, the batch axis in the middle, a prefix (None for the whole list "b")
    {"w": None, "v": MDN(), "b": None, "c": MDN(reduction_axis=-1, output_axis=0)},
    # a callable of the params (at a step: of the updates)
    lambda p: jax.tree.map(lambda x: MDN(0, 1) if x.ndim == 2 else (MDN((0, 1), 2) if x.ndim == 3 else None), p),
]
DIMENSION_OPTIONS = [{}, dict(preconditioning="schatten", weight_decay=0.1, nesterov=False),
                     dict(consistent_rms=0.2, ns_coeffs="dion", adaptive=True), dict(preconditioning="spectral")]


@pytest.mark.parametrize("jit", [False, True])
@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("options", range(len(DIMENSION_OPTIONS)))
@pytest.mark.parametrize("numbers", range(len(DIMENSION_NUMBERS)))
def test_contrib_muon_weight_dimension_numbers_equal_optax(numbers, options, dtype, jit):
    kwargs = dict(muon_weight_dimension_numbers=DIMENSION_NUMBERS[numbers], **DIMENSION_OPTIONS[options])
    tol = 1e-12 if dtype == jnp.float64 else 1e-3
    assert_close_runs(run_mixed(dynopt.jax.contrib.muon(0.05, **kwargs), dtype, jit=jit),
                      run_mixed(optax.contrib.muon(0.05, **kwargs), dtype, jit=jit), tol)


def test_weight_dimension_numbers_choose_the_state_and_survive_inject_hyperparams():
    numbers = DIMENSION_NUMBERS[0]
    state = dynopt.jax.contrib.muon(0.1, muon_weight_dimension_numbers=numbers).init(mixed(jnp.float32))
    assert state.mu["c"].shape == (2, 2, 2) and state.adam_mu["c"] is None  # the 3-D leaf is Muon's
    assert state.mu["v"] is None and state.adam_nu["v"].shape == (2, 5)  # the 2-D leaf given None is Adam's
    kwargs = dict(learning_rate=0.05, beta=0.9, muon_weight_dimension_numbers=numbers, preconditioning="aol")
    ours, theirs = (optax.inject_hyperparams(f, static_args=("ns_steps",))(**kwargs)
                    for f in (dynopt.jax.contrib.muon, optax.contrib.muon))
    assert_close_runs(run_mixed(ours, jnp.float64, jit=True), run_mixed(theirs, jnp.float64, jit=True), 1e-12)


@pytest.mark.parametrize("numbers, words", [
    (MDN(), "rank >= 2"),  # every leaf, the vector and the scalar included (optax: at its first step)
    ({"w": MDN(), "v": None, "b": None, "c": MDN(0, (0, 2))}, "disjoint"),
])
def test_bad_weight_dimension_numbers_are_refused_as_optax_refuses_them(numbers, words):
    with pytest.raises(ValueError, match=words):
        run_mixed(dynopt.jax.contrib.muon(0.1, muon_weight_dimension_numbers=numbers), jnp.float64, steps=1)
    with pytest.raises(ValueError, match="rank >= 2|disjoint"):
        run_mixed(optax.contrib.muon(0.1, muon_weight_dimension_numbers=numbers), jnp.float64, steps=1)


def test_the_view_s_maths_run_in_numpy_and_dimension_numbers_are_jax_only():
    """The coefficient table and the preconditioning are the statement's maths: NumPy runs the view's spec and agrees
    with optax; per-leaf dimension numbers need the JAX factory's resolution, elsewhere a clear TypeError."""
    from dynopt.optimizers.muon import OPTAX_CONTRIB_MUON

    factory = dn.from_spec(OPTAX_CONTRIB_MUON.spec)
    kwargs = dict(ns_coeffs=((3.0, -3.2, 1.2), (2.0, -1.5, 0.5)), ns_steps=3, preconditioning="aol", consistent_rms=0.2)
    ours = factory(0.05, adam_learning_rate=0.05, **kwargs)
    theirs = optax.contrib.muon(0.05, **kwargs)
    params = [np.linspace(-1.0, 1.0, 10).reshape(2, 5)]
    grads = [np.cos(np.arange(10.0)).reshape(2, 5)]
    state = ours.init(params)
    np.testing.assert_allclose(ours.update(grads, state, params)[0][0],
                               theirs.update(grads, theirs.init(params), params)[0][0], rtol=1e-12, atol=1e-15)
    ours = factory(0.05, adam_learning_rate=0.05, consistent_rms=0.2, muon_weight_dimension_numbers=MDN())
    with pytest.raises(TypeError, match="dynopt.jax.contrib.muon"):
        ours.update(grads, ours.init(params), params)


def test_permute_and_reshape_leaf_ops_in_every_backend():
    from dynopt._backends.torch_ops import ForeachOps
    from dynopt.tree import ArrayLeafOps, TreeMath

    x = np.arange(24.0).reshape(2, 3, 4)
    for ops, leaf in ((ArrayLeafOps(np), x), (ArrayLeafOps(jnp), jnp.asarray(x)), (ForeachOps(), torch.tensor(x))):
        o = TreeMath(ops)
        out = o.reshape(o.permute(o.tree([leaf, leaf]), [(1, 0, 2), None]), [(3, 8), None]).leaves
        np.testing.assert_array_equal(np.asarray(out[0]), x.transpose(1, 0, 2).reshape(3, 8))
        np.testing.assert_array_equal(np.asarray(out[1]), x)


def test_a_coefficient_table_longer_than_ns_steps_is_refused_as_optax_refuses_it():
    table = ((3.0, -3.2, 1.2),) * 3
    with pytest.raises(ValueError, match="ns_coeffs"):
        dynopt.jax.contrib.muon(0.1, ns_coeffs=table, ns_steps=2)
    with pytest.raises(ValueError, match="coeffs"):  # optax: when it initializes the state
        optax.contrib.muon(0.1, ns_coeffs=table, ns_steps=2).init(mixed(jnp.float64))


def test_spectral_norm_leaf_op_in_every_backend():
    from dynopt._backends.torch_ops import ForeachOps
    from dynopt.tree import ArrayLeafOps, TreeMath

    x = np.random.default_rng(0).normal(size=(2, 4, 3))
    expected = np.array([np.linalg.norm(m, 2) for m in x]).reshape(2, 1, 1)
    for ops, leaf in ((ArrayLeafOps(np), x), (ArrayLeafOps(jnp), jnp.asarray(x)), (ForeachOps(), torch.tensor(x))):
        o = TreeMath(ops)
        norms = o.spectral_norm(o.tree([leaf, leaf[0], leaf[:, :0]])).leaves
        np.testing.assert_allclose(np.asarray(norms[0]), expected, rtol=1e-13)
        np.testing.assert_allclose(np.asarray(norms[1]), expected[0], rtol=1e-13)
        assert tuple(norms[2].shape) == (2, 1, 1) and not np.asarray(norms[2]).any()


def test_contrib_muon_signature_namespace_and_state():
    ours, theirs = inspect.signature(dynopt.jax.contrib.muon), inspect.signature(optax.contrib.muon)
    mine = [(p.name, p.kind, p.default) for p in ours.parameters.values() if p.name != "skip_nonfinite"]
    assert mine == [(p.name, p.kind, p.default) for p in theirs.parameters.values()]
    import dynopt.jax.contrib as contrib  # a module of its own, as optax.contrib

    assert contrib.muon is dynopt.jax.contrib.muon and contrib.muon.__module__ == "dynopt.jax.contrib"
    assert not hasattr(dynopt.jax, "muon") and dynopt.jax.muon_torch.__name__ == "muon_torch"  # torch.optim.Muon's rule
    state = contrib.muon(0.1).init(mixed(jnp.float32))
    assert state.mu["w"].shape == (4, 3) and state.mu["c"] is None and state.adam_mu["w"] is None
    assert state.adam_nu["c"].shape == (2, 2, 2)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(ns_coeffs="polar"), ValueError, "ns_coeffs"),
    (dict(ns_coeffs=(3.0, -3.0)), ValueError, "ns_coeffs"),
    (dict(ns_coeffs=((3.0, -3.0, 1.0), (2.0, -2.0))), ValueError, "ns_coeffs"),
    (dict(preconditioning="polar"), ValueError, "preconditioning"),
    (dict(adam_learning_rate="0.1"), TypeError, "adam_learning_rate"),
    (dict(beta=optax.constant_schedule(0.9)), TypeError, "beta.*schedule"),
    (dict(beta=1.5), ValueError, "beta"),
    (dict(ns_steps=2.5), ValueError, "ns_steps"),
    (dict(ns_steps=-1), ValueError, "ns_steps"),
    (dict(eps=-1.0), ValueError, "epsilon"),
    (dict(adam_b2="x"), TypeError, "adam_b2"),
])
def test_bad_contrib_muon_arguments_name_the_argument(kwargs, error, words):
    with pytest.raises(error, match=words):
        dynopt.jax.contrib.muon(0.1, **kwargs)
