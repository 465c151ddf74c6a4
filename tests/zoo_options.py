"""Options that give each optimizer of the zoo a non-trivial state, and a small jitted JAX training
run, shared by the fault, pickle and orbax tests (one dict to extend when the zoo grows)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

STATEFUL = {  # options that give each optimizer a non-trivial state (global scalars and gains included)
    "SGD": {"weight_decay": 0.01},
    "Momentum": {"momentum": 0.9, "dampening": 0.1},
    "Nesterov": {"momentum": 0.9},
    "RMSprop": {"alpha": 0.9, "momentum": 0.5, "centered": True},
    "Adam": {"betas": (0.8, 0.99), "weight_decay": 0.01},
    "EG": {"variant": "signed_simplex"},
    "MetaSGD": {"meta_lr": 0.05, "gain_lr": 0.01},
    "MetaMomentum": {"meta_lr": 0.05},
    "MetaNesterov": {"meta_lr": 0.05, "rule": "hd"},
    "MetaRMSprop": {"meta_lr": 0.05, "momentum": 0.5},
    "MetaAdam": {"meta_lr": 0.05},
    "NesterovSBC": {"weight_decay": 0.01},
    "AdamW": {"betas": (0.8, 0.99), "amsgrad": True},
    "RAdam": {"betas": (0.8, 0.99), "weight_decay": 0.01, "decoupled_weight_decay": True},
    "Adamax": {"betas": (0.8, 0.99), "weight_decay": 0.01},
    "Adagrad": {"lr_decay": 0.01, "initial_accumulator_value": 0.1},
    "Adadelta": {"rho": 0.8, "weight_decay": 0.01},
    "Rprop": {"etas": (0.4, 1.3)},
    "NAdam": {"betas": (0.8, 0.99), "momentum_decay": 0.01, "weight_decay": 0.01},
    "ASGD": {"lambd": 0.01, "t0": 3, "weight_decay": 0.01},
    "Muon": {"momentum": 0.9, "weight_decay": 0.05, "adjust_lr_fn": "match_rms_adamw"},
    "Adafactor": {"beta2_decay": -0.6, "eps": (None, 1e-2), "d": 1.2, "weight_decay": 0.05},
    "SignSGD": {},
    "Signum": {"momentum": 0.8},
    "Lion": {"betas": (0.8, 0.99), "weight_decay": 0.1},
    "AdaBelief": {"betas": (0.8, 0.99), "eps": 1e-8, "eps_root": 1e-12},
    "Yogi": {"betas": (0.8, 0.99)},
    "Lamb": {"betas": (0.8, 0.99), "weight_decay": 0.01},
    "Lars": {"weight_decay": 0.01, "trust_coefficient": 0.1, "momentum": 0.8},
    "NoisySGD": {"eta": 0.1, "gamma": 0.3, "key": 3},  # within one backend the draws repeat exactly
}


def params0(spec=None):  # mixed dtypes, a 0-d leaf and a None leaf (orbax cannot save zero-size arrays)
    """``spec``: the leaves it refuses (``check_param``: Muon takes matrices only) become None, and it gets a
    bfloat16 matrix instead."""
    params = {"w": jnp.linspace(-1.0, 1.5, 6).reshape(2, 3), "b": [jnp.asarray([0.3, -0.2, 0.9], jnp.float32), None],
              "h": jnp.asarray([0.5, 2.0], jnp.bfloat16), "s": jnp.asarray(0.7)}
    if spec is None or spec.check_param is None:
        return params
    from dynopt.tree import ArrayLeafOps, TreeMath

    o, hp = TreeMath(ArrayLeafOps(np)), spec.namespace({})
    params["h"] = jnp.asarray([[0.5, 2.0], [1.0, -0.5]], jnp.bfloat16)
    return jax.tree.map(lambda x: None if spec.check_param(o, hp, np.ones(x.shape)) else x, params)  # by shape


def make_step(opt):
    @jax.jit
    def step(params, state, k):
        grads = jax.tree.map(lambda x: (jnp.cos((1.0 + 0.1 * k) * x) + 0.3 * x).astype(x.dtype), params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return step


def run(step, params, state, begin, end):
    for k in range(begin, end):
        params, state = step(params, state, k)
    return params, state


def key_data(x):
    """A PRNG key leaf (NoisySGD's ``rng_key``, as optax keeps it) as its uint32 data, which NumPy can compare; any
    other leaf as it is."""
    dtype = getattr(x, "dtype", None)
    return jax.random.key_data(x) if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key) else x


def assert_bit_identical(a, b):
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(map(key_data, jax.tree.leaves(a)), map(key_data, jax.tree.leaves(b))):
        assert np.asarray(x).dtype == np.asarray(y).dtype and np.array_equal(np.asarray(x), np.asarray(y))
