"""Every execution path of the torch backend computes what the reference path computes.

The reference path (``flat=False``) runs each tree operation as one ``torch._foreach_*`` call
and is itself checked against torch.optim (test_parity, test_conformance_torch). The default
flat path (flat buckets, pooled temporaries, one-pass reductions) and ``fused=True`` (compiled
kernels) must give the same parameters *and* state on the whole zoo, under every event that
changes the plan they cache: gradients that come and go, state_dict round trips, replaced
state, new param groups, schedulers, deepcopy, non-finite gradients.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from problems import shapes_for

import dynopt.torch as dt
from dynopt._backends import torch_flat
from dynopt.optimizers import ZOO

# layouts: several small tensors (one gathered bucket); one tensor (used in place); a tensor of
# >= FLAT_MAX_NUMEL elements (a bucket of its own) between small ones
LAYOUTS = ([(7, 3), (5,), (2, 2, 2)], [(11,)], [(5,), (300, 300), (7, 3)])
assert 300 * 300 >= torch_flat.FLAT_MAX_NUMEL

CONFIGS = [(spec.name, {"lr": 1e-2}) for spec in ZOO] + [
    ("EG", {"lr": 1e-2, "variant": "signed"}),
    ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9, "weight_decay": 0.1}),
    ("Adam", {"lr": 1e-2, "weight_decay": 0.1, "maximize": True}),
    ("Momentum", {"lr": 1e-2, "dampening": 0.3, "weight_decay": 0.01}),
    ("MetaAdam", {"lr": 1e-2, "gain_lr": 0.1}),
    ("MetaMomentum", {"lr": 1e-2, "rule": "hd", "dampening": 0.5}),
]
PATHS = {"flat": {}, "fused": {"fused": True}}
STEPS = 5


def problem(layout, steps=STEPS, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    init = [torch.rand(s, generator=gen, dtype=dtype) + 0.5 for s in layout]
    grads = [[torch.randn(s, generator=gen, dtype=dtype) for s in layout] for _ in range(steps)]
    return init, grads


def run(name, kwargs, init, grads, hook=None, **options):
    """Step ``name`` through ``grads``; ``hook(k, params, opt)`` runs before step k and may return a new optimizer."""
    params = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(dt, name)(params, **kwargs, **options)
    for k, g in enumerate(grads):
        for p, gi in zip(params, g):
            p.grad = None if gi is None else gi.clone()
        if hook is not None:
            opt = hook(k, params, opt) or opt
        opt.step()
    return params, opt


def assert_same(ref, got, atol=1e-12):
    (ref_params, ref_opt), (got_params, got_opt) = ref, got
    for i, (a, b) in enumerate(zip(ref_params, got_params)):
        torch.testing.assert_close(b.detach(), a.detach(), rtol=0, atol=atol, equal_nan=True,
                                   msg=lambda m, i=i: f"param {i}: {m}")
        ra, gb = ref_opt.state.get(a, {}), got_opt.state.get(b, {})
        assert set(ra) == set(gb), (i, set(ra), set(gb))
        for key, value in ra.items():
            torch.testing.assert_close(gb[key].double(), value.double(), rtol=0, atol=atol, equal_nan=True,
                                       msg=lambda m, i=i, key=key: f"param {i} state {key!r}: {m}")
            assert gb[key].shape == value.shape and gb[key].dtype == value.dtype


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name,kwargs", CONFIGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CONFIGS)])
def test_every_path_equals_the_reference_on_the_zoo(name, kwargs, path):
    for layout in LAYOUTS:
        layout = shapes_for(getattr(dt, name).spec, layout)  # Muon: its matrices only
        if not layout:
            continue
        init, grads = problem(layout)
        ref = run(name, kwargs, init, grads, flat=False)
        got = run(name, kwargs, init, grads, **PATHS[path])
        # a spec that reduces inside a parameter (LAMB's and LARS's trust ratios) always takes the reference path, and
        # so does one that draws random numbers (NoisySGD: one torch.Generator per parameter), saying why
        assert (got[1]._flat is not None or getattr(got[1], "_needs_leaves", False)
                or got[1].execution.reason == "the spec draws random numbers"), \
            f"{name} {layout}: the {path} path was not taken"
        assert_same(ref, got)


def test_a_spec_that_reduces_inside_a_leaf_takes_the_reference_path():
    init, grads = problem([(4, 3), (6,)])
    kwargs = {"lr": 1e-2, "variant": "simplex", "axis": -1}
    ref = run("EG", kwargs, [x / x.sum(-1, keepdim=True) for x in init], grads, flat=False)
    got = run("EG", kwargs, [x / x.sum(-1, keepdim=True) for x in init], grads)
    assert got[1]._needs_leaves and got[1]._flat is None
    assert_same(ref, got)


@pytest.mark.parametrize("path", PATHS)
def test_float32_and_mixed_groups(path):
    """Two groups (float32 and float64, different lr) give separate buckets; float32 to float32 rounding."""
    gen = torch.Generator().manual_seed(1)
    shapes = [(6, 5), (4,)]

    def build(**options):
        p32 = [torch.nn.Parameter(torch.rand(s, generator=torch.Generator().manual_seed(i)) + 0.5) for i, s in enumerate(shapes)]
        p64 = [torch.nn.Parameter(torch.rand(s, dtype=torch.float64, generator=torch.Generator().manual_seed(9 + i)) + 0.5)
               for i, s in enumerate(shapes)]
        opt = dt.MetaAdam([{"params": p32}, {"params": p64, "lr": 3e-3}], lr=1e-2, **options)
        return p32 + p64, opt

    grads = [[torch.randn(s, generator=gen) for s in shapes * 2] for _ in range(STEPS)]
    runs = []
    for options in ({"flat": False}, PATHS[path]):
        params, opt = build(**options)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.to(p.dtype)
            opt.step()
        runs.append((params, opt))
    assert runs[1][1]._flat is not None and len(runs[1][1]._flat.buckets()) == 2
    assert_same(*runs, atol=1e-6)


def _gradients_come_and_go(k, params, opt):
    if k == 3:
        params[1].grad = None


def _state_dict_round_trip(k, params, opt):
    if k == 3:
        buffer = io.BytesIO()
        torch.save(opt.state_dict(), buffer)
        buffer.seek(0)
        fresh = type(opt)(params, **{key: v for key, v in opt.defaults.items()})
        fresh.load_state_dict(torch.load(buffer, weights_only=True))
        return fresh
    return None


def _replaced_state(k, params, opt):
    if k == 3:
        for p in params:
            for key, value in opt.state[p].items():
                if value.dim():
                    opt.state[p][key] = torch.full_like(value, 0.25)


def _new_param_group(k, params, opt):
    if k == 2:
        extra = torch.nn.Parameter(torch.full((3,), 0.75, dtype=torch.float64))
        extra.grad = torch.full((3,), 0.5, dtype=torch.float64)
        params.append(extra)
        opt.add_param_group({"params": [extra], "lr": 5e-3})


def _deepcopy(k, params, opt):
    if k == 3:  # continue with a deep copy bound to copies of the parameters
        memo = {}
        clone = copy.deepcopy((params, opt), memo)
        for i, p in enumerate(clone[0]):
            p.grad = params[i].grad  # deepcopy leaves gradients behind
            params[i] = p
        return clone[1]
    return None


def _schedule(k, params, opt):
    for group in opt.param_groups:
        group["lr"] = 1e-2 * 0.7**k


EVENTS = {"gradients come and go": _gradients_come_and_go, "state_dict round trip": _state_dict_round_trip,
          "replaced state": _replaced_state, "new param group": _new_param_group, "deepcopy": _deepcopy,
          "lr schedule": _schedule}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("name", ["Adam", "MetaSGD"])
def test_the_cached_plan_follows_every_change(name, event, path):
    layout = [(4, 3), (5,), (300, 300)]
    init, grads = problem(layout, steps=7)
    kwargs = {"lr": 1e-2}
    ref_params = [torch.nn.Parameter(x.clone()) for x in init]
    got_params = [torch.nn.Parameter(x.clone()) for x in init]
    opts = [getattr(dt, name)(ref_params, **kwargs, flat=False), getattr(dt, name)(got_params, **kwargs, **PATHS[path])]
    for k, g in enumerate(grads):
        for i, params in enumerate((ref_params, got_params)):
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            for p in params[len(g):]:
                p.grad = torch.full_like(p, 0.5)
            opts[i] = EVENTS[event](k, params, opts[i]) or opts[i]
            opts[i].step()
    assert opts[1]._flat is not None
    assert_same((ref_params, opts[0]), (got_params, opts[1]))


def test_schedules_do_not_recompile():
    """Hyperparameters and the step number are kernel inputs: a new lr every step compiles nothing."""
    init, grads = problem([(4, 3), (5,)], steps=6)
    before = {}

    def hook(k, params, opt):
        _schedule(k, params, opt)
        if k == 2:
            before["kernels"] = len(torch_flat._KERNELS)

    run("Adam", {"lr": 1e-2, "weight_decay": 0.1}, init, grads, hook=hook, fused=True)
    assert len(torch_flat._KERNELS) == before["kernels"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("layout", [[(4, 3), (5,), (2,)], [(5,), (300, 300), (4, 3)]], ids=["gathered", "own bucket"])
def test_a_nonfinite_gradient_is_isolated_as_in_the_reference(path, layout):
    """The meta step's global sums leave out a parameter whose contribution is not finite, on every path."""
    init, grads = problem(layout, steps=6)
    grads[3][1][2] = float("nan")
    grads[4][0][0] = float("inf")
    ref = run("MetaSGD", {"lr": 1e-2}, init, grads, flat=False)
    got = run("MetaSGD", {"lr": 1e-2}, init, grads, **PATHS[path])
    assert_same(ref, got)
    assert torch.isfinite(got[0][2]).all() and torch.isfinite(got[1].global_scalars()["scale"])  # others unharmed
    assert not torch.isfinite(got[0][1]).all()


def test_state_is_a_view_of_flat_buffers_and_saves_as_usual():
    init, grads = problem([(4, 3), (5,)])
    params, opt = run("Adam", {"lr": 1e-2}, init, grads)
    a, b = (opt.state[p]["exp_avg"] for p in params)
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # one buffer
    assert a.shape == params[0].shape and b.shape == params[1].shape
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["state"][0]["exp_avg"].shape == (4, 3)


@pytest.mark.parametrize("options,message", [
    ({"fused": True, "flat": False}, "Invalid fused value: True (fused=True runs on flat buckets: it needs flat=True)"),
    ({"fused": "yes"}, "Invalid fused value: 'yes' (must be one of (None, False, True))"),
    ({"flat": 1}, "Invalid flat value: 1 (must be a bool)"),
])
def test_option_errors(options, message):
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises((TypeError, ValueError)) as info:
        dt.Adam([p], **options)
    assert str(info.value) == message


@pytest.mark.parametrize("path", PATHS)
def test_bfloat16_and_a_tensor_lr(path):
    """bfloat16 parameters and a Tensor lr (as torch.optim accepts) on every path, against the reference."""
    init, grads = problem([(6, 5), (4,), (300, 300)], dtype=torch.bfloat16, steps=4)
    kwargs = {"lr": torch.tensor(1e-2), "weight_decay": 0.1}
    ref = run("Adam", kwargs, init, grads, flat=False)
    got = run("Adam", kwargs, init, grads, **PATHS[path])
    assert got[1]._flat is not None
    # the flat path runs the reference's ATen ops (exact); the compiled loop keeps intermediates in
    # float32 instead of rounding each to bfloat16: at most 2 ulps (2 * 2^-7) for values in [1, 2)
    assert_same(ref, got, atol=0 if path == "flat" else 2 * 2**-7)


def test_a_compile_failure_raises_before_anything_changes(monkeypatch):
    """Without a working torch.compile, fused=True fails at its first compiled step with a clear error
    and leaves parameters and state as they were."""

    def broken(fn, **kwargs):
        def run(*args, **kw):
            raise OSError("no C++ compiler found")
        return run

    monkeypatch.setattr(torch_flat, "_KERNELS", {})
    monkeypatch.setattr(torch_flat.torch, "compile", broken)
    init, grads = problem([(4, 3), (5,)], steps=2)
    params = [torch.nn.Parameter(x.clone()) for x in init]
    opt = dt.Adam(params, lr=1e-2, fused=True)
    for p, g in zip(params, grads[0]):
        p.grad = g
    opt.step()  # the first step runs on the reference path
    before = ([p.detach().clone() for p in params], copy.deepcopy(opt.state_dict()))
    for p, g in zip(params, grads[1]):
        p.grad = g
    with pytest.raises(RuntimeError, match=r"fused=True: torch.compile could not compile Adam's update \(OSError: no C\+\+ "
                                           r"compiler found\); use fused=False"):
        opt.step()
    for p, old in zip(params, before[0]):
        assert torch.equal(p.detach(), old)
    after = opt.state_dict()["state"]
    for key, entry in before[1]["state"].items():
        for name, value in entry.items():
            assert torch.equal(after[key][name], value), name


# ------------------------------------------------------------------------------ the default path's eager graph executor
# (dynopt/_backends/torch_eager_graph.py): the traced update, run as composite ATen kernels on the flat buckets


def _bucket_kernels(opt, params, grads, numel):
    """ATen kernels of one step that read or write a tensor of ``numel`` elements (views excluded), by name."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = []

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [x for x in (*torch.utils._pytree.tree_leaves((args, kwargs)), out) if isinstance(x, torch.Tensor)]
            if not func.is_view and any(x.numel() == numel for x in tensors):
                seen.append(func.__name__)
            return out

    for p, g in zip(params, grads):
        p.grad = g.clone()
    with Count():
        opt.step()
    return seen


# torch.optim's foreach step on one tensor: SGD add_; momentum mul_, add_, add_; Nesterov mul_, add_, add, add_;
# RMSprop mul_, addcmul_, sqrt, add_, addcdiv_; Adam lerp_, mul_, addcmul_, sqrt, div_, add_, addcdiv_; AdamW mul_ + Adam's
FOREACH_PASSES = {"SGD": 1, "Momentum": 3, "Nesterov": 4, "RMSprop": 5, "Adam": 7, "AdamW": 8}


@pytest.mark.parametrize("name", FOREACH_PASSES)
def test_the_default_path_makes_no_more_passes_than_torch_foreach(name):
    """One parameter stepped in place: the eager program reads and writes the bucket in at most as many
    kernels as torch.optim's foreach step (the per-op path: 4-13), allocates nothing bucket-sized, and
    equals the reference path."""
    init, grads = problem([(400, 300)], steps=4)
    ref = run(name, {"lr": 1e-2}, init, grads, flat=False)
    got = run(name, {"lr": 1e-2}, init, grads[:-1])
    params, opt = got
    assert opt.execution.path == "flat" and opt.execution.reason == ""
    (bucket,) = opt._flat.buckets()
    program = bucket.program[1]
    assert not isinstance(program, str), program
    kernels = _bucket_kernels(opt, params, grads[-1], 400 * 300)
    assert len(kernels) <= FOREACH_PASSES[name], kernels
    assert not any(k.startswith(("empty", "new_", "clone", "zeros", "ones")) for k in kernels), kernels
    assert_same(ref, got)


def _hazards_spec():
    """A hand-written update whose values alias in every way the executor must respect: a state that takes
    another's old value (a ← b), a new value that reads an old one after it is overwritten (b ← a/2 + lr·g²,
    the step reads the old a), a state that takes the gradient (c ← g), the parameter inside a product of
    the step, a non-linear op (sign, sqrt) and constants."""
    import dataclasses

    from dynopt.optimizers.signum import signum
    from dynopt.tree import ZERO

    def update(o, hp, t, grad, param, state):
        a, b, c = state.a, state.b, state.c
        new_b = a * 0.5 + grad * grad * hp.lr
        delta = -hp.lr * (grad * param) / (o.sqrt(new_b) + 1.0) + a * 0.1 - o.sign(c) * 1e-3 + 1e-4
        return delta, {"a": b, "b": new_b, "c": grad}

    def scattered(o, hp, t, grad, param, state):  # the step is an old state, scattered after that state is rewritten
        return -hp.lr * state.a, {"a": state.a * 0.5 + grad, "b": grad * 2.0 + state.z * 0.5, "z": ZERO}

    return (dataclasses.replace(signum, name="Hazards", update=update, statement=None, state=lambda hp: ("a", "b", "c"),
                                needs_params=lambda hp: True, optax=()),
            dataclasses.replace(signum, name="Hazards2", update=scattered, statement=None,
                                state=lambda hp: ("a", "b", "z"), needs_params=lambda hp: False, optax=(),
                                initial_state=lambda o, hp, param: {n: o.zeros_like(param) + 0.5 for n in "abz"}))


@pytest.mark.parametrize("which", [0, 1])
@pytest.mark.parametrize("layout", LAYOUTS, ids=["gathered", "one tensor", "own bucket"])
def test_the_eager_program_respects_aliasing_in_a_user_spec(layout, which):
    cls = dt.from_spec(_hazards_spec()[which])
    init, grads = problem(layout)
    runs = []
    for options in ({"flat": False}, {}):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        opt = cls(params, lr=1e-2, **options)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.clone()
            opt.step()
        runs.append((params, opt))
    assert all(not isinstance(b.program[1], str) for b in runs[1][1]._flat.buckets())
    assert_same(*runs)


def test_what_the_eager_program_does_not_model_runs_per_op_and_says_why():
    init, grads = problem([(6, 5), (4,)], dtype=torch.bfloat16, steps=3)
    _, opt = run("Adam", {"lr": 1e-2}, init, grads)
    assert opt.execution.path == "flat"
    assert opt.execution.reason.startswith("eager graph executor not used: not modelled: torch.bfloat16")
