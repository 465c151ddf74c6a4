"""Prototype, not library code: the generated torch step on one flat buffer per bucket.

It measures how much of the gap between ``dynopt.torch`` and ``torch.optim`` three generic changes
to the torch backend would close. It subclasses the generated classes and never edits the backend;
it never names an optimizer either: the spec runs unchanged, only the leaves it sees differ.

1. **Flat buckets.** Each state variable of a bucket (the params of one group with the same
   device, dtype and step count that have fewer than ``flat_max_numel`` = 65536 elements; a larger
   param is a bucket of its own) lives in one contiguous buffer; ``self.state[p][name]`` is a view into
   it, so ``state_dict`` and checkpoints look as before. The gradients (and the parameters, when
   ``spec.needs_params``) are gathered into a flat buffer with one ``_foreach_copy_``. The spec
   then sees trees of *one* leaf: every tree operation is one ATen kernel over all elements
   instead of one ``_foreach`` call that, on CPU, loops over the tensors in C++ and allocates one
   output per tensor. A bucket of a single tensor is used in place (no gather).
2. **Reused temporaries.** Results go to ``out=`` buffers from a per-bucket pool that survives
   across steps; a buffer is free again as soon as the tensor handed out for it is garbage
   (a weak reference tells), so the pool holds as many buffers as the step has live temporaries
   at once. No per-step allocation means no page faults (on Linux, glibc serves every allocation
   above 32 MiB with a fresh ``mmap``: a 64 MB temporary costs ~16k page faults, ~20 ms here).
3. **Cached plan, counters as one tensor.** The bucketing is done once and reused while the
   params with gradients, the hyperparameter structure and the state stay the same (invalidated
   by ``load_state_dict`` and ``add_param_group``); the ``step`` counters of a bucket are 0-dim
   views of one tensor (one ``add_`` per step, the count itself a Python int), as are the spec's
   global scalars.

What it leaves out (so it falls back to the generated step, which stays the reference): specs
whose update reduces along axes of a leaf (``o.sum_along``: flat leaves would mix parameters),
groups with ``skip_nonfinite`` or any other option the backend adds after this was written, params
that are not contiguous, the first step (state creation) and buckets whose state does not have
the param's shape and dtype. Its tree-wide sums run over the flat buffer, so they round
differently from the per-leaf sums of the backend (same maths, last-bit differences) and have no
per-leaf fault isolation. ``check()`` compares it with the generated classes.
"""

from __future__ import annotations

import weakref
from types import SimpleNamespace

import torch

from dynopt._backends.torch_optim import ForeachOps, SpecOptimizer
from dynopt.tree import ZERO, TreeMath

__all__ = ["FlatMixin", "flat_class", "NeedsLeaves", "check"]


class NeedsLeaves(Exception):
    """The spec reduces inside a leaf: it cannot run on a flattened bucket."""


class Pool:
    """Flat scratch buffers of one bucket, reused across operations and across steps."""

    def __init__(self, numel: int, dtype: torch.dtype, device: torch.device, shapes: list[torch.Size]):
        self.numel, self.dtype, self.device, self.shapes = numel, dtype, device, shapes
        self.slots: list[list] = []  # [base buffer, weak reference to the tensor handed out, cached views]

    def take(self) -> torch.Tensor:
        for slot in self.slots:
            if slot[1] is None or slot[1]() is None:
                break
        else:
            slot = [torch.empty(self.numel, dtype=self.dtype, device=self.device), None, None]
            self.slots.append(slot)
        out = slot[0].view(-1)  # a new tensor object on the same memory: its lifetime is the temporary's
        slot[1] = weakref.ref(out)
        return out

    def views(self, tensor: torch.Tensor) -> list[torch.Tensor] | None:
        """Param-shaped views of a buffer handed out by this pool (cached per buffer), else None."""
        for slot in self.slots:
            if slot[1] is not None and slot[1]() is tensor:
                if slot[2] is None:
                    slot[2] = split_views(slot[0], self.shapes)
                return slot[2]
        return None

    @property
    def nbytes(self) -> int:
        return sum(slot[0].numel() * slot[0].element_size() for slot in self.slots)


def split_views(flat: torch.Tensor, shapes: list[torch.Size]) -> list[torch.Tensor]:
    views, offset = [], 0
    for shape in shapes:
        n = shape.numel()
        views.append(flat[offset:offset + n].view(shape))
        offset += n
    return views


_OUT = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div, "maximum": torch.maximum,
        "minimum": torch.minimum, "neg": torch.neg, "sqrt": torch.sqrt, "exp": torch.exp, "log": torch.log,
        "abs": torch.abs, "sign": torch.sign, "expm1": torch.expm1}


class FlatOps(ForeachOps):
    """The backend's leaf operations on one-leaf trees, each one ATen kernel writing into the pool."""

    def __init__(self, pool: Pool):
        self.pool = pool

    def binary(self, op, xs, ys):
        (x,) = xs
        y = ys[0] if isinstance(ys, list) else ys
        out = self.pool.take()
        if op in ("maximum", "minimum") and not isinstance(ys, list):
            (torch.clamp_min if op == "maximum" else torch.clamp_max)(x, y, out=out)
        else:
            _OUT[op](x, y, out=out)
        return [out]

    def rbinary(self, op, s, xs):
        (x,) = xs
        out = self.pool.take()
        if op == "sub":  # s - x == (-x) + s exactly, as in the backend
            torch.neg(x, out=out).add_(s)
        elif op in ("add", "mul"):
            _OUT[op](x, s, out=out)
        else:
            _OUT[op](s, x, out=out)
        return [out]

    def unary(self, op, xs):
        (x,) = xs
        out = self.pool.take()
        _OUT[op](x, out=out)
        return [out]

    def sum_all(self, xs):
        (x,) = xs  # the backend's formula, ‖max(x, 0)‖₁ − ‖min(x, 0)‖₁, over the whole bucket at once
        positive = torch.linalg.vector_norm(torch.clamp_min(x, 0.0, out=self.pool.take()), 1)
        negative = torch.linalg.vector_norm(torch.clamp_max(x, 0.0, out=self.pool.take()), 1)
        return positive - negative

    def where(self, cond, xs, ys):
        return [torch.where(cond, xs[0], ys[0], out=self.pool.take())]

    def reduce_along(self, op, xs, axis):
        raise NeedsLeaves(op)


class _Bucket:
    """One flattened bucket: its params, flat state, pool and cached views."""

    def __init__(self, opt: "FlatMixin", group: dict, params: list[torch.Tensor], names: tuple[str, ...], hp):
        spec = opt.spec
        first = params[0]
        self.params, self.names = params, names
        self.shapes = [p.shape for p in params]
        self.numel = sum(p.numel() for p in params)
        self.single = len(params) == 1
        self.pool = Pool(self.numel, first.dtype, first.device, self.shapes)
        self.math = TreeMath(FlatOps(self.pool))
        self.count = int(opt.state[first]["step"])
        self.needs_params = spec.needs_params(hp)
        self.scalar_names = tuple(spec.scalars(hp))
        self.state: dict[str, torch.Tensor] = {}  # name -> flat buffer
        self.views: dict[str, list[torch.Tensor]] = {}
        for name in names:
            old = [opt.state[p][name] for p in params]
            if self.single:
                self.state[name], self.views[name] = old[0].view(-1), old
                continue
            flat = torch.empty(self.numel, dtype=first.dtype, device=first.device)
            views = split_views(flat, self.shapes)
            torch._foreach_copy_(views, old)
            for p, view in zip(params, views):
                opt.state[p][name] = view
            self.state[name], self.views[name] = flat, views
        self.steps = self._flat_scalars(opt, "step")
        self.scalars = {name: self._flat_scalars(opt, name) for name in self.scalar_names}
        self.grad_flat = self.param_flat = None
        if not self.single:
            self.grad_flat = torch.empty(self.numel, dtype=first.dtype, device=first.device)
            self.grad_views = split_views(self.grad_flat, self.shapes)
            if self.needs_params:
                self.param_flat = torch.empty(self.numel, dtype=first.dtype, device=first.device)
                self.param_views = split_views(self.param_flat, self.shapes)

    def _flat_scalars(self, opt, name) -> torch.Tensor:
        """The 0-dim values ``state[p][name]`` of the bucket as views of one tensor."""
        old = [opt.state[p][name] for p in self.params]
        if self.single:
            return old[0]
        flat = torch.stack([x.detach() for x in old])
        for i, p in enumerate(self.params):
            opt.state[p][name] = flat[i]
        return flat

    @property
    def held_bytes(self) -> int:
        """Memory this bucket holds beyond what the generated step keeps: pool and gather buffers."""
        extra = [x for x in (self.grad_flat, self.param_flat) if x is not None]
        return self.pool.nbytes + sum(x.numel() * x.element_size() for x in extra)

    def trees(self, hp):
        if self.single:
            (p,) = self.params
            grad = p.grad.reshape(-1)
            param = p.view(-1) if self.needs_params else None
        else:
            torch._foreach_copy_(self.grad_views, [p.grad for p in self.params])
            grad = self.grad_flat
            if self.needs_params:
                torch._foreach_copy_(self.param_views, self.params)
            param = self.param_flat
        state = SimpleNamespace(**{n: self.math.tree([self.state[n]]) for n in self.names},
                                **{n: flat if self.single else flat[0] for n, flat in self.scalars.items()})
        return self.math.tree([grad]), self.math.tree([param]), state

    def commit(self, delta, new, state):
        if delta is not ZERO:
            (d,) = delta.leaves
            if self.single:
                self.params[0].add_(d.view(self.shapes[0]))
            else:
                views = self.pool.views(d)
                torch._foreach_add_(self.params, views if views is not None else split_views(d, self.shapes))
        for name in self.names:
            old, value = getattr(state, name), new[name]
            if value is ZERO:
                self.state[name].zero_()
            elif value is not old:
                self.state[name].copy_(value.leaves[0])
        for name, flat in self.scalars.items():
            flat.copy_(new[name])
        self.steps.add_(1.0)
        self.count += 1


class FlatMixin(SpecOptimizer):
    """Mix in before a generated class: ``flat_class(dynopt.torch.Adam)``."""

    flat_max_numel = 1 << 16  # a larger parameter is a bucket of its own, used in place (no gather pass)
    _flat_plan = None
    _flat_key = None
    _flat_off = False  # the spec needs per-leaf reductions: always the generated step

    def add_param_group(self, param_group):
        super().add_param_group(param_group)
        self._flat_plan = None

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._flat_plan = None

    def _hp(self, group):
        return self.spec.namespace({h.name: group[h.name] for h in self.spec.hyperparams})

    def flat_held_bytes(self) -> int:
        return sum(b.held_bytes for _, _, buckets in (self._flat_plan or ()) for b in buckets)

    def _build(self):
        """Bucket every group, or None when some group needs the generated step."""
        known = {h.name for h in self.spec.hyperparams} | {"params", "initial_lr", "param_names"}
        plan = []
        for group in self.param_groups:
            if any(key not in known and value for key, value in group.items()):
                return None  # an option this prototype does not implement (e.g. skip_nonfinite=True)
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            hp = self._hp(group)
            names = self.spec.state(hp)
            needed = ("step", *names, *self.spec.scalars(hp))
            buckets: dict[tuple, list[torch.Tensor]] = {}
            for p in params:
                state = self.state.get(p)
                if state is None or any(n not in state for n in needed) or not p.is_contiguous() or p.grad.is_sparse:
                    return None
                if any(state[n].shape != p.shape or state[n].dtype != p.dtype for n in names):
                    return None
                key = (p.device, p.dtype, int(state["step"]))
                buckets.setdefault(key + ((id(p),) if p.numel() >= self.flat_max_numel else ()), []).append(p)
            plan.append((group, names, [_Bucket(self, group, bucket, names, hp) for bucket in buckets.values()]))
        return plan

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        key = tuple(tuple(p.grad is not None for p in group["params"]) for group in self.param_groups)
        if self._flat_plan is None or key != self._flat_key:
            self._flat_plan = None if self._flat_off else self._build()
            self._flat_key = key
        if self._flat_plan is None:
            super().step()  # first step (creates state), or a case this prototype leaves out
            return loss
        try:
            work = []
            for group, names, buckets in self._flat_plan:
                hp = self._hp(group)
                if self.spec.state(hp) != names:
                    raise NeedsLeaves("state names changed")
                for bucket in buckets:
                    work.append((hp, bucket, *bucket.trees(hp)))
            totals = None
            if self.spec.reductions is not None:
                totals = {}
                for hp, bucket, grad, param, state in work:
                    for k, v in self.spec.reductions(bucket.math, hp, grad, param, state).items():
                        totals[k] = v if k not in totals else totals[k] + v.to(totals[k].device)
            extra = {} if totals is None else {"totals": totals}
            results = [self.spec.update(bucket.math, hp, bucket.count + 1, grad, param, state, **extra)
                       for hp, bucket, grad, param, state in work]
        except NeedsLeaves:
            self._flat_off, self._flat_plan = True, None
            super().step()
            return loss
        for (_, bucket, _, _, state), (delta, new) in zip(work, results):
            bucket.commit(delta, new, state)
        self._share_flat_scalars()
        return loss

    def _share_flat_scalars(self):
        buckets = [b for _, _, bs in self._flat_plan for b in bs]
        names = buckets[0].scalar_names if buckets else ()
        for name in names:
            source = buckets[0].scalars[name].reshape(-1)[0]
            for b in buckets[1:]:
                b.scalars[name].copy_(source)
            planned = sum(len(b.params) for b in buckets)
            if len(self.state) > planned:  # params without a gradient this step keep the shared value too
                targets = [s[name] for s in self.state.values() if name in s and s[name].data_ptr() != source.data_ptr()]
                torch._foreach_copy_(targets, [source] * len(targets))


def flat_class(cls: type[SpecOptimizer]) -> type[SpecOptimizer]:
    """The prototype version of a generated optimizer class."""
    return type(f"Flat{cls.__name__}", (FlatMixin, cls), {"__module__": __name__})


def check(steps: int = 4, atol: float = 1e-6) -> tuple[list[str], list[str]]:
    """Compare the prototype with the generated classes on every zoo optimizer and a few options.

    Returns the mismatches and the configurations that fell back to the generated step."""
    import dynopt.torch as dt
    from dynopt.optimizers import ZOO

    configs = [(spec.name, {"lr": 1e-2}) for spec in ZOO] + [
        ("EG", {"lr": 1e-2, "variant": "simplex"}), ("EG", {"lr": 1e-2, "variant": "signed"}),
        ("RMSprop", {"lr": 1e-2, "centered": True, "momentum": 0.9, "weight_decay": 0.1}),
        ("Adam", {"lr": 1e-2, "weight_decay": 0.1, "maximize": True}), ("MetaAdam", {"lr": 1e-2, "gain_lr": 0.1}),
        ("MetaMomentum", {"lr": 1e-2, "rule": "hd", "dampening": 0.5})]
    failures, fallbacks = [], []
    for name, kwargs in configs:
        cls = getattr(dt, name)
        for layout in ([(7, 3), (5,), (2, 2, 2)], [(11,)], [(5,), (300, 300), (7, 3)]):  # the last: a bucket of its own
            gen = torch.Generator().manual_seed(0)
            init = [torch.rand(s, generator=gen, dtype=torch.float64) + 0.5 for s in layout]
            grads = [[torch.randn(s, generator=gen, dtype=torch.float64) for s in layout] for _ in range(steps)]
            runs = []
            for kind in (cls, flat_class(cls)):
                params = [torch.nn.Parameter(x.clone()) for x in init]
                opt = kind(params, **kwargs)
                for g in grads:
                    for p, gi in zip(params, g):
                        p.grad = gi.clone()
                    opt.step()
                runs.append((params, opt))
            (ref, ref_opt), (got, got_opt) = runs
            if got_opt._flat_plan is None and not got_opt._flat_off:
                failures.append(f"{name} {kwargs} {layout}: the flat path was not taken")
            if got_opt._flat_off:
                fallbacks.append(f"{name} {kwargs}")
            for a, b in zip(ref, got):
                if not torch.allclose(a, b, rtol=1e-9, atol=atol):
                    failures.append(f"{name} {kwargs} {layout}: params differ by {float((a - b).abs().max()):.3g}")
            for a, b in zip(ref, got):
                for key, value in ref_opt.state[a].items():
                    if not torch.allclose(value.double(), got_opt.state[b][key].double(), rtol=1e-9, atol=atol):
                        failures.append(f"{name} {kwargs} {layout}: state {key!r} differs")
    return failures, sorted(set(fallbacks))


if __name__ == "__main__":
    problems, fell_back = check()
    print("\n".join(problems) if problems else "prototype matches the generated step on every zoo optimizer")
    print("fell back to the generated step (per-leaf reductions):", fell_back)
