"""Tree operations as ``torch._foreach_*`` multi-tensor kernels: the torch backend's reference path."""

from __future__ import annotations

import torch

from ..tree import LeafOps, _axes

__all__ = ["ForeachOps", "FiniteSumOps", "at_least_float32", "is_plain", "unsharded", "real_view", "real_dtype"]

_BINARY = {
    "add": torch._foreach_add,
    "sub": torch._foreach_sub,
    "mul": torch._foreach_mul,
    "div": torch._foreach_div,
    "maximum": torch._foreach_maximum,
    "minimum": torch._foreach_minimum,
}
_UNARY = {
    "neg": torch._foreach_neg,
    "sqrt": torch._foreach_sqrt,
    "exp": torch._foreach_exp,
    "log": torch._foreach_log,
    "abs": torch._foreach_abs,
    "sign": torch._foreach_sign,
    "expm1": torch._foreach_expm1,
}
_SCALAR = {"sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log, "abs": torch.abs, "sign": torch.sign,
           "neg": torch.neg, "expm1": torch.expm1, "isfinite": torch.isfinite}
_REDUCE = {"sum": torch.sum, "max": torch.amax, "min": torch.amin, "norm": None}
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32, "float64": torch.float64}


class ForeachOps(LeafOps):
    """Tree operations as ``torch._foreach_*`` multi-tensor kernels."""

    def binary(self, op, xs, ys):
        if op in ("maximum", "minimum") and not isinstance(ys, list):
            clamp = torch._foreach_clamp_min if op == "maximum" else torch._foreach_clamp_max
            return list(clamp(xs, ys))
        return list(_BINARY[op](xs, ys))

    def rbinary(self, op, s, xs):
        if op == "sub":  # s - x == (-x) + s exactly
            return list(torch._foreach_add(torch._foreach_neg(xs), s))
        if op in ("add", "mul"):
            return list(_BINARY[op](xs, s))
        return [torch.div(s, x) if op == "div" else _BINARY[op]([s], [x])[0] for x in xs]

    def unary(self, op, xs):
        return list(_UNARY[op](xs))

    def scalar(self, op, s):
        return _SCALAR[op](s)

    def sum_all(self, xs):
        """Σ x = ‖max(x, 0)‖₁ − ‖min(x, 0)‖₁: a constant number of multi-tensor kernels, no per-leaf sum."""
        if not xs:
            return torch.zeros(())
        positive, negative = _signed_parts(xs)
        return positive.sum() - negative.sum()

    def zeros_like(self, xs):
        return [torch.zeros_like(x) for x in xs]

    def is_scalar(self, x):
        return isinstance(x, torch.Tensor) and x.dim() == 0

    def where(self, cond, xs, ys):
        return [torch.where(cond, x, y) for x, y in zip(xs, ys)]

    def reduce_along(self, op, xs, axis):
        f = _REDUCE[op]
        out = []
        for x in xs:
            dims = tuple(range(x.dim())) if axis is None else tuple(a % max(x.dim(), 1) for a in _axes(axis))
            if op == "norm":  # torch.linalg.vector_norm: a low-precision leaf accumulates in float32
                out.append(torch.linalg.vector_norm(x, dim=dims, keepdim=True) if dims else x.abs())
                continue
            if x.numel() == 0:  # max/min have no identity; any value broadcasts against an empty leaf
                out.append(x.new_zeros([1 if d in dims else n for d, n in enumerate(x.shape)]))
            else:
                out.append(f(x, dim=dims, keepdim=True))
        return out

    def clip(self, s, low, high):
        return torch.clamp(s, low, high)

    def leaf_min(self, x):
        if not x.numel() or x.is_meta:  # a meta tensor has no values to check (and no .item())
            return float("inf")
        low = x.min()
        return float(unsharded(low))  # a DTensor: over every shard

    def leaf_ndim(self, x):
        return x.dim()

    def matmul(self, xs, ys, alpha=1.0, beta=0.0, cs=None):
        """``torch.addmm`` (``torch.baddbmm`` for a batch of matrices), or ``x @ y``: torch.optim's own kernels."""
        out = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            if cs is None:
                value = x @ y
                out.append(value if isinstance(alpha, (int, float)) and alpha == 1 else value * alpha)
            elif x.dim() == 2:
                out.append(torch.addmm(cs[i], x, y, beta=beta, alpha=alpha))
            else:
                out.append(torch.baddbmm(cs[i], x, y, beta=beta, alpha=alpha))
        return out

    def transpose(self, xs, which=None):
        return [x.mT if which is None or which[i] else x for i, x in enumerate(xs)]

    def permute(self, xs, axes):
        return [x if a is None else x.permute(*a) for x, a in zip(xs, axes, strict=True)]

    def reshape(self, xs, shapes):
        return [x if shape is None else x.reshape(shape) for x, shape in zip(xs, shapes, strict=True)]

    def spectral_norm(self, xs):
        return [x.new_zeros((*x.shape[:-2], 1, 1)) if x.numel() == 0 else torch.linalg.matrix_norm(x, ord=2, keepdim=True)
                for x in xs]

    def cast(self, xs, dtype):
        if isinstance(dtype, str):
            return [x.to(_DTYPES[dtype]) for x in xs]
        return [x.to(like.dtype) for x, like in zip(xs, dtype)]

    def leaf_shape(self, x):
        return tuple(x.shape)

    def normal(self, stream, xs):
        """One CPU ``torch.Generator`` per leaf (the stream: their states, uint8 tensors, or the same values in another
        dtype, as ``Optimizer.load_state_dict`` casts state to the parameter's dtype): each leaf drawn by
        ``torch.randn`` in its dtype on the CPU, then moved to its device (the same numbers on every device); torch's
        global RNG is never touched."""
        out, following = [], []
        for state, x in zip(stream, xs):
            draw = torch.Generator()
            draw.set_state(state.detach().to("cpu", torch.uint8))
            out.append(torch.randn(x.shape, generator=draw, dtype=x.dtype).to(x.device))
            following.append(draw.get_state())
        return out, following

    def stream(self, seed, xs):
        return [generator_state(seed, index) for index in range(len(xs))]

    def leaf_eps(self, x):
        return torch.finfo(x.dtype).eps


def generator_state(seed: int, index: int) -> torch.Tensor:
    """The state (a uint8 tensor) of a fresh CPU ``torch.Generator`` for leaf ``index`` of a stream seeded by ``seed``:
    the 64-bit seed of each leaf comes from NumPy's ``SeedSequence([seed, index])``, so that leaves draw independent
    numbers (not the same ones, as one seed for all would give)."""
    import numpy as np

    leaf_seed = int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint64)[0])
    return torch.Generator().manual_seed(leaf_seed).get_state()


def is_plain(x: torch.Tensor) -> bool:
    """A dense tensor or Parameter, not a subclass such as DTensor (FSDP2), whose sharding rules do not
    cover every multi-tensor kernel and which the flat buffers cannot hold."""
    return type(x) is torch.Tensor or (type(x) is torch.nn.Parameter and type(x.data) is torch.Tensor)


def real_view(x: torch.Tensor) -> torch.Tensor:
    """A complex tensor as the real tensor of its (re, im) pairs, ``torch.view_as_real`` (a view: writing it
    writes ``x``), as torch.optim steps complex parameters; any other tensor as it is."""
    return torch.view_as_real(x) if x.is_complex() else x


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype of ``real_view`` of a tensor of ``dtype``."""
    return dtype.to_real() if dtype.is_complex else dtype


def unsharded(x: torch.Tensor) -> torch.Tensor:
    """The whole value of a DTensor (gathered over its shards); any other tensor as it is."""
    return x.full_tensor() if hasattr(x, "full_tensor") else x


def _signed_parts(xs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per leaf ‖max(x, 0)‖₁ and ‖min(x, 0)‖₁, accumulated and returned in at least float32: their
    difference cancels, so rounding each to bfloat16 first would lose the sum."""
    dtype = torch.float32
    for x in xs:
        dtype = torch.promote_types(dtype, x.dtype)
    positive = torch._foreach_norm(torch._foreach_clamp_min(xs, 0.0), 1, dtype=dtype)
    negative = torch._foreach_norm(torch._foreach_clamp_max(xs, 0.0), 1, dtype=dtype)
    return torch.stack(positive), torch.stack(negative)


def at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """Global sums in at least float32: a bfloat16 cosine (3 digits) would round a small multiplicative
    step-size change such as exp(1e-4) to exactly 1."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


class FiniteSumOps(ForeachOps):
    """``ForeachOps`` whose tree-wide sums leave out a leaf whose own sum is not finite: the maths of
    the spec's global reductions, so that one non-finite parameter cannot poison the others."""

    def sum_all(self, xs):
        if not xs:
            return torch.zeros(())
        positive, negative = _signed_parts(xs)
        finite = torch.isfinite(positive - negative)  # both parts finite (inf − inf is nan)
        return torch.where(finite, positive, 0.0).sum() - torch.where(finite, negative, 0.0).sum()
