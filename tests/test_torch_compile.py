"""A training step compiled with torch.compile that calls ``opt.step()`` (issue #15), on the whole zoo.

torch's own recipe (the tutorial "Running the compiled optimizer with an LR scheduler"): the step is
one graph, and with the lr given as a tensor an ``lr_scheduler`` changes it without a recompile.
Under ``torch.compiler.is_compiling()`` a dynopt optimizer takes a trace-friendly route (the reference
path's ``_foreach`` kernels, step counters kept as tensors, nothing read on the host). Checked here
for every optimizer of ``dynopt.optimizers.ZOO``:

* ``torch._dynamo.explain`` of a function calling ``opt.step()`` (default construction, float32,
  after the first step, which creates the state eagerly) finds one graph and no graph break;
* the compiled steps (float64; inductor for a few optimizers, AOTAutograd's eager backend for the
  rest of the zoo) give the numbers of the eager steps — the expected values
  come from the same optimizer stepped eagerly, whose default path ``tests/test_torch_paths.py`` proves
  equal to the reference path, itself proven equal to torch.optim by ``test_parity`` and
  ``test_conformance_torch``; eager steps before and after the compiled ones (a cached flat plan
  whose step counts the compiled steps advanced) are checked with them;
* an ``lr_scheduler`` changing a tensor lr at every step recompiles nothing
  (``torch._dynamo.config.error_on_recompile``), nor does the step number.
"""

from __future__ import annotations

import pytest
import torch
from torch._dynamo.utils import counters

import dynopt.torch as dt
from dynopt.optimizers import ZOO

# two matrices (Muon takes 2-D parameters only), positive entries (EG's default variant needs them); few
# tensors keep the tracing short: dynamo runs the spec's Python once per parameter
SHAPES = [(5, 3), (3, 2)]
# NoisySGD draws with torch.Generator (get_state/set_state), which dynamo does not trace: its step runs eagerly
# inside a compiled function (graph breaks, the reference path), tested in tests/test_optax_noisy_muon.py
NAMES = [spec.name for spec in ZOO if spec.random_seed is None]
# the numbers of inductor's kernels, on a few optimizers (compiling is slow on 2 cores); the rest of the zoo
# runs the same traced graph with AOTAutograd's eager backend, which checks the trace and its in-place writes
INDUCTOR = ("SGD", "Adam", "MetaAdam", "ASGD")


def takes_update_route(spec, hp) -> bool:
    """Which compiled steps take the few-guard route (``dynopt/_backends/torch_traced.py``: the update traced by
    AOTAutograd, the tensors collected by ``_init_group``), from the spec's declared properties: no global
    reductions, random draws, scalar state, state of another shape or multi-stage scheme. Muon is the one spec
    whose update, given its hyperparameters as 0-dim tensors, reads a value on the host (its check on fake
    tensors fails): it keeps the inlined route."""
    return (spec.reductions is None and spec.random_seed is None and spec.state_shape is None
            and spec.gradient_calls == 1 and not spec.scalars(hp) and spec.name != "Muon")


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def make_params(dtype: torch.dtype) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.rand(s, generator=gen, dtype=dtype) + 0.5) for s in SHAPES]


def gradients(steps: int, dtype: torch.dtype) -> list[list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [[torch.randn(s, generator=gen, dtype=dtype) for s in SHAPES] for _ in range(steps)]


def set_grads(params, grads) -> None:
    for p, g in zip(params, grads):
        p.grad = g.clone()


@pytest.mark.parametrize("name", NAMES)
def test_compiled_step_has_no_graph_break(name):
    params = make_params(torch.float32)
    opt = getattr(dt, name)(params, lr=1e-2)  # the default construction
    first, second = gradients(2, torch.float32)
    set_grads(params, first)
    opt.step()  # creates the state (eagerly)
    set_grads(params, second)

    def train_step():
        opt.step()

    explanation = torch._dynamo.explain(train_step)()
    reasons = [str(r.reason)[:300] for r in explanation.break_reasons]
    assert explanation.graph_break_count == 0, reasons
    assert explanation.graph_count == 1, reasons
    assert opt.execution.reason == "traced by torch.compile"
    covered = takes_update_route(opt.spec, opt._hyper(opt.param_groups[0]))
    assert opt.execution.traced == ("update" if covered else "inlined")


@pytest.mark.parametrize("name", NAMES)
def test_compiled_step_equals_eager_and_an_lr_scheduler_never_recompiles(name):
    dtype = torch.float64
    grads = gradients(6, dtype)
    compiled_at = (2, 3, 4)  # steps 0-1 eager (the second builds the flat plan), 2-4 compiled, 5 eager again
    runs = {}
    for mode in ("eager", "compiled"):
        params = make_params(dtype)
        opt = getattr(dt, name)(params, lr=torch.tensor(1e-2, dtype=dtype))  # torch's recipe: the lr as a tensor
        scheduler = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7)  # a new lr at every step
        compiled = torch.compile(lambda opt=opt: opt.step(), backend="inductor" if name in INDUCTOR else "aot_eager")
        trace = []
        for k, g in enumerate(grads):
            set_grads(params, g)
            if mode == "compiled" and k in compiled_at:
                with torch._dynamo.config.patch(error_on_recompile=True):
                    compiled()
                assert opt.execution.reason == "traced by torch.compile"
            else:
                opt.step()
            scheduler.step()
            trace.append(([p.detach().clone() for p in params],
                          [{key: value.clone() for key, value in opt.state[p].items()} for p in params]))
        runs[mode] = trace
    assert counters["stats"]["unique_graphs"] == 1, dict(counters["stats"])
    # the one break: the scheduler's wrapper of opt.step (torch/optim/lr_scheduler.py, which dynamo never traces;
    # torch.optim gets it too); the step it calls is one graph
    breaks = list(counters["graph_break"])
    assert all("lr_scheduler.py" in reason for reason in breaks), breaks
    for k, ((want_p, want_s), (got_p, got_s)) in enumerate(zip(runs["eager"], runs["compiled"])):
        for i, (a, b) in enumerate(zip(want_p, got_p)):
            torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12, msg=lambda m, i=i, k=k: f"step {k} param {i}: {m}")
        for i, (a, b) in enumerate(zip(want_s, got_s)):
            assert set(a) == set(b), (k, i)
            for key in a:
                torch.testing.assert_close(b[key], a[key], rtol=1e-10, atol=1e-12,
                                           msg=lambda m, i=i, k=k, key=key: f"step {k} param {i} state {key!r}: {m}")


def test_step_hooks_run_in_a_compiled_step():
    """``Optimizer.step``'s pre- and post-hooks run inside the compiled step, as with torch.optim."""
    params = make_params(torch.float32)
    opt = dt.Adam(params, lr=1e-2)
    calls = []
    opt.register_step_pre_hook(lambda *args: calls.append("pre"))
    opt.register_step_post_hook(lambda *args: calls.append("post"))
    grads = gradients(3, torch.float32)
    set_grads(params, grads[0])
    opt.step()
    compiled = torch.compile(opt.step)
    for g in grads[1:]:
        set_grads(params, g)
        compiled()
    assert calls == ["pre", "post"] * 3
    assert all(float(opt.state[p]["step"]) == 3 for p in params)
    assert not counters["graph_break"], dict(counters["graph_break"])


def run_steps(name: str, compiled_at: tuple, change=None, dtype=torch.float64, steps: int = 6, **kwargs):
    """Parameters and state after ``steps`` steps of ``name`` (the steps in ``compiled_at`` inside one
    ``torch.compile``'d function, AOTAutograd's eager backend), ``change(opt, k)`` called before step k."""
    params = make_params(dtype)
    opt = getattr(dt, name)(params, **kwargs)
    compiled = torch.compile(lambda: opt.step(), backend="aot_eager")
    routes = []
    for k, g in enumerate(gradients(steps, dtype)):
        if change is not None:
            change(opt, k)
        set_grads(params, g)
        if k in compiled_at:
            compiled()
            routes.append(opt.execution.traced)
        else:
            opt.step()
    return [p.detach().clone() for p in params], [dict(opt.state[p]) for p in params], routes


def assert_same_run(a, b) -> None:
    for x, y in zip(a[0], b[0]):
        torch.testing.assert_close(y, x, rtol=1e-10, atol=1e-12)
    for x, y in zip(a[1], b[1]):
        assert set(x) == set(y)
        for key in x:
            torch.testing.assert_close(y[key], x[key], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", ["SGD", "Adam", "Momentum"])
def test_a_float_lr_changing_every_step_compiles_twice_at_most(name):
    """A float lr that a schedule changes at every step: the first change recompiles once (dynamo then takes the
    number as symbolic: the update route passes it as a 0-dim tensor computed from it), never again, and the
    numbers are the eager steps'."""

    def decay(opt, k):
        for group in opt.param_groups:
            group["lr"] = 0.1 * 0.7**k

    eager = run_steps(name, (), decay, lr=0.1)
    counters.clear()
    compiled = run_steps(name, (1, 2, 3, 4, 5), decay, lr=0.1)
    assert compiled[2] == ["update"] * 5
    assert counters["stats"]["unique_graphs"] <= 2, dict(counters["stats"])
    assert_same_run(eager, compiled)


def test_a_structure_change_under_compile_recompiles_and_steps_as_eager():
    """Momentum switched on between compiled steps (SGD with momentum 0, then 0.9): the group's guards fail, the
    new structure has no momentum buffer yet, so that step runs eagerly and creates it (graph breaks, as a first
    step does), and the following compiled steps take the update route again; every number is the eager run's."""

    def switch(opt, k):
        if k == 3:
            opt.param_groups[0]["momentum"] = 0.9

    eager = run_steps("SGD", (), switch, lr=0.1)
    compiled = run_steps("SGD", (1, 2, 3, 4, 5), switch, lr=0.1)
    assert compiled[2][:2] == ["update"] * 2 and compiled[2][-1] == "update"
    assert "momentum_buffer" in compiled[1][0]
    assert_same_run(eager, compiled)


def test_the_inlined_route_gives_the_same_numbers(monkeypatch):
    """With the update route switched off, a compiled step traces the spec's step itself: same numbers."""
    from dynopt._backends import torch_traced

    update = run_steps("AdamW", (1, 2, 3), lr=torch.tensor(1e-2, dtype=torch.float64))
    monkeypatch.setattr(torch_traced, "ENABLED", False)
    torch._dynamo.reset()
    inlined = run_steps("AdamW", (1, 2, 3), lr=torch.tensor(1e-2, dtype=torch.float64))
    assert update[2] == ["update"] * 3 and inlined[2] == ["inlined"] * 3
    assert_same_run(update, inlined)


def test_complex_parameters_and_several_groups_take_the_update_route():
    """Complex parameters (stepped as real views, as torch.optim does) in two param groups with different
    hyperparameters: the compiled steps equal the eager ones."""

    def make(compiled_at):
        gen = torch.Generator().manual_seed(0)
        z = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.complex128, generator=gen))
        x = torch.nn.Parameter(torch.randn(3, dtype=torch.float64, generator=gen))
        opt = dt.Adam([{"params": [z]}, {"params": [x], "lr": 0.05, "betas": (0.8, 0.99)}], lr=0.1)
        compiled = torch.compile(lambda: opt.step(), backend="aot_eager")
        for k in range(4):
            z.grad = torch.full_like(z, (k + 1) * (1 + 0.5j))
            x.grad = torch.full_like(x, -(k + 1.0))
            compiled() if k in compiled_at else opt.step()
        return [z.detach().clone(), x.detach().clone()], [dict(opt.state[z]), dict(opt.state[x])], opt.execution.traced

    eager, compiled = make(()), make((1, 2, 3))
    assert compiled[2] == "update"
    assert_same_run(eager, compiled)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div", "maximum", "minimum"])
def test_tensor_scalar_ops_compute_what_the_multi_tensor_ops_compute_with_a_number(op):
    """The update route's tree operations with a 0-dim tensor scalar (every number is one there) against the
    reference path's multi-tensor ones with the same scalar as a Python number, on both sides of the operation."""
    from dynopt._backends.torch_ops import ForeachOps
    from dynopt._backends.torch_traced import _TensorScalarOps

    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(5, generator=gen, dtype=torch.float64) + 2.5, torch.randn(2, 3, generator=gen, dtype=torch.float64)]
    s = 0.7
    ours, reference = _TensorScalarOps(), ForeachOps()
    for got, want in ((ours.binary(op, xs, torch.tensor(s, dtype=torch.float64)), reference.binary(op, xs, s)),
                      (ours.rbinary(op, torch.tensor(s, dtype=torch.float64), xs),
                       # max(s, x) = max(x, s): the reference takes a number on the right only
                       reference.binary(op, xs, s) if op in ("maximum", "minimum") else reference.rbinary(op, s, xs))):
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_compiled_step_right_after_load_state_dict():
    """An optimizer that never stepped eagerly, its state loaded from a checkpoint: its first step, compiled, takes
    the update route and equals the eager step of the optimizer the checkpoint came from."""
    params = make_params(torch.float64)
    first, second = gradients(2, torch.float64)
    source = dt.Adam(params, lr=1e-2)
    set_grads(params, first)
    source.step()
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = dt.Adam(copies, lr=1e-2)
    resumed.load_state_dict(source.state_dict())
    set_grads(params, second)
    set_grads(copies, second)
    source.step()
    torch.compile(lambda: resumed.step(), backend="aot_eager")()
    assert resumed.execution.traced == "update"
    for a, b in zip(params, copies):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
