"""Interop and reliability (issue 14, parts 1, 2, 4, 6, 7 and 10).

Where each expected number comes from:

* torch.optim (SGD, Adam, AdamW, RAdam, RMSprop) is the oracle for every torch comparison: the same
  parameters and gradients go through both, float64, and must agree to 1e-12 relative.
* optax.sgd is the oracle for a JAX learning rate of shape (1,).
* Otherwise the expectation is algebra written in the test: ``ZERO`` must act exactly like a tree
  of zeros (the same operation on ``zeros_like``); a step at lr = 0 moves nothing except where the
  method projects (EG's simplex variants rescale to the total U, ``signed`` re-forms θ = w⁺ − w⁻);
  a complex parameter is stepped exactly as its real view ``torch.view_as_real`` would be; a
  sparse gradient means its dense form.
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import inspect
import math
import weakref

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from problems import shapes_for
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook
from torch_references import torch_class

import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt._backends import torch_flat
from dynopt._backends.torch_flat import FiniteFlatOps, FlatOps, Pool
from dynopt._backends.torch_ops import FiniteSumOps, ForeachOps
from dynopt.optimizers import ZOO
from dynopt.spec import Hyper, Spec, nonnegative
from dynopt.tree import ZERO, ArrayLeafOps, FiniteSumArrayOps, Tree, TreeMath, UnreadParamsError, as_tree

torch.set_num_threads(1)

PATHS = {"reference": {"flat": False}, "flat": {}, "fused": {"fused": True}}
EG_VARIANTS = ("positive", "simplex", "signed", "signed_simplex")
CONFIGS = [(spec.name, {}) for spec in ZOO if spec.name != "EG"] + [("EG", {"variant": v}) for v in EG_VARIANTS]
CONFIG_IDS = [name + "".join(f"-{v}" for v in kw.values()) for name, kw in CONFIGS]
SHAPES = [(4, 3), (5,)]  # two small tensors: one gathered bucket on the flat paths


def shapes_of(name):
    """SHAPES, less those the optimizer refuses (Muon takes matrices only; problems.shapes_for)."""
    return shapes_for(getattr(getattr(dynopt.torch, name, None), "spec", None), SHAPES)


def initial(name, kwargs, shapes=None, seed=0, dtype=torch.float64):
    """Positive entries (EG's positive variants need them); on the simplex for EG's normalized variants."""
    shapes = shapes_of(name) if shapes is None else shapes
    gen = torch.Generator().manual_seed(seed)
    init = [torch.rand(s, generator=gen, dtype=dtype) + 0.5 for s in shapes]
    if kwargs.get("variant") == "simplex":
        init = [x / x.sum() for x in init]
    return init


def gradients(shapes, steps, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in shapes] for _ in range(steps)]


def close(a, b, rtol=1e-12):
    a, b = torch.as_tensor(a).detach().double(), torch.as_tensor(b).detach().double()
    scale = max(float(b.abs().max()), 1e-300) if b.numel() else 1.0
    return a.shape == b.shape and float((a - b).abs().max()) <= rtol * scale if b.numel() else a.shape == b.shape


# ----------------------------------------------------------------------------------------------
# part 1: ZERO is an exact zero everywhere


def _backends():
    """(name, TreeMath, leaves): every LeafOps the backends use, with leaves of their kind."""
    rng = np.random.default_rng(0)
    arrays = [rng.uniform(0.5, 2.0, size=(3, 2)) * rng.choice([-1, 1], size=(3, 2)), rng.uniform(0.5, 2.0, size=(4,))]
    flat = np.concatenate([a.ravel() for a in arrays])
    pool = Pool(flat.size, torch.float64, torch.device("cpu"), [torch.Size([flat.size])])
    return [
        ("numpy", TreeMath(ArrayLeafOps(np)), arrays),
        ("numpy-finite", TreeMath(FiniteSumArrayOps(np)), arrays),
        ("jax", TreeMath(ArrayLeafOps(jnp)), [jnp.asarray(a) for a in arrays]),
        ("jax-finite", TreeMath(FiniteSumArrayOps(jnp)), [jnp.asarray(a) for a in arrays]),
        ("torch-foreach", TreeMath(ForeachOps()), [torch.tensor(a) for a in arrays]),
        ("torch-foreach-finite", TreeMath(FiniteSumOps()), [torch.tensor(a) for a in arrays]),
        ("torch-flat", TreeMath(FlatOps(pool)), [torch.tensor(flat)]),
        ("torch-flat-finite", TreeMath(FiniteFlatOps(pool)), [torch.tensor(flat)]),
        ("torch-flat-traced", TreeMath(FlatOps()), [torch.tensor(flat)]),
    ]


BACKENDS = _backends()
REDUCES_INSIDE_LEAVES = {"numpy", "numpy-finite", "jax", "jax-finite", "torch-foreach", "torch-foreach-finite"}

# f(o, x, t): x is ZERO or a tree of zeros, t a tree of non-zero entries, c a scalar condition
TREE_CASES = {
    "exp": lambda o, x, t, c: o.exp(x),
    "expm1": lambda o, x, t, c: o.expm1(x),
    "sqrt": lambda o, x, t, c: o.sqrt(x),
    "abs": lambda o, x, t, c: o.abs(x),
    "sign": lambda o, x, t, c: o.sign(x),
    "log": lambda o, x, t, c: o.log(x),
    "neg": lambda o, x, t, c: -x,
    "square": lambda o, x, t, c: x**2,
    "x+t": lambda o, x, t, c: x + t,
    "t+x": lambda o, x, t, c: t + x,
    "x-t": lambda o, x, t, c: x - t,
    "t-x": lambda o, x, t, c: t - x,
    "x*t": lambda o, x, t, c: x * t,
    "t*x": lambda o, x, t, c: t * x,
    "x/t": lambda o, x, t, c: x / t,
    "t/x": lambda o, x, t, c: t / x,
    "x*2.5": lambda o, x, t, c: x * 2.5,
    "x+2.5": lambda o, x, t, c: x + 2.5,
    "2.5-x": lambda o, x, t, c: 2.5 - x,
    "max(x,t)": lambda o, x, t, c: o.maximum(x, t),
    "max(t,x)": lambda o, x, t, c: o.maximum(t, x),
    "min(x,t)": lambda o, x, t, c: o.minimum(x, t),
    "min(t,x)": lambda o, x, t, c: o.minimum(t, x),
    "max(x,-1)": lambda o, x, t, c: o.maximum(x, -1.0),
    "max(x,2)": lambda o, x, t, c: o.maximum(x, 2.0),
    "min(x,-1)": lambda o, x, t, c: o.minimum(x, -1.0),
    "min(x,2)": lambda o, x, t, c: o.minimum(x, 2.0),
    "where(c,x,t)": lambda o, x, t, c: o.where(c, x, t),
    "where(c,t,x)": lambda o, x, t, c: o.where(c, t, x),
    "where(!c,x,t)": lambda o, x, t, c: o.where(~c, x, t),
    "zeros_like": lambda o, x, t, c: o.zeros_like(x),
}
ALONG = {"sum_along": "sum_along", "max_along": "max_along", "min_along": "min_along"}
SCALAR_CASES = {
    "dot(x,t)": lambda o, x, t: o.dot(x, t),
    "dot(t,x)": lambda o, x, t: o.dot(t, x),
    "dot(x,x)": lambda o, x, t: o.dot(x, x),
    "sum": lambda o, x, t: o.sum(x),
    "norm": lambda o, x, t: o.norm(x),
}


def _materialize(value, zeros: Tree):
    """``value`` on the leaves of ``zeros`` (a tree of zeros): ZERO, a constant or a broadcastable tree."""
    tree = zeros + as_tree(value, zeros)
    return [np.asarray(torch.as_tensor(x).numpy() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
            for x in tree.leaves]


@pytest.mark.parametrize("backend", BACKENDS, ids=[b[0] for b in BACKENDS])
def test_zero_acts_as_a_tree_of_zeros_in_every_operation(backend):
    name, o, leaves = backend
    t = o.tree(leaves)
    zeros = o.zeros_like(t)
    cond = (torch.tensor(True) if name.startswith("torch") else jnp.asarray(True) if name.startswith("jax")
            else np.asarray(True))
    cases = dict(TREE_CASES)
    if name in REDUCES_INSIDE_LEAVES:  # a flat bucket cannot reduce inside a leaf (it raises NeedsLeaves)
        for along, method in ALONG.items():
            for axis in (None, 0):
                cases[f"{along}({axis})"] = lambda o, x, t, c, m=method, a=axis: getattr(o, m)(x, a)
        cases["t*exp(x-max_along(x))"] = lambda o, x, t, c: t * o.exp(x - o.max_along(x, None))  # EG's step at lr 0
    with np.errstate(divide="ignore", invalid="ignore"):
        for case, f in cases.items():
            expected = _materialize(f(o, zeros, t, cond), zeros)
            got = _materialize(f(o, ZERO, t, cond), zeros)
            for e, g in zip(expected, got):
                np.testing.assert_array_equal(g, e, err_msg=f"{name}: {case}")
        for case, f in SCALAR_CASES.items():
            expected, got = f(o, zeros, t), f(o, ZERO, t)
            assert float(got) == float(expected), f"{name}: {case}"
    for along in ALONG:  # a per-leaf reduction of ZERO is ZERO on every backend, the flat ones included
        assert getattr(o, along)(ZERO, None) is ZERO


def test_zero_results_that_are_not_zero_are_constants():
    o = TreeMath(ArrayLeafOps(np))
    assert o.exp(ZERO) == 1.0 and o.log(ZERO) == -math.inf
    assert o.expm1(ZERO) is ZERO and o.sqrt(ZERO) is ZERO and o.sign(ZERO) is ZERO and -ZERO is ZERO
    assert o.maximum(ZERO, 2.0) == 2.0 and o.maximum(ZERO, -1.0) is ZERO and o.minimum(ZERO, -1.0) == -1.0
    assert o.clip(ZERO, 0.5, 1.0) == 0.5 and o.clip(ZERO, -1.0, 1.0) is ZERO
    assert 1.0 / ZERO == math.inf and -2.0 / ZERO == -math.inf and math.isnan(0.0 / ZERO)
    assert ZERO**2 is ZERO and ZERO**0 == 1.0 and float(ZERO) == 0.0


TORCH_SGD = {"SGD", "Momentum", "Nesterov"}  # dynopt's names for torch.optim.SGD's three meanings


def torch_reference(name, opt):
    """torch.optim's optimizer of the same meaning, built from ``opt``'s first param group (whose flags,
    e.g. nesterov, say which meaning), or None when torch.optim has none."""
    ref = torch.optim.SGD if name in TORCH_SGD else getattr(torch.optim, name, None)
    if ref is None:
        return None
    accepted = set(inspect.signature(ref).parameters) - {"params", "foreach", "fused", "differentiable", "capturable"}
    kwargs = {k: v for k, v in opt.param_groups[0].items() if k in accepted}
    return lambda params: ref(params, **kwargs)


def _expected_after_lr0(name, kwargs, init, grads=None, opt=None):
    """What a step at lr = 0 does: torch.optim's numbers where it has the optimizer (Rprop still moves by
    its smallest step size), else the math (then every further step at lr = 0 keeps it)."""
    reference = torch_reference(name, opt) if opt is not None else None
    if reference is not None:
        params = [torch.nn.Parameter(x.clone()) for x in init]
        _steps(reference(params), params, grads)
        return [p.detach() for p in params]
    variant = kwargs.get("variant")
    if name != "EG" or variant == "positive":
        return init
    if variant == "simplex":  # θ ← U·θ/Σθ (the projection; the exponential factor is 1)
        return [x / x.sum() for x in init]
    c = 1.0  # init_scale: w± = (√(θ² + 4c²) ± θ)/2
    plus = [(torch.sqrt(x * x + 4 * c * c) + x) / 2 for x in init]
    minus = [(torch.sqrt(x * x + 4 * c * c) - x) / 2 for x in init]
    if variant == "signed":
        return [p - m for p, m in zip(plus, minus)]
    return [(p - m) / (p + m).sum() for p, m in zip(plus, minus)]  # signed_simplex: w± scaled to total 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_lr_zero_in_torch_on_every_path(name, kwargs, path):
    init, grads = initial(name, kwargs), gradients(shapes_of(name), 3)
    params = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(dynopt.torch, name)(params, lr=0.0, **kwargs, **PATHS[path])
    _steps(opt, params, grads)
    if path != "reference" and kwargs.get("variant") not in ("simplex", "signed_simplex"):
        # a spec that reduces inside a parameter (Muon's Newton–Schulz) or draws random numbers (NoisySGD) always
        # takes the reference path
        assert (opt._flat is not None or getattr(opt, "_needs_leaves", False)
                or opt.execution.reason == "the spec draws random numbers"), "the flat plan was not taken"
    exact = torch_reference(name, opt) is None and (name != "EG" or kwargs["variant"] == "positive")  # nothing moves
    for p, e in zip(params, _expected_after_lr0(name, kwargs, init, grads, opt)):
        assert close(p, e, rtol=0 if exact else 1e-12), (p, e)
    if "scale" in opt.global_scalars():  # the meta step: cos(g, u = 0) = 0, so log s keeps its initial value
        initial_scale = opt.spec.scalars(opt._hyper(opt.param_groups[0]))["scale"]
        assert float(opt.global_scalars()["scale"]) == initial_scale


def _factor_spec():
    """A state that is a function of lr·g: at lr = 0 it is the constant o.exp(ZERO) = 1, which every
    backend must broadcast to the state's shape (and θ·(f − 1) = θ·0 is ZERO)."""
    def update(o, hp, t, grad, param, state):
        factor = o.exp(-hp.lr * grad)
        return param * (factor - 1), {"factor": factor, "floor": o.maximum(-hp.lr * grad, 0.5)}

    return Spec(name="Factor", hyperparams=(Hyper("lr", 0.1, "learning rate", nonnegative),),
                state=lambda hp: ("factor", "floor"), update=update,
                vector_field=lambda o, hp, time, grad, param, state: (-param * grad, {}), time_step=lambda hp: hp.lr,
                needs_params=lambda hp: True, ode="", scheme="", hyper_map="")


def test_a_constant_spec_output_is_broadcast_on_every_backend():
    spec = _factor_spec()
    init, grads = initial("Factor", {}), gradients(SHAPES, 2)
    for options in PATHS.values():
        params = [torch.nn.Parameter(x.clone()) for x in init]
        opt = dynopt.torch.from_spec(spec)(params, lr=0.0, **options)
        _steps(opt, params, grads)
        assert all(torch.equal(p, x) for p, x in zip(params, init)), options
        for p in params:  # exp(0) = 1 and max(0, 0.5) = 0.5 in every entry, in the state's own shape
            assert torch.equal(opt.state[p]["factor"], torch.ones_like(p))
            assert torch.equal(opt.state[p]["floor"], torch.full_like(p, 0.5))
    tx = dynopt.jax.from_spec(spec)(0.0)
    leaves = [jnp.asarray(x.numpy()) for x in init]
    state = tx.init(leaves)
    updates, state = tx.update([jnp.asarray(g.numpy()) for g in grads[0]], state, leaves)
    assert all(np.array_equal(u, np.zeros(x.shape)) for u, x in zip(updates, leaves))
    assert all(np.array_equal(f, np.ones(x.shape)) for f, x in zip(state.factor, leaves))
    oracle = dynopt.numpy.from_spec(spec)(0.0)
    ostate = oracle.init([x.numpy() for x in init])
    updates, ostate = oracle.update([g.numpy() for g in grads[0]], ostate, [x.numpy() for x in init])
    assert all(np.array_equal(f, np.full(x.shape, 0.5)) for f, x in zip(ostate.values["floor"], init))


TORCH_LR0 = [("SGD", torch.optim.SGD, {}, {}), ("Momentum", torch.optim.SGD, {"momentum": 0.9, "dampening": 0.3}, {}),
             ("Nesterov", torch.optim.SGD, {"momentum": 0.9}, {"nesterov": True}),
             ("RMSprop", torch.optim.RMSprop, {"momentum": 0.5, "centered": True}, {}), ("Adam", torch.optim.Adam, {}, {})]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,ref,kwargs,torch_only", TORCH_LR0, ids=[c[0] for c in TORCH_LR0])
def test_lr_zero_state_equals_torch_optim(name, ref, kwargs, torch_only, path):
    """At lr 0 torch.optim still updates its state (buffers, moments); dynopt must too."""
    init = initial(name, kwargs)
    mine = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(dynopt.torch, name)(mine, lr=0.0, weight_decay=0.1, **kwargs, **PATHS[path])
    ref_opt = ref(theirs, lr=0.0, weight_decay=0.1, **kwargs, **torch_only)
    for g in gradients(SHAPES, 3):
        for a, b, gi in zip(mine, theirs, g):
            a.grad, b.grad = gi.clone(), gi.clone()
        opt.step()
        ref_opt.step()
    for a, b in zip(mine, theirs):
        assert torch.equal(a, b)
        for key, value in ref_opt.state[b].items():
            assert close(opt.state[a][key], value), (name, key)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("variant", EG_VARIANTS)
def test_cosine_annealing_to_zero_with_eg(variant, path):
    kwargs = {"variant": variant}
    params = [torch.nn.Parameter(x.clone()) for x in initial("EG", kwargs)]
    opt = dynopt.torch.EG(params, lr=0.5, **kwargs, **PATHS[path])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=3)
    seen_zero = False
    for g in gradients(SHAPES, 5):
        for p, gi in zip(params, g):
            p.grad = gi
        at_zero = opt.param_groups[0]["lr"] == 0.0
        before = [p.detach().clone() for p in params]
        opt.step()
        sched.step()
        if at_zero:  # after the first step θ is on the simplex / equal to w⁺ − w⁻: nothing moves but rounding
            seen_zero = True
            assert all(close(p, b, rtol=1e-14) for p, b in zip(params, before))
    assert seen_zero, "CosineAnnealingLR never reached lr = 0 exactly"


def _jax_and_numpy_runs(name, kwargs, lr):
    spec = getattr(dynopt.torch, name).spec
    init = [x.numpy() for x in initial(name, kwargs)]
    grads = [[g.numpy() for g in step] for step in gradients(shapes_of(name), 3)]
    assert spec.jax_name  # (the same gradients as the torch runs: gradients(shapes_of(name), 3))
    tx = dynopt.jax.from_spec(spec)(lr, **kwargs)  # the spec itself, with torch's names (dynopt.jax.<name> speaks optax)
    params = [jnp.asarray(x) for x in init]
    state = tx.init(params)
    update = jax.jit(tx.update)
    for g in grads:
        updates, state = update([jnp.asarray(x) for x in g], state, params)
        params = optax.apply_updates(params, updates)
    oracle = dynopt.numpy.from_spec(spec)(lr, **kwargs)
    values = [x.copy() for x in init]
    ostate = oracle.init(values)
    for g in grads:
        updates, ostate = oracle.update(g, ostate, values)
        values = [v + u for v, u in zip(values, updates)]
    return init, [np.asarray(p) for p in params], values


@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_lr_zero_in_jax_and_numpy(name, kwargs):
    init, jax_params, numpy_params = _jax_and_numpy_runs(name, kwargs, 0.0)
    template = getattr(dynopt.torch, name)([torch.nn.Parameter(torch.ones(shapes_of(name)[0]))], lr=0.0, **kwargs)  # its group
    expected = _expected_after_lr0(name, kwargs, [torch.tensor(x) for x in init], gradients(shapes_of(name), 3), template)
    exact = torch_reference(name, template) is None and (name != "EG" or kwargs["variant"] == "positive")
    for got in (jax_params, numpy_params):
        for g, e in zip(got, expected):
            assert close(torch.tensor(g), e, rtol=0 if exact else 1e-12)


def test_lr_schedule_to_zero_in_jax_with_eg():
    """A schedule is traced (never folded into ZERO): the exact 0 it reaches goes through exp(0) = 1."""
    for variant in EG_VARIANTS:
        tx = dynopt.jax.eg(optax.linear_schedule(0.5, 0.0, 2), variant=variant)
        params = [jnp.asarray(x.numpy()) for x in initial("EG", {"variant": variant})]
        state = tx.init(params)
        for k, g in enumerate(gradients(SHAPES, 4)):
            updates, state = jax.jit(tx.update)([jnp.asarray(x.numpy()) for x in g], state, params)
            new = optax.apply_updates(params, updates)
            if k >= 2:  # lr = 0 from the third step on
                assert all(close(torch.tensor(np.asarray(a)), torch.tensor(np.asarray(b)), rtol=1e-14) for a, b in zip(new, params))
            params = new


# ----------------------------------------------------------------------------------------------
# part 2: step hooks run once per step


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_step_hooks_run_once_per_step(name, kwargs, path):
    params = [torch.nn.Parameter(x.clone()) for x in initial(name, kwargs)]
    opt = getattr(dynopt.torch, name)(params, lr=0.01, **kwargs, **PATHS[path])
    calls = {"pre": 0, "post": 0, "global_pre": 0, "global_post": 0}

    def count(key):
        def hook(*args):
            calls[key] += 1
        return hook

    handles = [opt.register_step_pre_hook(count("pre")), opt.register_step_post_hook(count("post")),
               register_optimizer_step_pre_hook(count("global_pre")), register_optimizer_step_post_hook(count("global_post"))]
    try:
        for steps, g in enumerate(gradients(shapes_of(name), 3), start=1):
            for p, gi in zip(params, g):
                p.grad = gi
            opt.step()
            assert calls == dict.fromkeys(calls, steps), (steps, calls)
    finally:
        for handle in handles:
            handle.remove()


def test_a_gradient_rescaling_hook_is_applied_once_with_eg_simplex():
    """The case of the report: the flat path falls back for EG simplex at the second step."""
    kwargs = {"variant": "simplex"}
    grads = gradients(SHAPES, 3)
    runs = []
    for hooked in (True, False):
        params = [torch.nn.Parameter(x.clone()) for x in initial("EG", kwargs)]
        opt = dynopt.torch.EG(params, lr=0.1, **kwargs)
        if hooked:
            def halve(optimizer, args, kwargs):
                for group in optimizer.param_groups:
                    for p in group["params"]:
                        p.grad.mul_(0.5)

            opt.register_step_pre_hook(halve)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone() if hooked else gi * 0.5
            opt.step()
        runs.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


# ----------------------------------------------------------------------------------------------
# part 4: checkpoints between torch.optim and dynopt


def _steps(opt, params, grads):
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt.step()


FROM_TORCH = [
    ("SGD", {}, torch.optim.SGD, {}),
    ("SGD", {"weight_decay": 0.1, "maximize": True}, torch.optim.SGD, {}),
    ("SGD", {"momentum": 0.9}, torch.optim.SGD, {}),  # a plain torch.optim.SGD(momentum=0.9): no step counter
    ("SGD", {"momentum": 0.9}, torch.optim.SGD, {"nesterov": True}),
    ("Momentum", {"momentum": 0.9}, torch.optim.SGD, {}),
    ("Momentum", {"momentum": 0.9, "dampening": 0.3, "weight_decay": 0.1}, torch.optim.SGD, {}),
    ("Nesterov", {"momentum": 0.9}, torch.optim.SGD, {"nesterov": True}),
    ("Adam", {"betas": (0.8, 0.99), "weight_decay": 0.1}, torch.optim.Adam, {}),
    ("Adam", {"weight_decay": 0.1}, torch.optim.AdamW, {}),  # Adam(decoupled_weight_decay=True) is AdamW
    ("RMSprop", {"momentum": 0.5, "centered": True}, torch.optim.RMSprop, {}),
] + [(spec.name, {}, torch_class(spec.name), {}) for spec in ZOO  # the rest of torch.optim's names (float64 scalars)
     if spec.name not in TORCH_SGD | {"Adam", "RMSprop"} and hasattr(torch.optim, spec.name)]


@pytest.mark.parametrize("name,kwargs,ref,torch_only", FROM_TORCH, ids=[f"{c[0]}-{i}" for i, c in enumerate(FROM_TORCH)])
def test_torch_optim_state_dict_loads_and_continues(name, kwargs, ref, torch_only):
    init = initial(name, kwargs)
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    ref_opt = ref(theirs, lr=0.05, **kwargs, **torch_only)
    _steps(ref_opt, theirs, gradients(shapes_of(name), 4))
    mine = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    opt = getattr(dynopt.torch, name)(mine, lr=0.5)  # hyperparameters come from the state_dict
    opt.load_state_dict(copy.deepcopy(ref_opt.state_dict()))  # as saved: torch's flags and no step for SGD
    later = gradients(shapes_of(name), 5, seed=7)
    _steps(ref_opt, theirs, later)
    _steps(opt, mine, later)
    assert all(close(a, b) for a, b in zip(mine, theirs))


TO_TORCH = [
    ("SGD", {}, torch.optim.SGD),
    ("Momentum", {"momentum": 0.9, "dampening": 0.3}, torch.optim.SGD),
    ("Nesterov", {"momentum": 0.9}, torch.optim.SGD),
    ("Adam", {"weight_decay": 0.1}, torch.optim.Adam),
    ("RMSprop", {"momentum": 0.5, "centered": True}, torch.optim.RMSprop),
] + [(spec.name, {}, torch_class(spec.name)) for spec in ZOO
     if spec.name not in TORCH_SGD | {"Adam", "RMSprop"} and hasattr(torch.optim, spec.name)]


@pytest.mark.parametrize("name,kwargs,ref", TO_TORCH, ids=[c[0] for c in TO_TORCH])
def test_dynopt_state_dict_loads_into_torch_optim(name, kwargs, ref):
    """torch.optim built with its defaults (nesterov=False, momentum=0) takes the meaning from the state_dict."""
    init = initial(name, kwargs)
    mine = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(dynopt.torch, name)(mine, lr=0.05, **kwargs)
    _steps(opt, mine, gradients(shapes_of(name), 4))
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    ref_opt = ref(theirs, lr=0.5)
    ref_opt.load_state_dict(copy.deepcopy(opt.state_dict()))
    later = gradients(shapes_of(name), 5, seed=7)
    _steps(opt, mine, later)
    _steps(ref_opt, theirs, later)
    assert all(close(b, a) for a, b in zip(mine, theirs))


def _torch_saved(ref, **kwargs):
    params = [torch.nn.Parameter(x.clone()) for x in initial("Adam", {})]
    opt = ref(params, lr=0.05, **kwargs)
    _steps(opt, params, gradients(SHAPES, 2))
    return opt.state_dict()


def _dynopt_saved(name, **kwargs):
    params = [torch.nn.Parameter(x.clone()) for x in initial("Adam", {})]
    opt = getattr(dynopt.torch, name)(params, lr=0.05, **kwargs)
    _steps(opt, params, gradients(SHAPES, 2))
    return opt.state_dict()


def _without_step(saved):
    saved = copy.deepcopy(saved)
    for entry in saved["state"].values():
        del entry["step"]
    return saved


MISMATCHED = {  # what -> (state_dict, target, expected message)
    "Adam into AdamW": (lambda: _torch_saved(torch.optim.Adam), "AdamW", r"decoupled_weight_decay=False, but AdamW means decoupled_weight_decay=True"),
    "RAdam into Adam": (lambda: _torch_saved(torch.optim.RAdam), "Adam", r"sets \['decoupled_weight_decay'\] but not \['amsgrad'\]"),
    "torch Nesterov into Momentum": (lambda: _torch_saved(torch.optim.SGD, momentum=0.9, nesterov=True), "Momentum",
                                     "nesterov=True, but Momentum means nesterov=False"),
    "torch heavy ball into Nesterov": (lambda: _torch_saved(torch.optim.SGD, momentum=0.9), "Nesterov",
                                       "nesterov=False, but Nesterov means nesterov=True"),
    "dynopt Nesterov into Momentum": (lambda: _dynopt_saved("Nesterov"), "Momentum", "nesterov=True, but Momentum means nesterov=False"),
    "MetaNesterov into MetaMomentum": (lambda: _dynopt_saved("MetaNesterov"), "MetaMomentum", "nesterov=True, but MetaMomentum means"),
    "Adam without step counters": (lambda: _without_step(_torch_saved(torch.optim.Adam)), "Adam", r"missing \['step'\]"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHED))
def test_mismatched_meaning_raises_and_changes_nothing(case):
    make_saved, target, message = MISMATCHED[case]
    saved = make_saved()
    kept = copy.deepcopy(saved)
    runs = []
    for load in (True, False):
        params = [torch.nn.Parameter(x.clone()) for x in initial("Adam", {})]
        opt = getattr(dynopt.torch, target)(params, lr=0.05)
        _steps(opt, params, gradients(SHAPES, 2, seed=3))
        before = copy.deepcopy(opt.state_dict())
        if load:
            with pytest.raises(ValueError, match=message):
                opt.load_state_dict(saved)
            after = opt.state_dict()
            assert after["param_groups"] == before["param_groups"]
            assert all(torch.equal(after["state"][k][n], v) for k, e in before["state"].items() for n, v in e.items())
        _steps(opt, params, gradients(SHAPES, 2, seed=4))  # it continues as if nothing happened
        runs.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*runs))
    assert str(saved) == str(kept)  # the caller's state_dict is not modified either


def test_dynopt_param_groups_carry_the_flags_they_imply():
    params = [torch.nn.Parameter(torch.ones(2))]
    assert dynopt.torch.Momentum(params).param_groups[0]["nesterov"] is False
    assert dynopt.torch.Nesterov(params).param_groups[0]["nesterov"] is True
    assert dynopt.torch.Adam(params).param_groups[0]["decoupled_weight_decay"] is False
    with pytest.raises(ValueError, match="nesterov=True, but Momentum means nesterov=False"):
        dynopt.torch.Momentum([{"params": params, "nesterov": True}])


def test_an_older_dynopt_state_dict_without_the_flags_still_loads():
    params = [torch.nn.Parameter(x.clone()) for x in initial("Adam", {})]
    opt = dynopt.torch.Nesterov(params, lr=0.05)
    _steps(opt, params, gradients(SHAPES, 2))
    saved = copy.deepcopy(opt.state_dict())
    for group in saved["param_groups"]:
        del group["nesterov"], group["dampening"]
    twin_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    twin = dynopt.torch.Nesterov(twin_params, lr=0.5)
    twin.load_state_dict(saved)
    assert twin.param_groups[0]["nesterov"] is True
    _steps(opt, params, gradients(SHAPES, 3, seed=5))
    _steps(twin, twin_params, gradients(SHAPES, 3, seed=5))
    assert all(torch.equal(a, b) for a, b in zip(params, twin_params))


# ----------------------------------------------------------------------------------------------
# part 6: complex parameters, sparse gradients, the meta device

COMPLEX_REFS = [("SGD", torch.optim.SGD, {"weight_decay": 0.1}, {}),
                ("Momentum", torch.optim.SGD, {"momentum": 0.9, "dampening": 0.2, "weight_decay": 0.1}, {}),
                ("Nesterov", torch.optim.SGD, {"momentum": 0.9, "maximize": True}, {"nesterov": True}),
                ("RMSprop", torch.optim.RMSprop, {"momentum": 0.5, "centered": True, "weight_decay": 0.1}, {}),
                ("Adam", torch.optim.Adam, {"weight_decay": 0.1, "maximize": True}, {})]
COMPLEX_SHAPES = [(4, 3), (5,), (300, 300)]  # a gathered bucket and one of its own (>= FLAT_MAX_NUMEL)


def _complex(shapes, seed):
    gen = torch.Generator().manual_seed(seed)
    return [torch.complex(torch.rand(s, generator=gen, dtype=torch.float64) + 0.5,
                          torch.rand(s, generator=gen, dtype=torch.float64) + 0.5) for s in shapes]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,ref,kwargs,torch_only", COMPLEX_REFS, ids=[c[0] for c in COMPLEX_REFS])
def test_complex_parameters_equal_torch_optim(name, ref, kwargs, torch_only, path):
    init = _complex(COMPLEX_SHAPES, 0)
    mine = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(dynopt.torch, name)(mine, lr=0.01, **kwargs, **PATHS[path])
    ref_opt = ref(theirs, lr=0.01, **kwargs, **torch_only)
    for seed in range(5):
        for a, b, g in zip(mine, theirs, _complex(COMPLEX_SHAPES, 10 + seed)):
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref_opt.step()
    if path != "reference":
        assert opt._flat is not None
    for a, b in zip(mine, theirs):
        assert a.dtype == torch.complex128 and close(torch.view_as_real(a), torch.view_as_real(b))
        for key, value in ref_opt.state[b].items():
            if key != "step":
                assert opt.state[a][key].dtype == value.dtype
                assert close(torch.view_as_real(opt.state[a][key]), torch.view_as_real(value)), key


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_complex_parameter_is_stepped_as_its_real_view(name, kwargs, path):
    """Every optimizer, on every path: a complex parameter moves exactly as its real view would; one that refuses
    complex parameters (``Spec.complex_params``, torch.optim.Muon's) raises torch's RuntimeError at the step."""
    shapes = shapes_of(name)
    init = _complex(shapes, 0)
    if not getattr(dynopt.torch, name).spec.complex_params:
        opt = getattr(dynopt.torch, name)([torch.nn.Parameter(x.clone()) for x in init], lr=0.01, **kwargs, **PATHS[path])
        for p, g in zip(opt.param_groups[0]["params"], _complex(shapes, 10)):
            p.grad = g
        with pytest.raises(RuntimeError, match=f"{name} does not support complex parameters"):
            opt.step()
        assert not opt.state
        return
    if kwargs.get("variant") == "simplex":
        init = [x / torch.view_as_real(x).sum() for x in init]
    grads = [_complex(shapes, 10 + k) for k in range(3)]
    as_complex = [torch.nn.Parameter(x.clone()) for x in init]
    as_real = [torch.nn.Parameter(torch.view_as_real(x).clone()) for x in init]
    opt_c = getattr(dynopt.torch, name)(as_complex, lr=0.01, **kwargs, **PATHS[path])
    opt_r = getattr(dynopt.torch, name)(as_real, lr=0.01, **kwargs, flat=False)
    for g in grads:
        for c, r, gi in zip(as_complex, as_real, g):
            c.grad, r.grad = gi.clone(), torch.view_as_real(gi).clone()
        opt_c.step()
        opt_r.step()
    for c, r in zip(as_complex, as_real):
        assert close(torch.view_as_real(c), r)


SPARSE = [("SGD", {}, {}), ("SGD", {"maximize": True}, {}), ("Momentum", {"momentum": 0.9}, {}),
          ("Momentum", {"momentum": 0.9, "dampening": 0.3, "maximize": True}, {}),
          ("Nesterov", {"momentum": 0.9}, {"nesterov": True})]


def _embedding_steps(emb, opt, steps=5, seed=0):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        opt.zero_grad()
        index = torch.randint(0, 10, (8,), generator=gen)  # repeated rows: an uncoalesced sparse gradient
        (emb(index) ** 2).sum().backward()
        opt.step()


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kwargs,torch_only", SPARSE, ids=[f"{c[0]}-{i}" for i, c in enumerate(SPARSE)])
def test_sparse_gradients_equal_torch_optim_sgd(name, kwargs, torch_only, path):
    ours = torch.nn.Embedding(10, 3, sparse=True, dtype=torch.float64)
    theirs = copy.deepcopy(ours)
    opt = getattr(dynopt.torch, name)(ours.parameters(), lr=0.1, **kwargs, **PATHS[path])
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, **kwargs, **torch_only)
    _embedding_steps(ours, opt)
    _embedding_steps(theirs, ref)
    assert ours.weight.grad.is_sparse
    assert close(ours.weight, theirs.weight)
    if "momentum_buffer" in ref.state[theirs.weight]:
        assert close(opt.state[ours.weight]["momentum_buffer"], ref.state[theirs.weight]["momentum_buffer"].to_dense())


def test_sparse_gradient_with_weight_decay_means_its_dense_form():
    """torch.optim.SGD raises here (add(sparse, dense)); dynopt steps the dense form."""
    runs = []
    for sparse in (True, False):
        emb = torch.nn.Embedding(10, 3, sparse=sparse, dtype=torch.float64, _weight=torch.ones(10, 3, dtype=torch.float64))
        opt = dynopt.torch.Momentum(emb.parameters(), lr=0.1, weight_decay=0.1)
        _embedding_steps(emb, opt)
        runs.append(emb.weight.detach())
    assert close(runs[0], runs[1])


def test_torch_sgd_sparse_momentum_buffer_loads_into_momentum():
    ours = torch.nn.Embedding(10, 3, sparse=True, dtype=torch.float64)
    theirs = copy.deepcopy(ours)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.1, momentum=0.9)
    _embedding_steps(theirs, ref, seed=1)
    assert ref.state[theirs.weight]["momentum_buffer"].is_sparse
    ours.load_state_dict(theirs.state_dict())
    opt = dynopt.torch.Momentum(ours.parameters(), lr=0.5)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    _embedding_steps(theirs, ref, seed=2)
    _embedding_steps(ours, opt, seed=2)
    assert close(ours.weight, theirs.weight)


REFUSING_SPARSE = [spec.name for spec in ZOO if not spec.sparse_grads]


@pytest.mark.parametrize("name", REFUSING_SPARSE)
def test_sparse_gradients_elsewhere_raise_torchs_exception_type(name):
    torch_type = RuntimeError  # what torch.optim.Adam and RMSprop raise (checked here)
    for ref in (torch.optim.Adam, torch.optim.RMSprop):
        emb = torch.nn.Embedding(4, 2, sparse=True)
        emb(torch.tensor([1])).sum().backward()
        with pytest.raises(torch_type):
            ref(emb.parameters()).step()
    emb = torch.nn.Embedding(4, 2, sparse=True)
    with torch.no_grad():
        emb.weight.uniform_(0.5, 1.0)  # positive, for EG
    before = emb.weight.detach().clone()
    opt = getattr(dynopt.torch, name)(emb.parameters())
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(torch_type, match=f"{name} does not support sparse gradients"):
        opt.step()
    assert torch.equal(emb.weight, before) and len(opt.state) == 0


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=CONFIG_IDS)
def test_meta_device_parameters_step_like_the_others(name, kwargs, path):
    params = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes_of(name)]
    opt = getattr(dynopt.torch, name)(params, lr=0.01, **kwargs, **PATHS[path])  # EG: no .item() on a meta tensor
    for _ in range(2):
        for p in params:
            p.grad = torch.empty(p.shape, device="meta")
        opt.step()
    assert all(p.device.type == "meta" for p in params)
    assert all(float(opt.state[p]["step"]) == 2 for p in params)


# ----------------------------------------------------------------------------------------------
# part 7: learning rates that are arrays, schedules where none is taken

JAX_FACTORIES = sorted({spec.jax_name for spec in ZOO})


@pytest.mark.parametrize("factory", JAX_FACTORIES)
def test_jax_learning_rate_of_shape_one_equals_a_scalar(factory):
    make = getattr(dynopt.jax, factory)
    shapes = shapes_for(next(s for s in ZOO if s.jax_name == factory), SHAPES)
    params = [jnp.asarray(x.numpy()) for x in initial("EG", {}, shapes)]
    grads = [[jnp.asarray(g.numpy()) for g in step] for step in gradients(shapes, 3)]
    runs = []
    for lr in (0.1, jnp.array([0.1]), np.array([0.1]), lambda count: jnp.array([0.1]), jnp.array([[0.1]])):
        tx = make(lr)
        state, p = tx.init(params), params
        for g in grads:
            updates, state = jax.jit(tx.update)(g, state, p)
            p = optax.apply_updates(p, updates)
        runs.append(p)
    for run in runs[1:]:
        for a, b in zip(run, runs[0]):
            assert a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b))


def test_jax_learning_rate_of_shape_one_equals_optax():
    params = {"w": jnp.arange(1.0, 4.0), "s": jnp.asarray(2.0)}
    grads = {"w": jnp.asarray([0.5, -1.0, 2.0]), "s": jnp.asarray(-0.25)}
    for lr in (jnp.array([0.1]), lambda count: jnp.array([0.1])):
        ours, _ = dynopt.jax.sgd(lr).update(grads, dynopt.jax.sgd(lr).init(params), params)
        theirs, _ = optax.sgd(lr).update(grads, optax.sgd(lr).init(params), params)
        assert np.array_equal(ours["w"], theirs["w"])
        assert ours["s"].shape == () and np.array_equal(ours["s"], theirs["s"].reshape(()))  # optax: shape (1,)
    injected = optax.inject_hyperparams(dynopt.jax.sgd)(learning_rate=jnp.array([0.1]))
    updates, _ = injected.update(grads, injected.init(params), params)
    assert np.array_equal(updates["w"], theirs["w"])


def test_jax_learning_rate_of_several_elements_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"Invalid learning rate: .*must have exactly 1 element, got 2"):  # as torch's
        dynopt.jax.adam(jnp.array([0.1, 0.2]))
    tx = dynopt.jax.adam(lambda count: jnp.full((3,), 0.1))
    params = [jnp.ones(3)]
    with pytest.raises(ValueError, match=r"learning_rate schedule returned .* shape \(3,\)"):
        tx.update(params, tx.init(params), params)


@pytest.mark.parametrize("make,argument", [
    (lambda s: dynopt.jax.adam(0.1, b1=s), "b1"),
    (lambda s: dynopt.jax.adam(0.1, b2=s), "b2"),
    (lambda s: dynopt.jax.meta_sgd(0.1, scale_range=(1e-3, s)), "scale_range"),
    (lambda s: dynopt.jax.momentum(0.1, momentum=s), "momentum"),
    (lambda s: dynopt.numpy.from_spec(dynopt.torch.Adam.spec)(0.1, betas=(s, 0.999)), "betas"),
    (lambda s: dynopt.torch.Adam([torch.nn.Parameter(torch.ones(2))], betas=(s, 0.999)), "betas"),
], ids=["adam-beta1", "adam-beta2", "meta_sgd-scale_range", "momentum", "numpy-adam", "torch-adam"])
def test_a_schedule_where_none_is_taken_is_refused_naming_the_argument(make, argument):
    with pytest.raises(TypeError, match=rf"Invalid {argument} value: .*only the learning rate may be a schedule"):
        make(optax.linear_schedule(0.9, 0.5, 10))


@pytest.mark.parametrize("path", PATHS)
def test_torch_learning_rate_of_shape_one_equals_torch_optim(path):
    init = initial("Momentum", {})
    mine = [torch.nn.Parameter(x.clone()) for x in init]
    theirs = [torch.nn.Parameter(x.clone()) for x in init]
    opt = dynopt.torch.Momentum(mine, lr=torch.tensor([0.05], dtype=torch.float64), momentum=0.9, **PATHS[path])
    ref = torch.optim.SGD(theirs, lr=torch.tensor([0.05], dtype=torch.float64), momentum=0.9)
    grads = gradients(SHAPES, 3)
    _steps(opt, mine, grads)
    _steps(ref, theirs, grads)
    assert all(close(a, b) for a, b in zip(mine, theirs))


def test_numpy_learning_rate_of_shape_one_equals_a_scalar():
    make = dynopt.numpy.from_spec(dynopt.torch.Adam.spec)
    runs = []
    for lr in (0.1, np.array([0.1]), lambda count: np.array([0.1])):
        opt = make(lr)
        params = [np.ones(3)]
        state = opt.init(params)
        for _ in range(3):
            updates, state = opt.update([np.asarray([0.5, -1.0, 2.0])], state, params)
            params = [p + u for p, u in zip(params, updates)]
        runs.append(params[0])
    assert all(np.array_equal(r, runs[0]) for r in runs[1:])


# ----------------------------------------------------------------------------------------------
# part 10: the compiled-kernel cache and needs_params


def _linear_spec(name, factor, needs_params=lambda hp: False):
    """θ ← θ − lr·factor·g (factor fixed in the function: two such specs compute different things)."""
    return Spec(
        name=name, hyperparams=(Hyper("lr", 0.1, "learning rate", nonnegative),), state=lambda hp: (),
        update=lambda o, hp, t, grad, param, state: (-hp.lr * factor * grad, {}),
        vector_field=lambda o, hp, time, grad, param, state: (-factor * grad, {}),
        time_step=lambda hp: hp.lr, needs_params=needs_params, ode="", scheme="", hyper_map="")


def _fused_run(spec, steps=2):
    param = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = dynopt.torch.from_spec(spec)([param], lr=0.1, fused=True)
    for _ in range(steps):
        param.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
    return param.detach().clone()


def test_the_kernel_cache_keeps_its_spec_alive_and_never_aliases():
    first = _linear_spec("LinearOne", 1.0)
    alive = weakref.ref(first)
    assert close(_fused_run(first), torch.full((3,), 1 - 2 * 0.1, dtype=torch.float64), rtol=1e-15)
    del first
    gc.collect()
    assert alive() is not None, "a cached kernel's spec was freed: its id could be reused by another spec"
    twin = dataclasses.replace(alive(), name="LinearThree", update=lambda o, hp, t, grad, param, state: (-hp.lr * 3.0 * grad, {}))
    assert close(_fused_run(twin), torch.full((3,), 1 - 2 * 0.3, dtype=torch.float64), rtol=1e-15)  # not the first's kernel
    # a one-kernel update runs as the eager program under fused=True too (nothing to fuse): either cache
    caches = list(torch_flat._KERNELS) + list(torch_flat.torch_eager_graph._PROGRAMS)
    keys = [k for k in caches if isinstance(k, tuple) and any(getattr(x, "obj", None) is twin for x in k)]
    assert keys, "the kernel of a spec is keyed by the spec itself"


@pytest.mark.parametrize("path", PATHS)
def test_a_spec_that_reads_params_against_its_needs_params_is_refused(path):
    """needs_params says False at lr 0.01 (True at 0.1) while update always reads param: the first step
    (lr 0.1, the reference path) is right; the second (lr 0.01, on ``path``) must raise, writing nothing."""
    def update(o, hp, t, grad, param, state):
        return -hp.lr * (grad + 0.5 * param), {}

    wrong = dataclasses.replace(_linear_spec("ReadsParams", 1.0, needs_params=lambda hp: hp.lr > 0.05), update=update)
    param = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = dynopt.torch.from_spec(wrong)([param], lr=0.1, **PATHS[path])
    param.grad = torch.ones(3, dtype=torch.float64)
    opt.step()
    assert close(param, torch.full((3,), 1 - 0.1 * 1.5, dtype=torch.float64), rtol=1e-15)
    opt.param_groups[0]["lr"] = 0.01
    before = param.detach().clone()
    with pytest.raises(UnreadParamsError, match="ReadsParams: update read the parameters, but the spec's needs_params is False"):
        opt.step()
    assert torch.equal(param, before)
    right = dataclasses.replace(wrong, name="ReadsParamsDeclared", needs_params=lambda hp: True)
    param = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    opt = dynopt.torch.from_spec(right)([param], lr=0.1, **PATHS[path])
    for _ in range(2):
        param.grad = torch.ones(3, dtype=torch.float64)
        opt.step()
    assert close(param, torch.full((3,), (1 - 0.1 * 1.5) - 0.1 * (1 + 0.5 * 0.85), dtype=torch.float64), rtol=1e-15)
