"""Flat-parameter mode: a model's parameters and gradients as views of one flat buffer per (device, dtype).

``flatten_parameters(model)`` copies the parameters of each (device, dtype) into one contiguous
buffer and makes every parameter's data a view of its piece (``param.data = view``): the
parameters stay the same ``nn.Parameter`` objects, so modules, autograd, ``model.state_dict()``
and ``load_state_dict`` (which copies into the views in place) see ordinary tensors. Gradients
get a flat buffer of the same layout: a gradient present at flattening is copied into its view
and replaced by it, and a hook on each parameter makes a ``None`` gradient (a new model, or
``zero_grad(set_to_none=True)``, torch's default) its zeroed view again just before autograd
accumulates into it, so ``backward()`` adds in place into the flat gradient buffer.

The optimizer needs nothing from this module: its flat plan (``torch_flat.build_plan``) finds runs
of consecutive parameters of a param group whose data, and whose gradients, are consecutive
pieces of one buffer each, and steps such a run as one flat tensor, in place, without gathering
gradients or scattering steps. Whatever breaks that layout (a gradient assigned by hand,
``backward(create_graph=True)``, which replaces the gradient, ``module.to()`` to another device
or dtype, ``param.data = ...``, ``load_state_dict(assign=True)``) is detected at the next step
and those parameters are gathered as usual (``opt.execution.reason`` says why).
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace
from typing import Any, Iterable

import torch
from torch.utils.weak import WeakIdKeyDictionary

from .native_checks import CHECKS
from .torch_ops import is_plain

__all__ = ["FlatParameters", "flatten_parameters", "home_of", "generation"]

_HOMES: WeakIdKeyDictionary = WeakIdKeyDictionary()  # parameter -> SimpleNamespace(handle, data, grad)
_GENERATION = [0]  # bumped whenever parameters are flattened, re-attached or released: optimizers re-plan


def generation() -> int:
    """A counter that changes whenever some parameters' flat layout was created or changed on purpose."""
    return _GENERATION[0]


def home_of(param: torch.Tensor) -> SimpleNamespace | None:
    """The flat home of a flattened parameter: ``handle``, ``data`` and ``grad`` views; None otherwise."""
    return _HOMES.get(param)


def _collect(model_or_params: Any) -> list[torch.Tensor]:
    if isinstance(model_or_params, torch.nn.Module):
        items: Iterable = model_or_params.parameters()
    elif isinstance(model_or_params, torch.Tensor):
        items = [model_or_params]
    else:
        items = []
        for item in model_or_params:  # parameters, or param groups (dicts with "params") as an optimizer takes them
            if isinstance(item, dict):
                params = item["params"]
                items.extend([params] if isinstance(params, torch.Tensor) else params)
            else:
                items.append(item)
    seen, out = set(), []
    for p in items:
        if id(p) not in seen:  # tied weights appear once
            seen.add(id(p))
            out.append(p)
    return out


class FlatParameters:
    """The handle ``flatten_parameters`` returns.

    ``buffers``: one ``SimpleNamespace(device, dtype, data, grad, params)`` per (device, dtype), in
    the order the parameters came; ``params``: the flattened parameters in buffer order."""

    def __init__(self, buffers: list[SimpleNamespace], hooks: list, homes: list[SimpleNamespace]):
        self.buffers, self._hooks = buffers, hooks
        self.params = [p for b in buffers for p in b.params]
        # where each parameter and gradient belongs: zero_grad's one-pass check (native_checks.views_hold)
        self._grads = [home.grad for home in homes]
        self._addresses = [home.data.data_ptr() for home in homes]
        self._grad_addresses = [home.grad_ptr for home in homes]
        self._zeroed: dict[int, int] = {}  # id(buffer) -> the backward (graph task) that zeroed it whole

    def __len__(self) -> int:
        return len(self.params)

    def __repr__(self) -> str:
        parts = ", ".join(f"{b.dtype} on {b.device}: {len(b.params)} parameters, {b.data.numel()} elements"
                          for b in self.buffers)
        return f"FlatParameters({parts})"

    def broken(self) -> list[tuple[int, str]]:
        """``(index in params, why)`` for each parameter whose data or gradient is no longer its flat view."""
        out = []
        for i, p in enumerate(self.params):
            home = _HOMES.get(p)
            if home is None or home.handle is not self:
                out.append((i, "released"))
            elif p.data_ptr() != home.data.data_ptr() or p.shape != home.data.shape or p.dtype != home.data.dtype:
                out.append((i, "data replaced"))
            elif p.grad is not None and p.grad.data_ptr() != home.grad_ptr:
                out.append((i, "gradient replaced"))
        return out

    @torch.no_grad()
    def zero_grad(self) -> None:
        """Zero every flat gradient buffer (one kernel per buffer) and make every parameter's gradient its
        view again, including gradients that were None (as ``zero_grad(set_to_none=False)``, which gives
        every parameter a zero gradient)."""
        changed = False
        for b in self.buffers:
            b.grad.zero_()
        if CHECKS.views_hold(self.params, self._grads, self._addresses, self._grad_addresses):
            return  # every gradient is its view and every parameter in its buffer (one native pass): nothing to re-home
        for p in self.params:
            home = _HOMES.get(p)
            if home is None or home.handle is not self or p.data_ptr() != home.data.data_ptr():
                continue  # released, or moved away from the buffer: left alone
            if home.grad.data_ptr() != home.grad_ptr:  # someone set grad.data: back into the buffer
                flat, offset = home.grad_slot
                home.grad.data = flat[offset:offset + p.numel()].view(p.shape)
                changed = True
            if p.grad is not home.grad:
                p.grad = home.grad
                changed = True
        if changed:
            _GENERATION[0] += 1

    def zeroed_whole(self, buffer: SimpleNamespace) -> bool:
        """(In backward, for a parameter of ``buffer`` whose gradient is None.) Whether its piece of the gradient
        buffer is zero already: at the first such parameter of a backward, if every parameter of the buffer has a
        None gradient (after ``zero_grad(set_to_none=True)``), the whole buffer is zeroed with one kernel, and the
        pieces of the others stay zero until their own hook hands them their view. Otherwise (some gradients are
        held, e.g. accumulated over micro-batches) each piece is zeroed when its parameter gets its view."""
        task = torch._C._current_graph_task_id() + 1
        seen = self._zeroed.get(id(buffer), 0)
        if seen == task or seen == -task:
            return seen > 0
        whole = task > 0 and CHECKS.attributes_are(buffer.params, "grad", [None] * len(buffer.params))
        if whole:
            buffer.grad.zero_()
        self._zeroed[id(buffer)] = task if whole else -task
        return whole

    def remove(self) -> None:
        """Stop managing the gradients (the hooks are removed); the parameters keep their current data."""
        for handle in self._hooks:
            handle.remove()
        self._hooks = []
        for p in self.params:
            home = _HOMES.get(p)
            if home is not None and home.handle is self:
                home.active = False
                del _HOMES[p]
        _GENERATION[0] += 1


def _reattach_hook(param: torch.nn.Parameter, home: SimpleNamespace):
    ref = weakref.ref(param)
    data_ptr = home.data.data_ptr()
    with torch.enable_grad():  # the node that accumulates into param.grad (kept alive here, as DDP does)
        accumulator = param.view_as(param).grad_fn.next_functions[0][0]

    def accumulates() -> bool:
        """backward() will accumulate into param.grad (torch.autograd.grad does not, and torch raises here then)."""
        try:
            return torch._C._will_engine_execute_node(accumulator)
        except RuntimeError:
            return False

    def hook(grad):  # runs before autograd accumulates into param.grad, and in torch.autograd.grad
        p = ref()
        if (p is not None and p.grad is None and home.active and p.data_ptr() == data_ptr
                and home.grad.data_ptr() == home.grad_ptr and accumulates()):
            if not home.handle.zeroed_whole(home.buffer):
                home.grad.zero_()
            p.grad = home.grad  # accumulation then adds in place into the flat gradient buffer
        return None

    return hook


@torch.no_grad()
def flatten_parameters(model_or_params: Any, *, reattach_grads: bool = True) -> FlatParameters:
    """Re-home the parameters of ``model_or_params`` (a module, parameters, or param groups) into one flat
    buffer per (device, dtype), and their gradients into a flat gradient buffer of the same layout.

    Each parameter keeps its identity; its data becomes a view of its buffer (in the order given,
    tied parameters once). Real floating-point, dense, plain parameters are flattened; others
    (complex, sparse, DTensor, already flattened) are left as they are. ``reattach_grads``: a
    parameter whose gradient is None when backward reaches it gets its zeroed flat view first, so
    ``zero_grad(set_to_none=True)`` keeps the flat layout (one Python hook per parameter and
    backward; with ``reattach_grads=False`` use ``zero_grad(set_to_none=False)`` or
    ``handle.zero_grad()``). An optimizer of ``dynopt.torch`` then steps each run of consecutive
    flattened parameters of a param group as one flat tensor in place (see the module docstring)."""
    params = _collect(model_or_params)
    keyed: dict[tuple, list[torch.Tensor]] = {}
    for p in params:
        if not isinstance(p, torch.Tensor) or not p.is_leaf:
            raise TypeError(f"flatten_parameters: expected leaf tensors (parameters), got {type(p).__name__}"
                            + ("" if not isinstance(p, torch.Tensor) else " that is not a leaf"))
        if p in _HOMES or not is_plain(p) or p.is_sparse or not p.dtype.is_floating_point:
            continue
        keyed.setdefault((p.device, p.dtype), []).append(p)
    buffers, hooks, homes = [], [], []
    for (device, dtype), group in keyed.items():
        total = sum(p.numel() for p in group)
        data = torch.empty(total, dtype=dtype, device=device)
        grad = torch.zeros(total, dtype=dtype, device=device)
        buffers.append(SimpleNamespace(device=device, dtype=dtype, data=data, grad=grad, params=group))
        offset = 0
        for p in group:
            n = p.numel()
            home = SimpleNamespace(handle=None, data=data[offset:offset + n].view(p.shape),
                                   grad=grad[offset:offset + n].view(p.shape), buffer=buffers[-1],
                                   active=True)  # active: managed by its handle (False once released)
            home.grad_ptr, home.grad_slot = home.grad.data_ptr(), (grad, offset)  # where the gradient belongs
            offset += n
            home.data.copy_(p.detach())
            had = p.grad
            p.data = home.data
            if had is not None:
                home.grad.copy_(had.to_dense() if had.is_sparse else had)
                p.grad = home.grad
            homes.append((p, home))
    handle = FlatParameters(buffers, hooks, [home for _, home in homes])
    for p, home in homes:
        home.handle = handle
        _HOMES[p] = home
        if reattach_grads and p.requires_grad:
            hooks.append(p.register_hook(_reattach_hook(p, home)))
    _GENERATION[0] += 1
    return handle
