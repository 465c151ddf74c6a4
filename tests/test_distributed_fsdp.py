"""FSDP2 (``torch.distributed.fsdp.fully_shard``): dynopt's torch optimizers step DTensor parameters
sharded over two processes and give the results of a single process.

Two processes on this CPU (gloo, rendezvous on 127.0.0.1 at a free port) shard the same float64
model with ``fully_shard`` on a 2-process CPU device mesh: every parameter, its gradient and the
optimizer state it gets are DTensors split along dim 0 (``Shard(0)``), unevenly where a dimension
is odd, so that rank 1 holds empty shards of the last layer. Every rank computes the loss of the
whole batch: FSDP averages two identical gradients ((g + g)/2, exact), so each rank's shard of the
gradient is, bit for bit, the single-process full-batch gradient (checked at the first step), and
any difference in the parameters is the optimizer's.

* Elementwise optimizers (SGD, Momentum, Nesterov, RMSprop, Adam, Adam with the
  ``skip_nonfinite`` guard, whose finiteness check reduces over all shards) give the single-process
  parameters bit for bit (the single process on the reference path, which DTensors take too).
* Meta-step optimizers (MetaSGD with gains, MetaAdam) reduce over *all* parameters: the dot
  products and norms of their alignment must be summed across shards, not per rank. On DTensors
  the sum of each shard's partial result is an all-reduce, whose order of additions may differ
  from one process's, so they are compared to 1e-12 relative; the adapted scale must be the same
  on both ranks (a per-rank reduction would make them differ, as rank 1 holds fewer entries).
* The optimizer state shaped like a parameter stays a DTensor sharded like it (FSDP's memory
  saving), and every parameter moved.

The two ranks run this file as a script (``worker``); each optimizer gets its own process group,
so a failure on one rank costs at most ``GROUP_TIMEOUT`` seconds and cannot desynchronize the
collectives of the next optimizer. Every process is started by the test and bounded in time.
"""

from __future__ import annotations

import datetime
import pathlib
import sys
import traceback

import pytest
import torch
from test_distributed import batch, model, run_two_ranks  # the same model, batches and launcher as the DDP test

import dynopt.torch

torch.set_num_threads(1)

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 60  # seconds a worker process may take (a normal run of both takes about 10)
GROUP_TIMEOUT = 20  # seconds a collective may wait for the other rank
STEPS = 15
RELATIVE = 1e-12  # optimizers whose step sums over all parameters (the order of the additions may differ)
CONFIGS = {  # label: (class in dynopt.torch, keyword arguments)
    "SGD": ("SGD", {"lr": 0.05}),
    "Momentum": ("Momentum", {"lr": 0.05, "momentum": 0.9}),
    "Nesterov": ("Nesterov", {"lr": 0.05, "momentum": 0.9}),
    "RMSprop": ("RMSprop", {"lr": 0.01}),
    "Adam": ("Adam", {"lr": 0.01, "betas": (0.8, 0.99)}),
    "Adam-skip_nonfinite": ("Adam", {"lr": 0.01, "betas": (0.8, 0.99), "skip_nonfinite": True}),
    "MetaSGD": ("MetaSGD", {"lr": 0.05, "meta_lr": 0.05, "gain_lr": 0.01}),
    "MetaAdam": ("MetaAdam", {"lr": 0.01, "meta_lr": 0.05}),
}
REDUCING = {"MetaSGD", "MetaAdam"}


def loss(net, k):
    x, y = batch(k)
    return ((net(x) - y) ** 2).mean()


def single_process(label):
    """One process, the full parameters, the full-batch gradients: the first gradients, the final
    parameters and the optimizer. On the reference path (``flat=False``), the path DTensor parameters take:
    the default path's composite kernels round differently (a few ulps; tests/test_torch_paths.py)."""
    name, kw = CONFIGS[label]
    net = model()
    opt = getattr(dynopt.torch, name)(net.parameters(), **kw, flat=False)
    first = None
    for k in range(STEPS):
        opt.zero_grad()
        loss(net, k).backward()
        if first is None:
            first = [p.grad.clone() for p in net.parameters()]
        opt.step()
    return first, [p.detach() for p in net.parameters()], opt


def _state_problems(opt, params) -> list[str]:
    """How the optimizer state differs from "each shaped entry is a DTensor sharded like its parameter"."""
    from torch.distributed.tensor import DTensor, Replicate

    problems = []
    for i, p in enumerate(params):
        for key, value in opt.state[p].items():
            if not isinstance(value, torch.Tensor):
                continue
            if value.dim() == 0:  # step counter, global scalars: a plain tensor or a replicated DTensor
                if isinstance(value, DTensor) and any(not isinstance(pl, Replicate) for pl in value.placements):
                    problems.append(f"parameter {i}: scalar state {key!r} has placements {value.placements}")
            elif not isinstance(value, DTensor):
                problems.append(f"parameter {i}: state {key!r} is a {type(value).__name__}, not a DTensor")
            elif value.placements != p.placements or value.shape != p.shape:
                problems.append(f"parameter {i}: state {key!r} is {value.placements} {tuple(value.shape)}, "
                                f"the parameter {p.placements} {tuple(p.shape)}")
    return problems


def _replicated(value):
    from torch.distributed.tensor import DTensor

    return (value.full_tensor() if isinstance(value, DTensor) else value).detach().clone()


def worker(rank: int, port: str, out: str) -> None:
    """One rank: each optimizer of CONFIGS steps an FSDP2-sharded model; the results go to ``out``."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import DeviceMesh
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.tensor import DTensor

    timeout = datetime.timedelta(seconds=GROUP_TIMEOUT)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2, timeout=timeout)
    results = {}
    for index, (label, (name, kw)) in enumerate(CONFIGS.items()):
        group = dist.new_group([0, 1], timeout=timeout, backend="gloo")
        result = results[label] = {}
        try:
            # a mesh named after the optimizer: DTensor caches sharding decisions per equal mesh, and meshes
            # over different groups but with the same ranks and names are equal
            mesh = DeviceMesh.from_group(group, "cpu", mesh_dim_names=(f"shard{index}",))
            net = model()
            for layer in (net[0], net[2], net):
                fully_shard(layer, mesh=mesh)
            params = list(net.parameters())
            result["sharded"] = all(isinstance(p, DTensor) for p in params)
            opt = getattr(dynopt.torch, name)(params, **kw)
            for k in range(STEPS):
                opt.zero_grad()
                loss(net, k).backward()
                if k == 0:
                    result["first_grads"] = [_replicated(p.grad) for p in params]
                opt.step()
            result["params"] = [_replicated(p) for p in params]
            result["state_problems"] = _state_problems(opt, params)
            result["scalars"] = {key: _replicated(value) for key, value in opt.global_scalars().items()}
        except Exception as err:
            frames = [f for f in traceback.extract_tb(err.__traceback__) if "dynopt" in f.filename]
            where = f" (at {frames[-1].filename}:{frames[-1].lineno}: {frames[-1].line})" if frames else ""
            result["error"] = f"{type(err).__name__}: {err}{where}"[:2000]
        torch.save(results, out)  # after every optimizer: what ran is kept even if a later one hangs
    dist.destroy_process_group()  # every group


@pytest.fixture(scope="module")
def fsdp_results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fsdp")
    return run_two_ranks(__file__, folder, TIMEOUT)


@pytest.mark.parametrize("label", list(CONFIGS))
def test_fsdp2_sharded_step_gives_the_single_process_result(fsdp_results, label):
    ranks = [r[label] for r in fsdp_results]
    errors = {rank: r["error"] for rank, r in enumerate(ranks) if "error" in r}
    assert not errors, f"{label} on FSDP2 (DTensor) parameters raised: {errors}"
    assert all(r["sharded"] for r in ranks)
    first, full, opt = single_process(label)
    for rank, r in enumerate(ranks):
        for i, (a, b) in enumerate(zip(r["first_grads"], first)):
            assert torch.equal(a, b), f"rank {rank}, parameter {i}: the FSDP gradient is not the full-batch gradient"
        assert r["state_problems"] == [], r["state_problems"]
    scalars = [r["scalars"] for r in ranks]
    assert set(scalars[0]) == set(scalars[1]) == set(opt.global_scalars())
    for key, value in opt.global_scalars().items():  # a global scalar is one value on every rank
        per_rank, single = [float(s[key]) for s in scalars], float(value)
        assert per_rank[0] == per_rank[1], (f"{label}: {key!r} differs between the ranks, {per_rank} (single process "
                                            f"{single!r}): a global reduction summed only each rank's shards?")
        assert abs(per_rank[0] - single) <= RELATIVE * abs(single), (label, key, per_rank, single)
    if label.startswith("Meta"):
        assert float(opt.global_scalars()["scale"]) != 1.0  # the alignment did change the scale
    start = list(model().parameters())
    for i, (a, b, s) in enumerate(zip(ranks[0]["params"], full, start)):
        assert not torch.equal(b, s.detach()), f"parameter {i} did not move"
        difference, size = float((a - b).abs().max()), float(b.abs().max())
        message = f"{label}, parameter {i}: max |FSDP - single process| = {difference:.3e} (max |parameter| {size:.3g})"
        if label in REDUCING:
            assert difference <= RELATIVE * size, message
        else:
            assert torch.equal(a, b), message

if __name__ == "__main__":
    worker(int(sys.argv[1]), sys.argv[2], sys.argv[3])
