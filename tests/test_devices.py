"""The torch drop-ins on a device, in the precisions people train in: every execution path against torch.optim.

Every ``dynopt.torch`` class that has a ``torch.optim`` namesake (the drop-ins) steps the same parameters and
gradients as ``torch.optim.<Name>`` with its default implementation on that device (foreach on CUDA), in float32
and bfloat16, on each of dynopt's three execution paths (``flat=False``, the default flat buckets, ``fused=True``),
and must hold the same parameters and the same state afterwards.

The device is ``DYNOPT_TEST_DEVICE`` (default ``cpu``; ``cuda`` on a GPU machine: ``benchmarks/gpu_check.sh``). On
CPU these tests repeat, in low precision, what test_parity and test_torch_paths prove in float64; their point is
the same check on an accelerator, where the kernels are other kernels (inductor emits Triton there). Asking for a
device that is not present fails; it never skips.

Where the expected values come from: torch.optim itself, run side by side. The tolerance is not 1e-12 because the
two libraries round in a different order: float32, max |Δ| ≤ 2e-5 · max |θ| (a rounding of 6e-8 per operation, some
ten operations per step, five steps, and the division by √v of Adam-type rules, which amplifies a relative
difference in v by at most 1/2; measured on CPU: at most 3.1e-7); bfloat16, max |Δ| ≤ 4 ulp(max |θ|) (torch.optim
rounds every intermediate to bfloat16, dynopt's fused kernels compute in float32 and round once, so the two may
land an ulp apart at a step; measured on CPU: at most 1.1 ulp). The steps must move θ by at least twice the
tolerance (|θ₀| ≤ 0.1, lr 1e-2), else the comparison would prove nothing.
"""

from __future__ import annotations

import os

import pytest
import torch
from zoo_options import STATEFUL

import dynopt.torch as dt

torch.set_num_threads(1)

DEVICE = torch.device(os.environ.get("DYNOPT_TEST_DEVICE", "cpu"))
NOT_DROP_INS = {"Optimizer", "LBFGS", "SparseAdam"}  # torch.optim names that are no optimizer or that dynopt leaves out
DROP_INS = sorted(n for n in dir(dt) if isinstance(getattr(dt, n), type) and n not in NOT_DROP_INS
                  and isinstance(getattr(torch.optim, n, None), type) and issubclass(getattr(torch.optim, n), torch.optim.Optimizer))
OPTIONS = {**{n: STATEFUL.get(n, {}) for n in DROP_INS}, "SGD": {"momentum": 0.9, "weight_decay": 0.01}}
PATHS = {"reference": {"flat": False}, "flat": {}, "fused": {"fused": True}}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
LR = {"Adadelta": 1.0,  # its first steps are √ε-sized: at lr 1e-2 a bfloat16 parameter would not move
      "Adafactor": 0.3}  # its step is relative, lr·RMS(θ) ≈ 6e-4 at lr 1e-2 and |θ| ≤ 0.1: too small to show
STEPS = 5
MATRICES = [(6, 4), (3, 7)]
SHAPES = MATRICES + [(5,), (2, 3, 4)]


def test_the_device_is_present_and_the_drop_ins_are_found():
    """A GPU run must not quietly run on the CPU, nor on an empty list."""
    if DEVICE.type == "cuda":
        assert torch.cuda.is_available(), "DYNOPT_TEST_DEVICE=cuda but torch sees no CUDA device"
    torch.empty(1, device=DEVICE)
    assert {"SGD", "Adam", "AdamW", "RMSprop", "Adagrad"} <= set(DROP_INS), DROP_INS


def problem(name, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shapes = MATRICES if name == "Muon" else SHAPES  # torch.optim.Muon takes matrices only
    # |θ| ≤ 0.1, so that five steps of ~lr move θ by many bfloat16 ulps
    init = [(0.2 * torch.rand(s, generator=gen, dtype=torch.float64) - 0.1).to(DEVICE, dtype) for s in shapes]
    grads = [[torch.randn(s, generator=gen, dtype=torch.float64).to(DEVICE, dtype) for s in shapes] for _ in range(STEPS)]
    return init, grads


def run(make, init, grads):
    params = [torch.nn.Parameter(x.clone()) for x in init]
    opt = make(params)
    for g in grads:
        for p, gi in zip(params, g):
            p.grad = gi.clone()
        opt.step()
    return params, opt


def tolerance(dtype, scale):
    if dtype == torch.bfloat16:
        return 4 * scale * torch.finfo(torch.bfloat16).eps
    return 2e-5 * scale


@pytest.mark.parametrize("dtype", DTYPES, ids=list(DTYPES))
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", DROP_INS)
def test_every_path_steps_like_torch_optim_on_the_device(name, path, dtype):
    dtype = DTYPES[dtype]
    kwargs = {"lr": LR.get(name, 1e-2), **OPTIONS[name]}
    init, grads = problem(name, dtype)
    expected, reference = run(lambda p: getattr(torch.optim, name)(p, **kwargs), init, grads)
    got, opt = run(lambda p: getattr(dt, name)(p, **kwargs, **PATHS[path]), init, grads)
    moved = max((b.detach().float() - x.float()).abs().max().item() for b, x in zip(expected, init))
    for i, (a, b) in enumerate(zip(got, expected)):
        assert a.device == b.device and a.dtype == b.dtype
        scale = b.detach().abs().max().float().item()
        error = (a.detach().float() - b.detach().float()).abs().max().item()
        assert error <= tolerance(dtype, scale), f"parameter {i}: max |Δ| = {error:.3g} (max |θ| = {scale:.3g})"
        assert moved >= 2 * tolerance(dtype, scale), f"the steps moved θ by {moved:.3g} only: the comparison proves nothing"
    for i, (p, q) in enumerate(zip(got, expected)):
        mine, theirs = opt.state[p], reference.state[q]
        for key, value in theirs.items():
            if not torch.is_tensor(value):
                assert mine[key] == value, (i, key)
                continue
            assert key in mine, f"parameter {i}: state {key!r} missing"
            ours = torch.as_tensor(mine[key])
            assert ours.device == value.device or value.dim() == 0, (i, key, ours.device, value.device)
            scale = max(value.abs().max().float().item(), 1e-3) if value.numel() else 1.0
            error = (ours.float().cpu() - value.float().cpu()).abs().max().item() if value.numel() else 0.0
            assert error <= tolerance(dtype, scale), f"parameter {i}, state {key!r}: max |Δ| = {error:.3g} (scale {scale:.3g})"
