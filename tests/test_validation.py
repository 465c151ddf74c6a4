"""Bad input gets a clear error naming the argument and the value, the same on every backend,
and never leaves a half-updated optimizer."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch

torch.set_num_threads(1)

# (optimizer name, hyperparameter, bad value, exception, message) — messages follow torch's wording
BAD = [
    (name, "lr", -0.1, ValueError, "Invalid learning rate: -0.1 (must be >= 0.0)") for name in dynopt.REGISTRY
] + [
    ("SGD", "lr", math.nan, ValueError, "Invalid learning rate: nan (must be >= 0.0)"),
    ("SGD", "lr", "0.1", TypeError, "Invalid learning rate: '0.1' (must be a real number, got str)"),
    ("SGD", "weight_decay", -1e-4, ValueError, "Invalid weight_decay value: -0.0001 (must be >= 0.0)"),
    ("SGD", "maximize", 1, TypeError, "Invalid maximize value: 1 (must be a bool)"),
    ("Momentum", "momentum", -0.1, ValueError, "Invalid momentum value: -0.1 (must be in [0.0, 1.0))"),
    ("Momentum", "momentum", 1.0, ValueError, "Invalid momentum value: 1.0 (must be in [0.0, 1.0))"),
    ("Momentum", "dampening", 1.5, ValueError, "Invalid dampening value: 1.5 (must be in [0.0, 1.0))"),
    ("Nesterov", "momentum", 0.0, ValueError, "Invalid momentum value: 0.0 (must be in (0.0, 1.0))"),
    ("RMSprop", "alpha", 1.0, ValueError, "Invalid alpha value: 1.0 (must be in [0.0, 1.0))"),
    ("RMSprop", "eps", -1e-8, ValueError, "Invalid epsilon value: -1e-08 (must be >= 0.0)"),
    ("RMSprop", "centered", "yes", TypeError, "Invalid centered value: 'yes' (must be a bool)"),
    ("Adam", "betas", (0.9, 1.0), ValueError, "Invalid betas value: (0.9, 1.0) (must be in [0.0, 1.0))"),
    ("Adam", "betas", 0.9, TypeError, "Invalid betas value: 0.9 (must be a tuple of 2 numbers)"),
]


def torch_build(name, hp):
    cls = getattr(dynopt.torch, name)
    lr = hp.pop("lr", 0.01)
    return cls([torch.nn.Parameter(torch.zeros(2))], lr=lr, **hp)


def jax_build(name, hp):
    lr = hp.pop("lr", 0.01)
    return dynopt.jax.from_spec(dynopt.REGISTRY[name])(lr, **hp)


def numpy_build(name, hp):
    return dynopt.numpy.from_spec(dynopt.REGISTRY[name])(**hp)


@pytest.mark.parametrize("build", [torch_build, jax_build, numpy_build], ids=["torch", "jax", "numpy"])
@pytest.mark.parametrize("name, arg, value, error, message", BAD, ids=[f"{b[0]}-{b[1]}-{b[2]!r}" for b in BAD])
def test_invalid_hyperparameter_message(build, name, arg, value, error, message):
    with pytest.raises(error) as info:
        build(name, {arg: value})
    assert str(info.value) == message


def test_unknown_hyperparameter_is_a_type_error():
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'mometum'"):
        dynopt.torch.Momentum([torch.nn.Parameter(torch.zeros(1))], lr=0.1, mometum=0.9)
    with pytest.raises(TypeError, match="got an unexpected keyword argument 'mometum'"):
        dynopt.jax.momentum(0.1, mometum=0.9)


def test_tensor_lr_must_have_one_element():
    with pytest.raises(ValueError, match=r"Invalid learning rate: tensor\(\[0.1000, 0.2000\]\) \(must have exactly 1 element, got 2\)"):
        dynopt.torch.SGD([torch.nn.Parameter(torch.zeros(1))], lr=torch.tensor([0.1, 0.2]))


def test_bare_tensor_and_set_of_params_are_refused():
    w = torch.nn.Parameter(torch.zeros(2))
    with pytest.raises(TypeError, match="params argument given to the optimizer should be an iterable of Tensors or dicts"):
        dynopt.torch.SGD(w, lr=0.1)
    with pytest.raises(TypeError, match="must be an ordered collection .a list., not a set"):
        dynopt.torch.SGD({w}, lr=0.1)


def test_invalid_param_group_is_not_added():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = dynopt.torch.Momentum([a], lr=0.1)
    with pytest.raises(ValueError, match=r"Invalid momentum value: 1.5"):
        opt.add_param_group({"params": [b], "momentum": 1.5})
    assert len(opt.param_groups) == 1


def test_sparse_gradient_raises_before_anything_changes():
    emb = torch.nn.Embedding(5, 3, sparse=True)
    dense = torch.nn.Parameter(torch.ones(3))
    opt = dynopt.torch.Adam([{"params": [dense]}, {"params": emb.parameters()}], lr=0.1)
    (emb(torch.tensor([1, 2])).sum() + dense.sum()).backward()
    before = dense.detach().clone()
    with pytest.raises(RuntimeError, match=r"Adam does not support sparse gradients \(param group 1, parameter 0\)"):  # torch's type
        opt.step()
    assert torch.equal(dense, before) and len(opt.state) == 0


def test_optax_params_required_only_when_needed():
    grads = {"w": jnp.ones(2)}
    plain = dynopt.jax.sgd(0.1)
    plain.update(grads, plain.init(grads))  # no params needed
    decayed = dynopt.jax.adamw(0.1, weight_decay=0.01)  # optax's sgd has no weight decay; adamw's reads the params
    with pytest.raises(ValueError, match="adamw: this configuration reads the parameters"):
        decayed.update(grads, decayed.init(grads))
    decayed = dynopt.jax.from_spec(dynopt.sgd)(0.1, weight_decay=0.01)  # the SGD spec itself, torch's names
    with pytest.raises(ValueError, match="sgd: this configuration reads the parameters"):
        decayed.update(grads, decayed.init(grads))


def test_schedule_and_traced_values_are_not_validated_early():
    """Schedules are callables and inject_hyperparams passes arrays: both must be accepted."""
    dynopt.jax.momentum(optax.linear_schedule(0.1, 0.0, 10))
    opt = optax.inject_hyperparams(dynopt.jax.momentum)(learning_rate=0.1, momentum=0.9)
    params = {"w": jnp.ones(2)}
    opt.update(params, opt.init(params), params)
    with pytest.raises(ValueError, match="Invalid momentum value"):
        optax.inject_hyperparams(dynopt.jax.momentum)(learning_rate=0.1, momentum=1.2).init(params)


def test_messages_identical_across_backends():
    for name, arg, value, _, _ in BAD:
        texts = set()
        for build in (torch_build, jax_build, numpy_build):
            with pytest.raises((ValueError, TypeError)) as info:
                build(name, {arg: value})
            texts.add(str(info.value))
        assert len(texts) == 1, texts


def test_numpy_arrays_are_valid_hyperparameters():
    dynopt.jax.momentum(np.float32(0.1), momentum=jnp.asarray(0.9))
