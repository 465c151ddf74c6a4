"""The default flat path's executor: the traced bucket update, run eagerly as a few composite ATen ops.

``fused=True`` traces a bucket's update into an ATen graph (``torch_flat.trace_update``: ``make_fx``,
symbolic sizes, the step number and the numeric hyperparameters as 0-dim inputs), splits off its scalar
prelude (bias corrections, step sizes: ``split_scalar_prelude``) and compiles the rest with inductor.
This module takes the same graph and, with no compiler, rewrites its elementwise part into fewer
memory passes, then runs it with ordinary ATen kernels on the bucket's flat buffers:

* **Linear forms.** Every tensor value is read as ``c₀ + Σ cᵢ·aᵢ``: the coefficients are functions of
  the prelude's scalars (evaluated once per group and step as Python floats, so they cost no pass over
  the bucket), the atoms ``aᵢ`` are buffers, products ``x·y`` or quotients ``x/y`` of buffers.
  ``mul``/``div`` by a scalar, ``neg``, ``add``/``sub`` merge forms; a value is *materialized* (written
  into a buffer) only where it must be: a state's new value, the step, the operand of a non-linear op
  (``sqrt``, ``x·y`` of two sums, ...), or a sum read by several others.
* **Composite kernels.** A form is written with one kernel for its first term and one in-place kernel
  per further term: ``add_(x, alpha=c)``, ``addcmul_(x, y, value=c)``, ``addcdiv_(x, y, value=c)``; two
  buffers whose coefficients sum to 1 are one ``lerp`` (checked at every step, on the floats); a
  constant rides on the first kernel (``add(c₀, x, alpha=c)`` with a 0-dim ``c₀``). Any other
  elementwise op runs as its own ``out=`` kernel (its ATen ``.out`` overload).
* **In place.** A state's new value is written into the state buffer itself when nothing reads the
  old value afterwards (``lerp_``, ``mul_`` + ``addcmul_``), and the step of a parameter stepped in
  place (a bucket of one parameter, flat parameters) is accumulated into the parameter
  (``param.addcdiv_(m, d, value=−lr/(1 − β₁ᵗ))``); a gathered bucket's step is scattered with one
  ``_foreach_add_`` whose ``alpha`` carries the step's scale (a multiple of the gradient is scattered
  from the gradients themselves, and then nothing is gathered). A new value whose state's old value is
  still read later goes to a temporary and is copied in at the end (after the scatter). Other values
  go to buffers of the bucket's pool, reused by liveness (a dying operand's buffer is overwritten in
  place): no allocation per step.

Measured on the zoo (benchmarks/README.md lists them by name): a two-moment adaptive rule is then 6 passes over
the bucket (torch.optim's foreach: 7), a one-moment one 5, heavy-ball 3, the plain gradient step 1. A program is
built once per process for a spec, its static options, dtypes and bucket kind (``_PROGRAMS``), at the
second step, before anything is written. Rounding differs from the reference path's one-op-per-tree-
operation only by reassociation (``x·(c/s)`` for ``(x·c)/s``, an FMA in ``add_``): a few ulps, within
``tests/test_torch_paths.py``'s tolerances. What it does not model (a value of another dtype or shape,
a reduction inside the update, an op without an ``out=`` overload, an in-place op on a value read
elsewhere), a graph that cannot be traced, bfloat16/float16 buckets (whose reference rounds every
intermediate; composite kernels round once) and a coefficient that lives on an accelerator (a global
scalar's, or a tensor lr's: reading it would synchronise) keep the one-kernel-per-tree-operation path,
with the reason in ``optimizer.execution.reason``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from .torch_ops import real_view

__all__ = ["ENABLED", "Program", "Unsupported", "build_program", "program"]

ENABLED = True  # False: the default flat path runs one ATen kernel per tree operation (as before issue #15's rewrite)

LOW_PRECISION = (torch.float16, torch.bfloat16)
LERP_TOLERANCE = 1e-15  # |c₁ + c₂ − 1| below which c₁·x + c₂·y runs as one lerp(x, y, c₂)

aten = torch.ops.aten


class Unsupported(Exception):
    """The graph holds something the executor does not model: the per-op path runs instead."""


# ------------------------------------------------------------------------------------------------ coefficients
# A coefficient is a Python float (a constant) or a string: a Python expression over the floats f0, f1, ...
# of the prelude's scalars.


def _is_const(c) -> bool:
    return isinstance(c, float)


def _mul(a, b):
    if _is_const(a) and _is_const(b):
        return a * b
    if a == 1.0:
        return b
    if b == 1.0:
        return a
    if a == -1.0:
        return _neg(b)
    if b == -1.0:
        return _neg(a)
    return f"({a} * {b})"


def _neg(a):
    return -a if _is_const(a) else f"(-{a})"


def _add(a, b):
    if _is_const(a) and _is_const(b):
        return a + b
    if a == 0.0:
        return b
    if b == 0.0:
        return a
    return f"({a} + {b})"


def _div(a, b):
    if _is_const(b) and b == 1.0:
        return a
    return f"_fdiv({a}, {b})"


def _fdiv(a: float, b: float) -> float:
    """a / b as IEEE arithmetic gives it (Python raises on a zero divisor)."""
    try:
        return a / b
    except ZeroDivisionError:
        if a != a or a == 0.0:
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


# ------------------------------------------------------------------------------------------------ forms


class Form:
    """c₀ + Σ c·atom; an atom is ("v", value), ("p", x, y) (x·y) or ("q", x, y) (x/y), x and y values."""

    __slots__ = ("terms", "const")

    def __init__(self, terms=None, const=0.0):
        self.terms: dict[tuple, Any] = dict(terms or {})
        self.const = const

    def scaled(self, c) -> "Form":
        return Form({a: _mul(k, c) for a, k in self.terms.items()}, _mul(self.const, c) if self.const != 0.0 else 0.0)

    def plus(self, other: "Form") -> "Form":
        terms = dict(self.terms)
        for a, k in other.terms.items():
            terms[a] = _add(terms[a], k) if a in terms else k
        return Form(terms, _add(self.const, other.const))

    def simple(self):
        """(atom, c) when the form is one term with no constant, else None."""
        if len(self.terms) == 1 and self.const == 0.0:
            return next(iter(self.terms.items()))
        return None

    def values(self) -> list[str]:
        return [v for atom in self.terms for v in atom[1:]]


def _out_variant(target):
    """The ``out=`` overload of an ATen functional op with the same arguments, or None."""
    packet = getattr(target, "overloadpacket", None)
    if packet is None:
        return None
    args = [(a.name, str(a.type)) for a in target._schema.arguments]
    for name in (f"{target._overloadname}_out", "out"):
        candidate = getattr(packet, name, None)
        if candidate is None:
            continue
        schema = candidate._schema
        if [(a.name, str(a.type)) for a in schema.arguments if not a.is_out] == args and len(schema.returns) == 1:
            return candidate
    return None


class _Builder:
    """Turns the main graph (after ``split_scalar_prelude``) into events: values to materialize, in order."""

    def __init__(self, main: torch.fx.GraphModule, n_vectors: int, dtype: torch.dtype):
        self.graph, self.dtype = main.graph, dtype
        self.forms: dict[Any, Form] = {}
        self.scalars: dict[Any, Any] = {}  # scalar node -> coefficient
        self.hoisted: dict[Any, int] = {}  # scalar placeholder node -> index in the hoisted list
        self.events: list[dict] = []  # {"name", "form" | "op", "home"}
        self.materialized: set[str] = set()
        self.names: dict[Any, str] = {}
        placeholders = [n for n in self.graph.nodes if n.op == "placeholder"]
        self.vectors = [n.name for n in placeholders[:n_vectors]]
        for node in placeholders[:n_vectors]:
            self.forms[node] = Form({("v", node.name): 1.0})
            self.names[node] = node.name
        for k, node in enumerate(placeholders[n_vectors:]):
            self.hoisted[node] = k
            self.scalars[node] = f"f{k}"
        self.used_floats: set[int] = set()

    # -- operands
    def scalar(self, x):
        if isinstance(x, torch.fx.Node):
            if x not in self.scalars:
                raise Unsupported(f"a scalar computed from the bucket ({x.target})")
            if x in self.hoisted:
                self.used_floats.add(self.hoisted[x])
            return self.scalars[x]
        if isinstance(x, bool) or not isinstance(x, (int, float)):
            raise Unsupported(f"argument {x!r}")
        return float(x)

    def is_scalar(self, x) -> bool:
        return not isinstance(x, torch.fx.Node) or x in self.scalars

    def form(self, x) -> Form:
        if not isinstance(x, torch.fx.Node) or x in self.scalars:
            return Form({}, self.scalar(x))
        return self.forms[x]

    def value(self, x) -> str:
        """x as a buffer (materialized if it is not one)."""
        simple = self.forms[x].simple()
        if simple is not None and simple[0][0] == "v" and simple[1] == 1.0:
            return simple[0][1]
        self.materialize(x, None)
        return x.name

    def scaled_value(self, x) -> tuple[str, Any]:
        """x as (buffer, coefficient)."""
        simple = self.forms[x].simple()
        if simple is not None and simple[0][0] == "v":
            return simple[0][1], simple[1]
        return self.value(x), 1.0

    def materialize(self, node, home) -> None:
        self.events.append({"name": node.name, "form": self.forms[node], "home": home})
        self.materialized.add(node.name)
        self.forms[node] = Form({("v", node.name): 1.0})

    # -- nodes
    def node_form(self, node) -> Form:
        target, args, kwargs = node.target, node.args, dict(node.kwargs)
        base = target._schema.name.split("::")[-1]
        if base.endswith("_") and not base.endswith("__"):  # in place on a temporary nothing else reads: functional
            functional = getattr(getattr(aten, base[:-1], None), target._overloadname, None)
            if (functional is None or not isinstance(args[0], torch.fx.Node) or args[0].op == "placeholder"
                    or len(args[0].users) != 1):
                raise Unsupported(f"{target} on a value read elsewhere")
            target = functional
        if target in (aten.clone.default, aten.alias.default, aten.detach.default):
            kwargs.pop("memory_format", None)
            if kwargs:
                raise Unsupported(f"{target} with {kwargs}")
            return self.form(args[0])
        if target is aten.neg.default:
            return self.form(args[0]).scaled(-1.0)
        if target in (aten.add.Tensor, aten.add.Scalar, aten.sub.Tensor, aten.sub.Scalar):
            alpha = self.scalar(kwargs.pop("alpha", 1.0))
            if kwargs or len(args) != 2:
                raise Unsupported(f"{target} with {kwargs}")
            if target in (aten.sub.Tensor, aten.sub.Scalar):
                alpha = _neg(alpha)
            return self.form(args[0]).plus(self.form(args[1]).scaled(alpha))
        if target in (aten.mul.Tensor, aten.mul.Scalar):
            a, b = args
            if self.is_scalar(b):
                return self.form(a).scaled(self.scalar(b))
            if self.is_scalar(a):
                return self.form(b).scaled(self.scalar(a))
            (x, cx), (y, cy) = self.scaled_value(a), self.scaled_value(b)
            return Form({("p", *sorted((x, y))): _mul(cx, cy)})
        if target in (aten.div.Tensor, aten.div.Scalar) and not kwargs:
            a, b = args
            if self.is_scalar(b):
                return self.form(a).scaled(_div(1.0, self.scalar(b)))
            if not self.is_scalar(a):
                (x, cx), (y, cy) = self.scaled_value(a), self.scaled_value(b)
                return Form({("q", x, y): _div(cx, cy)})
        return self.generic(node, target)

    def generic(self, node, target) -> Form:
        out = _out_variant(target)
        value = node.meta.get("val")
        if out is None or not isinstance(value, torch.Tensor) or value.dim() != 1 or value.dtype != self.dtype:
            raise Unsupported(f"{node.target}")

        def operand(x):
            if isinstance(x, torch.fx.Node):
                if x in self.hoisted:
                    return ("h", self.hoisted[x])
                if x in self.scalars:
                    raise Unsupported(f"a scalar computed from the bucket ({x.target})")
                return ("v", self.value(x))
            if isinstance(x, (list, tuple)):
                if any(isinstance(i, torch.fx.Node) for i in x):
                    raise Unsupported(f"{node.target} with a list of tensors")
                return ("c", x)
            return ("c", x)

        args = [operand(x) for x in node.args]
        kwargs = {k: operand(v) for k, v in node.kwargs.items()}
        self.events.append({"name": node.name, "op": out, "args": args, "kwargs": kwargs, "home": None})
        self.materialized.add(node.name)
        return Form({("v", node.name): 1.0})

    def build(self, n_delta: int, n_states: int):
        """Walk the graph. Its outputs: [step] (n_delta = 1), the new values of ``n_states`` state variables,
        then the global scalars. Returns the step's form (None without one) and the global scalars' positions
        in the prelude's values."""
        output = next(n for n in self.graph.nodes if n.op == "output")
        outs = list(output.args[0])
        delta, states, scalars = outs[:n_delta], outs[n_delta:n_delta + n_states], outs[n_delta + n_states:]
        homes: dict[Any, int] = {}  # node -> state index, its first state output
        extra_copies = []  # (node, state index) of a node that is the new value of several states
        for j, node in enumerate(states):
            if not isinstance(node, torch.fx.Node) or node in self.scalars:
                raise Unsupported("a state output that is not a tensor of the bucket")
            if node in homes or node.op == "placeholder":
                extra_copies.append((node, j))
            else:
                homes[node] = j
        for node in self.graph.nodes:
            if node.op in ("placeholder", "output"):
                continue
            if node.op != "call_function":
                raise Unsupported(f"a {node.op} node")
            value = node.meta.get("val")
            if not isinstance(value, torch.Tensor):
                raise Unsupported(f"{node.target} returns {type(value).__name__}")
            if value.dim() == 0:
                raise Unsupported(f"a scalar computed from the bucket ({node.target})")
            form = self.node_form(node)
            if node.name in self.materialized:  # a generic op: already an event (the last one)
                self.forms[node] = form
                if node in homes:
                    self.events[-1]["home"] = ("state", homes[node])
                continue
            self.forms[node] = form
            users = [u for u in node.users if u.op != "output"]
            if node in homes:
                self.materialize(node, ("state", homes[node]))
            elif len(users) > 1 and form.simple() is None:
                self.materialize(node, None)
        for node, j in extra_copies:
            self.events.append({"name": f"{node.name}_copy{j}", "form": Form({("v", self.value(node)): 1.0}),
                                "home": ("state", j)})
        final = None
        if delta:
            (d,) = delta
            if not isinstance(d, torch.fx.Node) or d in self.scalars:
                raise Unsupported("a step that is not a tensor of the bucket")
            final = self.forms[d]
        scalar_outputs = []
        for s in scalars:
            if not isinstance(s, torch.fx.Node) or s not in self.hoisted:
                raise Unsupported("a global scalar computed from the bucket")
            scalar_outputs.append(self.hoisted[s])
        return final, scalar_outputs


# ------------------------------------------------------------------------------------------------ code generation


class Program:
    """The eager update of a bucket: ``program.run(bucket, inputs, hoisted)`` writes the state and the
    parameters and returns the new global scalars (the caller writes them once every bucket has run).
    ``hoisted(inputs)``: the scalar prelude, shared by the buckets of a group with the same ``family``;
    ``source``: the generated Python code; ``passes``: ATen kernels over the bucket per step (at most)."""

    def __init__(self, prelude, positions, family, fn, n_registers, source, passes, floats, reads_grad):
        self.prelude, self.positions, self.family = prelude, positions, family
        self.fn, self.n_registers, self.source, self.passes = fn, n_registers, source, passes
        self.floats = floats  # the prelude's values read as Python floats (coefficients)
        self.reads_grad = reads_grad  # False: the step is a multiple of the gradient, scattered from the gradients
        self._others = None

    def hoisted(self, inputs: list) -> tuple[list, list]:
        """The prelude's values, as tensors and (those that are coefficients) as floats: one host read each,
        once per group and step (the prelude runs on the 0-dim CPU inputs: no device synchronisation)."""
        values = self.prelude(*[inputs[i] for i in self.positions])
        floats = [0.0] * len(values)
        for k in self.floats:
            floats[k] = values[k].item()
        return values, floats

    def run(self, bucket, inputs: list, hoisted: list) -> dict:
        if self._others is None:
            positions = set(self.positions)
            self._others = [i for i in range(len(inputs)) if i not in positions]
        vectors = [inputs[i] for i in self._others]
        registers = [bucket.pool.take() for _ in range(self.n_registers)]
        target = None
        if bucket.in_place and not bucket.needs_params:  # with needs_params, the parameter input is the target
            target = bucket.param_flat if bucket.direct else bucket.values()[0].detach().view(-1)
        def scatter(delta: torch.Tensor, alpha: float) -> None:
            """A gathered bucket's step ``alpha·delta`` added to its parameters."""
            if delta is vectors[0]:  # a multiple of the gradient: from the gradients themselves (maybe not gathered)
                views = [real_view(p.grad) for p in bucket.params] if bucket.complex else [p.grad for p in bucket.params]
            else:
                views = _views(bucket, delta, vectors)
            torch._foreach_add_(bucket.values(), views, alpha=alpha)

        scalars = self.fn(vectors, *hoisted, registers, target, scatter)
        if bucket.direct:
            torch.autograd.graph.increment_version(bucket.params)  # as an in-place step on each parameter would
        return dict(zip(bucket.scalar_names, scalars))


def _views(bucket, flat: torch.Tensor, vectors: list) -> list:
    """Parameter-shaped views of a flat buffer of ``bucket`` (cached for its persistent buffers)."""
    if bucket.needs_params and flat is bucket.param_flat:
        return bucket.param_views
    cache = bucket.__dict__.setdefault("graph_views", {})
    found = cache.get(id(flat))
    if found is not None and found[0] is flat:
        return found[1]
    if any(flat is x for x in bucket.flat.values()):
        from .torch_flat import split_views

        views = split_views(flat, bucket.shapes)
        cache[id(flat)] = (flat, views)
        return views
    return bucket.pool.views(flat)


def _reads(event) -> list[str]:
    if "form" in event:
        return event["form"].values()
    return [a[1] for a in [*event["args"], *event["kwargs"].values()] if a[0] == "v"]


def _coef(c) -> str:
    return repr(c) if _is_const(c) else str(c)


_SECOND = {"v": "torch.add({x}, {0}, alpha={c}, out={d})", "p": "torch.addcmul({x}, {0}, {1}, value={c}, out={d})",
           "q": "torch.addcdiv({x}, {0}, {1}, value={c}, out={d})"}
_ACCUMULATE = {"v": "{d}.add_({0}, alpha={c})", "p": "{d}.addcmul_({0}, {1}, value={c})",
               "q": "{d}.addcdiv_({0}, {1}, value={c})"}


def _depends(prelude: torch.fx.GraphModule, positions: list[int], inputs: set[int]) -> list[bool]:
    """Per value the prelude returns: whether it depends on one of the traced function's ``inputs``."""
    found: dict = {}
    placeholders = iter(positions)
    for node in prelude.graph.nodes:
        if node.op == "placeholder":
            found[node] = next(placeholders) in inputs
        elif node.op == "output":
            return [found[n] if isinstance(n, torch.fx.Node) else False for n in node.args[0]]
        else:
            found[node] = any(found.get(n, False) for n in node.all_input_nodes)
    return []


def build_program(traced: torch.fx.GraphModule, outputs: dict, bucket, inputs: list, family,
                  n_totals: int = 0) -> Program:
    """A Program for a traced update (``torch_flat.trace_update`` of ``inputs``, whose last ``n_totals`` are
    the reductions' totals); raises ``Unsupported``."""
    from .torch_flat import split_scalar_prelude

    dtype = bucket.pool.dtype
    prelude, main, positions = split_scalar_prelude(traced)
    builder = _Builder(main, len(inputs) - len(positions), dtype)
    kinds = outputs["states"]
    n_params = int(bucket.needs_params)
    state_positions = [1 + n_params + i for i, kind in enumerate(kinds) if kind == "new"]
    final, scalar_outputs = builder.build(int(outputs["delta"]), len(state_positions))
    vectors, events, in_place = builder.vectors, builder.events, bucket.in_place
    param_name = vectors[1] if bucket.needs_params else None
    if final is not None:
        if in_place:  # θ + step, accumulated into θ (its old value only as the first term)
            if param_name is not None and any(a[0] != "v" and param_name in a[1:] for a in final.terms):
                events.append({"name": "__delta__", "form": final, "home": None})
                final = Form({("v", "__delta__"): 1.0})
            events.append({"name": "__target__", "form": Form({("v", param_name or "__target__"): 1.0}).plus(final),
                           "home": ("target",)})
        else:  # a gathered bucket: the step into a buffer, its scale into the scatter's alpha
            simple = final.simple()
            if simple is None or simple[0][0] != "v":
                events.append({"name": "__delta__", "form": final if simple is None else Form({simple[0]: 1.0}),
                               "home": None})
                final = Form({("v", "__delta__"): 1.0 if simple is None else simple[1]})
    home_name = {j: vectors[p] for j, p in enumerate(state_positions)}
    scattered = final.simple()[0][1] if final is not None and not in_place else None

    def last_reads() -> dict[str, int]:
        last: dict[str, int] = {}
        for k, event in enumerate(events):
            for v in _reads(event):
                last[v] = k
        if scattered is not None:  # the scatter runs after the regular events, before the deferred copies
            last[scattered] = scatter_at
        return last

    scatter_at = len(events)

    # a state's new value goes into the state buffer when no later event reads the old value, and the
    # event reads it only as the first term of its form (or as an operand of its one kernel)
    last_read = last_reads()
    deferred = []
    for k, event in enumerate(events):
        home = event["home"]
        if home is None or home[0] != "state":
            continue
        old = home_name[home[1]]
        form = event.get("form")
        inside = form is not None and any(a[0] != "v" and old in a[1:] for a in form.terms)
        if last_read.get(old, -1) > k or inside:
            event["home"] = None  # computed into a register, copied into the state at the end
            deferred.append({"name": f"{event['name']}_deferred", "form": Form({("v", event["name"]): 1.0}),
                             "home": home})
    events += deferred  # scatter_at: the first of them
    last_read = last_reads()
    buffers: dict[str, str] = {name: f"V{i}" for i, name in enumerate(vectors)}
    buffers["__target__"] = "T"
    lines: list[str] = []
    constants: dict[str, str] = {}
    holding: dict[int, str] = {}  # register -> the value it holds
    ops: list = []
    n_registers = passes = 0

    def fresh(k: int) -> int:
        nonlocal n_registers
        for r, v in holding.items():
            if last_read.get(v, -1) < k:
                return r
        n_registers += 1
        return n_registers - 1

    def dying(k: int, reads: list[str]) -> list[int]:
        return [r for r, v in holding.items() if v in reads and last_read.get(v, -1) == k]

    def constant(c) -> str:
        """A 0-dim tensor of value c: the first operand of a kernel that also adds a constant."""
        key = _coef(c)
        if key not in constants:
            constants[key] = f"K{len(constants)}"
            lines.append(f"    {constants[key]} = torch.full((), {key}, dtype=V0.dtype, device=V0.device)")
        return constants[key]

    for k, event in enumerate(events):
        if k == scatter_at and scattered is not None:
            lines.append(f"    S({buffers[scattered]}, {_coef(final.simple()[1])})")
        home, name = event["home"], event["name"]
        if home is None:
            dest = None
        elif home[0] == "state":
            dest = buffers[home_name[home[1]]]
        else:
            dest = buffers[param_name] if param_name is not None else "T"
        if "op" in event:  # one elementwise kernel: any operand dying here may be its out
            if dest is None:
                reuse = dying(k, _reads(event))
                r = reuse[0] if reuse else fresh(k)
                holding[r] = name
                dest = f"R[{r}]"

            def arg(a):
                return buffers[a[1]] if a[0] == "v" else f"H[{a[1]}].to(V0.device)" if a[0] == "h" else repr(a[1])

            call = ", ".join([*map(arg, event["args"]), *(f"{key}={arg(a)}" for key, a in event["kwargs"].items())])
            lines.append(f"    OPS[{len(ops)}]({call}, out={dest})")
            ops.append(event["op"])
            buffers[name] = dest
            passes += 1
            continue
        form = event["form"]
        terms = list(form.terms.items())
        plain = [i for i, (atom, _) in enumerate(terms) if atom[0] == "v"]
        first = None
        if dest is not None:  # the buffer's old content, if read, is the first term
            first = next((i for i in plain if buffers.get(terms[i][0][1]) == dest), None)
        else:  # in place over a first term that dies here (read by no other term)
            for i in ([*plain, *range(len(terms))] if len(terms) == 1 else plain):
                v = terms[i][0][1:]
                others = [w for j, (atom, _) in enumerate(terms) if j != i for w in atom[1:]]
                reuse = [r for r in dying(k, list(v)) if holding[r] not in others]
                if reuse:
                    first, dest = i, f"R[{reuse[0]}]"
                    holding[reuse[0]] = name
                    break
            if dest is None:
                r = fresh(k)
                holding[r] = name
                dest = f"R[{r}]"
        buffers[name] = dest
        if not terms:
            lines.append(f"    {dest}.fill_({_coef(form.const)})")
            passes += 1
            continue
        if first is None:  # a plain term of coefficient 1 first: it fuses with the second term
            first = next((i for i in plain if terms[i][1] == 1.0), plain[0]) if plain else 0
        (atom, c), rest = terms[first], [t for i, t in enumerate(terms) if i != first]
        src = [buffers[v] for v in atom[1:]]
        const, code = form.const, []
        indent = "    "
        if (atom[0] == "v" and len(rest) == 1 and rest[0][0][0] == "v" and const == 0.0 and not _is_const(c)
                and not _is_const(rest[0][1])):  # c₁x + c₂y with c₁ + c₂ = 1 (at this step): one lerp
            y, cy = buffers[rest[0][0][1]], _coef(rest[0][1])
            lines += [f"    if abs({_coef(c)} + {cy} - 1.0) <= LERP_TOLERANCE:",
                      f"        torch.lerp({src[0]}, {y}, {cy}, out={dest})", "    else:"]
            indent = "        "
        if atom[0] == "v":
            x = src[0]
            if const != 0.0:
                code.append(f"torch.add({constant(const)}, {x}, alpha={_coef(c)}, out={dest})")
            elif x == dest:
                if c != 1.0:
                    code.append(f"{dest}.mul_({_coef(c)})" if _is_const(c) else
                                f"{dest}.mul_({_coef(c)}) if {_coef(c)} != 1.0 else None")
            elif c == 1.0 and rest:  # x + c₂·(second term): one kernel
                (a2, c2), rest = rest[0], rest[1:]
                code.append(_SECOND[a2[0]].format(*[buffers[v] for v in a2[1:]], x=x, c=_coef(c2), d=dest))
            elif c == 1.0:
                code.append(f"{dest}.copy_({x})")
            else:
                code.append(f"torch.mul({x}, {_coef(c)}, out={dest})")
        elif const == 0.0 and c == 1.0:
            code.append(f"torch.{'mul' if atom[0] == 'p' else 'div'}({src[0]}, {src[1]}, out={dest})")
        else:
            code.append(f"torch.{'addcmul' if atom[0] == 'p' else 'addcdiv'}({constant(const)}, {src[0]}, {src[1]}, "
                        f"value={_coef(c)}, out={dest})")
        for a2, c2 in rest:
            code.append(_ACCUMULATE[a2[0]].format(*[buffers[v] for v in a2[1:]], d=dest, c=_coef(c2)))
        lines += [indent + line for line in code] or [indent + "pass"]
        passes += len(code)
    if scattered is not None:
        if scatter_at == len(events):
            lines.append(f"    S({buffers[scattered]}, {_coef(final.simple()[1])})")
        passes += 1
    lines += [f"    V{1 + n_params + i}.zero_()" for i, kind in enumerate(kinds) if kind == "zero"]  # after every read
    passes += kinds.count("zero")
    head = "".join(f"    f{k} = F[{k}]\n" for k in sorted(builder.used_floats))
    head += "".join(f"    V{i} = V[{i}]\n" for i in range(len(vectors)))
    source = ("def run(V, H, F, R, T, S):\n" + head + "\n".join(lines) + "\n"
              + f"    return [{', '.join(f'H[{k}]' for k in scalar_outputs)}]\n")
    namespace = {"torch": torch, "OPS": ops, "LERP_TOLERANCE": LERP_TOLERANCE, "_fdiv": _fdiv}
    exec(compile(source, f"<dynopt eager graph of {family[1].obj.name}>", "exec"), namespace)
    example = prelude(*[inputs[i] for i in positions])
    devices = {example[k].device.type for k in builder.used_floats}
    if devices - {"cpu"}:  # a tensor lr, or a global scalar, on the accelerator
        raise Unsupported(f"a coefficient on {', '.join(sorted(devices - {'cpu'}))} (reading it would synchronise)")
    from .torch_flat import HOST_CHECK_DEVICES

    if bucket.pool.device.type not in HOST_CHECK_DEVICES:  # the global scalars and totals live on the device
        first = 1 + n_params + len(bucket.names)
        resident = {*range(first, first + len(bucket.scalar_names)), *range(len(inputs) - n_totals, len(inputs))}
        if any(_depends(prelude, positions, resident)[k] for k in builder.used_floats):
            raise Unsupported(f"a coefficient computed from a global scalar on {bucket.pool.device.type} (reading "
                              "it would synchronise)")
    reads_grad = in_place or scattered != vectors[0] or any(vectors[0] in _reads(event) for event in events)
    return Program(prelude, positions, family, namespace["run"], n_registers, source, passes,
                   sorted(builder.used_floats), reads_grad)


_PROGRAMS: dict[tuple, Any] = {}  # per process: a Program, or why the per-op path runs (a str)


def program(spec, hp, bucket, inputs: list, total_names: tuple[str, ...]) -> Program | str:
    """The eager Program of ``bucket`` (cached per spec, static structure, dtypes and bucket kind), or
    the reason why its update runs one kernel per tree operation. Builds before anything is written;
    raises ``NeedsLeaves`` as the per-op path would."""
    from .torch_flat import HOST_CHECK_DEVICES, NeedsLeaves, _Same, _signature, _static_structure, trace_update

    family = ("eager", _Same(spec), _static_structure(spec, hp), bucket.params[0].device.type, bucket.needs_params,
              bucket.names, bucket.scalar_names, total_names, tuple(map(_signature, inputs)))
    key = (*family, bucket.in_place, bucket.pool.device.type in HOST_CHECK_DEVICES)
    found = _PROGRAMS.get(key)
    if found is not None:
        return found
    try:
        if bucket.pool.dtype in LOW_PRECISION:
            raise Unsupported(f"{bucket.pool.dtype} (the reference rounds every intermediate; composite kernels "
                              "round once)")
        traced, outputs = trace_update(spec, hp, bucket, inputs, total_names)
        found = build_program(traced, outputs, bucket, inputs, family, len(total_names))
    except NeedsLeaves:
        raise
    except Unsupported as err:
        found = f"not modelled: {err}"
    except Exception as err:  # noqa: BLE001 - a spec the tracer cannot follow: the per-op path runs it
        found = f"{type(err).__name__}: {err}".replace("fused=True: ", "")
    _PROGRAMS[key] = found
    return found


def reads_grad(bucket) -> bool:
    """Whether a step of ``bucket`` needs its gathered flat gradient: False only for a gathered bucket whose
    Program scatters a multiple of the gradients and reads nothing else (the plain gradient step), with no parameter read."""
    found = bucket.program
    return (found is None or not isinstance(found[1], Program) or found[1].reads_grad or bucket.in_place
            or bucket.needs_params)
