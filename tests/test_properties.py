"""Property-based agreement of the three backends: for every registered optimizer, random shapes
(0-d and empty tensors included), dtypes, hyperparameters and param groups, the NumPy oracle
(float64), dynopt.torch and dynopt.jax compute the same parameters and state.

Each example draws, with Hypothesis:

* 1–4 parameters of random shapes (0–3 dimensions of length 0–3: 0-d and empty tensors occur),
  one dtype (float32 or float64), positive or signed starting values;
* 1–5 steps of gradients (standard normal; values come from a drawn seed, shapes and options
  from Hypothesis);
* every hyperparameter from a strategy derived from its ``Hyper``: a boolean for a static flag,
  the choices listed in a ``one_of`` check's rule, ``None`` or a small int for an ``optional_int``
  check; a number is the default, the default times 10^u (u uniform in [−1, 1]) or 10^u (u in
  [−3, 0]), kept only when ``Hyper.check`` accepts it (so 0 occurs only where it is the default);
  tuples draw each entry that way; then the spec's own parameter check (``check_param``) must
  accept the parameters, else the example is discarded;
* in torch, the parameters split into one or two param groups; for a spec without global
  reductions the second group draws its own hyperparameters (the oracle and JAX run each group
  on its own), with global reductions both groups share them (one oracle run over everything).

Reference: the oracle on the non-empty parameters (an empty parameter takes no part in anything;
torch and JAX get every parameter, so this also checks that they treat empty ones as inert).
Tolerances, per leaf, max |a − b| / s, where s is the largest magnitude the oracle's value had
over the run (so a value that ends near zero by cancellation, like NesterovSBC's look-ahead
d + step, is judged against the terms that cancelled): float64 1e-12 (the parity tolerance of
``tests/test_parity.py``); float32 against the float64 oracle 1e-5 (both get the same
single-precision inputs; float32 rounds each operation to ~6e-8, amplified by the steepest parts
of a step, such as centered RMSprop's v − ḡ² or the meta-step brake slope
shrink_lr/(1 − brake_cos)). Measured before choosing them, over 2,400 random (not derandomized)
examples, 200 per optimizer: at most 2.1e-15 in float64 (MetaRMSprop) and 8.3e-7 in float32 (EG).

Budget: ``max_examples`` per optimizer (``EXAMPLES`` below), ``derandomize=True`` (the same
examples every run), no example database; the number of examples each optimizer ran is printed
at the end of the module (``pytest -s``) and asserted.
"""

from __future__ import annotations

import ast
import math
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from problems import NOISE_OFF

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt._backends.numpy_oracle import MATH as NUMPY_MATH
from dynopt.spec import LR, Hyper

torch.set_num_threads(1)

EXAMPLES = 16
BUDGET = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
TOLERANCE = {"float64": 1e-12, "float32": 1e-5}
RAN: Counter = Counter()


# ----------------------------------------------------------------------------- strategies


def number(default: float, check) -> st.SearchStrategy:
    """The default or the default times 10^u, u in [−1, 1] (for a default of 0: 0 or 10^u, u in
    [−3, 0]), kept when ``check`` (a ``dynopt.spec.Check``) accepts it."""
    if default == 0:
        candidates = st.one_of(st.just(0.0), st.floats(-3.0, 0.0).map(lambda u: 10.0**u))
    else:
        candidates = st.one_of(st.just(float(default)), st.floats(-1.0, 1.0).map(lambda u: float(default) * 10.0**u))
    return candidates.filter(check.test) if check is not None else candidates


def hyper_strategy(h: Hyper) -> st.SearchStrategy:
    """Values of one hyperparameter, derived from its declaration and its check."""
    if h.static:
        if h.check is None:
            return st.booleans()
        rule = h.check.rule
        if rule.startswith("must be one of "):
            choices = ast.literal_eval(rule.removeprefix("must be one of "))
            assert all(h.check.test(c) for c in choices)
            return st.sampled_from(choices)
        return st.one_of(st.none(), st.none(), st.integers(-2, 1)).filter(h.check.test)
    if h.length:  # an item that may be None (Hyper.optional: Adafactor's ε₁) is None or 10^u, u in [−8, −2]
        return st.tuples(*(st.one_of(st.none(), number(1e-5, h.check)) if i in h.optional else number(d, h.check)
                           for i, d in enumerate(h.default)))
    return number(h.default, h.check)


def hyperparameters(spec) -> st.SearchStrategy:
    """Each hyperparameter from its own strategy, kept when the spec's joint rules accept them together
    (``Spec.constraints``: SGD's nesterov needs momentum > 0 and dampening 0)."""
    off = NOISE_OFF if spec.random_seed is not None else {}  # the backends' random streams differ: no noise here
    return st.fixed_dictionaries({h.name: st.just(off[h.name]) if h.name in off else hyper_strategy(h)
                                  for h in spec.hyperparams}).filter(lambda hp: _valid(spec, hp))


def _valid(spec, hp) -> bool:
    try:
        spec.validate(hp)
    except ValueError:
        return False
    return True


SHAPE = st.lists(st.integers(0, 3), min_size=0, max_size=3).map(tuple)


@st.composite
def examples(draw, spec):
    shapes = draw(st.lists(SHAPE, min_size=1, max_size=4))
    groups = draw(st.lists(st.integers(0, 1), min_size=len(shapes), max_size=len(shapes)))
    used = sorted(set(groups))
    groups = [used.index(g) for g in groups]  # groups 0..n−1, none empty
    hyper = [draw(hyperparameters(spec))]
    if len(used) == 2:
        hyper.append(hyper[0] if spec.reductions is not None else draw(hyperparameters(spec)))
    return {
        "shapes": shapes, "groups": groups, "hyper": hyper,
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "positive": draw(st.booleans()),
        "steps": draw(st.integers(1, 5)),
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


# ----------------------------------------------------------------------------- the three backends


def data(example):
    """Starting parameters and gradients, already rounded to the example's dtype, as float64 arrays."""
    rng = np.random.default_rng(example["seed"])
    dtype = np.dtype(example["dtype"])
    params = [rng.normal(size=s) for s in example["shapes"]]
    if example["positive"]:
        params = [np.abs(p) + 0.1 for p in params]
    grads = [[rng.normal(size=s) for s in example["shapes"]] for _ in range(example["steps"])]
    cast = lambda a: a.astype(dtype).astype(np.float64)  # noqa: E731
    return [cast(p) for p in params], [[cast(g) for g in gs] for gs in grads]


def accepted(spec, hyper, params) -> bool:
    try:
        spec.check_params(NUMPY_MATH, spec.namespace(hyper), params, lambda i: f"parameter {i}")
    except ValueError:
        return False
    return True


def run_oracle(spec, hyper, params, grads):
    """The oracle's final parameters and state, and the scale of each value over the run: the
    largest magnitude it had at any step (a value that ends near zero by cancellation is judged
    against the size of the terms that cancelled, not against its own tiny size)."""
    opt = dynopt.numpy.from_spec(spec)(**hyper)
    state = opt.init(params)
    scale = {"params": [np.max(np.abs(p), initial=0.0) for p in params]}
    for gs in grads:
        updates, state = opt.update(gs, state, params)
        params = [p + u for p, u in zip(params, updates)]
        scale["params"] = [max(s, np.max(np.abs(p), initial=0.0)) for s, p in zip(scale["params"], params)]
        for name, value in state.values.items():
            if isinstance(value, dict):  # a random stream (NoisySGD's PCG64 state): not a number to compare
                continue
            sizes = ([0.0 if v is None else np.max(np.abs(v), initial=0.0) for v in value] if isinstance(value, list)
                     else np.abs(value))  # None: a parameter that does not hold the variable (Adafactor)
            old = scale.get(name, sizes)
            scale[name] = [max(a, b) for a, b in zip(old, sizes)] if isinstance(value, list) else max(old, sizes)
    return params, state.values, scale


def run_jax(spec, hyper, params, grads, dtype):
    hyper = dict(hyper)
    opt = dynopt.jax.from_spec(spec)(hyper.pop(LR), **hyper)
    params = [jnp.asarray(p, dtype) for p in params]
    state = opt.init(params)
    update = jax.jit(opt.update)
    for gs in grads:
        updates, state = update([jnp.asarray(g, dtype) for g in gs], state, params)
        params = [p + u for p, u in zip(params, updates)]
    return [np.asarray(p, np.float64) for p in params], state


def run_torch(spec, example, params, grads):
    dtype = getattr(torch, example["dtype"])
    tensors = [torch.tensor(p, dtype=dtype, requires_grad=True) for p in params]
    groups = [{"params": [t for t, g in zip(tensors, example["groups"]) if g == k], **hp}
              for k, hp in enumerate(example["hyper"])]
    opt = dynopt.torch.from_spec(spec)(groups)
    for gs in grads:
        for t, g in zip(tensors, gs):
            t.grad = torch.tensor(g, dtype=dtype)
        opt.step()
    return [t.detach().double().numpy() for t in tensors], opt, tensors


def rel_diff(a, b, scale) -> float:
    """max |a − b| / scale (the absolute difference when the scale is 0); inf for a shape mismatch."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return math.inf
    if not b.size:
        return 0.0
    diff = float(np.max(np.abs(a - b)))
    return diff / scale if scale > 0 else diff


# ----------------------------------------------------------------------------- the property


def check_agreement(spec, example):
    params, grads = data(example)
    hp_of = lambda i: example["hyper"][example["groups"][i]]  # noqa: E731
    for i, p in enumerate(params):
        assume(accepted(spec, hp_of(i), [p]))
    tol = TOLERANCE[example["dtype"]]
    jdtype = jnp.float64 if example["dtype"] == "float64" else jnp.float32
    torch_params, torch_opt, tensors = run_torch(spec, example, params, grads)

    # the runs of the reference: one per group, or one over everything with global reductions
    runs = [list(range(len(params)))] if spec.reductions is not None else [
        [i for i, g in enumerate(example["groups"]) if g == k] for k in range(len(example["hyper"]))]
    for members in runs:
        hyper = hp_of(members[0])
        live = [i for i in members if params[i].size]
        jax_params, jax_state = run_jax(spec, hyper, [params[i] for i in members], [[gs[i] for i in members] for gs in grads], jdtype)
        for i, j in zip(members, range(len(members))):
            assert jax_params[j].shape == params[i].shape and torch_params[i].shape == params[i].shape
        if not live:
            continue
        ref_params, ref_state, scale = run_oracle(spec, hyper, [params[i] for i in live], [[gs[i] for i in live] for gs in grads])
        position = {i: j for j, i in enumerate(members)}
        hp = spec.namespace(hyper)
        for k, i in enumerate(live):
            assert rel_diff(torch_params[i], ref_params[k], scale["params"][k]) <= tol, ("torch param", i)
            assert rel_diff(jax_params[position[i]], ref_params[k], scale["params"][k]) <= tol, ("jax param", i)
            for name in spec.state(hp):
                if not spec.holds(name, params[i].shape):  # Spec.state_shape: no entry in torch, None in JAX and NumPy
                    assert name not in torch_opt.state[tensors[i]] and getattr(jax_state, name)[position[i]] is None
                    assert ref_state[name][k] is None, ("oracle", name, i)
                    continue
                ours, theirs = torch_opt.state[tensors[i]][name].double().numpy(), getattr(jax_state, name)[position[i]]
                assert rel_diff(ours, ref_state[name][k], scale[name][k]) <= tol, ("torch", name, i)
                assert rel_diff(theirs, ref_state[name][k], scale[name][k]) <= tol, ("jax", name, i)
        for name in spec.scalars(hp):
            ours, theirs = torch_opt.state[tensors[live[0]]][name].double().numpy(), getattr(jax_state, name)
            assert rel_diff(ours, ref_state[name], scale[name]) <= tol, ("torch", name)
            assert rel_diff(theirs, ref_state[name], scale[name]) <= tol, ("jax", name)
    RAN[spec.name] += 1


NAMES = sorted(dynopt.REGISTRY)


@pytest.fixture(scope="module", autouse=True)
def report_examples():
    yield
    print(f"\nhypothesis examples run per optimizer (budget {EXAMPLES}): {dict(sorted(RAN.items()))}")


@pytest.mark.parametrize("name", NAMES)
def test_backends_agree(name):
    spec = dynopt.REGISTRY[name]
    before = RAN[name]

    @BUDGET
    @given(example=examples(spec))
    def prop(example):
        check_agreement(spec, example)

    prop()
    assert RAN[name] - before >= EXAMPLES // 2, f"only {RAN[name] - before} examples of {name} ran"
