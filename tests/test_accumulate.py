"""dynopt.accumulate (gradient accumulation, Su's "soft batch") and its buffer-embedded form (claim C18).

The oracle is the base optimizer itself stepped on the mean of the k micro-batch gradients (the
definition of accumulation); in JAX also optax.MultiSteps of the same optimizer.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from problems import shapes_for

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt.optimizers import ZOO

RNG = np.random.default_rng(7)
SHAPES = [(3,), (2, 2)]
THETA0 = [np.abs(RNG.normal(size=s)) + 0.2 for s in SHAPES]  # positive, for EG
K, STEPS = 3, 5
MICRO = [[RNG.normal(size=s) for s in SHAPES] for _ in range(K * STEPS)]


def micro_grads(index, params):
    """A gradient that depends on the parameters and on the micro-batch (so that means matter)."""
    by_shape = {g.shape: g for g in MICRO[index]}  # the parameters of theta0(spec), a part of SHAPES' leaves
    return [0.5 * p + by_shape[tuple(p.shape)] for p in params]


def run_micro_jax(opt, params0):
    """``opt`` (a dynopt.jax transform) through the K·STEPS micro-gradients from ``params0``; the final parameters."""
    params = [jnp.asarray(p) for p in params0]
    state = opt.init(params)
    for index in range(K * STEPS):
        grads = [jnp.asarray(g) for g in micro_grads(index, [np.asarray(p) for p in params])]
        updates, state = opt.update(grads, state, params)
        params = optax.apply_updates(params, updates)
    return params


def theta0(spec):
    """THETA0, less the leaves ``spec`` refuses (Muon takes matrices only; problems.shapes_for)."""
    kept = shapes_for(spec, SHAPES)
    return [p for p, s in zip(THETA0, SHAPES) if s in kept]


HYPER = {"SGD": {"weight_decay": 0.1}, "Momentum": {"dampening": 0.3, "weight_decay": 0.1}, "RMSprop": {"centered": True,
         "momentum": 0.5}, "EG": {"lr": 0.05}, "MetaSGD": {"lr": 0.05}, "MetaMomentum": {"lr": 0.05},
         "NoisySGD": {"eta": 0.0}}  # no noise: the NumPy oracle, torch and JAX draw from different streams


def hyper_of(spec):
    return {"lr": 0.02, **HYPER.get(spec.name, {})}


def run_base_on_means(spec, hyper):
    """The oracle: the base optimizer on the mean of each group of K micro-gradients (taken at fixed params)."""
    opt = dynopt.numpy.from_spec(spec)(**hyper)
    params = [p.copy() for p in theta0(spec)]
    state = opt.init(params)
    for step in range(STEPS):
        grads = [micro_grads(step * K + j, params) for j in range(K)]
        mean = [sum(g[i] for g in grads) / K for i in range(len(params))]
        updates, state = opt.update(mean, state, params)
        params = [p + u for p, u in zip(params, updates)]
    return params, state


def run_accumulated_numpy(spec, hyper, **options):
    opt = dynopt.numpy.from_spec(dynopt.accumulate(spec, K, **options))(**hyper)
    params = [p.copy() for p in theta0(spec)]
    state = opt.init(params)
    for index in range(K * STEPS):
        updates, state = opt.update(micro_grads(index, params), state, params)
        if index % K != K - 1:
            assert all(np.array_equal(u, np.zeros_like(u)) for u in updates), "parameters moved between micro-steps"
        params = [p + u for p, u in zip(params, updates)]
    return params, state


@pytest.mark.parametrize("spec", ZOO, ids=lambda s: s.name)
def test_accumulate_equals_the_base_on_the_mean_gradient_numpy_torch_jax(spec):
    hyper = hyper_of(spec)
    expected, base_state = run_base_on_means(spec, hyper)
    got, state = run_accumulated_numpy(spec, hyper)
    for a, b in zip(got, expected):
        assert np.allclose(a, b, rtol=0, atol=1e-12)
    for name in spec.state(spec.namespace(hyper)):
        for a, b in zip(state.values[name], base_state.values[name]):
            assert (a is None) == (b is None), name  # None: a parameter that does not hold it (Adafactor's factors)
            assert a is None or np.allclose(a, b, rtol=0, atol=1e-12), name
    assert all(np.array_equal(x, np.zeros_like(x)) for x in state.values["accumulated_grad"])
    # torch: reference path and default flat path
    for flat in (False, True):
        params = [torch.nn.Parameter(torch.tensor(p)) for p in theta0(spec)]
        opt = dynopt.torch.from_spec(dynopt.accumulate(spec, K))(params, **hyper, flat=flat)
        for index in range(K * STEPS):
            for p, g in zip(params, micro_grads(index, [q.detach().numpy() for q in params])):
                p.grad = torch.tensor(g)
            opt.step()
        for p, e in zip(params, expected):
            assert np.allclose(p.detach().numpy(), e, rtol=0, atol=1e-12), flat
    # JAX
    hyper = dict(hyper)
    opt = dynopt.jax.from_spec(dynopt.accumulate(spec, K))(hyper.pop("lr"), **hyper)
    params = run_micro_jax(opt, theta0(spec))
    for p, e in zip(params, expected):
        assert np.allclose(np.asarray(p), e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["adam", "momentum", "rmsprop"])
def test_accumulate_equals_optax_multisteps(name):
    """Under jit, dynopt.accumulate(spec, k) == optax.MultiSteps(dynopt optimizer, k) == MultiSteps(optax's own).

    To 1e-8, not 1e-12: MultiSteps keeps a running mean acc ← acc + (g − acc)/(n + 1) whose coefficient
    is rounded in float32 (measured: SGD's first step is 4e-10 off the float64 mean of the three
    gradients, where dynopt.accumulate's sum/k is exact); the 1e-12 equality with the exact mean is
    test_accumulate_equals_the_base_on_the_mean_gradient_numpy_torch_jax."""
    import jax

    spec = getattr(dynopt, name)
    ours = dynopt.jax.from_spec(dynopt.accumulate(spec, K))(0.02)
    wrapped = optax.MultiSteps(dynopt.jax.from_spec(spec)(0.02), K)
    theirs = optax.MultiSteps({"adam": optax.adam(0.02), "momentum": optax.sgd(0.02, momentum=0.9),
                               "rmsprop": optax.rmsprop(0.02, decay=0.99, eps=1e-8)}[name], K)
    runs = []
    for opt in (ours, wrapped, theirs):
        params = [jnp.asarray(p) for p in THETA0]
        state = opt.init(params)
        update = jax.jit(opt.update)
        for index in range(K * STEPS):
            grads = [jnp.asarray(g) for g in micro_grads(index, [np.asarray(p) for p in params])]
            updates, state = update(grads, state, params)
            params = optax.apply_updates(params, updates)
        runs.append([np.asarray(p) for p in params])
    for a, b in zip(runs[0], runs[1]):
        assert np.allclose(a, b, rtol=0, atol=1e-8), np.abs(a - b).max()
    if name != "rmsprop":  # optax.rmsprop puts eps inside the root (see the RMSprop docs)
        for a, b in zip(runs[0], runs[2]):
            assert np.allclose(a, b, rtol=0, atol=1e-8)


def test_schedules_count_optimizer_steps_not_micro_steps():
    """An optax schedule sees the optimizer step (count // k); so does the NumPy oracle; the base with the
    same schedule on the mean gradients is the oracle."""
    lrs = [0.1, 0.05, 0.02, 0.01, 0.005]

    def schedule(count):
        return jnp.asarray(lrs)[count]

    expected_opt = dynopt.numpy.from_spec(dynopt.adam)(lambda count: lrs[count])
    params = [p.copy() for p in THETA0]
    state = expected_opt.init(params)
    for step in range(STEPS):
        grads = [micro_grads(step * K + j, params) for j in range(K)]
        updates, state = expected_opt.update([sum(g[i] for g in grads) / K for i in range(2)], state, params)
        params = [p + u for p, u in zip(params, updates)]
    opt = dynopt.jax.from_spec(dynopt.accumulate(dynopt.adam, K))(schedule)
    jparams = run_micro_jax(opt, THETA0)
    for a, b in zip(jparams, params):
        assert np.allclose(np.asarray(a), b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("k, error", [(0, ValueError), (-2, ValueError), (2.5, ValueError), ("3", TypeError),
                                      (True, TypeError), (None, TypeError)])
def test_a_bad_k_is_refused(k, error):
    with pytest.raises(error, match=f"Invalid k value: {k!r}"):
        dynopt.accumulate(dynopt.sgd, k)


def test_k_of_one_is_the_base_and_a_float_integer_is_accepted():
    expected, _ = run_base_on_means(dynopt.momentum, {"lr": 0.02})
    assert dynopt.accumulate(dynopt.sgd, 2.0).micro_steps == 2
    opt = dynopt.numpy.from_spec(dynopt.accumulate(dynopt.momentum, 1))(0.02)
    params = [p.copy() for p in THETA0]
    state = opt.init(params)
    for index in range(3):
        updates, state = opt.update(micro_grads(index, params), state, params)
        params = [p + u for p, u in zip(params, updates)]
    plain = dynopt.numpy.from_spec(dynopt.momentum)(0.02)
    q = [p.copy() for p in THETA0]
    s = plain.init(q)
    for index in range(3):
        u, s = plain.update(micro_grads(index, q), s, q)
        q = [a + b for a, b in zip(q, u)]
    for a, b in zip(params, q):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("hyper", [{"momentum": 0.9}, {"momentum": 0.7, "dampening": 0.3, "weight_decay": 0.1},
                                   {"momentum": 0.5, "maximize": True}])
def test_su_buffer_embedded_form_equals_the_base_without_an_extra_buffer(hyper):
    """C18: micro-step 1 b ← μb + u/k, then b ← b + u/k, θ moves at micro-step k: after every k calls the
    parameters equal Momentum on the mean gradient (1e-12), on NumPy, torch and JAX, and the state holds
    only the momentum buffer."""
    hyper = {"lr": 0.02, **hyper}
    spec = dynopt.accumulate(dynopt.momentum, K, embed=True)
    assert spec.state(spec.namespace(hyper)) == ("momentum_buffer",)
    expected, base_state = run_base_on_means(dynopt.momentum, hyper)
    got, state = run_accumulated_numpy(dynopt.momentum, hyper, embed=True)
    for a, b in zip(got, expected):
        assert np.allclose(a, b, rtol=0, atol=1e-12)
    for a, b in zip(state.values["momentum_buffer"], base_state.values["momentum_buffer"]):
        assert np.allclose(a, b, rtol=0, atol=1e-12)
    params = [torch.nn.Parameter(torch.tensor(p)) for p in THETA0]
    opt = dynopt.torch.from_spec(spec)(params, **hyper)
    for index in range(K * STEPS):
        for p, g in zip(params, micro_grads(index, [q.detach().numpy() for q in params])):
            p.grad = torch.tensor(g)
        opt.step()
    for p, e in zip(params, expected):
        assert np.allclose(p.detach().numpy(), e, rtol=0, atol=1e-12)
    jax_hyper = dict(hyper)
    jopt = dynopt.jax.from_spec(spec)(jax_hyper.pop("lr"), **jax_hyper)
    jparams = [jnp.asarray(p) for p in THETA0]
    jstate = jopt.init(jparams)
    import jax

    update = jax.jit(jopt.update)
    for index in range(K * STEPS):
        grads = [jnp.asarray(g) for g in micro_grads(index, [np.asarray(p) for p in jparams])]
        updates, jstate = update(grads, jstate, jparams)
        jparams = optax.apply_updates(jparams, updates)
    for p, e in zip(jparams, expected):
        assert np.allclose(np.asarray(p), e, rtol=0, atol=1e-12)


@pytest.mark.parametrize("spec", [dynopt.adam, dynopt.nesterov, dynopt.meta_momentum], ids=lambda s: s.name)
def test_the_embedded_form_refuses_what_it_cannot_embed(spec):
    with pytest.raises(ValueError, match="embed=True"):
        opt = dynopt.numpy.from_spec(dynopt.accumulate(spec, K, embed=True))(0.01)
        params = [p.copy() for p in THETA0]
        opt.update(micro_grads(0, params), opt.init(params), params)
