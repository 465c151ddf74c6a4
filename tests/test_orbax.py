"""JAX checkpoints with orbax-checkpoint: dynopt states save, restore into an abstract target
(``jax.eval_shape``, no arrays allocated) and resume bit-identically.

* Every optimizer of the zoo: params and state saved together with ``ocp.StandardCheckpointer``,
  restored into ``jax.eval_shape`` of a fresh ``init``; the restored state is the optimizer's own
  state type, every leaf is bit-identical with its dtype, and five more steps equal, bit for bit,
  five steps of the run that was never saved.
* A flax ``TrainState`` whose ``tx`` is a dynopt optimizer, through ``ocp.CheckpointManager``
  (``step``, ``params`` and ``opt_state`` are saved; ``apply_fn`` and ``tx`` are code and stay in
  the target).
* The meta step: the adapted scale (``state.scale``) comes back exactly and keeps adapting as in
  the run that was never saved.
* What orbax does with a target that does not match is pinned, because README documents it.

Small arrays and ``tmp_path``, synchronous saves: a few seconds in all.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
import pytest
from flax import linen as nn
from flax.training import train_state
from zoo_options import STATEFUL, assert_bit_identical, make_step, params0, run
from zoo_options import params0 as zoo_params0

import dynopt.jax
from dynopt.optimizers import ZOO

OPTIONS = STATEFUL


def test_every_optimizer_of_the_zoo_is_covered():
    assert {spec.name for spec in ZOO} == set(OPTIONS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_restore_into_an_abstract_target_resumes_bit_identically(name, tmp_path):
    opt = dynopt.jax.from_spec(dynopt.REGISTRY[name])(0.01, **OPTIONS[name])  # the spec itself: OPTIONS has its names
    params0 = functools.partial(zoo_params0, dynopt.REGISTRY[name])  # Muon: its matrices only
    step = make_step(opt)
    params, state = run(step, params0(), opt.init(params0()), 0, 3)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "ckpt", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    target = jax.eval_shape(lambda: {"params": params0(), "opt_state": opt.init(params0())})
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in jax.tree.leaves(target))
    restored = checkpointer.restore(tmp_path / "ckpt", target)
    assert type(restored["opt_state"]) is type(state) and int(restored["opt_state"].count) == 3
    assert_bit_identical(restored, {"params": params, "opt_state": state})
    assert_bit_identical(run(step, restored["params"], restored["opt_state"], 3, 8), run(step, params, state, 3, 8))


class MLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(1)(jnp.tanh(nn.Dense(4)(x)))


def train_step(state, batch):
    x, y = batch
    grads = jax.grad(lambda p: jnp.mean((state.apply_fn(p, x) - y) ** 2))(state.params)
    return state.apply_gradients(grads=grads)


def batch(k):
    x = jax.random.normal(jax.random.key(k), (8, 3))
    return x, jnp.sin(x.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("name", ["Adam", "MetaAdam", "EG"])
def test_flax_train_state_checkpoints_with_a_manager_and_resumes(name, tmp_path):
    options = {"variant": "signed"} if name == "EG" else {}
    model = MLP()
    tx = getattr(dynopt.jax, dynopt.REGISTRY[name].jax_name)(0.05, **options)

    def create():
        params = model.init(jax.random.key(0), jnp.zeros((1, 3)))
        return train_state.TrainState.create(apply_fn=model.apply, params=params, tx=tx)

    step = jax.jit(train_step)
    state = create()
    options_ = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=False)
    with ocp.CheckpointManager(tmp_path / "run", options=options_) as manager:
        for k in range(4):
            state = step(state, batch(k))
            manager.save(int(state.step), args=ocp.args.StandardSave(state))
        assert manager.all_steps() == [3, 4]
    # a new process would do this: build the target abstractly, restore the latest step
    with ocp.CheckpointManager(tmp_path / "run", options=options_) as manager:
        restored = manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(jax.eval_shape(create)))
    assert int(restored.step) == 4 and type(restored.opt_state) is type(state.opt_state)
    assert restored.apply_fn == model.apply and restored.tx is tx
    assert_bit_identical((restored.params, restored.opt_state), (state.params, state.opt_state))
    for k in range(4, 9):
        state, restored = step(state, batch(k)), step(restored, batch(k))
    assert_bit_identical((restored.step, restored.params, restored.opt_state), (state.step, state.params, state.opt_state))


def test_the_meta_step_scale_is_restored_and_keeps_adapting(tmp_path):
    opt = dynopt.jax.meta_adam(1e-3, meta_lr=0.05)
    step = make_step(opt)
    params, state = run(step, params0(), opt.init(params0()), 0, 6)
    assert float(state.scale) != 1.0  # it has adapted
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "meta", {"params": params, "opt_state": state})
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "meta", jax.eval_shape(lambda: {"params": params0(), "opt_state": opt.init(params0())}))
    assert restored["opt_state"].scale.dtype == state.scale.dtype and float(restored["opt_state"].scale) == float(state.scale)
    resumed, reference = run(step, restored["params"], restored["opt_state"], 6, 12), run(step, params, state, 6, 12)
    assert float(reference[1].scale) != float(state.scale)  # still adapting after the restore
    assert_bit_identical(resumed, reference)


def test_what_orbax_does_with_a_target_that_does_not_match(tmp_path):
    """Pinned because README states it: orbax matches leaves by path, not by the state's type."""
    params = params0()
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(tmp_path / "adam", dynopt.jax.adam(0.1).init(params))
    checkpointer.save(tmp_path / "momentum", dynopt.jax.momentum(0.1).init(params))
    checkpointer.wait_until_finished()
    abstract = lambda opt, p=params: jax.eval_shape(opt.init, p)
    with pytest.raises(ValueError):  # other state fields
        checkpointer.restore(tmp_path / "adam", abstract(dynopt.jax.sgd(0.1)))
    cast = checkpointer.restore(tmp_path / "adam", abstract(dynopt.jax.adam(0.1), {**params, "w": params["w"].astype(jnp.float32)}))
    assert cast.mu["w"].dtype == jnp.float32  # another dtype: cast to the target's, silently
    other = checkpointer.restore(tmp_path / "momentum", abstract(dynopt.jax.nesterov(0.1)))
    assert type(other).__name__ == "NesterovState"  # the same field names: restored, whatever the optimizer
    with pytest.raises(ValueError, match="zero size"):
        checkpointer.save(tmp_path / "empty", dynopt.jax.adam(0.1).init({"e": jnp.zeros((0, 2))}))
