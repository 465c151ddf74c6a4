"""torch.optim classes as the oracle, with torch's per-parameter scalar state in float64.

torch.optim.NAdam (``mu_product``) and torch.optim.ASGD (``eta``, ``mu``) create 0-dim state tensors in
torch's default scalar dtype, float32 unless the default dtype is float64, and compute with their
rounded values (ASGD's step size itself). dynopt keeps them in the parameter's precision. The
reference for float64 parameters is therefore torch.optim with that state in float64: the same
class, stepping under ``torch.set_default_dtype(torch.float64)``, which is where torch's own float64
numbers are (measured: with float32 scalars NAdam's parameters differ by ~2e-10 relative after 30
steps, its mu_product by 1.6e-7; see the optimizers' docstrings).
"""

from __future__ import annotations

import contextlib
import functools

import torch

FLOAT32_SCALARS = ("NAdam", "ASGD")  # torch.optim's optimizers that keep 0-dim state in the default scalar dtype


@contextlib.contextmanager
def default_dtype(dtype):
    before = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(before)


@functools.cache
def torch_class(name: str) -> type[torch.optim.Optimizer]:
    """``torch.optim.<name>``; for NAdam and ASGD a subclass of the same name whose steps create and update the
    per-parameter scalars in float64 (torch's behaviour under a float64 default dtype)."""
    base = getattr(torch.optim, name)
    if name not in FLOAT32_SCALARS:
        return base

    def step(self, closure=None):
        with default_dtype(torch.float64):
            return base.step(self, closure)

    return type(name, (base,), {"step": step, "__module__": __name__})
