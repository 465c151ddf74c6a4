"""Conformance with the inputs torch declares for its own optimizers.

The option grids and error inputs come from the *installed* torch
(``torch.testing._internal.common_optimizers``: ``optim_db``, ``optim_inputs_func_sgd``,
``optim_inputs_func_rmsprop``, ``optim_inputs_func_adam`` and the matching
``optim_error_inputs_func_*``, for device "cpu" and float64); nothing is copied here. Each torch
config is translated to dynopt's names: ``SGD(nesterov=True)`` → ``Nesterov``,
``SGD(momentum≠0)`` → ``Momentum``, ``SGD(momentum=0)`` → ``SGD``, ``RMSprop`` → ``RMSprop``,
``Adam`` → ``Adam``; every other option keeps its name.

For every config that maps onto dynopt's hyperparameters (float64, reference: the torch.optim
class with torch's own kwargs):

* parity over 25 steps, max |Δ| / max |θ| ≤ 1e-12 per tensor;
* ``state_dict`` round trip through ``torch.save`` / ``torch.load(weights_only=True)``, then
  lockstep stepping with the original, bit for bit;
* loading an older ``state_dict``: the flags torch lists as added after each optimizer's first
  release (``OptimizerInfo.not_og_supported_flags``) and dynopt's own ``skip_nonfinite`` are
  deleted from the saved param groups before loading; lockstep, bit for bit;
* a second param group at lr 1e-28 does not move (the first matches torch);
* steps with all-None gradients (nothing moves, the state is unchanged, as in torch) and with
  all-zero gradients (weight decay and momentum still act: parity with torch);
* ``copy.deepcopy`` of model and optimizer together continues in lockstep, bit for bit;
* printing: the class name, then every ``key: value`` line of a key both optimizers have shows
  the same value as torch's (torch writes a default weight_decay as the int 0, dynopt as 0.0).

Error inputs: each construction error torch declares must raise the same exception type (or
warning category) in dynopt; an error caused by a param group is torch's own (dynopt inherits it)
and must match torch's message pattern, an error caused by a hyperparameter must name that
argument (its name or label) and show its value. The culprit argument is found by asking torch:
the kwarg whose removal lets torch construct the optimizer.

Skipped, with reasons (``SKIPPED_OPTIONS`` below; a test checks that every config of the grids
is either run or skipped for one of these reasons):

* ``amsgrad`` (Adam "amsgrad"): dynopt's Adam has no AMSGrad variant;
* ``capturable`` (CUDA-only configs, absent on CPU): CUDA-graph capture is not supported;
* ``foreach``, ``fused``, ``differentiable`` (error input "lr as Tensor doesn't work with foreach
  & not capturable", "betas[0] as a Tensor is not supported ..."): implementation switches of
  torch.optim; dynopt has one implementation, multi-tensor, and no such flags. torch's grids
  leave these "global-cliquey" flags out on purpose; the variants torch derives from the grid
  with them are not run;
* ``decoupled_weight_decay``: dynopt's weight decay is torch's coupled L2 (AdamW is not in the zoo);
* complex parameters (torch tests them with these same configs): dynopt refuses complex
  parameters with a TypeError (``tests/test_validation.py``).

Configs run (torch 2.13.0): SGD 5, Momentum 3, Nesterov 1, RMSprop 8, Adam 4; error inputs run:
SGD 7, RMSprop 7, Adam 10 (``test_config_counts`` asserts each count is > 0).

torch's test helpers import ``expecttest`` (a torch development dependency used only by their
TestCase base class). When it is not installed, an empty stand-in is registered for the import and
removed afterwards; the import's side effects on the process (a Hypothesis profile, frozen
``torch.backends`` flags) are undone.
"""

from __future__ import annotations

import copy
import io
import re
import sys
import types
import unittest
import warnings

import pytest
import torch

import dynopt.torch

torch.set_num_threads(1)


def _torch_test_inputs():
    """torch's ``optim_db`` and ``OptimizerErrorEnum``, imported without lasting side effects."""
    import hypothesis

    stub = None
    if "expecttest" not in sys.modules:
        try:
            import expecttest  # noqa: F401
        except ImportError:
            stub = types.ModuleType("expecttest")
            stub.TestCase = unittest.TestCase
            sys.modules["expecttest"] = stub
    profile = hypothesis.settings.get_current_profile_name()
    mutable = not torch.backends.flags_frozen()
    try:
        from torch.testing._internal import common_optimizers
    finally:
        hypothesis.settings.load_profile(profile)
        setattr(torch.backends, "__allow_nonbracketed_mutation_flag", mutable)
        if stub is not None and sys.modules.get("expecttest") is stub:
            del sys.modules["expecttest"]
    return common_optimizers.optim_db, common_optimizers.OptimizerErrorEnum


OPTIM_DB, ERROR_ON = _torch_test_inputs()
INFOS = {info.name: info for info in OPTIM_DB if info.name in ("SGD", "RMSprop", "Adam")}
DTYPE = torch.float64

SKIPPED_OPTIONS = {
    "amsgrad": "dynopt's Adam has no AMSGrad variant",
    "capturable": "CUDA-graph capture is not supported",
    "foreach": "an implementation switch of torch.optim; dynopt has one (multi-tensor) implementation",
    "fused": "an implementation switch of torch.optim; dynopt has one (multi-tensor) implementation",
    "differentiable": "an implementation switch of torch.optim; dynopt has one (multi-tensor) implementation",
    "decoupled_weight_decay": "dynopt's weight decay is torch's coupled L2",
}


def translate(torch_name: str, kwargs: dict) -> tuple[str, dict]:
    """torch.optim class and kwargs -> dynopt.torch class name and kwargs; KeyError names a skipped option."""
    for option in kwargs:
        if option in SKIPPED_OPTIONS and kwargs[option] is not False:
            raise KeyError(option)
    kwargs = {k: v for k, v in kwargs.items() if k not in SKIPPED_OPTIONS}
    if torch_name != "SGD":
        return torch_name, kwargs
    if kwargs.pop("nesterov", False):
        return "Nesterov", kwargs
    if kwargs.get("momentum", 0) != 0:
        return "Momentum", kwargs
    kwargs.pop("momentum", None)
    kwargs.pop("dampening", None)  # torch ignores dampening without momentum
    return "SGD", kwargs


CASES, SKIPPED = [], []
for _name, _info in INFOS.items():
    for _input in _info.optim_inputs_func("cpu", DTYPE):
        try:
            _mine, _kwargs = translate(_name, _input.kwargs)
        except KeyError as _option:
            SKIPPED.append((_name, _input.desc, _option.args[0]))
            continue
        CASES.append(pytest.param(_name, _input.kwargs, _mine, _kwargs, id=f"{_mine}-{_name}-{_input.desc}".replace(" ", "_")))

ERROR_CASES, SKIPPED_ERRORS = [], []
for _name, _info in INFOS.items():
    for _error in _info.optim_error_inputs_func("cpu", DTYPE):
        _input = _error.optimizer_error_input
        try:
            _mine, _ = translate(_name, _input.kwargs)
        except KeyError as _option:
            SKIPPED_ERRORS.append((_name, _input.desc, _option.args[0]))
            continue
        ERROR_CASES.append(pytest.param(_name, _mine, _error, id=f"{_mine}-{_input.desc}".replace(" ", "_")))


def test_config_counts():
    """Every config of torch's grids is run or skipped for a listed reason, and each optimizer runs some."""
    ran = {}
    for case in CASES:
        ran[case.values[2]] = ran.get(case.values[2], 0) + 1
    assert set(ran) == {"SGD", "Momentum", "Nesterov", "RMSprop", "Adam"} and all(n > 0 for n in ran.values()), ran
    errors = {}
    for case in ERROR_CASES:
        errors[case.values[0]] = errors.get(case.values[0], 0) + 1
    assert set(errors) == set(INFOS) and all(n > 0 for n in errors.values()), errors
    for _, _, option in SKIPPED + SKIPPED_ERRORS:
        assert option in SKIPPED_OPTIONS
    assert {s[1] for s in SKIPPED} == {"amsgrad"}  # on CPU; the docstring lists it
    print(f"\nconfigs run {ran}, skipped {SKIPPED}; error inputs run {errors}, skipped {len(SKIPPED_ERRORS)}")


# ----------------------------------------------------------------------------- helpers


def model(seed=0):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)).to(DTYPE)
    data = torch.randn(16, 4, dtype=DTYPE), torch.randn(16, 1, dtype=DTYPE)
    return net, data


def step(net, data, opt, kind="grad"):
    """One step with real gradients, all-None gradients or all-zero gradients."""
    opt.zero_grad(set_to_none=True)
    if kind == "grad":
        x, y = data
        ((net(x) - y) ** 2).mean().backward()
    elif kind == "zero":
        for p in net.parameters():
            p.grad = torch.zeros_like(p)
    opt.step()


def params_of(net):
    return [p.detach().clone() for p in net.parameters()]


def assert_close(a, b, rtol=1e-12):
    for x, y in zip(a, b, strict=True):
        assert x.dtype == y.dtype and x.shape == y.shape
        scale = float(y.abs().max())
        assert float((x - y).abs().max()) <= rtol * scale, f"{float((x - y).abs().max())} > {rtol} * {scale}"


def assert_equal(a, b):
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)


def build(name, kwargs, params):
    return getattr(dynopt.torch, name)(params, **copy.deepcopy(kwargs))


def reference(torch_name, kwargs, params):
    return INFOS[torch_name].optim_cls(params, **copy.deepcopy(kwargs))


def both(torch_name, torch_kwargs, mine, kwargs, schedule, groups=None):
    """Run dynopt and torch.optim through the same schedule of step kinds; their parameters."""
    results = []
    for make in (lambda ps: build(mine, kwargs, ps), lambda ps: reference(torch_name, torch_kwargs, ps)):
        net, data = model()
        opt = make(groups(net) if groups else net.parameters())
        for kind in schedule:
            step(net, data, opt, kind)
        results.append(params_of(net))
    return results


def state_snapshot(opt):
    return {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()}


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        assert_equal(list(a[key].values()), list(b[key].values()))


# ----------------------------------------------------------------------------- per-config checks


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_parity_over_25_steps(torch_name, torch_kwargs, mine, kwargs):
    ours, theirs = both(torch_name, torch_kwargs, mine, kwargs, ["grad"] * 25)
    assert_close(ours, theirs)
    assert not all(torch.equal(a, b) for a, b in zip(ours, params_of(model()[0])))  # it moved


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_state_dict_round_trip_through_weights_only_load(torch_name, torch_kwargs, mine, kwargs):
    net, data = model()
    opt = build(mine, kwargs, net.parameters())
    for _ in range(5):
        step(net, data, opt)
    twin = copy.deepcopy(net)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = build(mine, {**kwargs, "lr": 0.5}, twin.parameters())  # lr comes back from the state_dict
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    assert str(loaded.param_groups[0]["lr"]) == str(opt.param_groups[0]["lr"])
    for _ in range(5):
        step(net, data, opt)
        step(twin, data, loaded)
        assert_equal(params_of(net), params_of(twin))
    ours, theirs = opt.state_dict()["state"], loaded.state_dict()["state"]
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert ours[key].keys() == theirs[key].keys()
        assert_equal(list(ours[key].values()), list(theirs[key].values()))


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_loads_an_older_state_dict(torch_name, torch_kwargs, mine, kwargs):
    net, data = model()
    opt = build(mine, kwargs, net.parameters())
    for _ in range(5):
        step(net, data, opt)
    old = copy.deepcopy(opt.state_dict())
    newer = set(INFOS[torch_name].not_og_supported_flags) | {"skip_nonfinite"}
    deleted = []
    for group in old["param_groups"]:
        for key in newer & set(group):
            del group[key]
            deleted.append(key)
    assert "maximize" in deleted and "skip_nonfinite" in deleted
    twin = copy.deepcopy(net)
    loaded = build(mine, kwargs, twin.parameters())
    loaded.load_state_dict(old)
    for key in ("maximize", "skip_nonfinite"):
        assert loaded.param_groups[0][key] == opt.param_groups[0][key]
    for _ in range(5):
        step(net, data, opt)
        step(twin, data, loaded)
        assert_equal(params_of(net), params_of(twin))


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_group_at_lr_1e_28_does_not_move(torch_name, torch_kwargs, mine, kwargs):
    def groups(net):
        return [{"params": net[0].parameters()}, {"params": net[2].parameters(), "lr": 1e-28}]

    ours, theirs = both(torch_name, torch_kwargs, mine, kwargs, ["grad"] * 10, groups)
    assert_close(ours, theirs)
    start = params_of(model()[0])
    assert_equal(ours[2:], start[2:])
    assert not torch.equal(ours[0], start[0])


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_all_none_gradients_change_nothing(torch_name, torch_kwargs, mine, kwargs):
    ours, theirs = both(torch_name, torch_kwargs, mine, kwargs, ["none", "grad", "grad", "none", "none", "grad"])
    assert_close(ours, theirs)
    net, data = model()
    opt = build(mine, kwargs, net.parameters())
    step(net, data, opt, "none")
    assert len(opt.state) == 0 and all(torch.equal(a, b) for a, b in zip(params_of(net), params_of(model()[0])))
    step(net, data, opt)
    before, snapshot = params_of(net), state_snapshot(opt)
    step(net, data, opt, "none")
    assert_equal(params_of(net), before)
    assert_same_state(state_snapshot(opt), snapshot)


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_all_zero_gradients_match_torch(torch_name, torch_kwargs, mine, kwargs):
    """Zero gradients are still a step: weight decay and momentum act, the step counter advances."""
    ours, theirs = both(torch_name, torch_kwargs, mine, kwargs, ["zero", "zero", "grad", "grad", "zero", "grad", "zero"])
    assert_close(ours, theirs)


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_deepcopy_continues_in_lockstep(torch_name, torch_kwargs, mine, kwargs):
    net, data = model()
    opt = build(mine, kwargs, net.parameters())
    for _ in range(3):
        step(net, data, opt)
    twin_net, twin_opt = copy.deepcopy((net, opt))
    assert type(twin_opt) is type(opt) and twin_opt.param_groups[0]["params"][0] is next(twin_net.parameters())
    for _ in range(4):
        step(net, data, opt)
        step(twin_net, data, twin_opt)
        assert_equal(params_of(net), params_of(twin_net))


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_printing_matches_torch(torch_name, torch_kwargs, mine, kwargs):
    net, _ = model()
    opt = build(mine, kwargs, net.parameters())
    ref = reference(torch_name, torch_kwargs, model()[0].parameters())
    text, ref_text = repr(opt), repr(ref)
    assert text.startswith(f"{mine} (\nParameter Group 0\n") and text.endswith(")")
    shared = sorted(set(opt.param_groups[0]) & set(ref.param_groups[0]) - {"params"})
    assert "lr" in shared and "weight_decay" in shared
    for key in shared:  # same values; torch's defaults write weight_decay as the int 0, dynopt's as 0.0
        mine_value, ref_value = opt.param_groups[0][key], ref.param_groups[0][key]
        assert f"    {key}: {mine_value}\n" in text and f"    {key}: {ref_value}\n" in ref_text
        assert type(mine_value) is type(ref_value) or mine_value == ref_value == 0, key
        assert str(mine_value) == str(ref_value) or mine_value == ref_value == 0, key


# ----------------------------------------------------------------------------- error inputs


def culprits(torch_name, kwargs, params):
    """The kwargs whose removal lets torch construct the optimizer: the arguments the error is about."""
    found = []
    for key in kwargs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                reference(torch_name, {k: v for k, v in kwargs.items() if k != key}, params)
        except Exception:
            continue
        found.append(key)
    return found


def sample_params():
    return [torch.nn.Parameter(torch.randn(2, dtype=DTYPE))]


@pytest.mark.parametrize("torch_name, mine, error", ERROR_CASES)
def test_declared_error_inputs(torch_name, mine, error):
    spec_input = error.optimizer_error_input
    kwargs = spec_input.kwargs
    _, translated = translate(torch_name, kwargs)
    params = spec_input.params if spec_input.params is not None else sample_params()
    assert error.error_on == ERROR_ON.CONSTRUCTION_ERROR  # the only kind torch declares for these on CPU

    if issubclass(error.error_type, Warning):
        for make in (lambda: reference(torch_name, kwargs, params), lambda: build(mine, translated, params)):
            with pytest.warns(error.error_type, match=error.error_regex):
                make()
        return

    with pytest.raises(error.error_type, match=error.error_regex):
        reference(torch_name, kwargs, params)  # torch itself, as declared
    with pytest.raises(error.error_type) as info:
        build(mine, translated, params)
    message = str(info.value)
    arguments = culprits(torch_name, kwargs, params)
    if not arguments:  # a param-group error: torch's own, inherited
        assert re.search(error.error_regex, message), message
        return
    spec = getattr(dynopt.torch, mine).spec
    hypers = {h.name: h for h in spec.hyperparams}
    for key in arguments:
        names = {key, hypers[key].label} - {""}
        assert any(n in message for n in names), (names, message)
        assert repr(kwargs[key]) in message, message
