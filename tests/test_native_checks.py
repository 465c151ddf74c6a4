"""The native per-step checks of a flat plan (``dynopt._backends.native_checks``) against their Python passes.

Each function answers one question over lists ("is every item the expected object / at the expected
address?"). The expected answers are written here from the definition (a list comprehension per case),
and the native module and ``PythonChecks`` must both give them, on lists that agree, differ at the first,
a middle or the last item, differ in length, hold None or objects that are not tensors. The flat-plan tests
(``tests/test_flat_parameters.py``) run the steady-state check on both implementations.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from dynopt._backends import native_checks
from dynopt._backends.native_checks import PythonChecks

N = 7


@pytest.fixture(scope="module")
def native():
    # CI and this machine have a C++ compiler (fused=True needs one too): the native module must build here,
    # or the steady-state check silently runs its slower Python passes
    return native_checks.load_native()


@pytest.fixture(params=["native", "python"])
def checks(request, native):
    return native if request.param == "native" else PythonChecks


def tensors(n=N, grads=True):
    out = [torch.nn.Parameter(torch.randn(3)) for _ in range(n)]
    if grads:
        for p in out:
            p.grad = torch.randn(3)
    return out


def changed(items, index, value):
    out = list(items)
    out[index] = value
    return out


POSITIONS = [0, N // 2, N - 1]


def test_same_objects(checks):
    a = tensors()
    assert checks.same_objects(a, list(a)) and checks.same_objects([], [])
    for i in POSITIONS:
        assert not checks.same_objects(a, changed(a, i, a[i].detach()))  # an equal-valued other object
    assert not checks.same_objects(a, a[:-1]) and not checks.same_objects(a[:-1], a)
    assert not checks.same_objects(tuple(a), list(a))  # lists only, as the plan keeps them


def test_attributes_are(checks):
    a = tensors()
    grads = [p.grad for p in a]
    assert checks.attributes_are(a, "grad", grads)
    for i in POSITIONS:
        assert not checks.attributes_are(a, "grad", changed(grads, i, grads[i].clone()))
        assert not checks.attributes_are(a, "grad", changed(grads, i, None))
    a[2].grad = None
    assert checks.attributes_are(a, "grad", [p.grad for p in a]) and a[2].grad is None
    assert not checks.attributes_are(a, "grad", grads[:-1])
    assert not checks.attributes_are([object()] * N, "grad", [None] * N)  # no such attribute: False, no error


def test_data_ptrs_are(checks):
    a = tensors()
    addresses = [p.data_ptr() for p in a]
    assert checks.data_ptrs_are(a, addresses) and checks.data_ptrs_are([], [])
    for i in POSITIONS:
        assert not checks.data_ptrs_are(a, changed(addresses, i, addresses[i] + 4))
        assert not checks.data_ptrs_are(changed(a, i, None), addresses)
        assert not checks.data_ptrs_are(changed(a, i, 17), addresses)
    base = torch.zeros(20)
    views = [base[i:i + 2] for i in range(0, 20, 2)]  # a view's address includes its offset, as Tensor.data_ptr
    assert checks.data_ptrs_are(views, [v.data_ptr() for v in views])
    assert not checks.data_ptrs_are(views, [base.data_ptr()] * len(views))
    a[1].data = torch.randn(3)  # param.data = ...: the address moves
    assert not checks.data_ptrs_are(a, addresses)


def test_views_hold(checks):
    a = tensors()
    grads = [p.grad for p in a]
    addresses = [p.data_ptr() for p in a]
    grad_addresses = [g.data_ptr() for g in grads]
    assert checks.views_hold(a, grads, addresses, grad_addresses)
    skipped = changed(changed(addresses, 3, None), 4, None)  # None: that address is not checked
    assert checks.views_hold(a, grads, skipped, changed(grad_addresses, 3, None))
    for i in POSITIONS:
        assert not checks.views_hold(a, changed(grads, i, grads[i].clone()), addresses, grad_addresses)
        assert not checks.views_hold(a, grads, changed(addresses, i, addresses[i] + 4), grad_addresses)
        assert not checks.views_hold(a, grads, addresses, changed(grad_addresses, i, grad_addresses[i] + 4))
    assert not checks.views_hold(a, grads, addresses[:-1], grad_addresses)
    a[5].grad.data = torch.randn(3)  # grad.data = ...: the same gradient object, moved
    assert not checks.views_hold(a, grads, addresses, grad_addresses)
    assert checks.views_hold(a, grads, addresses, changed(grad_addresses, 5, None))
    a[2].grad = None
    grad_addresses[5] = a[5].grad.data_ptr()
    assert checks.views_hold(a, changed(grads, 2, None), addresses, changed(grad_addresses, 2, None))
    assert not checks.views_hold(a, changed(grads, 2, None), addresses, grad_addresses)  # None has no address


def test_entries_are(checks):
    a = tensors()
    states = [{"step": torch.tensor(1.0), "buf": p} for p in a]
    names = ["buf"] * N
    values = [s["buf"] for s in states]
    assert checks.entries_are(states, names, values)
    for i in POSITIONS:
        assert not checks.entries_are(states, names, changed(values, i, values[i].clone()))
        assert not checks.entries_are(states, changed(names, i, "missing"), values)  # missing: None, not the value
    assert checks.entries_are(states, changed(names, 1, "missing"), changed(values, 1, None))
    assert not checks.entries_are(states, names, values[:-1])
    assert not checks.entries_are(changed(states, 0, [1, 2]), names, values)  # not a dict: False, no error


def test_without_a_compiler_the_python_passes_run(tmp_path):
    """No C++ compiler (CXX names a missing program, an empty cache): CHECKS falls back to the Python passes,
    and a flat-parameter plan still runs in place."""
    code = """
import torch, dynopt.torch as dt
from dynopt._backends.native_checks import CHECKS, PythonChecks
ps = [torch.nn.Parameter(torch.randn(4)) for _ in range(3)]
dt.flatten_parameters(ps)
opt = dt.Momentum(ps, lr=0.1, momentum=0.9)
for _ in range(4):
    opt.zero_grad(); sum(p.sum() for p in ps).backward(); opt.step()
assert CHECKS.native is False and CHECKS.views_hold is PythonChecks.views_hold, CHECKS.native
assert opt.execution.direct == 3 and opt._flat.snapshot is not None
print("ok")
"""
    env = {"PATH": "/usr/bin:/bin", "CXX": str(tmp_path / "no-such-compiler"), "DYNOPT_CACHE_DIR": str(tmp_path),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
