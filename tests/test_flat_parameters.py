"""Flat-parameter mode (``dynopt.torch.flatten_parameters``): parameters and gradients as views of one
flat buffer per (device, dtype), stepped in place without gather or scatter.

Every case compares with the reference path (``flat=False``) on ordinary parameters: parameters and
state equal to 1e-12 in float64, and checks through ``opt.execution.direct`` that the in-place path
(not a fallback) ran. Gradients come from ``backward()`` of ``Σ p·g``, whose gradient is exactly ``g``,
so autograd's accumulation into the flat gradient views is exercised too.
"""

from __future__ import annotations

import copy
import io

import pytest
import torch
from test_torch_paths import CONFIGS, PATHS, assert_same, problem
from zoo_options import STATEFUL

import dynopt.torch as dt
from dynopt._backends import torch_flat
from dynopt.optimizers import ZOO

LAYOUT = [(7, 3), (5,), (300, 300), (2, 2, 2), (4,)]  # a tensor of >= FLAT_MAX_NUMEL elements inside the run
LAYOUT_2D = [(7, 3), (5, 2), (300, 300), (2, 4), (4, 1)]
assert 300 * 300 >= torch_flat.FLAT_MAX_NUMEL
ZOO_NAMES = {spec.name for spec in ZOO}
FLAT_CONFIGS = CONFIGS + [(name, {"lr": 1e-2, **options}) for name, options in STATEFUL.items() if name in ZOO_NAMES]


@pytest.fixture(params=["native", "python"])
def checks(request, monkeypatch):
    """The steady-state check on both implementations of its passes (``native_checks``): the native module
    (built here; CI has a compiler) and the Python passes that run where no compiler is present."""
    from dynopt._backends.native_checks import CHECKS, PythonChecks, load_native

    chosen = load_native() if request.param == "native" else PythonChecks
    for name in ("same_objects", "attributes_are", "data_ptrs_are", "views_hold", "entries_are"):
        monkeypatch.setattr(CHECKS, name, getattr(chosen, name))
    return request.param


def reference(name, kwargs, init, grads, groups=None):
    params = [torch.nn.Parameter(x.clone()) for x in init]
    opt = getattr(dt, name)(groups(params) if groups else params, **kwargs, flat=False)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = None if gi is None else gi.clone()
        opt.step()
    return params, opt


def flat(name, kwargs, init, grads, groups=None, set_to_none=True, reattach_grads=True, hook=None, **options):
    """Flattened parameters trained through backward(); returns (params, opt), the executions, the handle."""
    params = [torch.nn.Parameter(x.clone()) for x in init]
    handle = dt.flatten_parameters(params, reattach_grads=reattach_grads)
    opt = getattr(dt, name)(groups(params) if groups else params, **kwargs, **options)
    executions = []
    for k, g in enumerate(grads):
        opt.zero_grad(set_to_none=set_to_none)
        sum((p * gi).sum() for p, gi in zip(params, g) if gi is not None).backward()
        if hook is not None:
            hook(k, params, opt, handle)
        opt.step()
        executions.append(opt.execution)
    return (params, opt), executions, handle


def expect_direct(opt, executions, count):
    """From the second step on (the first creates the state on the reference path) every step ran in place."""
    if getattr(opt, "_needs_leaves", False) or opt.spec.random_seed is not None:
        # a spec that reduces inside a parameter, or draws random numbers (NoisySGD): always the reference path
        assert all(e.path == "reference" for e in executions)
        return
    assert executions[0].path == "reference"
    for k, e in enumerate(executions[1:], 1):
        assert e.direct == count and e.reason == "", (k, e)


# the whole zoo on both paths; the extra stateful options on the flat path only (compile time)
ZOO_CASES = [(n, kw, path) for path in PATHS for n, kw in (FLAT_CONFIGS if path == "flat" else CONFIGS)]


@pytest.mark.parametrize("name,kwargs,path", ZOO_CASES, ids=[f"{p}-{n}-{i}" for i, (n, _, p) in enumerate(ZOO_CASES)])
def test_flat_parameters_equal_the_reference_on_the_zoo(name, kwargs, path):
    init, grads = problem(LAYOUT)
    try:
        ref = reference(name, kwargs, init, grads)
    except ValueError as err:  # an optimizer for matrices only (its check_params says so): matrices
        assert "parameter" in str(err)
        init, grads = problem(LAYOUT_2D)
        ref = reference(name, kwargs, init, grads)
    got, executions, _ = flat(name, kwargs, init, grads, **PATHS[path])
    expect_direct(got[1], executions, len(init))
    assert_same(ref, got)


def _model(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.Tanh(), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3)).double()


@pytest.mark.parametrize("path", PATHS)
def test_a_module_trains_and_round_trips_its_state_dict(path):
    """A model flattened in place trains as its unflattened copy does (default zero_grad, i.e. set_to_none=True);
    model.state_dict() and load_state_dict (which copies into the views) keep the layout; training continues
    from checkpoints exactly as the reference does."""
    x, y = torch.randn(32, 6, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
    model, ref_model = _model(), _model()
    handle = dt.flatten_parameters(model)
    assert all(type(p) is torch.nn.Parameter and p.is_leaf for p in model.parameters())
    assert len(handle.buffers) == 1 and handle.buffers[0].data.numel() == sum(p.numel() for p in model.parameters())
    opt = dt.AdamW(model.parameters(), lr=1e-2, **PATHS[path])
    ref = dt.AdamW(ref_model.parameters(), lr=1e-2, flat=False)

    def train(m, o, steps):
        for _ in range(steps):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            o.step()

    train(model, opt, 4)
    train(ref_model, ref, 4)
    assert opt.execution.direct == 6 and opt.execution.reason == ""
    assert_same((list(ref_model.parameters()), ref), (list(model.parameters()), opt))
    grads = [p.grad for p in model.parameters()]
    assert all(g.untyped_storage().data_ptr() == handle.buffers[0].grad.untyped_storage().data_ptr() for g in grads)

    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    fresh = _model(seed=1)
    fresh_handle = dt.flatten_parameters(fresh)
    fresh.load_state_dict(saved["model"])
    assert fresh_handle.broken() == []  # load_state_dict copied into the views
    fresh_opt = dt.AdamW(fresh.parameters(), lr=1e-2, **PATHS[path])
    fresh_opt.load_state_dict(saved["opt"])
    model.load_state_dict(saved["model"])  # in place, into the flattened model itself
    assert handle.broken() == []
    for m, o in ((model, opt), (fresh, fresh_opt)):
        train(m, o, 3)
        assert o.execution.direct == 6 and o.execution.reason == ""
    train(ref_model, ref, 3)
    assert_same((list(ref_model.parameters()), ref), (list(model.parameters()), opt))
    assert_same((list(ref_model.parameters()), ref), (list(fresh.parameters()), fresh_opt))


@pytest.mark.parametrize("set_to_none", [True, False])
def test_zero_grad_both_ways(set_to_none):
    init, grads = problem(LAYOUT)
    got, executions, _ = flat("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads, set_to_none=set_to_none)
    expect_direct(got[1], executions, len(LAYOUT))
    assert_same(reference("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads), got)


def test_the_hook_zeroes_a_stale_piece_and_the_whole_buffer_once(monkeypatch):
    """A gradient set to None leaves its piece of the flat gradient buffer holding the old values; backward must
    accumulate into a zeroed piece. Expected gradients: sums of the backward passes' exact gradients (Σ p·c has
    gradient c). Some held, one None: that piece alone is zeroed (the held ones keep accumulating). All None
    (zero_grad(set_to_none=True)): one kernel zeroes the whole buffer at the first hook of the backward, and a
    parameter the backward does not reach stays None."""
    params = [torch.nn.Parameter(torch.randn(n, dtype=torch.float64)) for n in (3, 4, 5)]
    handle = dt.flatten_parameters(params)
    c = [[torch.randn(p.shape, dtype=torch.float64) for p in params] for _ in range(3)]

    def backward(k, which=(0, 1, 2)):
        sum((params[i] * c[k][i]).sum() for i in which).backward()

    backward(0)
    params[1].grad = None
    backward(1)
    for i, expected in enumerate([c[0][0] + c[1][0], c[1][1], c[0][2] + c[1][2]]):
        assert torch.equal(params[i].grad, expected), i
    zeros = []
    real_zero = torch.Tensor.zero_
    monkeypatch.setattr(torch.Tensor, "zero_", lambda t: zeros.append(t.numel()) or real_zero(t))
    for p in params:
        p.grad = None
    backward(2, which=(0, 2))
    assert zeros == [3 + 4 + 5]  # the whole buffer, once
    assert torch.equal(params[0].grad, c[2][0]) and params[1].grad is None and torch.equal(params[2].grad, c[2][2])
    assert handle.broken() == []


def test_without_the_hook_set_to_none_falls_back_and_handle_zero_grad_restores():
    """reattach_grads=False: zero_grad(set_to_none=True) lets backward allocate fresh gradients; the optimizer
    sees it, gathers them (same numbers) and says why; handle.zero_grad() brings the flat gradients back."""
    init, grads = problem(LAYOUT, steps=6)

    def hook(k, params, opt, handle):
        if k == 4:  # after this step's backward: copy the fresh gradients into the flat views, attach them
            fresh = [p.grad.clone() for p in params]
            handle.zero_grad()
            for p, g in zip(params, fresh):
                p.grad.add_(g)

    got, executions, _ = flat("Adam", {"lr": 1e-2}, init, grads, reattach_grads=False, hook=hook)
    for e in executions[1:4]:  # direct 1: the 300 x 300 tensor, a bucket of its own, stepped where its gradient is
        assert e.direct == 1 and "its gradient is not its view of the flat gradient buffer" in e.reason, e
    assert executions[4].direct == len(LAYOUT) and executions[4].reason == ""
    assert executions[5].direct == 1  # set_to_none=True again, no hook
    assert_same(reference("Adam", {"lr": 1e-2}, init, grads), got)


@pytest.mark.parametrize("path", PATHS)
def test_a_param_group_split_gives_one_direct_bucket_per_group(path):
    init, grads = problem(LAYOUT)

    def groups(params):
        return [{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}]

    got, executions, _ = flat("Adam", {"lr": 1e-2}, init, grads, groups=groups, **PATHS[path])
    expect_direct(got[1], executions, len(LAYOUT))
    assert [bucket.direct for bucket in got[1]._flat.buckets()] == [True, True]
    assert_same(reference("Adam", {"lr": 1e-2}, init, grads, groups=groups), got)


@pytest.mark.parametrize("path", PATHS)
def test_a_parameter_without_gradient_in_the_middle(path):
    """A parameter left out of the loss keeps gradient None (set_to_none): the run splits around it, it is
    not stepped, and every other parameter is still stepped in place. Back in the loss, it has taken fewer
    steps than its neighbours (another step count, so another bucket): a bucket of its own, still in place."""
    init, grads = problem(LAYOUT, steps=6)
    for k in (2, 3):
        grads[k][2] = None
    got, executions, _ = flat("MetaAdam", {"lr": 1e-2}, init, grads, **PATHS[path])
    assert [e.direct for e in executions] == [0, 5, 4, 4, 5, 5]
    assert all(e.reason == "" for e in executions[1:])
    assert [sorted(b.direct for b in got[1]._flat.buckets())] == [[False, True, True]]  # runs 0-1 and 3-4, then 2
    assert_same(reference("MetaAdam", {"lr": 1e-2}, init, grads), got)


@pytest.mark.parametrize("path", PATHS)
def test_mixed_dtypes_give_one_buffer_per_dtype(path):
    init, grads = problem(LAYOUT)
    dtypes = [torch.float32, torch.float64, torch.float32, torch.float64, torch.float32]
    init = [x.to(d) for x, d in zip(init, dtypes)]
    grads = [[g.to(d) for g, d in zip(step, dtypes)] for step in grads]
    got, executions, handle = flat("Adam", {"lr": 1e-2}, init, grads, **PATHS[path])
    assert [(b.dtype, len(b.params)) for b in handle.buffers] == [(torch.float32, 3), (torch.float64, 2)]
    # the parameters of a dtype are adjacent in their buffer but not in the param group's order: runs need
    # neighbours in the group, so here they are gathered (and say so); in dtype order they are in place
    assert executions[-1].direct == 1 and "gathered: no neighbour in its param group" in executions[-1].reason  # 1: 300x300
    assert_same(reference("Adam", {"lr": 1e-2}, init, grads), got, atol=1e-6)

    def by_dtype(params):
        return [params[0], params[2], params[4], params[1], params[3]]

    got, executions, _ = flat("Adam", {"lr": 1e-2}, init, grads, groups=by_dtype, **PATHS[path])
    expect_direct(got[1], executions, len(LAYOUT))
    assert_same(reference("Adam", {"lr": 1e-2}, init, grads, groups=by_dtype), got, atol=1e-6)


def test_what_breaks_the_layout_is_detected_and_gathered(checks):
    """A parameter whose data is replaced (param.data = ..., what module.to() to another device does) or
    whose gradient is assigned by hand leaves the in-place path at the next step; the numbers stay right."""
    init, grads = problem(LAYOUT, steps=7)

    def hook(k, params, opt, handle):
        if k == 3:
            params[4].data = params[4].data.clone()  # moved out of the buffer (the last one: the rest stays a run)
        if k == 5:
            params[1].grad = params[1].grad.clone()  # a fresh gradient tensor for the second one
        if k == 6:
            params[0].grad.data = params[0].grad.data.clone()  # the same gradient object, moved

    got, executions, handle = flat("Adam", {"lr": 1e-2}, init, grads, hook=hook)
    # step 5: parameter 0 has no neighbour left (a run needs two), parameters 2 and 3 are a run; step 6:
    # zero_grad(set_to_none=True) and the hook gave parameter 1 its flat gradient view back, parameter 0's moved
    # step 3: parameter 4 (moved) is a bucket of its own, stepped in place where it now is (direct, and named);
    # step 5: parameters 0, 1 and 4 have the same bucket key and are gathered into one bucket
    assert [e.direct for e in executions] == [0, 5, 5, 5, 5, 2, 3]
    assert "parameter 4 of param group 0: its data is no longer its view" in executions[3].reason
    assert "parameter 1 of param group 0: its gradient is not its view" in executions[5].reason
    assert "parameter 0 of param group 0: its gradient is not its view" in executions[6].reason
    assert [why for _, why in handle.broken()] == ["gradient replaced", "data replaced"]
    assert_same(reference("Adam", {"lr": 1e-2}, init, grads), got)


def test_an_in_place_step_bumps_the_version_counters():
    """As with torch.optim, stepping between forward and backward is caught by autograd."""
    model = _model()
    dt.flatten_parameters(model)
    opt = dt.SGD(model.parameters(), lr=1e-2)
    x = torch.randn(4, 6, dtype=torch.float64)
    for _ in range(2):
        opt.zero_grad()
        model(x).sum().backward()
        opt.step()
    assert opt.execution.direct == 6
    loss = model(x).sum()
    opt.step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_what_is_flattened():
    """Modules keep their parameters (same objects, leaves, shapes, values); tied weights once; complex and
    frozen parameters, and a second flatten of the same parameters, behave as documented."""
    tied = torch.nn.Linear(4, 4)
    model = torch.nn.ModuleDict({"a": tied, "b": tied, "c": torch.nn.Linear(4, 2)})
    model.c.bias.requires_grad_(False)
    z = torch.nn.Parameter(torch.ones(3, dtype=torch.complex64))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = [id(p) for p in model.parameters()]
    handle = dt.flatten_parameters([*model.parameters(), z])
    assert [id(p) for p in model.parameters()] == ids and len(handle) == 4  # z left as it is
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert handle.buffers[0].data.numel() == 4 * 4 + 4 + 4 * 2 + 2
    assert dt.flatten_parameters(model).params == []  # already flattened: left alone
    torch.autograd.grad(model.c(torch.ones(1, 4)).sum(), [model.c.weight])  # fills no .grad
    assert all(p.grad is None for p in model.parameters())
    model.c(torch.ones(1, 4)).sum().backward()
    assert model.c.bias.grad is None and model.c.weight.grad is not None
    assert model.c.weight.grad.data_ptr() == handle.buffers[0].grad.data_ptr() + (4 * 4 + 4) * 4  # its flat view
    copied = copy.deepcopy(model)  # a deep copy has ordinary parameters of its own
    assert copied.c.weight.data_ptr() != model.c.weight.data_ptr()
    handle.remove()
    assert dt.flatten_parameters(model).params != []  # released: can be flattened again


# ----------------------------------------------------------------------------------------------
# the steady-state check of a flat-parameter plan (FlatPlan.arm / FlatPlan.holds): whatever changes what
# the plan was built for still rebuilds it, proven equal to the reference path, parameters and state


def both(name, kwargs, init, grads, hook, groups=None, **options):
    """The reference path on ordinary parameters (gradients assigned) and flattened parameters trained through
    ``zero_grad()`` (set_to_none=True) and ``backward()``, with ``hook(k, params, opt)`` before step k in both
    (it may return a new optimizer). Returns ``(reference, flat run, the flat run's executions and plans)``."""
    runs = []
    for flattened in (False, True):
        params = [torch.nn.Parameter(x.clone()) for x in init]
        if flattened:
            dt.flatten_parameters(params)
        opt = getattr(dt, name)(groups(params) if groups else params, **kwargs, **(options if flattened else {"flat": False}))
        seen = []
        for k, g in enumerate(grads):
            if flattened:
                opt.zero_grad()
                for p in params:  # also those no param group holds yet (add_param_group)
                    p.grad = None
                sum((p * gi).sum() for p, gi in zip(params, g) if gi is not None).backward()
            else:
                for p, gi in zip(params, g):
                    p.grad = None if gi is None else gi.clone()
            opt = hook(k, params, opt) or opt
            opt.step()
            seen.append((opt.execution, getattr(opt, "_flat", None)))
        runs.append(((params, opt), seen))
    (ref, _), (got, seen) = runs
    return ref, got, seen


def rebuilt(seen):
    """The steps (from the third on) after which the flat plan is another object than the step before."""
    return [k for k in range(2, len(seen)) if seen[k][1] is not seen[k - 1][1]]


def test_the_steady_state_skips_the_full_check(monkeypatch, checks):
    """Once armed, a flat-parameter plan is confirmed by its snapshot: plan_key and FlatPlan.current are not
    called again while nothing changes (zero_grad(set_to_none=True) and backward() included)."""
    from dynopt._backends import torch_optim

    calls = []
    full_key = torch_optim.plan_key
    monkeypatch.setattr(torch_optim, "plan_key", lambda *a: calls.append(1) or full_key(*a))
    init, grads = problem(LAYOUT, steps=6)
    ref, got, seen = both("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads, lambda k, params, opt: None)
    assert len(calls) == 2 and got[1]._flat.snapshot is not None  # step 0: no state yet, step 1: built; 2-5 held
    assert rebuilt(seen) == [] and all(e.direct == len(LAYOUT) for e, _ in seen[1:])
    assert_same(ref, got)


@pytest.mark.parametrize("path", PATHS)
def test_a_gradient_set_to_none_or_replaced_rebuilds(path, checks):
    """After backward: a gradient set to None (that parameter is not stepped; back, it has taken fewer steps, so it
    is a bucket of its own, still in place and still checked by the snapshot), then a one-element gradient
    replaced by an equal copy (compared as an object, not a value: the plan is rebuilt and steps the copy)."""
    layout = [(7, 3), (1,), (5,), (2, 2)]
    init, grads = problem(layout, steps=10)

    def hook(k, params, opt):
        if k == 3:
            params[2].grad = None
        if k == 6:
            params[1].grad = params[1].grad.clone()

    ref, got, seen = both("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads, hook, **PATHS[path])
    assert rebuilt(seen) == [3, 4, 6, 7]  # 7: zero_grad() and backward() gave parameter 1 its flat view back
    assert [e.direct for e, _ in seen[1:]] == [4, 4, 3, 4, 4, 1, 4, 4, 4]  # 6: only parameter 2 (a bucket of its own)
    assert seen[5][1].snapshot is not None and seen[9][1].snapshot is not None
    assert_same(ref, got)


def test_param_group_changes_rebuild_only_when_the_plan_depends_on_them(checks):
    """An lr change (a value) keeps the plan; momentum set to a literal 0 (the traced structure), fused switched on
    and a parameter list reordered in place (the run breaks: gathered) each rebuild it."""
    init, grads = problem(LAYOUT, steps=8)

    def hook(k, params, opt):
        group = opt.param_groups[0]
        if k == 2:
            group["lr"] = 3e-3
        if k == 3:
            group["momentum"] = 0.0
        if k == 4 and opt.defaults["flat"]:
            group["fused"] = True
        if k == 6:
            group["params"][0], group["params"][1] = group["params"][1], group["params"][0]

    ref, got, seen = both("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads, hook)
    assert rebuilt(seen) == [3, 4, 6]
    assert [e.path for e, _ in seen[2:]] == ["flat", "flat", "fused", "fused", "fused", "fused"]
    assert seen[6][0].direct == len(LAYOUT) - 2 and "gathered" in seen[6][0].reason
    assert_same(ref, got)


def test_lr_scheduler_load_state_dict_and_add_param_group(checks):
    """A scheduler changing lr every step keeps the plan; load_state_dict and add_param_group rebuild it."""
    init, grads = problem(LAYOUT, steps=9)
    saved, schedulers = {}, {}

    def groups(params):
        return params[:3]

    def hook(k, params, opt):
        key = id(opt)
        if k == 0:
            schedulers[key] = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.8 ** i)
        elif k <= 6:
            schedulers[key].step()
        if k == 2:
            saved[key] = copy.deepcopy(opt.state_dict())
        if k == 4:
            opt.load_state_dict(saved[key])
        if k == 6:
            opt.add_param_group({"params": params[3:], "lr": 3e-3})

    ref, got, seen = both("Adam", {"lr": 1e-2}, init, grads, hook, groups=groups)
    assert rebuilt(seen) == [4, 6, 7]  # 6: add_param_group, whose first step of the new group is the reference path
    assert [e.path for e, _ in seen] == ["reference", "flat", "flat", "flat", "flat", "flat", "reference", "flat", "flat"]
    assert seen[-1][0].direct == len(LAYOUT)
    assert_same(ref, got)


@pytest.mark.parametrize("path", PATHS)
def test_a_replaced_state_entry_rebuilds(path, checks):
    """A state entry replaced by hand (a buffer, a step counter) is what the optimizer steps from then on."""
    init, grads = problem(LAYOUT, steps=6)

    def hook(k, params, opt):
        if k == 3:
            opt.state[params[0]]["momentum_buffer"] = opt.state[params[0]]["momentum_buffer"].clone()
            opt.state[params[2]]["step"] = opt.state[params[2]]["step"].clone()

    ref, got, seen = both("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads, hook, **PATHS[path])
    assert rebuilt(seen) == [3]
    assert all(e.direct == len(LAYOUT) for e, _ in seen[1:])
    assert_same(ref, got)
    assert float(got[1].state[got[0][2]]["step"]) == len(grads)


def test_reflattening_rebuilds(checks):
    """Releasing the parameters (FlatParameters.remove) changes the generation: rebuilt. They are still next to
    each other in memory (stepped in place), until zero_grad() and backward() give them fresh gradients."""
    init, grads = problem(LAYOUT, steps=5)
    handles = []

    def hook(k, params, opt):
        if k == 0 and params[0].grad.untyped_storage().data_ptr() == params[1].grad.untyped_storage().data_ptr():
            handles.append(torch_flat.torch_flat_params.home_of(params[0]).handle)
        if k == 3 and handles:
            handles[0].remove()

    ref, got, seen = both("Momentum", {"lr": 1e-2, "momentum": 0.9}, init, grads, hook)
    assert rebuilt(seen) == [3, 4] and len(handles) == 1
    assert seen[3][0].direct == len(LAYOUT) and seen[4][0].direct == 1  # 1: the 300 x 300 one, a bucket of its own
    assert_same(ref, got)


@pytest.mark.parametrize("path", PATHS)
def test_a_hyperparameter_list_changed_in_place_is_seen(path):
    """The plan caches a group's hyperparameter inputs while the group holds the very same values; a list changed
    in place stays the same object, so lists are never cached: betas set as a list and then changed in place
    give the reference path's numbers (which reads the group afresh at every step)."""
    init, grads = problem(LAYOUT, steps=6)

    def hook(k, params, opt):
        group = opt.param_groups[0]
        if k == 2:
            group["betas"] = [0.9, 0.999]
        if k == 4:
            group["betas"][0] = 0.5

    ref, got, seen = both("Adam", {"lr": 1e-2}, init, grads, hook, **PATHS[path])
    assert all(e.direct == len(LAYOUT) for e, _ in seen[1:])
    assert_same(ref, got)
