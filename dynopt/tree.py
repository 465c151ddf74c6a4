"""Tree-level maths: the language in which specs are written.

A :class:`Tree` is the list of a model's parameter-shaped leaves. Arithmetic on trees is
elementwise (``a * b + c``, scalars broadcast), and :class:`TreeMath` (the ``o`` argument of
every spec function) adds elementwise functions (``o.sqrt``) and tree-wide reductions
(``o.dot``, ``o.sum``, ``o.norm``) that return one scalar for the whole tree.

A backend supplies a :class:`LeafOps`: how to do one operation on a *list* of leaves. The torch
backend maps each operation to one ``torch._foreach_*`` multi-tensor kernel; NumPy and JAX map it
to a list comprehension (which XLA fuses under ``jit``).

Multiplying by a literal Python ``0`` gives :data:`ZERO` and adding ``ZERO`` is free, so
``weight_decay * param`` costs nothing when ``weight_decay == 0`` (a traced value is never folded).
``ZERO`` is an exact zero tree of unknown shape, and every operation here takes it: a function of it
that is not zero is a constant (``o.exp(ZERO)`` is ``1.0``), which broadcasts like any scalar, and
:func:`settle` turns a spec's outputs into what backends write (``Tree`` or ``ZERO``). A learning
rate of exactly 0 (a scheduler's last value) folds ``-lr * grad`` into ``ZERO`` this way.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable, Sequence

__all__ = ["Tree", "ZERO", "LeafOps", "ArrayLeafOps", "FiniteSumArrayOps", "TreeMath", "as_tree", "settle", "unread",
           "UnreadParamsError"]


def _is_number(x: Any) -> bool:
    return isinstance(x, numbers.Number) and not isinstance(x, bool)


_REFLECTED = {"add": "__radd__", "sub": "__rsub__", "mul": "__rmul__", "div": "__rtruediv__",  # torch's names
              "__add__": "__radd__", "__sub__": "__rsub__", "__mul__": "__rmul__", "__truediv__": "__rtruediv__",
              # a tensor's reflected operator with the tree second (dynamo tries it for ``tree ∘ tensor``)
              "__radd__": "__add__", "__rsub__": "__sub__", "__rmul__": "__mul__", "__rdiv__": "__truediv__",
              "__rtruediv__": "__truediv__"}


def _torch_function(cls, func, types, args=(), kwargs=None):
    """``tensor ∘ tree`` as ``tree.__r∘__(tensor)``: a torch Tensor operand on the left reaches the tree's
    reflected operator through ``__torch_function__``, which torch.compile (dynamo) traces; Python's own
    fallback (the tensor's operator raising TypeError, then the reflected one) is a graph break there."""
    name = _REFLECTED.get(getattr(func, "__name__", ""))
    if name is not None and not kwargs and len(args) == 2 and isinstance(args[1], cls):
        return getattr(args[1], name)(args[0])
    return NotImplemented


class _Zero:
    """The additive identity of trees, produced by ``0 * tree``."""

    __array_ufunc__ = None
    __torch_function__ = classmethod(_torch_function)

    def __repr__(self) -> str:
        return "ZERO"

    def __add__(self, other):
        return other

    __radd__ = __add__

    def __sub__(self, other):
        return -other

    def __rsub__(self, other):
        return other

    def __mul__(self, other):
        return self

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self

    def __rtruediv__(self, other):  # a scalar over a tree of zeros: IEEE division by +0
        if _is_number(other):
            return math.nan if other == 0 or math.isnan(other) else math.copysign(math.inf, other)
        return other / 0.0

    def __pow__(self, exponent):
        if not _is_number(exponent):
            return NotImplemented
        return ZERO if exponent > 0 else 1.0 if exponent == 0 else math.inf

    def __neg__(self):
        return self

    __pos__ = __abs__ = __neg__

    def __float__(self) -> float:
        return 0.0


ZERO = _Zero()


def as_tree(value: Any, like: "Tree"):
    """``value`` as a tree shaped like ``like``: a ``Tree`` or ``ZERO`` as it is, a scalar (a
    constant such as ``o.exp(ZERO)``, or a 0-dim array) broadcast to every leaf, a zero number as ``ZERO``."""
    if value is ZERO or isinstance(value, Tree):
        return value
    if _is_number(value) and value == 0:
        return ZERO
    ops = like.ops
    return Tree(ops.binary("add", ops.zeros_like(like.leaves), value), ops)


def settle(delta: Any, new: dict, like: "Tree", state: Any) -> tuple[Any, dict]:
    """A spec's ``(delta, new_state)`` as backends write it: ``delta`` and every parameter-shaped state
    value a ``Tree`` or ``ZERO`` (constants broadcast, see :func:`as_tree`), a global scalar that came
    out as ``ZERO`` the number 0.0. ``like`` is parameter-shaped; ``state`` holds the old state trees."""
    trees = {name: value for name, value in vars(state).items() if isinstance(value, Tree)}
    settled = {name: as_tree(value, trees[name]) if name in trees else 0.0 if value is ZERO else value
               for name, value in new.items()}
    return as_tree(delta, like), settled


class Tree:
    """Parameter-shaped leaves with elementwise arithmetic, executed by ``ops``."""

    __slots__ = ("leaves", "ops")
    __array_ufunc__ = None  # make NumPy scalars defer to our reflected operators
    __array_priority__ = 1000
    __torch_function__ = classmethod(_torch_function)  # and torch tensors, also under torch.compile

    def __init__(self, leaves: Sequence[Any], ops: "LeafOps"):
        self.leaves = list(leaves)
        self.ops = ops

    def __len__(self) -> int:
        return len(self.leaves)

    def __repr__(self) -> str:
        return f"Tree({len(self.leaves)} leaves, {type(self.ops).__name__})"

    def _binary(self, op: str, other: Any, reflected: bool = False):
        if other is ZERO:
            if op == "div" and not reflected:  # x / 0 elementwise, as the backend divides by 0.0
                return Tree(self.ops.binary("div", self.leaves, 0.0), self.ops)
            return {"add": self, "sub": -self if reflected else self, "mul": ZERO, "div": ZERO}.get(op, NotImplemented)
        if isinstance(other, Tree):
            xs, ys = (other.leaves, self.leaves) if reflected else (self.leaves, other.leaves)
            return Tree(self.ops.binary(op, xs, ys), self.ops)
        if _is_number(other):
            if op == "mul" and other == 0:
                return ZERO
            if (op == "mul" and other == 1) or (op in ("add", "sub") and other == 0 and not reflected):
                return self
            if op == "div" and other == 1 and not reflected:
                return self
        elif not self.ops.is_scalar(other):
            return NotImplemented
        if reflected:
            return Tree(self.ops.rbinary(op, other, self.leaves), self.ops)
        return Tree(self.ops.binary(op, self.leaves, other), self.ops)

    def __add__(self, other):
        return self._binary("add", other)

    def __radd__(self, other):
        return self._binary("add", other, reflected=True)

    def __sub__(self, other):
        return self._binary("sub", other)

    def __rsub__(self, other):
        return self._binary("sub", other, reflected=True)

    def __mul__(self, other):
        return self._binary("mul", other)

    def __rmul__(self, other):
        return self._binary("mul", other, reflected=True)

    def __truediv__(self, other):
        return self._binary("div", other)

    def __rtruediv__(self, other):
        return self._binary("div", other, reflected=True)

    def __neg__(self):
        return Tree(self.ops.unary("neg", self.leaves), self.ops)

    def __pow__(self, exponent):
        if exponent == 2:
            return Tree(self.ops.binary("mul", self.leaves, self.leaves), self.ops)
        raise NotImplementedError("Tree ** n supports n == 2 only; use o.exp/o.log for other powers")


class UnreadParamsError(RuntimeError):
    """A spec read the parameters where its ``needs_params`` said it would not."""


class _Unread(Tree):
    """Stands for the parameters when the spec's ``needs_params`` is False: multiplying it by a literal 0
    (``weight_decay * param``) gives ``ZERO`` as for any tree, and any use of its values raises."""

    __slots__ = ("spec_name",)

    def __init__(self, ops: "LeafOps", spec_name: str):  # no leaves: it holds none
        self.ops, self.spec_name = ops, spec_name

    @property
    def leaves(self):
        raise UnreadParamsError(
            f"{self.spec_name}: update read the parameters, but the spec's needs_params is False for these "
            "hyperparameters; make needs_params return True whenever update reads param")

    def __repr__(self) -> str:
        return f"Tree(unread parameters of {self.spec_name})"


def unread(ops: "LeafOps", spec_name: str) -> Tree:
    """The parameters as a spec whose ``needs_params`` is False sees them (see :class:`UnreadParamsError`)."""
    return _Unread(ops, spec_name)


class LeafOps:
    """What a backend implements: one operation over a list of leaves.

    ``binary(op, xs, ys)``: ``ys`` is a list of leaves (or of one number per leaf) or a scalar; op in add, sub,
    mul, div, maximum, minimum. ``rbinary(op, s, xs)``: scalar on the left. ``unary(op, xs)``: neg, sqrt,
    exp, log, abs, sign, expm1. ``scalar(op, s)``: the same functions on one scalar. ``sum_all(xs)``:
    the sum of every entry of every leaf, one scalar kept on the device. ``is_scalar(x)`` tells a
    backend scalar (0-d array or tensor) from anything else.
    """

    def binary(self, op: str, xs, ys) -> list: ...

    def rbinary(self, op: str, s, xs) -> list: ...

    def unary(self, op: str, xs) -> list: ...

    def scalar(self, op: str, s): ...

    def sum_all(self, xs): ...

    def dot(self, xs, ys):
        """Σ x⊙y over every leaf (``sum_all`` of the products unless a backend has a one-pass kernel)."""
        return self.sum_all(self.binary("mul", xs, ys))

    def zeros_like(self, xs) -> list: ...

    def is_scalar(self, x) -> bool: ...

    def where(self, cond, xs, ys) -> list: ...

    def scalar_where(self, cond, a, b):
        """``a`` where ``cond`` else ``b`` for two scalars (a global scalar's select)."""
        return self.where(cond, [a], [b])[0]

    def reduce_along(self, op: str, xs, axis) -> list:
        """Per-leaf ``sum``/``max``/``min``/``norm`` (the 2-norm) along ``axis`` (None: the whole leaf), keeping dims."""

    def clip(self, s, low, high): ...

    def leaf_min(self, x) -> float: ...

    def leaf_ndim(self, x) -> int: ...

    # per-leaf matrix operations (on the last two dimensions of each leaf)
    def matmul(self, xs, ys, alpha=1.0, beta=0.0, cs=None) -> list:
        """Per leaf ``beta·c + alpha·(x @ y)`` (``cs`` None: ``alpha·(x @ y)``), rounded once to the leaves'
        dtype; leaves of a low-precision dtype (bfloat16, float16) are multiplied with float32 accumulation,
        as torch's CPU kernels do."""

    def transpose(self, xs, which=None) -> list:
        """Per leaf the transpose of the last two dimensions, of the leaves where ``which`` (a list of bools) is
        True (None: every leaf)."""

    def spectral_norm(self, xs) -> list:
        """Per leaf the spectral norm (the largest singular value) of each matrix of its last two dimensions, keeping
        dims (0 for an empty matrix)."""

    def permute(self, xs, axes) -> list:
        """Per leaf its axes in the order ``axes[i]`` (a tuple; None: the leaf as it is)."""

    def reshape(self, xs, shapes) -> list:
        """Per leaf its entries (in row-major order) in the shape ``shapes[i]`` (None: the leaf as it is)."""

    def cast(self, xs, dtype) -> list:
        """Per leaf ``x`` in ``dtype``: the name of a floating dtype (``"bfloat16"``), or a list of leaves whose
        dtypes to take."""

    def leaf_shape(self, x) -> tuple:
        """The shape of one leaf, as a tuple of ints (static under jit)."""

    # random numbers (a spec with Spec.random_seed): the stream is the backend's own value, opaque to specs
    def stream(self, seed, xs):
        """A random stream for the leaves ``xs`` from ``seed`` (an int; in JAX also a PRNG key)."""
        raise NotImplementedError(f"{type(self).__name__} draws no random numbers")

    def normal(self, stream, xs) -> tuple[list, Any]:
        """Standard normal draws shaped (and typed) like the leaves ``xs``, and the stream after them."""
        raise NotImplementedError(f"{type(self).__name__} draws no random numbers")

    def leaf_eps(self, x) -> float:
        """The machine epsilon of one leaf's dtype (``torch.finfo(dtype).eps``), a Python float."""

    # loops whose trip count is a hyperparameter (a Python int, or a backend integer that may be traced)
    def static_int(self, n) -> int | None:
        """``n`` as a Python int when its value is known now (a number, or a concrete 0-dim array or tensor); None
        when it is traced (its value known only when the step runs)."""
        return int(n)

    def repeat(self, n, body, xs) -> list:
        """``body`` (a function of a list of leaves to a list of leaves) applied ``n`` times to ``xs``; a backend
        with traced values loops on the device when ``n`` is traced (``static_int(n)`` is None)."""
        for _ in range(int(n)):
            xs = body(xs)
        return xs


_LOW_PRECISION = ("bfloat16", "float16")


def _axes(axis) -> tuple:
    """An axis or a tuple of axes, as a tuple."""
    return tuple(axis) if isinstance(axis, (tuple, list)) else (axis,)


def _dtype_name(dtype) -> str:
    return str(dtype).rsplit(".", 1)[-1]


_BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


_PRECISION_BITS = {"bfloat16": (8, 7), "float16": (5, 10)}  # (exponent, mantissa) bits


class ArrayLeafOps(LeafOps):
    """Leaf operations for any NumPy-like module ``xp`` (NumPy itself, or ``jax.numpy``).

    Under ``jax.jit`` XLA may keep a bfloat16 or float16 intermediate in float32 (its "excess precision");
    every low-precision result here is rounded explicitly (``lax.reduce_precision``), so that a jitted step
    computes what the same step computes eagerly, in NumPy and in torch."""

    def __init__(self, xp):
        self.xp = xp
        self._reduce = None
        if getattr(xp, "__name__", "") == "jax.numpy":
            from jax import lax

            self._reduce = lax.reduce_precision
        self._fn = {
            "maximum": xp.maximum,
            "minimum": xp.minimum,
            "sqrt": xp.sqrt,
            "exp": xp.exp,
            "log": xp.log,
            "abs": xp.abs,
            "sign": xp.sign,
            "neg": xp.negative,
            "expm1": xp.expm1,
            "isfinite": xp.isfinite,
        }

    def _f(self, op):
        return _BINARY.get(op) or self._fn[op]

    def binary(self, op, xs, ys):
        f = self._f(op)
        if isinstance(ys, list):
            return [self._weak(f(x, y), x, y) for x, y in zip(xs, ys)]
        return [self._weak(f(x, ys), x, ys) for x in xs]

    def rbinary(self, op, s, xs):
        f = self._f(op)
        return [self._weak(f(s, x), x, s) for x in xs]

    def _weak(self, value, x, other):
        """A Python number keeps the leaf's dtype (NumPy promotes a bfloat16 leaf to float32 otherwise)."""
        if _is_number(other) and getattr(value, "dtype", None) != getattr(x, "dtype", None) \
                and _dtype_name(x.dtype) in _LOW_PRECISION:
            value = value.astype(x.dtype)
        return self._exact(value)

    def _exact(self, value):
        """A low-precision result rounded to its dtype even under ``jax.jit`` (see the class docstring)."""
        if self._reduce is None:
            return value
        bits = _PRECISION_BITS.get(_dtype_name(getattr(value, "dtype", "")))
        return value if bits is None else self._reduce(value, *bits)

    def unary(self, op, xs):
        f = self._fn[op]
        return [self._exact(f(x)) for x in xs]

    def scalar(self, op, s):
        return self._fn[op](s)

    def sum_all(self, xs):
        return self._total([self.xp.sum(x) for x in xs])

    def dot(self, xs, ys):
        """One BLAS-style dot per leaf (XLA: a dot, not a product array then a reduction)."""
        return self._total([self.xp.vdot(x, y) for x, y in zip(xs, ys)])

    def _total(self, sums):
        return sum(sums[1:], sums[0]) if sums else 0.0

    def zeros_like(self, xs):
        return [self.xp.zeros_like(x) for x in xs]

    def is_scalar(self, x):
        return getattr(x, "ndim", None) == 0

    def where(self, cond, xs, ys):
        return [self.xp.where(cond, x, y) for x, y in zip(xs, ys)]

    def reduce_along(self, op, xs, axis):
        if op == "norm":
            return [self._norm(x, axis) for x in xs]
        f = {"sum": self.xp.sum, "max": self.xp.max, "min": self.xp.min}[op]
        out = []
        for x in xs:
            if x.size == 0 and op != "sum":  # no identity; any value broadcasts against an empty leaf
                dims = range(x.ndim) if axis is None else [a % max(x.ndim, 1) for a in _axes(axis)]
                out.append(self.xp.zeros([1 if d in dims else n for d, n in enumerate(x.shape)], x.dtype))
            else:
                out.append(f(x, axis=axis, keepdims=True))
        return out

    def _norm(self, x, axis):
        """The 2-norm along ``axis`` (None: the whole leaf), keeping dims; accumulated in at least float32."""
        low = _dtype_name(x.dtype) in _LOW_PRECISION
        y = x.astype(self.xp.float32) if low else x
        value = self.xp.sqrt(self.xp.sum(y * y, axis=axis, keepdims=True))
        return self._exact(value.astype(x.dtype)) if low else value

    def clip(self, s, low, high):
        return self.xp.clip(s, low, high)

    def leaf_min(self, x):
        return float(self.xp.min(x)) if x.size else float("inf")

    def leaf_ndim(self, x):
        return x.ndim

    def _dtype(self, name):
        if hasattr(self.xp, name):
            return getattr(self.xp, name)
        import ml_dtypes  # NumPy's bfloat16 (installed with jax)

        return getattr(ml_dtypes, name)

    def matmul(self, xs, ys, alpha=1.0, beta=0.0, cs=None):
        out = []
        for i, (x, y) in enumerate(zip(xs, ys)):
            dtype = x.dtype
            low = _dtype_name(dtype) in _LOW_PRECISION
            if low:  # float32 accumulation, one rounding to the leaf's dtype
                x, y = x.astype(self.xp.float32), y.astype(self.xp.float32)
            value = self.xp.matmul(x, y)
            if not (_is_number(alpha) and alpha == 1):
                value = (self.xp.float32(alpha) if low else alpha) * value
            if cs is not None:
                c = cs[i].astype(self.xp.float32) if low else cs[i]
                value = (self.xp.float32(beta) if low else beta) * c + value
            out.append(self._exact(value.astype(dtype)) if low else value)
        return out

    def transpose(self, xs, which=None):
        return [self.xp.swapaxes(x, -1, -2) if which is None or which[i] else x for i, x in enumerate(xs)]

    def permute(self, xs, axes):
        return [x if a is None else self.xp.transpose(x, a) for x, a in zip(xs, axes, strict=True)]

    def reshape(self, xs, shapes):
        return [x if shape is None else self.xp.reshape(x, shape) for x, shape in zip(xs, shapes, strict=True)]

    def spectral_norm(self, xs):
        out = []
        for x in xs:
            if x.size == 0:
                out.append(self.xp.zeros((*x.shape[:-2], 1, 1), x.dtype))
            else:
                out.append(self.xp.linalg.norm(x, ord=2, axis=(-2, -1), keepdims=True))
        return out

    def cast(self, xs, dtype):
        if isinstance(dtype, str):
            return [self._exact(x.astype(self._dtype(dtype))) for x in xs]
        return [self._exact(x.astype(like.dtype)) for x, like in zip(xs, dtype)]

    def leaf_shape(self, x):
        return tuple(int(n) for n in x.shape)

    def leaf_eps(self, x):
        try:
            return float(self.xp.finfo(x.dtype).eps)
        except (TypeError, ValueError):  # NumPy's finfo does not know bfloat16
            import ml_dtypes

            return float(ml_dtypes.finfo(x.dtype).eps)

    def static_int(self, n):
        if self._reduce is not None:
            import jax

            if isinstance(n, jax.core.Tracer):
                return None
        return int(n)

    def repeat(self, n, body, xs):
        count = self.static_int(n)
        if count is not None:
            return super().repeat(count, body, xs)
        from jax import lax

        return lax.fori_loop(0, n, lambda _, leaves: list(body(list(leaves))), list(xs))  # a traced trip count

    def stream(self, seed, xs):
        """JAX: a typed PRNG key (an int seed through ``jax.random.key``, a typed key as it is), as optax keeps one.
        NumPy: the state of a PCG64 bit generator seeded by ``numpy.random.default_rng(seed)`` (a dict: pure)."""
        if self._reduce is None:
            return self.xp.random.default_rng(seed).bit_generator.state
        import jax

        if isinstance(seed, jax.Array) and jax.dtypes.issubdtype(seed.dtype, jax.dtypes.prng_key):
            return seed
        return jax.random.key(seed)

    def normal(self, stream, xs):
        """JAX: the key splits into (next key, sample key), the sample key into one key per leaf, in the leaves' order,
        and each leaf is ``jax.random.normal`` of its key (optax's ``add_noise``). NumPy: the leaves drawn in order
        from a ``numpy.random.Generator`` on the stream (float64 draws in the leaf's dtype)."""
        if self._reduce is None:
            bits = self.xp.random.PCG64()
            bits.state = stream
            draw = self.xp.random.Generator(bits)
            return [draw.standard_normal(x.shape).astype(x.dtype) for x in xs], bits.state
        import jax

        following, sample = jax.random.split(stream)
        keys = jax.random.split(sample, len(xs))
        return [jax.random.normal(keys[i], x.shape, x.dtype) for i, x in enumerate(xs)], following


class FiniteSumArrayOps(ArrayLeafOps):
    """Tree-wide sums that leave out a leaf whose own sum is not finite: backends use it for a
    spec's global ``reductions``, so that one non-finite parameter cannot poison the others."""

    def _total(self, sums):
        if not sums:
            return 0.0
        sums = self.xp.stack(sums)  # in at least float32: a bfloat16 cosine would stall a step-size update
        sums = sums.astype(self.xp.promote_types(sums.dtype, self.xp.float32))
        return self.xp.sum(self.xp.where(self.xp.isfinite(sums), sums, 0))


class TreeMath:
    """The ``o`` namespace of spec functions: elementwise functions and tree-wide reductions."""

    def __init__(self, ops: LeafOps):
        self.ops = ops

    def tree(self, leaves) -> Tree:
        return Tree(leaves, self.ops)

    def _unary(self, op: str, x):
        if isinstance(x, Tree):
            return Tree(self.ops.unary(op, x.leaves), self.ops)
        if x is ZERO:  # f(0) in every entry: a zero stays ZERO, anything else is a constant (exp: 1)
            if op == "log":
                return -math.inf
            value = self._unary(op, 0.0)
            return ZERO if value == 0 else value
        if _is_number(x):
            return {"sqrt": math.sqrt, "exp": math.exp, "log": math.log, "abs": abs, "expm1": math.expm1,
                    "neg": lambda v: -v, "sign": lambda v: float(v > 0) - float(v < 0)}[op](x)
        return self.ops.scalar(op, x)

    def sqrt(self, x):
        return self._unary("sqrt", x)

    def exp(self, x):
        return self._unary("exp", x)

    def log(self, x):
        return self._unary("log", x)

    def abs(self, x):
        return self._unary("abs", x)

    def sign(self, x):
        return self._unary("sign", x)

    def isfinite(self, x):
        """Whether a scalar (a number, or a 0-dim array or tensor) is finite; a bool or a device bool."""
        if x is ZERO:
            return True
        if _is_number(x):
            return math.isfinite(x)
        return self.ops.scalar("isfinite", x)

    def expm1(self, x):
        """exp(x) − 1, accurate for small x."""
        return self._unary("expm1", x)

    def clip(self, x, low, high):
        """A scalar clipped into [low, high] (``ZERO``: 0 clipped, ``ZERO`` again when that is 0)."""
        if x is ZERO:
            if not (_is_number(low) and _is_number(high)):
                return self.ops.clip(self.ops.sum_all([]), low, high)
            value = min(max(0.0, low), high)
            return ZERO if value == 0 else value
        if _is_number(x):
            return min(max(x, low), high)
        return self.ops.clip(x, low, high)

    def _along(self, op: str, x, axis):
        return ZERO if x is ZERO else Tree(self.ops.reduce_along(op, x.leaves, axis), self.ops)

    def sum_along(self, x: Tree, axis) -> Tree:
        """Per-leaf sums along ``axis`` (None: over each whole leaf), broadcastable against ``x``."""
        return self._along("sum", x, axis)

    def max_along(self, x: Tree, axis) -> Tree:
        return self._along("max", x, axis)

    def min_along(self, x: Tree, axis) -> Tree:
        return self._along("min", x, axis)

    def norm_along(self, x: Tree, axis) -> Tree:
        """Per-leaf 2-norms along ``axis`` (None: of each whole leaf), broadcastable against ``x``."""
        return self._along("norm", x, axis)

    # per-leaf matrix algebra (the last two dimensions of each leaf are its matrix)
    def matmul(self, a: Tree, b: Tree, *, alpha=1.0, beta=0.0, add: Tree | None = None) -> Tree:
        """Per leaf ``beta·add + alpha·(a @ b)`` with Python-number ``alpha`` and ``beta``, one rounding per
        product (``torch.addmm``); ``add`` None: ``alpha·(a @ b)``."""
        if a is ZERO or b is ZERO:
            return ZERO if add is None else beta * add
        cs = None if add is None or add is ZERO else add.leaves
        return Tree(self.ops.matmul(a.leaves, b.leaves, alpha, beta if cs is not None else 0.0, cs), self.ops)

    def transpose(self, x: Tree, which=None) -> Tree:
        """Per leaf the transpose of its last two dimensions (only where ``which[i]``, when given)."""
        return ZERO if x is ZERO else Tree(self.ops.transpose(x.leaves, which), self.ops)

    def permute(self, x: Tree, axes) -> Tree:
        """Per leaf its axes reordered, ``axes[i]`` a tuple (None: leaf i as it is)."""
        return ZERO if x is ZERO else Tree(self.ops.permute(x.leaves, list(axes)), self.ops)

    def reshape(self, x: Tree, shapes) -> Tree:
        """Per leaf its entries in row-major order reshaped to ``shapes[i]`` (None: leaf i as it is)."""
        return ZERO if x is ZERO else Tree(self.ops.reshape(x.leaves, list(shapes)), self.ops)

    def spectral_norm(self, x: Tree) -> Tree:
        """Per leaf the largest singular value of its matrix (of each matrix of its last two dimensions), broadcastable
        against ``x``."""
        return ZERO if x is ZERO else Tree(self.ops.spectral_norm(x.leaves), self.ops)

    def cast(self, x: Tree, dtype) -> Tree:
        """Per leaf ``x`` in ``dtype``: a dtype name (``"bfloat16"``) or a tree whose leaves' dtypes to take."""
        if x is ZERO:
            return ZERO
        return Tree(self.ops.cast(x.leaves, dtype.leaves if isinstance(dtype, Tree) else dtype), self.ops)

    def shapes(self, x: Tree) -> list[tuple]:
        """The shape of every leaf (static: specs may branch on it)."""
        return [self.ops.leaf_shape(leaf) for leaf in x.leaves]

    def machine_eps(self, x: Tree) -> list[float]:
        """The machine epsilon of every leaf's dtype, ``torch.finfo(dtype).eps`` (static: Python floats)."""
        return [self.ops.leaf_eps(leaf) for leaf in x.leaves]

    def pick(self, x: Tree, which) -> Tree:
        """The tree of the leaves of ``x`` where ``which`` (a list of bools, one per leaf) is True, in order: the
        leaves aligned with a state variable that only some parameters hold (``Spec.state_shape``)."""
        if x is ZERO:
            return ZERO
        return Tree([leaf for leaf, chosen in zip(x.leaves, which, strict=True) if chosen], self.ops)

    def join(self, which, a: Tree, b: Tree) -> Tree:
        """The inverse of :meth:`pick`: leaf i is the next leaf of ``a`` where ``which[i]``, else the next of ``b``
        (``a`` has one leaf per True, ``b`` one per False; ZERO only when both are)."""
        if a is ZERO and b is ZERO:
            return ZERO
        if a is ZERO or b is ZERO:
            raise TypeError("o.join needs two trees (the exact zero ZERO has no leaves to place)")
        if len(a.leaves) != sum(map(bool, which)) or len(b.leaves) != len(which) - len(a.leaves):
            raise ValueError(f"o.join: {len(a.leaves)} and {len(b.leaves)} leaves for {sum(map(bool, which))} "
                             f"and {len(which) - sum(map(bool, which))} places")
        first, second = iter(a.leaves), iter(b.leaves)
        return Tree([next(first) if chosen else next(second) for chosen in which], self.ops)

    def per_leaf(self, values) -> Tree:
        """A tree of one scalar (a number or a 0-dim value) per leaf, for a per-leaf factor: ``x * o.per_leaf([...])``
        (with the tree on the left)."""
        return Tree(list(values), self.ops)

    def leaf_min(self, leaf) -> float:
        """The smallest entry of one concrete leaf (for validation, never inside a step)."""
        return self.ops.leaf_min(leaf)

    def leaf_ndim(self, leaf) -> int:
        return self.ops.leaf_ndim(leaf)

    def _extremum(self, op: str, a, b):
        """Elementwise maximum/minimum of two trees, or of a tree and a scalar (either may be ``ZERO``); of two trees,
        the first keeps its place (a tree of one number per leaf, ``o.per_leaf``, goes second)."""
        if not isinstance(a, Tree) and (isinstance(b, Tree) or b is ZERO):
            a, b = b, a  # both are commutative: a tree, else ZERO, comes first
        if isinstance(a, Tree):
            other = b.leaves if isinstance(b, Tree) else 0.0 if b is ZERO else b
            return Tree(self.ops.binary(op, a.leaves, other), self.ops)
        if a is ZERO and b is ZERO:
            return ZERO
        if a is not ZERO:
            raise TypeError(f"o.{op} needs a tree (or ZERO) among its arguments, got {type(a).__name__} and {type(b).__name__}")
        if _is_number(b):  # a constant tree
            value = max(0.0, b) if op == "maximum" else min(0.0, b)
            return ZERO if value == 0 else value
        return self.ops.clip(b, 0.0, math.inf) if op == "maximum" else self.ops.clip(b, -math.inf, 0.0)

    def maximum(self, a: Tree, b) -> Tree:
        return self._extremum("maximum", a, b)

    def minimum(self, a: Tree, b) -> Tree:
        return self._extremum("minimum", a, b)

    def where(self, cond, a: Tree, b: Tree) -> Tree:
        """Per-leaf select on a scalar condition (no Python branch on a traced value); ``a`` or ``b`` may be
        ``ZERO`` or a scalar when the other is a tree."""
        if a is ZERO and b is ZERO:
            return ZERO
        like = a if isinstance(a, Tree) else b
        if not isinstance(like, Tree):
            raise TypeError(f"o.where needs a tree (or ZERO) among its branches, got {type(a).__name__} and {type(b).__name__}")
        xs, ys = (as_tree(v, like) for v in (a, b))
        xs, ys = (self.ops.zeros_like(like.leaves) if v is ZERO else v.leaves for v in (xs, ys))
        return Tree(self.ops.where(cond, xs, ys), self.ops)

    def static_int(self, n) -> int | None:
        """A trip count ``n`` (a hyperparameter) as a Python int when it is known now; None when it is traced (JAX,
        ``optax.inject_hyperparams`` under ``jit``): then loop with :meth:`repeat`, which loops on the device."""
        return n if isinstance(n, int) else self.ops.static_int(n)

    def repeat(self, n, body, x: Tree) -> Tree:
        """``body`` (tree -> tree of the same shapes) applied ``n`` times to ``x``: a Python loop when ``n`` is known
        now, a device loop (``jax.lax.fori_loop``) when it is traced."""
        if isinstance(n, int):
            for _ in range(n):
                x = body(x)
            return x
        return Tree(self.ops.repeat(n, lambda leaves: body(Tree(leaves, self.ops)).leaves, x.leaves), self.ops)

    def normal(self, stream, like: Tree) -> tuple[Tree, Any]:
        """``(ξ, next)``: ξ ~ N(0, I) shaped like ``like`` drawn from the backend's random ``stream``, and the stream
        after the draw (statements read ξ as ``x.noise``; :mod:`dynopt.statement`)."""
        leaves, following = self.ops.normal(stream, like.leaves)
        return Tree(leaves, self.ops), following

    def stream(self, seed, like: Tree):
        """A new random stream for the leaves of ``like`` from ``seed`` (see ``LeafOps.stream``)."""
        return self.ops.stream(seed, like.leaves)

    def zeros_like(self, x: Tree) -> Tree:
        return ZERO if x is ZERO else Tree(self.ops.zeros_like(x.leaves), self.ops)

    def select(self, cond, a, b):
        """``a`` where ``cond`` else ``b``, for trees or scalars: a Python bool picks in Python; a traced or
        device bool selects without a branch. Either may be ``ZERO`` (an exact zero, e.g. ``lr * m`` at lr = 0)."""
        if isinstance(cond, bool):
            return a if cond else b
        if a is ZERO and b is ZERO:
            return ZERO
        if isinstance(a, Tree) or isinstance(b, Tree):
            return self.where(cond, a, b)
        return self.ops.scalar_where(cond, 0.0 if a is ZERO else a, 0.0 if b is ZERO else b)

    # tree-wide reductions: one scalar for all parameters together, kept on device
    def sum(self, x: Tree):
        return self.ops.sum_all([] if x is ZERO else x.leaves)

    def dot(self, a: Tree, b: Tree):
        if a is ZERO or b is ZERO:
            return self.ops.sum_all([])  # the backend's zero scalar
        return self.ops.dot(a.leaves, b.leaves)

    def norm(self, a: Tree):
        return self.sqrt(self.dot(a, a))
