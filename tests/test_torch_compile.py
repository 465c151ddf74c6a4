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
