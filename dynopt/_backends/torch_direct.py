"""``torch.compile`` of a flat-argument function whose steady calls skip dynamo's per-call wrapper.

A compiled kernel called through ``torch.compile`` pays ~30 µs per call on the CPU for dynamo's frame
evaluation and guard checks, before inductor's code runs (~5 µs for a kernel over a few elements). A
fused step calls one kernel per bucket, so on a model of many large tensors (each a bucket of its own)
or a tiny one that wrapper is most of the step. ``DirectCompiled(fn)`` compiles ``fn(*flat)`` as
``torch.compile(fn, dynamic=True, fullgraph=True)`` would (inductor, default options) and remembers the
graph dynamo captured for each *call pattern*: which arguments are the same object, which sizes are
0 or 1 (dynamo specializes those), which require grad, the device and the grad mode. The first call of a pattern goes
through dynamo (it compiles, or picks a graph by its guards, and the result is that call's); once the
graph that served it is known, later calls of the same pattern call inductor's compiled function
directly with the graph's inputs: the arguments it lifted (dynamo names them ``L_flat_<i>_``) and the
symbolic sizes, read from the argument whose shape carries them. Anything not understood (another
input name, a size symbol not found, several graphs that could have served, outputs that are not the
graph's) keeps that pattern on the dynamo path. The caller guarantees what dynamo's remaining guards
would check: per pattern the same argument dtypes, dimensions and contiguity (the flat plan's kernel
cache key).
"""

from __future__ import annotations

import re
from typing import Any, Callable

import torch

__all__ = ["DirectCompiled"]

_INPUT = re.compile(r"L_flat_(\d+)_")


class DirectCompiled:
    def __init__(self, fn: Callable, name: str | None = None):
        if name is not None:  # torch.compile caches per code object: one of its own per kernel
            fn.__code__ = fn.__code__.replace(co_name=name)
        self._graphs: list[tuple[torch.fx.GraphModule, Callable]] = []
        self._callers: dict[tuple, Callable | None] = {}
        self._dynamo = torch.compile(fn, dynamic=True, fullgraph=True, backend=self._backend)
        self.direct_calls = 0  # how many calls skipped dynamo (tests)

    def _backend(self, gm: torch.fx.GraphModule, example_inputs: list) -> Callable:
        from torch._inductor.compile_fx import compile_fx

        compiled = compile_fx(gm, example_inputs)
        self._graphs.append((gm, compiled))
        return compiled

    @staticmethod
    def pattern(flat: tuple) -> tuple:
        seen: dict[int, int] = {}
        same = tuple([seen.setdefault(id(x), i) for i, x in enumerate(flat)])
        return (same, tuple([(min(x.numel(), 2) if x.dim() else -1, x.requires_grad) for x in flat]), flat[-1].device,
                torch.is_grad_enabled())

    def __call__(self, *flat: torch.Tensor) -> Any:
        try:
            key = self.pattern(flat)
        except (AttributeError, IndexError):  # an argument that is not a tensor, or none: dynamo decides
            return self._dynamo(*flat)
        caller = self._callers.get(key)
        if caller is not None:
            try:
                result = caller(flat)
            except AssertionError:  # inductor's size/stride check, made before any kernel writes: dynamo decides
                self._callers[key] = None
                return self._dynamo(*flat)
            self.direct_calls += 1
            return result
        before = len(self._graphs)
        result = self._dynamo(*flat)
        if key not in self._callers:
            new = self._graphs[before:]
            served = new[0] if len(new) == 1 else self._graphs[0] if not new and len(self._graphs) == 1 else None
            self._callers[key] = None if served is None else _caller(*served, flat, result)
        return result


def _caller(gm: torch.fx.GraphModule, compiled: Callable, flat: tuple, result: Any) -> Callable | None:
    """``call(flat)`` running ``compiled`` on the graph's inputs taken from ``flat``; None where the graph's
    inputs or outputs are not understood."""
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    tensors: dict[str, tuple[int, Any]] = {}  # placeholder -> (argument index, its example value)
    for node in placeholders:
        match = _INPUT.fullmatch(str(node.target))
        if match:
            tensors[node.name] = int(match.group(1)), node.meta.get("example_value")
    getters = []
    for node in placeholders:
        if node.name in tensors:
            getters.append((tensors[node.name][0], None))
            continue
        value = node.meta.get("example_value")
        if not isinstance(value, torch.SymInt):
            return None
        where = next(((index, dim) for index, example in tensors.values() if isinstance(example, torch.Tensor)
                      for dim, size in enumerate(example.shape) if str(size) == str(value)), None)
        if where is None:
            return None
        getters.append(where)
    outputs = next(n for n in gm.graph.nodes if n.op == "output").args[0]
    ids = {id(x) for x in flat}
    if (not isinstance(result, (list, tuple)) or len(result) != len(outputs)
            or any(id(x) in ids for x in result)):
        return None

    def call(args: tuple) -> list:
        return list(compiled(*[args[i] if dim is None else args[i].shape[dim] for i, dim in getters]))

    return call
