"""Conformance with the inputs torch declares for its own optimizers.

The option grids and error inputs come from the *installed* torch
(``torch.testing._internal.common_optimizers``: ``optim_db``, each ``OptimizerInfo``'s
``optim_inputs_func`` and ``optim_error_inputs_func``, for device "cpu" and float64); nothing is
copied here. Every torch.optim optimizer that dynopt has (``TORCH_NAMES``) runs under its own name
(``torch.optim.SGD`` config → ``dynopt.torch.SGD``, every option keeps its name); the configs of
``SGD`` with momentum also run on the named ODE views, ``SGD(nesterov=True)`` → ``Nesterov`` and
``SGD(momentum≠0)`` → ``Momentum`` (their other options keep their names).

For every config (float64, reference: the torch.optim class with torch's own kwargs):

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
the kwarg whose removal lets torch construct the optimizer. An error torch declares at the first
step (Muon's and Adafactor's complex parameters) must be raised at the step by both, with torch's message.

Muon takes matrices only (``MATRICES_ONLY``): its model is the same without biases, and its
sample parameter for error inputs is a (2, 3) matrix.

Skipped, with reasons (``SKIPPED_OPTIONS`` below; a test checks that every config of the grids
is either run or skipped for one of these reasons):

* ``capturable`` (CUDA-only configs, absent on CPU): CUDA-graph capture is not supported
  (dynopt accepts ``capturable=False`` only);
* ``foreach``, ``fused``, ``differentiable`` (error inputs "lr as Tensor doesn't work with foreach
  & not capturable", "betas[0] as a Tensor is not supported ..."): restrictions of torch.optim's
  foreach implementation; dynopt accepts ``foreach`` and ignores it (every dynopt path computes the
  same numbers), so a Tensor lr with foreach=True is no error there. torch's grids leave these
  "global-cliquey" flags out on purpose; the variants torch derives from the grid with them are
  not run;
* complex parameters (torch tests them with these same configs): covered against torch.optim by
  ``tests/test_interop.py``.

The reference for NAdam and ASGD keeps their 0-dim per-parameter state in float64
(``tests/torch_references.py``: torch.optim stepping under a float64 default dtype), where torch
otherwise rounds it to float32 (documented in their docstrings).

Configs run (torch 2.13.0): SGD 9 (+ Momentum 3, Nesterov 1 as views), Adam 5, AdamW 5, NAdam 7,
RAdam 6, Adamax 5, Adagrad 7, Adadelta 6, Rprop 5, ASGD 7, RMSprop 8, Muon 7, Adafactor 5; error inputs: 104 run
(Muon's 9 and Adafactor's 10 among them), skipped the 4 with ``foreach=True`` (``test_config_counts`` asserts each count is > 0 and prints them).

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
from torch_references import torch_class

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
TORCH_NAMES = ("SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "Adadelta", "Rprop", "ASGD", "RMSprop", "Muon", "Adafactor")
MATRICES_ONLY = {"Muon"}  # 2-D parameters only (torch raises for others): its model has no biases
INFOS = {info.name: info for info in OPTIM_DB if info.name in TORCH_NAMES}
DTYPE = torch.float64

SKIPPED_OPTIONS = {
    "capturable": "CUDA-graph capture is not supported",
    "foreach": "a restriction of torch.optim's foreach implementation; dynopt accepts foreach and ignores it",
    "fused": "an implementation switch of torch.optim (dynopt's fused=True compiles its own kernels)",
    "differentiable": "dynopt's step runs under torch.no_grad",
}


def translate(torch_name: str, kwargs: dict) -> tuple[str, dict]:
    """torch.optim class and kwargs -> the same dynopt.torch class and kwargs; KeyError names a skipped option."""
    for option in kwargs:
        if option in SKIPPED_OPTIONS and kwargs[option] is not False:
            raise KeyError(option)
    return torch_name, {k: v for k, v in kwargs.items() if k not in SKIPPED_OPTIONS}


def view(torch_name: str, kwargs: dict) -> tuple[str, dict] | None:
    """The named ODE view of a torch.optim.SGD config with momentum (Momentum or Nesterov), or None."""
    if torch_name != "SGD" or kwargs.get("momentum", 0) == 0:
        return None
    kwargs = dict(kwargs)
    return ("Nesterov" if kwargs.pop("nesterov", False) else "Momentum"), kwargs


CASES, SKIPPED = [], []
for _name, _info in INFOS.items():
    for _input in _info.optim_inputs_func("cpu", DTYPE):
        try:
            _mine, _kwargs = translate(_name, _input.kwargs)
        except KeyError as _option:
            SKIPPED.append((_name, _input.desc, _option.args[0]))
            continue
        for _class, _args in [(_mine, _kwargs)] + ([view(_name, _kwargs)] if view(_name, _kwargs) else []):
            CASES.append(pytest.param(_name, _input.kwargs, _class, _args, id=f"{_class}-{_name}-{_input.desc}".replace(" ", "_")))

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
    assert set(ran) == set(TORCH_NAMES) | {"Momentum", "Nesterov"} and all(n > 0 for n in ran.values()), ran
    errors = {}
    for case in ERROR_CASES:
        errors[case.values[0]] = errors.get(case.values[0], 0) + 1
    assert set(errors) == set(INFOS) and all(n > 0 for n in errors.values()), errors
    for _, _, option in SKIPPED + SKIPPED_ERRORS:
        assert option in SKIPPED_OPTIONS
    assert SKIPPED == []  # on CPU every config of the grids runs
    print(f"\nconfigs run {ran}, skipped {SKIPPED}; error inputs run {errors}, skipped {len(SKIPPED_ERRORS)}")


# ----------------------------------------------------------------------------- helpers


def model(seed=0, bias=True):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(4, 5, bias=bias), torch.nn.Tanh(), torch.nn.Linear(5, 1, bias=bias)).to(DTYPE)
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
    return torch_class(torch_name)(params, **copy.deepcopy(kwargs))  # NAdam's, ASGD's scalar state in float64


def both(torch_name, torch_kwargs, mine, kwargs, schedule, groups=None):
    """Run dynopt and torch.optim through the same schedule of step kinds; their parameters."""
    results = []
    for make in (lambda ps: build(mine, kwargs, ps), lambda ps: reference(torch_name, torch_kwargs, ps)):
        net, data = model(bias=torch_name not in MATRICES_ONLY)
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
    assert not all(torch.equal(a, b) for a, b in zip(ours, params_of(model(bias=torch_name not in MATRICES_ONLY)[0])))


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_state_dict_round_trip_through_weights_only_load(torch_name, torch_kwargs, mine, kwargs):
    net, data = model(bias=torch_name not in MATRICES_ONLY)
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
    net, data = model(bias=torch_name not in MATRICES_ONLY)
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
    # torch.optim.Muon has no maximize; torch.optim.Adafactor had it from its first release (not a newer flag)
    flags = [key for key in ("maximize", "skip_nonfinite") if key in opt.param_groups[0] and key in newer]
    assert "skip_nonfinite" in flags and set(flags) <= set(deleted)
    twin = copy.deepcopy(net)
    loaded = build(mine, kwargs, twin.parameters())
    loaded.load_state_dict(old)
    for key in flags:
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
    net = model(bias=torch_name not in MATRICES_ONLY)[0]
    start, first = params_of(net), len(list(net[0].parameters()))  # the parameters of the second group follow
    if torch_name == "Rprop":  # lr only sets the first step size, which step_sizes[0] then bounds from below
        assert all(not torch.equal(a, b) for a, b in zip(theirs[first:], start[first:]))
    else:
        assert_equal(ours[first:], start[first:])
    assert [torch.equal(a, b) for a, b in zip(ours, start)] == [torch.equal(a, b) for a, b in zip(theirs, start)]
    assert not torch.equal(ours[0], start[0])


@pytest.mark.parametrize("torch_name, torch_kwargs, mine, kwargs", CASES)
def test_all_none_gradients_change_nothing(torch_name, torch_kwargs, mine, kwargs):
    ours, theirs = both(torch_name, torch_kwargs, mine, kwargs, ["none", "grad", "grad", "none", "none", "grad"])
    assert_close(ours, theirs)
    bias = torch_name not in MATRICES_ONLY
    net, data = model(bias=bias)
    opt = build(mine, kwargs, net.parameters())
    step(net, data, opt, "none")
    assert len(opt.state) == 0 and all(torch.equal(a, b) for a, b in zip(params_of(net), params_of(model(bias=bias)[0])))
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
    net, data = model(bias=torch_name not in MATRICES_ONLY)
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
    net, _ = model(bias=torch_name not in MATRICES_ONLY)
    opt = build(mine, kwargs, net.parameters())
    ref = reference(torch_name, torch_kwargs, model(bias=torch_name not in MATRICES_ONLY)[0].parameters())
    text, ref_text = repr(opt), repr(ref)
    assert text.startswith(f"{mine} (\nParameter Group 0\n") and text.endswith(")")
    shared = sorted(set(opt.param_groups[0]) & set(ref.param_groups[0]) - {"params"})
    assert set(ref.param_groups[0]) - {"params"} <= set(opt.param_groups[0]), "dynopt's groups carry every key of torch's"
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


def sample_params(torch_name):
    shape = (2, 3) if torch_name in MATRICES_ONLY else (2,)
    return [torch.nn.Parameter(torch.randn(shape, dtype=DTYPE))]


@pytest.mark.parametrize("torch_name, mine, error", ERROR_CASES)
def test_declared_error_inputs(torch_name, mine, error):
    spec_input = error.optimizer_error_input
    kwargs = spec_input.kwargs
    _, translated = translate(torch_name, kwargs)
    params = spec_input.params if spec_input.params is not None else sample_params(torch_name)
    if error.error_on == ERROR_ON.STEP_ERROR:  # at the first step (Adafactor's, Muon's complex parameters)
        for make in (lambda: reference(torch_name, kwargs, params), lambda: build(mine, translated, params)):
            opt = make()
            with pytest.raises(error.error_type, match=error.error_regex):
                opt.step()
        return
    assert error.error_on == ERROR_ON.CONSTRUCTION_ERROR

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
