"""The meta step's global sums when each rank or device holds only a shard of the parameters.

The meta step adapts one scale s from sums over *all* parameters (⟨g, D⟩, ‖g‖², ‖D‖²). Under DDP and
FSDP2 every rank already sums over the whole model (tests/test_distributed.py,
tests/test_distributed_fsdp.py). Here each rank steps only its own parameters:

* torch ``ZeroRedundancyOptimizer(optimizer_class=dynopt.torch.MetaAdam, shard_group=True)``: two gloo
  processes on 127.0.0.1 (test_distributed's port helper, model and batches), both on the full batch, so
  the gradients equal a single process's. With ``shard_group`` the sums are all-reduced (one
  collective per step), on the reference path (``flat=False``), the default flat path and
  ``fused=True``; the parameters equal the single process to 1e-12 (float64, relative), and every rank
  holds the same scale, bit for bit. Without it (the control) the ranks' scales differ from each other.
* JAX: a subprocess with two host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``)
  steps the parameters sharded over the devices inside ``jax.shard_map`` and ``jax.pmap`` with
  ``axis_name`` (the sums are ``psum``'d); the results equal the unsharded jitted run to 1e-12 and
  both devices hold the same scale. Without ``axis_name`` (the control) they do not.

Every process is started by the test and bounded in time (a timeout kills it).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from test_distributed import ROOT, TIMEOUT, batch, model, run_two_ranks

import dynopt.torch

torch.set_num_threads(1)

STEPS = 15
TOL = 1e-12
# label: (optimizer, hyperparameters, path options, all-reduce the sums)
CONFIGS = {
    "MetaAdam reference": ("MetaAdam", {"lr": 0.05}, {"flat": False}, True),
    "MetaAdam flat": ("MetaAdam", {"lr": 0.05}, {}, True),
    "MetaAdam fused": ("MetaAdam", {"lr": 0.05}, {"fused": True}, True),
    "MetaSGD hd gains flat": ("MetaSGD", {"lr": 0.05, "rule": "hd", "meta_lr": 0.5, "gain_lr": 0.05}, {}, True),
    "MetaAdam control": ("MetaAdam", {"lr": 0.05}, {}, False),
}

ZERO_WORKER = """
import datetime, sys
import torch
import torch.distributed as dist
from torch.distributed.optim import ZeroRedundancyOptimizer
torch.set_num_threads(1)
import dynopt.torch

rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
CONFIGS, STEPS = {configs!r}, {steps}
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{{port}}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
sys.path.insert(0, {tests!r})
from test_distributed import batch, model

result = {{}}
for label, (name, kw, options, shard) in CONFIGS.items():
    net = model()
    extra = {{"shard_group": True}} if shard else {{}}
    opt = ZeroRedundancyOptimizer(net.parameters(), optimizer_class=getattr(dynopt.torch, name), **kw, **options, **extra)
    for k in range(STEPS):
        x, y = batch(k)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    result[label] = [p.detach().clone() for p in net.parameters()]
    result[label + ".scale"] = opt.optim.global_scalars()["scale"].clone()
    result[label + ".owned"] = torch.tensor(sum(len(g["params"]) for g in opt.optim.param_groups))
torch.save(result, out)
dist.destroy_process_group()
"""


def single_process(name, kw, options):
    net = model()
    opt = getattr(dynopt.torch, name)(net.parameters(), **kw, **options)
    for k in range(STEPS):
        x, y = batch(k)
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach() for p in net.parameters()], opt.global_scalars()["scale"]


def rel(a, b) -> float:
    return float((a - b).abs().max()) / float(b.abs().max())


@pytest.fixture(scope="module")
def zero_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("zero")
    script = folder / "worker.py"
    script.write_text(textwrap.dedent(ZERO_WORKER).format(configs=CONFIGS, steps=STEPS, tests=str(ROOT / "tests")))
    return run_two_ranks(script, folder)


@pytest.mark.parametrize("label", [k for k, v in CONFIGS.items() if v[3]])
def test_zero_with_shard_group_equals_one_process(zero_results, label):
    name, kw, options, _ = CONFIGS[label]
    rank0, rank1 = zero_results
    assert int(rank0[label + ".owned"]) > 0 and int(rank1[label + ".owned"]) > 0  # each rank steps a shard of its own
    assert int(rank0[label + ".owned"]) + int(rank1[label + ".owned"]) == len(list(model().parameters()))
    single, scale = single_process(name, kw, options)
    for a, b, s in zip(rank0[label], single, model().parameters()):
        assert rel(a, b) <= TOL, (label, rel(a, b))
        assert not torch.equal(a, s.detach())
    for a, b in zip(rank0[label], rank1[label]):
        assert torch.equal(a, b)  # ZeRO broadcasts each shard from its owner
    assert torch.equal(rank0[label + ".scale"], rank1[label + ".scale"])  # the same scale on every rank
    assert abs(float(rank0[label + ".scale"]) - float(scale)) <= TOL * float(scale)
    assert float(scale) != dynopt.REGISTRY[name].defaults["initial_scale"]  # the scale adapted


def test_zero_without_shard_group_gives_each_rank_its_own_scale(zero_results):
    """The failure the all-reduce removes (and what makes the tests above able to fail)."""
    rank0, rank1 = zero_results
    name, kw, options, _ = CONFIGS["MetaAdam control"]
    _, scale = single_process(name, kw, options)
    scales = [float(r["MetaAdam control.scale"]) for r in (rank0, rank1)]
    assert abs(scales[0] - scales[1]) > 1e-6 * float(scale) and all(abs(s - float(scale)) > 1e-6 * float(scale) for s in scales)


def test_shard_group_is_validated():
    with pytest.raises(TypeError, match="Invalid shard_group value: 'world'"):
        dynopt.torch.MetaSGD([torch.nn.Parameter(torch.ones(2))], shard_group="world")
    with pytest.raises(TypeError, match="shard_group"):  # no global sums: no such argument
        dynopt.torch.Adam([torch.nn.Parameter(torch.ones(2))], shard_group=True)
    opt = dynopt.torch.MetaSGD([torch.nn.Parameter(torch.ones(2))], shard_group=True)
    opt.param_groups[0]["params"][0].grad = torch.ones(2)
    with pytest.raises(RuntimeError, match="torch.distributed is not initialized"):
        opt.step()


JAX_WORKER = """
import json, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
import dynopt.jax

assert len(jax.devices()) == 2, jax.devices()
mesh = jax.make_mesh((2,), ("x",))
CONFIGS, STEPS = {configs!r}, {steps}
params = {{"w": jax.random.normal(jax.random.key(0), (8, 4)), "b": jnp.linspace(-1.0, 1.0, 8)}}

def loss(p, k):  # a sum of per-entry terms: a shard's gradient is the shard of the gradient
    return jnp.sum(jnp.sin((1.0 + 0.1 * k) * p["w"])) + jnp.sum((p["b"] - jnp.cos(k)) ** 2)

def stepper(opt):
    def step(p, s, k):
        u, s = opt.update(jax.grad(loss)(p, k), s, p)
        return optax.apply_updates(p, u), s
    return step

report, arrays = {{}}, {{}}
for name, kw in CONFIGS.items():
    factory = getattr(dynopt.jax, name)
    plain, summed = factory(0.05, **kw), factory(0.05, **kw, axis_name="x")
    step = jax.jit(stepper(plain))
    p, s = params, plain.init(params)
    for k in range(STEPS):
        p, s = step(p, s, k)
    arrays[name + ".single.w"], arrays[name + ".single.b"], arrays[name + ".single.scale"] = p["w"], p["b"], s.scale

    pspec = {{"w": P("x"), "b": P("x")}}
    s0 = summed.init(params)
    sspec = jax.tree.map(lambda x: P("x") if x.ndim else P(), s0)
    sharded = jax.jit(jax.shard_map(stepper(summed), mesh=mesh, in_specs=(pspec, sspec, P()), out_specs=(pspec, sspec)))
    place = lambda tree, specs: jax.tree.map(lambda x, spec: jax.device_put(x, NamedSharding(mesh, spec)), tree, specs)
    p, s = place(params, pspec), place(s0, sspec)
    for k in range(STEPS):
        p, s = sharded(p, s, jax.device_put(jnp.asarray(k, jnp.float64), NamedSharding(mesh, P())))
    arrays[name + ".shard_map.w"], arrays[name + ".shard_map.b"], arrays[name + ".shard_map.scale"] = p["w"], p["b"], s.scale

    for tag, opt in (("pmap", summed), ("pmap_control", plain)):
        local = jax.tree.map(lambda x: x.reshape(2, x.shape[0] // 2, *x.shape[1:]), params)  # a shard per device
        p, s = local, jax.pmap(opt.init)(local)
        step = jax.pmap(stepper(opt), axis_name="x", in_axes=(0, 0, None))
        for k in range(STEPS):
            p, s = step(p, s, jnp.asarray(k, jnp.float64))
        arrays[f"{{name}}.{{tag}}.w"], arrays[f"{{name}}.{{tag}}.b"] = p["w"].reshape(8, 4), p["b"].reshape(8)
        arrays[f"{{name}}.{{tag}}.scale"] = s.scale  # one per device
np.savez(sys.argv[1], **{{k: np.asarray(v) for k, v in arrays.items()}})
print(json.dumps(sorted(arrays)))
"""

JAX_CONFIGS = {"meta_adam": {}, "meta_sgd": {"rule": "hd", "meta_lr": 0.5, "gain_lr": 0.05}}


def test_jax_shard_map_and_pmap_with_axis_name_equal_one_device(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(JAX_WORKER).format(configs=JAX_CONFIGS, steps=STEPS))
    out = tmp_path / "results.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()}
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out) as arrays:
        for name in JAX_CONFIGS:
            single = {k: arrays[f"{name}.single.{k}"] for k in ("w", "b", "scale")}
            assert abs(float(single["scale"]) - dynopt.REGISTRY["MetaAdam"].defaults["initial_scale"]) > 1e-3
            for tag in ("shard_map", "pmap"):
                for k in ("w", "b"):
                    a, b = arrays[f"{name}.{tag}.{k}"], single[k]
                    assert np.max(np.abs(a - b)) <= TOL * np.max(np.abs(b)), (name, tag, k)
                scales = np.atleast_1d(arrays[f"{name}.{tag}.scale"])
                assert np.all(scales == scales[0]), (name, tag, scales)  # the same scale on every device
                assert abs(scales[0] - single["scale"]) <= TOL * abs(single["scale"]), (name, tag)
            control = arrays[f"{name}.pmap_control.scale"]  # without axis_name each device sums its own shard
            assert abs(control[0] - control[1]) > 1e-6 * abs(single["scale"]), (name, control)
