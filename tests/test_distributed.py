"""Distributed data parallelism: torch DistributedDataParallel and JAX sharding give the results
of a single process.

* torch: two processes on this CPU (gloo, rendezvous on 127.0.0.1 at a free port) train the same
  model with DDP, each on half of every batch. DDP averages the gradients, so every rank steps
  the same averaged gradients: the ranks stay bit-identical, equal bit for bit a single process
  that steps (g₀ + g₁)/2 itself (the average gloo computes: a sum of two numbers and a division
  by 2, both exact to reproduce), and equal the single-process full-batch run to 1e-10 relative
  (only the rounding of the batch mean differs). For a normal optimizer (Adam) and for MetaSGD,
  whose alignment is a global reduction over all parameters: each rank computes it from the same
  averaged gradients, so no extra communication is needed.
* JAX: a subprocess with two host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=2``)
  shards the parameters over a 2-device mesh and runs the jitted step: the parameters and the
  state stay sharded like the parameters, and the results equal the unsharded run, bit for bit
  for an elementwise optimizer (Adam) and to 1e-12 relative where the step sums over entries
  (EG's simplex normalization of each leaf, the meta step's global alignment): those sums are
  split over the devices, which may change the order of the additions. The loss is a sum of per-entry
  terms, so the gradients themselves are bit-identical and any difference is the optimizer's.
  A sharded state also round-trips through orbax-checkpoint, restored into an abstract target
  (``jax.ShapeDtypeStruct`` leaves that carry the shardings) with each leaf placed as the target says.

Every process is started by the test and bounded in time (a timeout kills it).
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

import dynopt.torch

torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 180
STEPS = 15
OPTIMIZERS = {"Adam": {"lr": 0.01, "betas": (0.8, 0.99)}, "MetaSGD": {"lr": 0.05, "meta_lr": 0.05, "gain_lr": 0.01}}

DDP_WORKER = """
import datetime, sys
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
torch.set_num_threads(1)
import dynopt.torch

rank, port, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
OPTIMIZERS, STEPS = {optimizers!r}, {steps}
dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{{port}}", rank=rank, world_size=2,
                        timeout=datetime.timedelta(seconds=60))
sys.path.insert(0, {tests!r})
from test_distributed import batch, model  # the model and batches of the single-process runs

result = {{}}
for name, kw in OPTIMIZERS.items():
    net = DistributedDataParallel(model())
    opt = getattr(dynopt.torch, name)(net.parameters(), **kw)
    for k in range(STEPS):
        x, y = batch(k)
        x, y = x[16 * rank: 16 * (rank + 1)], y[16 * rank: 16 * (rank + 1)]
        opt.zero_grad()
        ((net(x) - y) ** 2).mean().backward()
        opt.step()
    result[name] = [p.detach().clone() for p in net.module.parameters()]
    if name.startswith("Meta"):
        result[name + ".scale"] = opt.global_scalars()["scale"].clone()
torch.save(result, out)
dist.destroy_process_group()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_two_ranks(script, folder, timeout: float = TIMEOUT) -> list:
    """Run ``script rank port out`` as ranks 0 and 1 (gloo on loopback) in ``folder``; every rank's saved result.
    Fails with each failing rank's stderr; a rank still running at the end is killed."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    port = str(free_port())
    outs = [folder / f"rank{r}.pt" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, str(script), str(r), port, str(outs[r])], env=env, cwd=folder,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    errors = []
    try:
        for proc in procs:
            _, err = proc.communicate(timeout=timeout)
            if proc.returncode != 0:
                errors.append(err[-3000:])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert not errors, errors
    return [torch.load(out, weights_only=True) for out in outs]


def model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1)).double()


def batch(k):
    g = torch.Generator().manual_seed(100 + k)
    return torch.randn(32, 4, generator=g, dtype=torch.float64), torch.randn(32, 1, generator=g, dtype=torch.float64)


def single_process(name, averaged):
    """One process: the gradient of each half, averaged as DDP does, or the full-batch gradient."""
    net = model()
    opt = getattr(dynopt.torch, name)(net.parameters(), **OPTIMIZERS[name])
    for k in range(STEPS):
        x, y = batch(k)
        if averaged:
            halves = []
            for rank in range(2):
                net.zero_grad()
                ((net(x[16 * rank: 16 * (rank + 1)]) - y[16 * rank: 16 * (rank + 1)]) ** 2).mean().backward()
                halves.append([p.grad.clone() for p in net.parameters()])
            for p, g0, g1 in zip(net.parameters(), *halves):
                p.grad = (g0 + g1) / 2
        else:
            opt.zero_grad()
            ((net(x) - y) ** 2).mean().backward()
        opt.step()
    return [p.detach() for p in net.parameters()], opt


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ddp")
    script = folder / "worker.py"
    script.write_text(textwrap.dedent(DDP_WORKER).format(optimizers=OPTIMIZERS, steps=STEPS, tests=str(ROOT / "tests")))
    return run_two_ranks(script, folder)


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_ddp_gives_the_single_process_result(ddp_results, name):
    rank0, rank1 = (r[name] for r in ddp_results)
    for a, b in zip(rank0, rank1):
        assert torch.equal(a, b)  # every rank stepped the same averaged gradients
    emulated, emulated_opt = single_process(name, averaged=True)
    for a, b in zip(rank0, emulated):
        assert torch.equal(a, b)
    full, _ = single_process(name, averaged=False)
    start = list(model().parameters())
    for a, b, s in zip(rank0, full, start):
        assert float((a - b).abs().max()) <= 1e-10 * float(b.abs().max())
        assert not torch.equal(a, s.detach())
    if name.startswith("Meta"):
        scales = [r[name + ".scale"] for r in ddp_results]
        assert torch.equal(scales[0], scales[1]) and torch.equal(scales[0], emulated_opt.global_scalars()["scale"])
        assert float(scales[0]) != 1.0


JAX_WORKER = """
import json, os, sys
import jax
jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P
import orbax.checkpoint as ocp
import dynopt, dynopt.jax

assert len(jax.devices()) == 2, jax.devices()
mesh = jax.make_mesh((2,), ("x",), axis_types=(jax.sharding.AxisType.Auto,))  # sharding propagated by the compiler
CONFIGS = {configs!r}
key = jax.random.key(0)
params = {{"w": jax.random.normal(key, (8, 4)), "b": jnp.linspace(-1.0, 1.0, 8), "s": jnp.asarray(0.5)}}
specs = {{"w": P("x", None), "b": P("x"), "s": P()}}
sharded = {{k: jax.device_put(v, NamedSharding(mesh, specs[k])) for k, v in params.items()}}
single = jax.device_put(params, jax.devices()[0])

def loss(p, k):  # a sum of per-entry terms: the gradient needs no reduction across devices
    return jnp.sum(jnp.sin((1.0 + 0.1 * k) * p["w"])) + jnp.sum((p["b"] - jnp.cos(k)) ** 2) + (p["s"] - 0.1 * k) ** 4

report, arrays = {{}}, {{}}
for name, kw in CONFIGS.items():
    opt = dynopt.jax.from_spec(dynopt.REGISTRY[name])(0.01, **kw)  # the spec itself: CONFIGS has its (torch) names

    @jax.jit
    def step(p, s, k):
        u, s = opt.update(jax.grad(loss)(p, k), s, p)
        return optax.apply_updates(p, u), s

    finals = []
    for start in (single, sharded):
        p, s = start, jax.jit(opt.init)(start)
        for k in range(20):
            p, s = step(p, s, k)
        finals.append((p, s))
    (p1, s1), (p2, s2) = finals
    kept = all(p2[k].sharding.is_equivalent_to(NamedSharding(mesh, specs[k]), p2[k].ndim) for k in specs)
    state_sharded = all(
        leaf.sharding.is_equivalent_to(NamedSharding(mesh, specs[k]), leaf.ndim)
        for field in s2._fields[1:] if isinstance(getattr(s2, field), dict) for k, leaf in getattr(s2, field).items())
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(os.path.abspath(sys.argv[1] + "." + name), s2)
    checkpointer.wait_until_finished()
    template = jax.tree.map(ocp.utils.to_shape_dtype_struct, jax.jit(opt.init)(sharded))  # shapes, dtypes, shardings
    restored = checkpointer.restore(os.path.abspath(sys.argv[1] + "." + name), template)
    round_trip = type(restored) is type(s2) and all(  # placed like the target
        np.array_equal(np.asarray(a), np.asarray(b)) and a.dtype == b.dtype and a.sharding == t.sharding
        for a, b, t in zip(jax.tree.leaves(restored), jax.tree.leaves(s2), jax.tree.leaves(template)))
    report[name] = {{"params_sharded": kept, "state_sharded": state_sharded, "checkpoint": round_trip}}
    for tag, (p, s) in (("single", finals[0]), ("sharded", finals[1])):
        for i, leaf in enumerate(jax.tree.leaves((p, s))):
            arrays[f"{{name}}.{{tag}}.{{i}}"] = np.asarray(leaf)
np.savez(sys.argv[1], **arrays)
print(json.dumps(report))
"""

JAX_CONFIGS = {"Adam": {"betas": (0.8, 0.99)}, "EG": {"variant": "signed_simplex"}, "MetaSGD": {"meta_lr": 0.05, "gain_lr": 0.01},
               "MetaAdam": {"meta_lr": 0.05}}
ELEMENTWISE = {"Adam"}  # no sum over entries in the step: bit for bit; EG normalizes each leaf, Meta* sums over all


def test_jax_sharded_over_two_devices_equals_unsharded(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(textwrap.dedent(JAX_WORKER).format(configs=JAX_CONFIGS))
    out = tmp_path / "results.npz"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2").strip()}
    done = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(report) == set(JAX_CONFIGS)
    for name, flags in report.items():
        assert flags == {"params_sharded": True, "state_sharded": True, "checkpoint": True}, (name, flags)
    with np.load(out, allow_pickle=False) as arrays:
        for name in JAX_CONFIGS:
            singles = sorted(k for k in arrays.files if k.startswith(f"{name}.single."))
            assert len(singles) > 3
            for key in singles:
                a, b = arrays[key], arrays[key.replace(".single.", ".sharded.")]
                if name in ELEMENTWISE:
                    assert np.array_equal(a, b), key
                else:
                    scale = np.max(np.abs(a)) if a.size else 0.0
                    assert np.max(np.abs(a - b), initial=0.0) <= 1e-12 * max(scale, 1e-300), key
