"""dynopt.jax speaks optax: ``dynopt.jax.<name>(...)`` equals ``optax.<name>(...)`` called with the same arguments.

Expected values come from optax itself (0.2.8, installed in the venv), run side by side on the same gradients: the
signatures (argument names, order, kinds and defaults) are read from ``optax.<name>`` with ``inspect``, and the
numbers are optax's own updates over 5 steps on a small pytree, in float32 (to ~1e-6, a few float32 roundings:
the two implementations order some products differently) and in float64 (tight). ``dynopt.torch`` keeps
torch.optim's algorithm; tests/test_conformance_torch.py checks that side.
"""

from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt.jax

NAMES = ["sgd", "adam", "adamw", "amsgrad", "nadam", "nadamw", "radam", "adamax", "adagrad", "adadelta", "rprop",
         "rmsprop"]

GRID = {  # options of each factory, every argument optax takes at least once
    "sgd": [{}, {"momentum": 0.9}, {"momentum": 0.8, "nesterov": True}, {"momentum": 0.0}],
    "adam": [{}, {"b1": 0.8, "b2": 0.99, "eps": 1e-6, "eps_root": 1e-8}, {"nesterov": True}],
    "adamw": [{}, {"weight_decay": 0.1, "b1": 0.8}, {"weight_decay": 0.3, "mask": {"w": True, "b": [False, None], "s": True}},
              {"weight_decay": 0.2, "mask": lambda p: jax.tree.map(lambda x: x.ndim > 1, p), "nesterov": True}],
    "amsgrad": [{}, {"b2": 0.9, "bias_correction_nu": False}, {"bias_correction_mu": False, "eps_root": 1e-6}],
    "nadam": [{}, {"b1": 0.7, "b2": 0.95}],
    "nadamw": [{}, {"weight_decay": 0.05}],
    "radam": [{}, {"threshold": 4.5, "b2": 0.9, "nesterov": True}, {"eps_root": 1e-6, "b2": 0.9}],
    "adamax": [{}, {"b1": 0.8, "b2": 0.9, "eps": 1e-3}],
    "adagrad": [{}, {"initial_accumulator_value": 0.0, "eps": 1e-3}, {"initial_accumulator_value": 1.0}],
    "adadelta": [{}, {"rho": 0.5, "eps": 1e-4}, {"weight_decay": 0.1}, {"weight_decay": 0.1, "weight_decay_mask": {"w": False, "b": [True, None], "s": True}}],
    "rprop": [{}, {"eta_minus": 0.3, "eta_plus": 1.5, "max_step_size": 0.2}, {"min_step_size": 0.05}],
    "rmsprop": [{}, {"decay": 0.8, "centered": True}, {"momentum": 0.9, "nesterov": True, "initial_scale": 0.5},
                {"eps_in_sqrt": False, "bias_correction": True, "momentum": 0.5}, {"centered": True, "bias_correction": True, "eps": 0.1}],
}
CASES = [(name, kwargs) for name in NAMES for kwargs in GRID[name]]


def params0(dtype):
    return {"w": jnp.linspace(-1.0, 1.5, 6, dtype=dtype).reshape(2, 3), "b": [jnp.asarray([0.3, -0.2, 0.9], dtype), None],
            "s": jnp.asarray(0.7, dtype)}


def gradients(params, k):  # a different, sign-changing gradient at every step (Rprop's flips happen)
    return jax.tree.map(lambda x: jnp.cos((1.0 + 0.7 * k) * x * 3.0) + 0.3 * x, params)


def run(opt, dtype, steps=5):
    params = params0(dtype)
    state = opt.init(params)
    updates = []
    for k in range(steps):
        u, state = jax.jit(opt.update)(gradients(params, k), state, params)
        updates.append(u)
        params = optax.apply_updates(params, u)
    return updates, params


def assert_close(ours, theirs, rtol, atol):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
        assert x.dtype == y.dtype
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), rtol=rtol, atol=atol)


def label(case):
    name, kwargs = case
    return name + "-" + ",".join(f"{k}" for k in kwargs)


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_optax(name):
    """The same arguments in the same order, of the same kinds (positional or keyword-only), with the same defaults;
    dynopt adds only its keyword-only ``skip_nonfinite``."""
    ours = inspect.signature(getattr(dynopt.jax, name)).parameters
    theirs = inspect.signature(getattr(optax, name)).parameters
    assert [(p.name, p.kind, p.default) for p in ours.values() if p.name != "skip_nonfinite"] == [
        (p.name, p.kind, p.default) for p in theirs.values()]
    assert ours["skip_nonfinite"].kind is inspect.Parameter.KEYWORD_ONLY


@pytest.mark.parametrize("case", CASES, ids=map(label, CASES))
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_numbers_are_optax(case, dtype):
    """Updates at each of 5 steps and the final parameters equal optax's, with the same arguments."""
    name, kwargs = case
    ours, end = run(getattr(dynopt.jax, name)(0.05, **kwargs), dtype)
    theirs, optax_end = run(getattr(optax, name)(0.05, **kwargs), dtype)
    rtol, atol = (2e-5, 2e-6) if dtype == jnp.float32 else (1e-12, 1e-14)
    for u, v in zip(ours, theirs):
        assert_close(u, v, rtol, atol)
    assert_close(end, optax_end, rtol, atol)


@pytest.mark.parametrize("name", ["sgd", "adam", "rmsprop", "adagrad"])
def test_positional_call_and_schedule(name):
    """Positional arguments bind as in optax, and a learning-rate schedule is evaluated at optax's count."""
    positional = {"sgd": (0.9, True), "adam": (0.8, 0.99, 1e-6), "rmsprop": (0.8, 1e-6, 0.1), "adagrad": (0.5, 1e-5)}[name]
    schedule = optax.linear_schedule(0.1, 0.01, 4)
    ours, _ = run(getattr(dynopt.jax, name)(schedule, *positional), jnp.float64)
    theirs, _ = run(getattr(optax, name)(schedule, *positional), jnp.float64)
    for u, v in zip(ours, theirs):
        assert_close(u, v, 1e-12, 1e-14)


def test_adadelta_without_learning_rate_is_optax():
    """optax.adadelta() (learning_rate=None) applies no scaling: the update is +Δ, as optax computes it."""
    ours, _ = run(dynopt.jax.adadelta(), jnp.float64)
    theirs, _ = run(optax.adadelta(), jnp.float64)
    for u, v in zip(ours, theirs):
        assert_close(u, v, 1e-12, 1e-14)


@pytest.mark.parametrize("name, option, attribute", [("adam", "mu_dtype", "mu"), ("adamw", "mu_dtype", "mu"),
                                                     ("amsgrad", "mu_dtype", "mu"), ("sgd", "accumulator_dtype", "trace")])
def test_state_dtype_options(name, option, attribute):
    kwargs = {"momentum": 0.9} if name == "sgd" else {}
    params = params0(jnp.float32)
    state = getattr(dynopt.jax, name)(0.1, **kwargs, **{option: jnp.bfloat16}).init(params)
    assert optax.tree.get(state, attribute)["w"].dtype == jnp.bfloat16
    ours, _ = run(getattr(dynopt.jax, name)(0.1, **kwargs, **{option: "bfloat16"}), jnp.float32)
    theirs, _ = run(getattr(optax, name)(0.1, **kwargs, **{option: "bfloat16"}), jnp.float32)
    assert_close(ours[0], theirs[0], 1e-5, 1e-6)  # the same inputs: the same first step
    for u, v in zip(ours, theirs):  # later, a bfloat16 rounding of the state may fall either way under jit's fusion
        assert_close(u, v, 5e-2, 5e-3)


def test_inject_hyperparams_b1_b2_separately():
    """b1 and b2 are separate scalars: inject_hyperparams traces each; changing state.hyperparams['b1'] between steps
    takes effect, exactly as it does in optax's injected adam."""
    ours = optax.inject_hyperparams(dynopt.jax.adam)(learning_rate=0.05, b1=0.9, b2=0.99)
    theirs = optax.inject_hyperparams(optax.adam)(learning_rate=0.05, b1=0.9, b2=0.99)
    params = q = params0(jnp.float32)
    s, t = ours.init(params), theirs.init(params)
    assert set(s.hyperparams) == set(t.hyperparams) >= {"learning_rate", "b1", "b2", "eps", "eps_root"}
    changed = []
    for k in range(4):
        if k == 2:  # change b1 and b2 between steps, in both
            for state in (s, t):
                state.hyperparams["b1"] = jnp.asarray(0.5, state.hyperparams["b1"].dtype)
                state.hyperparams["b2"] = jnp.asarray(0.9, state.hyperparams["b2"].dtype)
        u, s = jax.jit(ours.update)(gradients(params, k), s, params)
        v, t = jax.jit(theirs.update)(gradients(q, k), t, q)
        assert_close(u, v, 2e-5, 2e-6)
        params, q = optax.apply_updates(params, u), optax.apply_updates(q, v)
        changed.append(u)
    # the change took effect: the same run without it differs at step 3
    plain = optax.inject_hyperparams(dynopt.jax.adam)(learning_rate=0.05, b1=0.9, b2=0.99)
    updates, _ = run(plain, jnp.float32, steps=3)
    assert not np.allclose(np.asarray(updates[2]["w"]), np.asarray(changed[2]["w"]), rtol=1e-4)
    assert float(s.hyperparams["b1"]) == pytest.approx(0.5)


@pytest.mark.parametrize("name", ["rmsprop", "sgd", "adagrad", "radam", "rprop", "adamw"])
def test_inject_hyperparams_every_numeric_argument(name):
    """Every numeric argument is injected on its own (a traced scalar): the same numbers as optax's injected factory."""
    kwargs = {"rmsprop": {"momentum": 0.5, "decay": 0.8}, "sgd": {"momentum": 0.9}, "adagrad": {},
              "radam": {"threshold": 4.5}, "rprop": {"eta_minus": 0.4}, "adamw": {"weight_decay": 0.1}}[name]
    ours = optax.inject_hyperparams(getattr(dynopt.jax, name))(0.05, **kwargs)
    theirs = optax.inject_hyperparams(getattr(optax, name))(0.05, **kwargs)
    params = params0(jnp.float64)
    s, t = ours.init(params), theirs.init(params)
    assert set(s.hyperparams) == set(t.hyperparams)
    for k in range(4):
        u, s = jax.jit(ours.update)(gradients(params, k), s, params)
        v, t = jax.jit(theirs.update)(gradients(params, k), t, params)
        assert_close(u, v, 1e-12, 1e-14)
        params = optax.apply_updates(params, u)


@pytest.mark.parametrize("call, error, message", [
    (lambda: dynopt.jax.adam(-1e-3), ValueError, "Invalid learning rate: -0.001"),
    (lambda: dynopt.jax.adam(1e-3, b1=1.5), ValueError, "Invalid b1 value: 1.5 (must be in [0.0, 1.0))"),
    (lambda: dynopt.jax.adamw(1e-3, b2=-0.1), ValueError, "Invalid b2 value: -0.1"),
    (lambda: dynopt.jax.adamw(1e-3, weight_decay=-1.0), ValueError, "Invalid weight_decay value: -1.0"),
    (lambda: dynopt.jax.adam(1e-3, eps=-1e-8), ValueError, "Invalid epsilon value: -1e-08"),
    (lambda: dynopt.jax.amsgrad(1e-3, eps_root=-1.0), ValueError, "Invalid eps_root value: -1.0"),
    (lambda: dynopt.jax.rmsprop(1e-3, decay=1.0), ValueError, "Invalid decay value: 1.0"),
    (lambda: dynopt.jax.rmsprop(1e-3, momentum=-0.5), ValueError, "Invalid momentum value: -0.5"),
    (lambda: dynopt.jax.sgd(1e-3, momentum=-0.9), ValueError, "Invalid momentum value: -0.9"),
    (lambda: dynopt.jax.adagrad(1e-3, initial_accumulator_value=-0.1), ValueError, "Invalid initial_accumulator_value value: -0.1"),
    (lambda: dynopt.jax.adadelta(1e-3, rho=2.0), ValueError, "Invalid rho value: 2.0"),
    (lambda: dynopt.jax.rprop(1e-3, eta_minus=1.5), ValueError, "Invalid eta_minus value: 1.5"),
    (lambda: dynopt.jax.rprop(1e-3, eta_plus=0.5), ValueError, "Invalid eta_plus value: 0.5"),
    (lambda: dynopt.jax.adam(1e-3, b1="0.9"), TypeError, "Invalid b1 value: '0.9'"),
    (lambda: dynopt.jax.adam(1e-3, nesterov=1), TypeError, "Invalid nesterov value: 1 (must be a bool)"),
    (lambda: dynopt.jax.adam(1e-3, betas=(0.9, 0.99)), TypeError, "got an unexpected keyword argument 'betas'"),
    (lambda: dynopt.jax.rmsprop(1e-3, alpha=0.99), TypeError, "got an unexpected keyword argument 'alpha'"),
    (lambda: dynopt.jax.adam(1e-3, 0.9, 0.999, 1e-8, 0.0, None, True), TypeError, "too many positional arguments"),
])
def test_bad_arguments_are_named(call, error, message):
    with pytest.raises(error) as info:
        call()
    assert message in str(info.value)


def test_torch_side_is_unchanged():
    """dynopt.torch keeps torch.optim's names and defaults (its numbers: tests/test_conformance_torch.py)."""
    import dynopt.torch

    sig = inspect.signature(dynopt.torch.RMSprop).parameters
    assert sig["alpha"].default == 0.99 and sig["eps"].default == 1e-8 and "decay" not in sig
    assert inspect.signature(dynopt.torch.Adam).parameters["betas"].default == (0.9, 0.999)
    assert inspect.signature(dynopt.torch.Adagrad).parameters["initial_accumulator_value"].default == 0.0
