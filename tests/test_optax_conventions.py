"""dynopt.jax behaves like an optax transformation: pure, jit-able without recompiling, any
pytree, dtype-preserving, composable with chain / inject_hyperparams / MultiSteps."""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt
import dynopt.jax

KWARGS = {  # every registered optimizer, with options that exercise its state
    "sgd": {}, "momentum": {"momentum": 0.9}, "nesterov": {"momentum": 0.9},
    "rmsprop": {"momentum": 0.5, "centered": True}, "adam": {},
    "eg": {"variant": "signed"},
    "meta_sgd": {"gain_lr": 0.01}, "meta_momentum": {}, "meta_nesterov": {"rule": "hd"},
    "meta_rmsprop": {"gain_lr": 0.01, "momentum": 0.5}, "meta_adam": {},
    "nesterov_sbc": {},
    "adamw": {"weight_decay": 1e-4, "nesterov": True}, "nadam": {"b1": 0.8}, "radam": {"threshold": 4.5},
    "amsgrad": {"b2": 0.99}, "nadamw": {"weight_decay": 1e-3},  # optax's names (dynopt.jax speaks optax)
    "adamax": {}, "adagrad": {"initial_accumulator_value": 0.1}, "adadelta": {},
    "rprop": {"eta_minus": 0.4, "eta_plus": 1.3}, "asgd": {"t0": 1.0},
    "sign_sgd": {}, "signum": {"beta": 0.8}, "lion": {"b2": 0.95, "weight_decay": 1e-4}, "adabelief": {"nesterov": True}, "yogi": {"b1": 0.8},
    "lamb": {"weight_decay": 1e-3}, "lars": {"weight_decay": 1e-3, "momentum": 0.8},
    "adafactor_torch": {"beta2_decay": -0.6, "weight_decay": 1e-3},
    "noisy_sgd": {"eta": 0.01, "key": 0},
}
NAMES = sorted(KWARGS)


def build(name, lr=0.01, **extra):
    return getattr(dynopt.jax, name)(lr, **{**KWARGS[name], **extra})


# Factories that take matrices only (torch.optim.Muon's rule): this file's pytrees hold vectors and scalars;
# tests/test_adafactor_muon.py, tests/test_parity.py and tests/test_properties.py cover them in JAX.
MATRICES_ONLY = {"muon_torch"}


def test_every_registered_spec_has_a_jax_factory_and_a_config():
    # contrib: a namespace (optax.contrib's), whose muon tests/test_optax_noisy_muon.py holds to optax.contrib.muon
    exported = set(dynopt.jax.__all__) - {"from_spec", "from_view", "factories", "contrib"} - MATRICES_ONLY
    assert {getattr(dynopt.jax, n).__name__ for n in NAMES} == exported
    assert {s.jax_name for s in dynopt.REGISTRY.values()} <= exported | MATRICES_ONLY


def tree_params(dtype=jnp.float32):
    return {"w": jnp.arange(6, dtype=dtype).reshape(2, 3) / 7, "b": [jnp.ones(3, dtype), None], "s": jnp.asarray(0.5, dtype)}


def loss(params):
    return jnp.sum(jnp.sin(params["w"]) ** 2) + jnp.sum((params["b"][0] - 2.0) ** 2) + params["s"] ** 4


@pytest.mark.parametrize("name", NAMES)
def test_jit_does_not_recompile_and_keeps_none_leaves(name):
    opt = build(name)
    traces = []

    @jax.jit
    def step(params, state):
        traces.append(1)
        updates, state = opt.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    params = tree_params()
    state = opt.init(params)
    for _ in range(3):
        params, state = step(params, state)
    assert len(traces) == 1
    assert params["b"][1] is None and isinstance(opt.init(tree_params()), tuple)
    assert int(state.count) == 3


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float32, jnp.float64])
def test_updates_keep_gradient_dtype_and_state_keeps_its_dtype(name, dtype):
    arguments = inspect.signature(getattr(dynopt.jax, name)).parameters
    opt = build(name, **({"weight_decay": 0.01} if "weight_decay" in arguments else {}))  # Rprop has none
    params = tree_params(dtype)
    state = opt.init(params)
    grads = jax.grad(loss)(params)
    updates, new_state = jax.jit(opt.update)(grads, state, params)
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
        assert u.dtype == g.dtype
    assert jax.tree.map(lambda x: x.dtype, new_state) == jax.tree.map(lambda x: x.dtype, state)


@pytest.mark.parametrize("name", NAMES)
def test_state_stable_under_lax_cond(name):
    opt = build(name)
    params = tree_params()
    state = opt.init(params)
    grads = jax.grad(loss)(params)
    take = jax.jit(lambda flag: jax.lax.cond(flag, lambda s: opt.update(grads, s, params)[1], lambda s: s, state))
    assert jax.tree.structure(take(True)) == jax.tree.structure(state)


@pytest.mark.parametrize("name", NAMES)
def test_inject_hyperparams_gives_the_same_numbers(name):
    """Hyperparameters become traced arrays: no Python branching on them is allowed."""
    plain = build(name, lr=0.02)
    injected = optax.inject_hyperparams(getattr(dynopt.jax, name))(learning_rate=0.02, **KWARGS[name])
    params = tree_params(jnp.float64)
    p1, s1 = params, plain.init(params)
    p2, s2 = params, injected.init(params)
    for _ in range(5):
        u1, s1 = jax.jit(plain.update)(jax.grad(loss)(p1), s1, p1)
        u2, s2 = jax.jit(injected.update)(jax.grad(loss)(p2), s2, p2)
        p1, p2 = optax.apply_updates(p1, u1), optax.apply_updates(p2, u2)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
        np.testing.assert_allclose(a, b, rtol=1e-12)
    assert float(s2.hyperparams["learning_rate"]) == pytest.approx(0.02)


def assert_trees_close(a, b, rtol=1e-12):
    """Same structure, and per leaf max |x − y| ≤ rtol · max |y| (None leaves included)."""
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        scale = float(jnp.max(jnp.abs(y)))
        assert float(jnp.max(jnp.abs(x - y))) <= rtol * scale, (x, y)


@pytest.mark.parametrize("name", NAMES)
def test_chain_and_extra_args(name):
    """chain(clip_by_global_norm(1), opt) for 3 steps equals opt alone on gradients clipped by hand
    (g · min(1, 1/‖g‖), the definition of clipping by global norm); extra keyword arguments change nothing."""
    opt = optax.chain(optax.clip_by_global_norm(1.0), build(name))
    alone = build(name)
    params = mine = tree_params(jnp.float64)
    state, alone_state = opt.init(params), alone.init(params)
    for _ in range(3):
        grads = jax.grad(loss)(params)
        norm = float(jnp.sqrt(sum(jnp.sum(g * g) for g in jax.tree.leaves(grads))))
        assert norm > 1.0  # the clip is active (the bias leaf alone contributes ‖(−2, −2, −2)‖ at the start)
        updates, state = opt.update(grads, state, params, value=1.0, unknown_kwarg=3)
        factor = min(1.0, 1.0 / norm)
        clipped = jax.tree.map(lambda g, factor=factor: g * factor, grads)
        expected, alone_state = alone.update(clipped, alone_state, mine)
        assert_trees_close(updates, expected)
        params, mine = optax.apply_updates(params, updates), optax.apply_updates(mine, expected)
    assert params["b"][1] is None


@pytest.mark.parametrize("name", NAMES)
def test_multisteps_accumulates(name):
    """MultiSteps(opt, every_k_schedule=3) returns zero updates for two mini-steps, then opt's update for
    the mean of the three gradients (optax's documented accumulation); two macro steps, different gradients
    at every mini-step, against opt alone on the means computed here (in float64: MultiSteps accumulates
    in float32 unless told otherwise)."""
    opt = optax.MultiSteps(build(name), every_k_schedule=3, accumulator_dtype=jnp.float64)
    alone = build(name)
    params = mine = tree_params(jnp.float64)
    state, alone_state = opt.init(params), alone.init(params)
    for macro in range(2):
        window = []
        for j in range(3):
            grads = jax.tree.map(lambda g, j=j: g * (1.0 + j) + 0.1 * j, jax.grad(loss)(params))  # differ per mini-step
            window.append(grads)
            updates, state = opt.update(grads, state, params)
            if j < 2:
                assert all(float(jnp.abs(u).max()) == 0.0 for u in jax.tree.leaves(updates))
        mean = jax.tree.map(lambda *gs: sum(gs) / 3, *window)
        expected, alone_state = alone.update(mean, alone_state, mine)
        assert_trees_close(updates, expected)
        # optax.rprop (and dynopt.jax.rprop, its twin) applies the previous step's update: nothing at the first step
        assert float(jnp.abs(expected["w"]).max()) > 0 or (name == "rprop" and macro == 0)
        params, mine = optax.apply_updates(params, updates), optax.apply_updates(mine, expected)


@pytest.mark.parametrize("name", NAMES)
def test_converges_on_parabola_and_rosenbrock(name):
    """optax's alias_test targets: parabola minimum at (1, −1, 1) and Rosenbrock (minimum (1, 1), from
    the origin), for every optimizer except EG, which is not a Rosenbrock solver (EGU± moves each
    coordinate at a speed ∝ w⁺ + w⁻ and is 7% short after 10,000 steps)."""
    base = name.removeprefix("meta_")
    lr = {"sgd": 1e-3, "momentum": 1e-3, "nesterov": 1e-3, "rmsprop": 2e-3, "adam": 5e-3, "eg": 1e-3, "nesterov_sbc": 1e-3,
          # optax's alias_test learning rates where optax has the name; ASGD: SGD's
          "adamw": 1e-1, "nadam": 1e-2, "amsgrad": 1e-1, "nadamw": 1e-2, "radam": 5e-3, "adamax": 1e-1, "adagrad": 1.0, "adadelta": 0.1, "rprop": 1e-1,
          "asgd": 1e-3, "sign_sgd": 1e-1, "signum": 1e-2, "lion": 1e-2, "adabelief": 1e-2, "yogi": 1e-1, "lamb": 1e-3,
          "lars": 1.0, "adafactor_torch": 1e-2, "noisy_sgd": 1e-3}[base]  # Adafactor: its default (it caps the relative step)
    targets = [(lambda p: jnp.sum((p - jnp.array([1.0, -1.0, 1.0])) ** 2), jnp.array([-1.0, 10.0, 1.0]), jnp.array([1.0, -1.0, 1.0]))]
    if name not in ("eg", "sign_sgd", "signum"):  # as optax's alias_test: sign steps need a schedule on Rosenbrock
        targets.append((lambda p: (1 - p[0]) ** 2 + 100 * (p[1] - p[0] ** 2) ** 2, jnp.zeros(2), jnp.ones(2)))
    opt = build(name, lr)

    def minimize(fn, start):
        def body(_, carry):
            p, s = carry
            u, s = opt.update(jax.grad(fn)(p), s, p)
            return optax.apply_updates(p, u), s
        return jax.jit(lambda p0: jax.lax.fori_loop(0, 10_000, body, (p0, opt.init(p0)))[0])(start)

    for fn, start, optimum in targets:
        np.testing.assert_allclose(minimize(fn, start), optimum, rtol=3e-2, atol=3e-2)


def test_factory_signature_is_explicit():
    sig = inspect.signature(dynopt.jax.rmsprop)  # optax.rmsprop's (tests/test_optax_names.py checks every view)
    assert list(sig.parameters)[:2] == ["learning_rate", "decay"]
    assert sig.parameters["learning_rate"].default is inspect.Parameter.empty
    assert {k: p.default for k, p in sig.parameters.items() if k not in ("learning_rate", "skip_nonfinite")} == {
        k: p.default for k, p in inspect.signature(optax.rmsprop).parameters.items() if k != "learning_rate"}
    sig = inspect.signature(dynopt.jax.momentum)  # no optax twin: (learning_rate, <the spec's hyperparameters>)
    assert {k: p.default for k, p in sig.parameters.items() if k not in ("learning_rate", "skip_nonfinite")} == {
        k: v for k, v in dynopt.momentum.defaults.items() if k != "lr"}
    guard = sig.parameters["skip_nonfinite"]  # the backend's own option (tests/test_faults.py)
    assert guard.kind is inspect.Parameter.KEYWORD_ONLY and guard.default is False
    assert "ODE" in dynopt.jax.rmsprop.__doc__
