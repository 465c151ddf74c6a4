"""Run any optimizer (dynopt on each backend, torch.optim, optax) on a test Problem.

Each runner returns (params, state): lists of float64 NumPy arrays, and for dynopt a dict
{state name: list of arrays}. One gradient formula serves all backends: problems.Problem.grads.
"""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from problems import Problem
from torch.utils._python_dispatch import TorchDispatchMode

import dynopt.jax
import dynopt.numpy
import dynopt.torch

TORCH_DTYPES = {"float64": torch.float64, "float32": torch.float32}


def run_numpy(spec, hyper, problem: Problem, steps: int):
    opt = dynopt.numpy.from_spec(spec)(**hyper)
    params = [p.copy() for p in problem.theta0]
    state = opt.init(params)
    for k in range(steps):
        updates, state = opt.update(problem.grads(k, params, np.matmul), state, params)
        params = [p + u for p, u in zip(params, updates)]
    return params, state.values


def _torch_params(problem, dtype):
    return [torch.tensor(p, dtype=TORCH_DTYPES[dtype]).requires_grad_() for p in problem.theta0]


def run_torch(make_optimizer, problem: Problem, steps: int, dtype="float64", scheduler=None):
    """``make_optimizer(params) -> torch.optim.Optimizer``; returns params and the optimizer."""
    params = _torch_params(problem, dtype)
    opt = make_optimizer(params)
    sched = scheduler(opt) if scheduler else None
    A = [torch.tensor(a, dtype=params[0].dtype) for a in problem.A]
    prob = Problem(A, [torch.tensor(c, dtype=params[0].dtype) for c in problem.c],
                   torch.tensor(problem.noise, dtype=params[0].dtype), None, problem.sign, problem.shapes)
    for k in range(steps):
        with torch.no_grad():
            grads = prob.grads(k, params, torch.matmul)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        if sched is not None:
            sched.step()
    return [p.detach().double().numpy() for p in params], opt


def torch_state(opt, params_names):
    """None where a parameter does not hold a variable (Adafactor: ``row_var`` for matrices, ``variance`` for vectors)."""
    return {n: [opt.state[p][n].double().numpy() if n in opt.state[p] else None for p in opt.param_groups[0]["params"]]
            for n in params_names}


def run_optax(transform, problem: Problem, steps: int, dtype="float64"):
    jdtype = jnp.float64 if dtype == "float64" else jnp.float32
    params = [jnp.asarray(p, dtype=jdtype) for p in problem.theta0]
    A = [jnp.asarray(a, dtype=jdtype) for a in problem.A]
    prob = Problem(A, [jnp.asarray(c, dtype=jdtype) for c in problem.c], jnp.asarray(problem.noise, dtype=jdtype), None, problem.sign,
                   problem.shapes)
    state = transform.init(params)

    @jax.jit
    def step(k, params, state):
        grads = prob.grads(k, params, jnp.matmul)
        updates, state = transform.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    for k in range(steps):
        params, state = step(k, params, state)
    return [np.asarray(p, dtype=np.float64) for p in params], state


def optax_state(state, names):
    return {n: [None if x is None else np.asarray(x, dtype=np.float64) for x in getattr(state, n)] for n in names}


def dynopt_torch(spec, hyper):
    cls = dynopt.torch.from_spec(spec)
    return lambda params: cls(params, **hyper)


def dynopt_optax(spec, hyper):
    hyper = dict(hyper)
    return dynopt.jax.from_spec(spec)(hyper.pop("lr"), **hyper)


class CountOps(TorchDispatchMode):
    """Counts the aten ops dispatched inside the ``with`` block, by name."""

    def __init__(self):
        super().__init__()
        self.ops = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))
