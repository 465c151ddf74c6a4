"""Drop-in use of ``dynopt.torch``'s torch.optim names (issue 12, part 1): signatures, torch's switches,
joint validation, sparse gradients, and the meta step wrapping every base.

Where the expected values come from: torch.optim itself (its signatures, its numbers, its exceptions),
run side by side with dynopt in float64; the numpy oracle for the meta step (torch and JAX must equal it).
The numbers over torch's option grids are tests/test_conformance_torch.py's and tests/test_parity.py's.
"""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt.optimizers import ZOO

torch.set_num_threads(1)

TORCH_NAMES = sorted(spec.name for spec in ZOO if hasattr(torch.optim, spec.name))
SWITCHES = {"foreach": None, "capturable": False, "differentiable": False, "fused": None}  # torch.optim's, with defaults


def _parameters(cls):
    return [p for p in inspect.signature(cls.__init__).parameters.values() if p.name not in ("self", "params")]


def test_the_torch_names_are_all_there():
    assert set(TORCH_NAMES) == {"Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD", "Muon", "NAdam", "RAdam", "RMSprop",
                                "Rprop", "SGD"}


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_signature_is_torch_optims(name):
    """torch's positional parameters (up to its first implementation switch) are dynopt's, in order and with the same
    defaults, so a positional call binds alike; every other argument of torch's exists with torch's default."""
    theirs, mine = _parameters(getattr(torch.optim, name)), _parameters(getattr(dynopt.torch, name))
    positional = []
    for p in theirs:
        if p.kind is not p.POSITIONAL_OR_KEYWORD or p.name in SWITCHES:
            break
        positional.append(p)
    mine_positional = [p for p in mine if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [p.name for p in mine_positional] == [p.name for p in positional]
    assert [p.default for p in mine_positional] == [p.default for p in positional]
    by_name = {p.name: p for p in mine}
    for p in theirs:
        assert p.name in by_name, f"{name} lacks torch's argument {p.name}"
        assert by_name[p.name].default == p.default, (p.name, by_name[p.name].default, p.default)


def test_a_positional_call_binds_as_in_torch():
    w = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = dynopt.torch.SGD([w], 0.1, 0.9, 0.0, 0.0, True)
    assert opt.defaults["momentum"] == 0.9 and opt.defaults["nesterov"] is True
    opt = dynopt.torch.Adam([w], 0.1, (0.8, 0.9), 1e-6, 0.1, True)
    assert opt.defaults["amsgrad"] is True and opt.defaults["maximize"] is False
    opt = dynopt.torch.RMSprop([w], 0.1, 0.9, 1e-6, 0.1, 0.5, True)
    assert opt.defaults["centered"] is True and opt.defaults["eps_in_sqrt"] is False
    with pytest.raises(TypeError):  # torch.optim.Adagrad's 7th positional argument is foreach, dynopt's switches are keywords
        dynopt.torch.Adagrad([w], 0.1, 0.0, 0.0, 0.0, 1e-10, None)


@pytest.mark.parametrize("foreach", [None, False, True])
def test_foreach_is_accepted_and_changes_nothing(foreach):
    runs = []
    for kwargs in ({}, {"foreach": foreach}):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
        opt = dynopt.torch.Adam([w], lr=0.1, amsgrad=True, **kwargs)
        for _ in range(5):
            w.grad = w.detach() ** 3
            opt.step()
        runs.append(w.detach().clone())
        assert opt.param_groups[0]["foreach"] is kwargs.get("foreach")
    assert torch.equal(*runs)


@pytest.mark.parametrize("switch", ["capturable", "differentiable"])
def test_capturable_and_differentiable_take_only_false(switch):
    w = torch.nn.Parameter(torch.ones(2))
    dynopt.torch.SGD([w], lr=0.1, **{switch: False})
    with pytest.raises(ValueError, match=f"Invalid {switch} value: True"):
        dynopt.torch.SGD([w], lr=0.1, **{switch: True})


@pytest.mark.parametrize("kwargs", [{"momentum": 0.0, "nesterov": True}, {"momentum": 0.9, "dampening": 0.1, "nesterov": True}])
def test_nesterov_needs_momentum_and_no_dampening_as_in_torch(kwargs):
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="Nesterov momentum requires"):
        torch.optim.SGD([w], lr=0.1, **kwargs)
    with pytest.raises(ValueError, match="Invalid nesterov value: True .*Nesterov momentum requires"):
        dynopt.torch.SGD([w], lr=0.1, **kwargs)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):  # the rule holds for the spec in every backend
        dynopt.jax.from_spec(dynopt.sgd)(0.1, **kwargs)  # (dynopt.jax.sgd is optax.sgd's, which has no such rule)
    opt = dynopt.torch.SGD([w], lr=0.1, momentum=0.9, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov momentum requires"):  # and for a param group
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "momentum": 0.0})


@pytest.mark.parametrize("etas", [(1.0, 0.5), (0.5, 1.0), (0.0, 1.2)])
def test_rprop_etas_must_straddle_one_as_in_torch(etas):
    w = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError):
        torch.optim.Rprop([w], etas=etas)
    with pytest.raises(ValueError, match=r"Invalid eta values: \(.*\)"):
        dynopt.torch.Rprop([w], etas=etas)


@pytest.mark.parametrize("name, kwargs", [("SGD", {"momentum": 0.9, "nesterov": True}), ("Adagrad", {"lr_decay": 0.1})])
def test_sparse_gradients_equal_torchs_sparse_path(name, kwargs):
    """An embedding with sparse gradients: torch.optim's sparse kernels are the reference; dynopt steps the dense form
    (rows without gradient keep their parameters and, for Adagrad, their sum)."""
    torch.manual_seed(0)
    runs = []
    for make in (getattr(torch.optim, name), getattr(dynopt.torch, name)):
        torch.manual_seed(0)
        emb = torch.nn.Embedding(10, 3, sparse=True).double()
        opt = make(emb.parameters(), lr=0.1, **kwargs)
        for k in range(6):
            opt.zero_grad()
            emb(torch.tensor([k % 4, (3 * k) % 7])).pow(2).sum().backward()
            assert emb.weight.grad.is_sparse
            opt.step()
        runs.append((emb.weight.detach().clone(), {n: v.to_dense() if v.is_sparse else v for n, v in opt.state[emb.weight].items()}))
    (mine, mine_state), (theirs, their_state) = runs[1], runs[0]
    assert torch.allclose(mine, theirs, rtol=1e-12, atol=0)
    for key, value in their_state.items():
        if key != "step":
            assert torch.allclose(mine_state[key], value, rtol=1e-12, atol=0), key


NEW_BASES = ["SGD", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adagrad", "Adadelta", "Rprop", "ASGD"]


@pytest.mark.parametrize("name", NEW_BASES)
def test_the_meta_step_wraps_every_base(name):
    """``dynopt.meta_step(base)`` runs on all three backends and they agree (20 steps, float64; gains on, except over
    ASGD, which the meta step runs at lr·s and which therefore takes no per-coordinate gains)."""
    spec = dynopt.meta_step(dynopt.REGISTRY[name])
    hyper = {"lr": 0.01, "meta_lr": 0.05, "gain_lr": 0.01 if dynopt.REGISTRY[name].scalable_step else 0.0}
    rng = np.random.default_rng(3)
    A = rng.normal(size=(4, 4))
    A = A @ A.T / 4 + np.eye(4)

    def grad(p):
        return [A @ p[0] + 0.1]

    oracle = dynopt.numpy.from_spec(spec)(**hyper)
    params = [np.linspace(-1.0, 1.0, 4)]
    state = oracle.init(params)
    for _ in range(20):
        updates, state = oracle.update(grad(params), state, params)
        params = [params[0] + updates[0]]
    w = torch.nn.Parameter(torch.linspace(-1.0, 1.0, 4, dtype=torch.float64))
    opt = dynopt.torch.from_spec(spec)([w], **hyper)
    for _ in range(20):
        w.grad = torch.from_numpy(grad([w.detach().numpy()])[0])
        opt.step()
    tx = dynopt.jax.from_spec(spec)(hyper["lr"], **{k: v for k, v in hyper.items() if k != "lr"})
    jparams = [np.linspace(-1.0, 1.0, 4)]
    jstate = tx.init(jparams)
    for _ in range(20):
        updates, jstate = tx.update(grad([np.asarray(jparams[0])]), jstate, jparams)
        jparams = [jparams[0] + np.asarray(updates[0])]
    assert not np.allclose(params[0], np.linspace(-1.0, 1.0, 4))
    assert np.allclose(w.detach().numpy(), params[0], rtol=1e-12, atol=1e-14)
    assert np.allclose(np.asarray(jparams[0]), params[0], rtol=1e-12, atol=1e-14)
    assert float(opt.global_scalars()["scale"]) != hyper.get("initial_scale", spec.defaults["initial_scale"])  # it adapted
