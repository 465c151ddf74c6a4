"""dynopt.torch.Adafactor, a drop-in for torch.optim.Adafactor (torch 2.13), and its JAX and NumPy forms (issue #12).

Where the expected values come from: torch.optim.Adafactor itself, run side by side with dynopt in float64 on the
same parameters and gradients: its parameters, its state (names, shapes, dtypes, values), its state_dicts (which
load both ways and continue), its signature, its exceptions and messages. The tolerance is the parity tolerance,
max |Δ| / max |θ| ≤ 1e-12 per tensor (measured: ≤ 8e-15). Nothing here is a golden number; the only algebra is
``test_the_first_step_is_the_factored_formula``, whose expected step is written out from the update rule (it also
equals torch's).

The shapes mix every kind torch.optim.Adafactor treats differently: matrices (factored over the last two dimensions;
tall, wide, one row, one column), a batch of matrices (rank 3), a vector and a scalar (unfactored ``variance``). The
options are torch's own grid (``optim_db``: tests/test_conformance_torch.py runs it too) plus a large lr, where the
relative step switches from lr to 1/√t within the run, and a given ε₁.

The registry suites cover Adafactor too (tests/zoo_options.py STATEFUL, tests/problems.py draws of beta2_decay, d
and the pair eps, tests/test_parity.py, tests/test_properties.py, tests/test_torch_paths.py, tests/test_faults.py);
its ODE order is not fitted (tests/test_ode.py says why).
"""

from __future__ import annotations

import copy
import inspect
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from test_adafactor_muon import assert_close, numpy_and_jitted_jax, run, side_by_side  # the same stepping and comparison

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt.spec import Hyper, nonnegative
from dynopt.tree import ArrayLeafOps, TreeMath

torch.set_num_threads(1)

SHAPES = [(4, 3), (3,), (), (2, 3, 5), (1, 4), (4, 1)]
OPTIONS = [
    {},
    {"weight_decay": 0.1, "lr": 0.01},
    {"weight_decay": 0.1, "maximize": True},
    {"beta2_decay": -1.0},
    {"d": 1.5},
    {"lr": 0.3, "weight_decay": 0.05},  # ρ_t = min(lr, 1/√t) switches to 1/√t at t = 12
    {"eps": (1e-3, 1e-2), "d": 1.2},  # ε₁ given: it floors mean(R) and V̂
]
IDS = [",".join(f"{k}={v}" for k, v in o.items()) or "defaults" for o in OPTIONS]
STEPS = 30


def initial(shapes=SHAPES, seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def assert_same_state(opt, ref, rtol=1e-12):
    """The same entries per parameter, with the same shapes, dtypes and values (the step counter exactly)."""
    for p, q in zip(opt.param_groups[0]["params"], ref.param_groups[0]["params"]):
        mine, theirs = opt.state[p], ref.state[q]
        assert set(mine) == set(theirs), (tuple(p.shape), set(mine), set(theirs))
        for name, value in theirs.items():
            assert mine[name].shape == value.shape and mine[name].dtype == value.dtype, name
            if name == "step":
                assert torch.equal(mine[name], value)
            else:
                assert_close([mine[name]], [value], rtol)


def both(kwargs, steps=STEPS, shapes=SHAPES):
    return side_by_side((dynopt.torch.Adafactor, torch.optim.Adafactor), kwargs, steps, lambda: initial(shapes))


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("kwargs", OPTIONS, ids=IDS)
def test_torch_equals_torch_optim_adafactor(kwargs):
    (mine, opt), (theirs, ref) = both(kwargs)
    assert_close(mine, theirs)
    assert not any(torch.equal(a, b) for a, b in zip(mine, initial()))  # every parameter moved
    assert_same_state(opt, ref)


def test_the_first_step_is_the_factored_formula():
    """At t = 1 the moments are the first squares (1 − β̂₂ = 1^c = 1): R = mean_cols(g²), C = mean_rows(g²),
    V̂ = RC/mean(R), U = g/√V̂, and θ moves by −min(lr, 1)·max(ε₂, RMS(θ))·U/max(1, RMS(U)/d)."""
    theta = torch.tensor([[1.0, -2.0, 0.5], [0.25, 3.0, -1.0]], dtype=torch.float64)
    g = torch.tensor([[0.3, -0.1, 2.0], [1.5, 0.2, -0.7]], dtype=torch.float64)
    r = (g * g).mean(-1, keepdim=True)
    c = (g * g).mean(-2, keepdim=True)
    u = g / torch.sqrt(r * c / r.mean())
    rms = lambda x: float(x.pow(2).mean().sqrt())  # noqa: E731
    expected = theta - 0.01 * max(1e-3, rms(theta)) * u / max(1.0, rms(u) / 1.0)
    for cls in (dynopt.torch.Adafactor, torch.optim.Adafactor):
        p = torch.nn.Parameter(theta.clone())
        p.grad = g.clone()
        opt = cls([p])
        opt.step()
        assert_close([p.detach()], [expected], 1e-14)
        assert_close([opt.state[p]["row_var"], opt.state[p]["col_var"]], [r, c], 1e-15)


@pytest.mark.parametrize("kwargs", OPTIONS[:6], ids=IDS[:6])
def test_numpy_and_jitted_jax_equal_torch_optim_adafactor(kwargs):
    """dynopt.numpy.adafactor_torch and dynopt.jax.adafactor_torch (under jit, float64) against torch.optim: parameters
    and state; the state a parameter does not hold is None (row_var and col_var of a vector, variance of a matrix)."""
    kwargs = dict(kwargs)
    (theirs, ref), = both(kwargs)[1:]
    lr = kwargs.pop("lr", 1e-2)
    (params, state), (jparams, jstate) = numpy_and_jitted_jax(dynopt.numpy.adafactor_torch(lr, **kwargs),
                                                              dynopt.jax.adafactor_torch(lr, **kwargs), initial(), STEPS)
    assert_close(params, theirs)
    assert_close([np.asarray(p) for p in jparams], theirs)
    for i, q in enumerate(ref.param_groups[0]["params"]):
        for name in ("row_var", "col_var", "variance"):
            held = ref.state[q].get(name)
            mine = [state.values[name][i], getattr(jstate, name)[i]]
            if held is None:
                assert mine == [None, None], (name, tuple(q.shape))
            else:
                assert_close(mine, [held, held])


def test_optax_state_and_inject_hyperparams():
    """The optax state holds None where a leaf does not hold a variable (a pytree like the parameters), and every
    numeric argument can be injected (``optax.inject_hyperparams``) with the same numbers as plain arguments."""
    params = {"w": jnp.ones((3, 2)), "b": jnp.ones(2), "s": jnp.asarray(0.5)}
    grads = jax.tree.map(lambda x: 0.3 * x + 0.1, params)
    tx = dynopt.jax.adafactor_torch(0.02, beta2_decay=-0.7, d=1.3, weight_decay=0.1)
    state = tx.init(params)
    assert state.row_var["w"].shape == (3, 1) and state.col_var["w"].shape == (1, 2) and state.variance["w"] is None
    assert state.row_var["b"] is None and state.variance["b"].shape == (2,) and state.variance["s"].shape == ()
    injected = optax.inject_hyperparams(dynopt.jax.adafactor_torch)(learning_rate=0.02, beta2_decay=-0.7, d=1.3,
                                                                    weight_decay=0.1)
    istate = injected.init(params)
    for _ in range(3):
        updates, state = jax.jit(tx.update)(grads, state, params)
        iupdates, istate = jax.jit(injected.update)(grads, istate, params)
        assert_close(jax.tree.leaves(iupdates), jax.tree.leaves(updates), 1e-15)


def test_float32_matches_torch_optim_with_the_dtypes_epsilon():
    """ε₁ = None is torch.finfo(float32).eps for float32 parameters, in both."""
    out = []
    for cls in (dynopt.torch.Adafactor, torch.optim.Adafactor):
        params = [torch.nn.Parameter(x) for x in initial(dtype=torch.float32)]
        opt = cls(params, lr=0.1)
        out.append(run(opt, params, 10))
        assert all(opt.state[p][n].dtype == torch.float32 for p in params for n in opt.state[p] if n != "step")
    assert_close(*out, rtol=1e-5)


# ----------------------------------------------------------------------------- state and checkpoints


def test_state_names_shapes_and_groups_are_torchs():
    (_, opt), (_, ref) = both({"weight_decay": 0.1}, steps=3)
    for p, q in zip(opt.param_groups[0]["params"], ref.param_groups[0]["params"]):
        names = {"step", "row_var", "col_var"} if p.dim() >= 2 else {"step", "variance"}
        assert set(opt.state[p]) == set(ref.state[q]) == names
        if p.dim() >= 2:
            assert opt.state[p]["row_var"].shape == p.shape[:-1] + (1,)
            assert opt.state[p]["col_var"].shape == p.shape[:-2] + (1, p.shape[-1])
        assert opt.state[p]["step"].dtype == ref.state[q]["step"].dtype and float(opt.state[p]["step"]) == 3
    mine, theirs = opt.state_dict()["param_groups"][0], ref.state_dict()["param_groups"][0]
    assert set(theirs) <= set(mine)
    assert all(mine[k] == theirs[k] for k in theirs if k != "params")


def _through_a_file(state_dict):
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


def test_a_torch_optim_adafactor_checkpoint_loads_into_dynopt_and_continues():
    kwargs = {"lr": 0.3, "beta2_decay": -0.7, "d": 1.2, "weight_decay": 0.05, "maximize": True}
    theirs = [torch.nn.Parameter(x) for x in initial()]
    ref = torch.optim.Adafactor(theirs, **kwargs)
    run(ref, theirs, 5)
    mine = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    opt = dynopt.torch.Adafactor(mine, lr=0.5)  # the hyperparameters come from the state_dict
    opt.load_state_dict(_through_a_file(ref.state_dict()))
    assert opt.param_groups[0]["lr"] == 0.3 and opt.param_groups[0]["maximize"] is True
    assert_close(run(opt, mine, 10, begin=5), run(ref, theirs, 10, begin=5))
    assert_same_state(opt, ref)


def test_a_dynopt_adafactor_checkpoint_loads_into_torch_optim_and_continues():
    kwargs = {"lr": 0.3, "eps": (1e-4, 1e-2), "d": 1.5, "weight_decay": 0.05}
    mine = [torch.nn.Parameter(x) for x in initial()]
    opt = dynopt.torch.Adafactor(mine, **kwargs)
    run(opt, mine, 5)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    ref = torch.optim.Adafactor(theirs, lr=0.5)
    ref.load_state_dict(_through_a_file(opt.state_dict()))
    assert ref.param_groups[0]["eps"] == (1e-4, 1e-2) and ref.param_groups[0]["lr"] == 0.3
    assert_close(run(ref, theirs, 10, begin=5), run(opt, mine, 10, begin=5))
    assert_same_state(opt, ref)


@pytest.mark.parametrize("removed, entry, message", [
    ("col_var", {"variance": torch.zeros(4, 3, dtype=torch.float64)},  # a vector's state for a matrix
     r"state \['row_var', 'step', 'variance'\] does not match the state \['col_var', 'row_var', 'step'\]"),
    (None, {"col_var": torch.zeros(4, 1, dtype=torch.float64)},
     r"state 'col_var' has shape \(4, 1\), the parameter has shape \(4, 3\) \(expected \(1, 3\)\)"),
])
def test_a_state_of_another_rank_or_shape_is_refused_before_anything_changes(removed, entry, message):
    params = [torch.nn.Parameter(x) for x in initial()]
    opt = dynopt.torch.Adafactor(params)
    run(opt, params, 2)
    sd = copy.deepcopy(opt.state_dict())
    if removed:
        del sd["state"][0][removed]
    sd["state"][0].update(entry)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"parameter 0: " + message):
        opt.load_state_dict(sd)
    for name, value in before["state"][0].items():
        assert torch.equal(opt.state_dict()["state"][0][name], value)


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("options", [{}, {"fused": True}, {"flat": False}])
def test_every_torch_path_takes_the_reference_path_and_says_so(options):
    params = [torch.nn.Parameter(x) for x in initial()]
    opt = dynopt.torch.Adafactor(params, **options)
    got = run(opt, params, 4)
    assert opt.execution.path == "reference"
    assert opt.execution.reason == "the spec keeps state of another shape than its parameters"
    reference = [torch.nn.Parameter(x) for x in initial()]
    assert_close(got, run(dynopt.torch.Adafactor(reference, flat=False), reference, 4), 0.0)


def test_a_bucket_of_only_matrices_or_only_vectors_steps():
    """A torch bucket (param group, dtype, step count) may hold one kind only: the other kind's state is empty there."""
    for shapes in ([(4, 3), (2, 5)], [(3,), ()]):
        (mine, _), (theirs, _) = both({}, steps=5, shapes=shapes)
        assert_close(mine, theirs)


# ----------------------------------------------------------------------------- errors, as torch raises them


# complex parameters and sparse gradients: tests/test_adafactor_muon.py, for Muon and Adafactor alike


@pytest.mark.parametrize("kwargs, names", [
    ({"lr": -0.1}, ("learning rate", "-0.1")),
    ({"beta2_decay": 0.8}, ("beta2_decay", "0.8", "<= 0")),
    ({"eps": (-1e-30, 1e-3)}, ("eps", "(-1e-30, 0.001)", ">= 0")),
    ({"eps": (None, -1.0)}, ("eps", "(None, -1.0)", ">= 0")),
    ({"d": 0.5}, ("clipping threshold d", "0.5", ">= 1")),
    ({"weight_decay": -0.1}, ("weight_decay", "-0.1")),
])
def test_invalid_hyperparameters_raise_torchs_exception_naming_argument_and_value(kwargs, names):
    params = [torch.nn.Parameter(torch.ones(2, 2))]
    with pytest.raises(ValueError):
        torch.optim.Adafactor(params, **kwargs)
    for backend in ("torch", "numpy", "jax"):
        kw = dict(kwargs)
        with pytest.raises(ValueError) as info:
            if backend == "torch":
                dynopt.torch.Adafactor(params, **kw)
            elif backend == "numpy":
                dynopt.numpy.adafactor_torch(**kw)
            else:
                dynopt.jax.adafactor_torch(kw.pop("lr", 0.01), **kw)
        assert all(n in str(info.value) for n in names), (backend, str(info.value))


def test_an_eps2_of_none_is_a_type_error_as_in_torch():
    params = [torch.nn.Parameter(torch.ones(2, 2))]
    with pytest.raises(TypeError):
        torch.optim.Adafactor(params, eps=(None, None))
    with pytest.raises(TypeError, match=r"Invalid eps value: \(None, None\)"):
        dynopt.torch.Adafactor(params, eps=(None, None))


def test_signature_is_torchs():
    theirs = [p for p in inspect.signature(torch.optim.Adafactor.__init__).parameters.values()
              if p.name not in ("self", "params")]
    mine = inspect.signature(dynopt.torch.Adafactor.__init__).parameters
    positional = [p for p in mine.values() if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "params")]
    assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs if p.kind is p.POSITIONAL_OR_KEYWORD]
    for p in theirs:
        if p.kind is p.KEYWORD_ONLY:
            assert mine[p.name].kind is p.KEYWORD_ONLY and mine[p.name].default == p.default, p.name
    assert dynopt.adafactor_torch is dynopt.torch.Adafactor.spec and dynopt.jax.adafactor_torch.__name__ == "adafactor_torch"
    assert not hasattr(dynopt.jax, "adafactor")  # optax.adafactor is another algorithm


# ----------------------------------------------------------------------------- the generic pieces it uses


def test_tree_pick_and_join_and_machine_eps():
    o = TreeMath(ArrayLeafOps(np))
    x = o.tree([np.ones((2, 2)), np.zeros(3), np.float32(2.0) * np.ones(()), np.ones((1, 2, 2), np.float32)])
    which = [len(s) >= 2 for s in o.shapes(x)]
    a, b = o.pick(x, which), o.pick(x, [not w for w in which])
    assert [leaf.shape for leaf in a.leaves] == [(2, 2), (1, 2, 2)] and [leaf.shape for leaf in b.leaves] == [(3,), ()]
    assert all(u is v for u, v in zip(o.join(which, a, b).leaves, x.leaves))
    with pytest.raises(ValueError, match="o.join"):
        o.join([True, True, True, False], a, b)  # three places for the two leaves of a
    assert o.machine_eps(x) == [2.0 ** -52, 2.0 ** -52, 2.0 ** -52, 2.0 ** -23]


def test_a_hyperparameter_item_may_be_none_only_where_declared():
    h = Hyper("eps", (None, 1e-3), "a pair", nonnegative, length=2, optional=(0,))
    h.validate((None, 0.5), lambda v: True)
    with pytest.raises(TypeError, match=r"Invalid eps value: \(0\.5, None\) \(must be a real number"):
        h.validate((0.5, None), lambda v: True)
    spec = dynopt.adafactor_torch
    assert spec.shape_of("row_var", (4, 3)) == (4, 1) and spec.shape_of("variance", (4, 3)) is None
    assert spec.holds("variance", ()) and not spec.holds("col_var", (5,)) and dynopt.adam.holds("exp_avg", (2,))


def test_the_meta_step_wraps_it_with_its_state_layout():
    """``dynopt.meta_step(adafactor)`` keeps the base's state per rank (``state_shape`` passes through) and refuses
    complex parameters as the base does; torch and jitted JAX equal the NumPy oracle (float64, 1e-12)."""
    spec = dynopt.meta_step(dynopt.adafactor_torch)
    assert spec.state_shape is dynopt.adafactor_torch.state_shape and not spec.complex_params
    grads = lambda ps, k: [np.cos((1.0 + 0.1 * k) * np.asarray(p)) + 0.3 * np.asarray(p) for p in ps]  # noqa: E731
    start = [x.numpy() for x in initial()]
    oracle = dynopt.numpy.from_spec(spec)(0.1, gain_lr=0.01)
    params, state = start, oracle.init(start)
    for k in range(5):
        updates, state = oracle.update(grads(params, k), state, params)
        params = [p + u for p, u in zip(params, updates)]
    tensors = [torch.nn.Parameter(torch.tensor(x)) for x in start]
    opt = dynopt.torch.from_spec(spec)(tensors, lr=0.1, gain_lr=0.01)
    for k in range(5):
        for t, g in zip(tensors, grads([t.detach().numpy() for t in tensors], k)):
            t.grad = torch.tensor(g)
        opt.step()
    assert_close([t.detach() for t in tensors], params)
    assert [set(opt.state[t]) & {"row_var", "col_var", "variance"} for t in tensors] == [
        {"row_var", "col_var"} if len(s) >= 2 else {"variance"} for s in SHAPES]
    tx = dynopt.jax.from_spec(spec)(0.1, gain_lr=0.01)
    jparams = [jnp.asarray(x) for x in start]
    jstate = tx.init(jparams)
    for k in range(5):
        updates, jstate = jax.jit(tx.update)([jnp.asarray(g) for g in grads(jparams, k)], jstate, jparams)
        jparams = optax.apply_updates(jparams, updates)
    assert_close([np.asarray(p) for p in jparams], params)
