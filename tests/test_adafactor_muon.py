"""dynopt.torch.Muon, a drop-in for torch.optim.Muon (torch 2.13), and its JAX and NumPy forms (issue #12).

Where the expected values come from: torch.optim.Muon itself, run side by side with dynopt in float64 on the
same parameters and gradients (its numbers, its state_dicts, its exceptions and messages). Its Newton–Schulz
iteration runs in bfloat16, so "the same numbers" means the same bfloat16 roundings: dynopt.torch runs torch's
own kernels (torch.addmm), NumPy and JAX multiply in float32 and round once per product, and JAX rounds every
bfloat16 intermediate explicitly under jit (XLA would otherwise keep float32 "excess precision"). The tolerance
is the parity tolerance, max |Δ| / max |θ| ≤ 1e-12.

The registry suites cover Muon too (tests/zoo_options.py STATEFUL, tests/problems.py shapes_for: its matrices
only). dynopt.torch.Adafactor, the other optimizer of this issue, has its own module: tests/test_adafactor.py. The
last tests here check the generic mechanism Adafactor's state uses (Spec.state_shape) on a user spec.
"""

from __future__ import annotations

import copy
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch
from dynopt.optimizers.muon import newton_schulz
from dynopt.tree import ArrayLeafOps, TreeMath

torch.set_num_threads(1)

SHAPES = [(4, 3), (3, 5), (4, 4)]  # tall (stepped transposed, ρ = √(4/3)), wide, square
OPTIONS = [
    {},
    {"lr": 0.02, "nesterov": False, "momentum": 0.9},
    {"adjust_lr_fn": "original", "weight_decay": 0.0},
    {"adjust_lr_fn": "match_rms_adamw", "ns_steps": 6},
    {"ns_coefficients": (3.4, -4.7, 2.0), "eps": 1e-3, "momentum": 0.0},
    {"lr": torch.tensor(0.01), "weight_decay": 0.2},  # torch forms 1 − lr·λ and lr·ρ in the tensor's float32
    {"ns_steps": 0},
]
IDS = [",".join(f"{k}={v}" for k, v in o.items()) or "defaults" for o in OPTIONS]


def initial(shapes=SHAPES, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64) for s in shapes]


def gradient(params, k):
    """A gradient that depends on the parameters (so that a difference would grow) and on the step."""
    return [torch.sin((1.0 + 0.1 * k) * p) + 0.3 * p ** 3 for p in params]


def run(opt, params, steps, begin=0):
    for k in range(begin, begin + steps):
        for p, g in zip(params, gradient([p.detach() for p in params], k)):
            p.grad = g
        opt.step()
    return [p.detach().clone() for p in params]


def assert_close(a, b, rtol=1e-12):
    """Tensor by tensor within ``rtol`` of the larger magnitude; torch tensors, or JAX/NumPy arrays (copied)."""
    for x, y in zip(a, b, strict=True):
        x, y = (v.detach() if isinstance(v, torch.Tensor) else torch.as_tensor(np.array(v)) for v in (x, y))
        assert x.shape == y.shape
        scale = float(y.abs().max())
        assert float((x.double() - y.double()).abs().max()) <= rtol * scale, float((x.double() - y.double()).abs().max())


def side_by_side(classes, kwargs, steps, make_params):
    """Each class of ``classes`` (dynopt's, then torch.optim's) run ``steps`` steps from the same parameters:
    [(the run's parameters per step, the optimizer)] per class."""
    out = []
    for cls in classes:
        params = [torch.nn.Parameter(x) for x in make_params()]
        opt = cls(params, **copy.deepcopy(kwargs))
        out.append((run(opt, params, steps), opt))
    return out


def both(kwargs, steps=30, shapes=SHAPES):
    return side_by_side((dynopt.torch.Muon, torch.optim.Muon), kwargs, steps, lambda: initial(shapes))


def numpy_and_jitted_jax(oracle, tx, start, steps):
    """``steps`` steps of the NumPy oracle and of the jitted JAX transformation ``tx`` (float64: tests/conftest.py
    switches x64 on) from the torch tensors ``start``, on ``gradient``: (parameters, state) at the end of each."""
    grads = lambda ps, k: [g.numpy() for g in gradient([torch.tensor(np.asarray(p, np.float64)) for p in ps], k)]  # noqa: E731
    params = [x.numpy() for x in start]
    state = oracle.init(params)
    for k in range(steps):
        updates, state = oracle.update(grads(params, k), state, params)
        params = [p + u for p, u in zip(params, updates)]
    jparams = [jnp.asarray(x.numpy()) for x in start]
    jstate = tx.init(jparams)
    update = jax.jit(tx.update)
    for k in range(steps):
        updates, jstate = update([jnp.asarray(g) for g in grads(jparams, k)], jstate, jparams)
        jparams = optax.apply_updates(jparams, updates)
    assert all(p.dtype == jnp.float64 for p in jparams)
    return (params, state), (jparams, jstate)


# ----------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("kwargs", OPTIONS, ids=IDS)
def test_torch_equals_torch_optim_muon(kwargs):
    (mine, opt), (theirs, ref) = both(kwargs)
    assert_close(mine, theirs)
    assert not all(torch.equal(a, b) for a, b in zip(mine, initial()))  # it moved
    for p, q in zip(opt.param_groups[0]["params"], ref.param_groups[0]["params"]):
        assert_close([opt.state[p]["momentum_buffer"]], [ref.state[q]["momentum_buffer"]])


@pytest.mark.parametrize("kwargs", OPTIONS[:4], ids=IDS[:4])
def test_numpy_and_jitted_jax_equal_torch_optim_muon(kwargs):
    """The same bfloat16 roundings on every backend (JAX: explicitly, under jit). Not bit for bit by construction:
    NumPy's and XLA's float32 matrix products sum in another order than torch's bfloat16 kernel, and where a float32
    sum lies within its rounding error of a bfloat16 rounding boundary the two round apart (one bfloat16 ulp of that
    entry of O, then a different trajectory). Measured on random Gaussian matrices, 100 each: no such entry for
    (3, 5), (4, 3), (4, 4), (2, 5); 3 matrices of 100 at (16, 7), 31 at (64, 32). OPTIONS[4] (momentum 0, other
    coefficients) meets one within these 30 steps (a 7.8e-6 relative difference), so it is left out here."""
    kwargs = dict(kwargs)
    lr = kwargs.pop("lr", 1e-3)
    theirs = both({"lr": lr, **kwargs})[1][0]
    (params, _), (jparams, _) = numpy_and_jitted_jax(dynopt.numpy.muon_torch(lr, **kwargs), dynopt.jax.muon_torch(lr, **kwargs),
                                                initial(), 30)
    assert_close(params, theirs)
    assert_close([np.asarray(p) for p in jparams], theirs)


def test_newton_schulz_is_near_an_orthogonal_factor_in_bfloat16():
    """The quintic iteration of 5 steps maps the singular values into about [0.7, 1.2] (Jordan et al.), keeps the
    singular vectors (polar(M) = UVᵀ: ⟨O, M⟩ > 0 and O ≈ U·diag(s')·Vᵀ), and is computed in bfloat16."""
    o = TreeMath(ArrayLeafOps(np))
    for shape in SHAPES + [(16, 7)]:
        m = np.random.default_rng(1).normal(size=shape)
        out = newton_schulz(o, o.tree([m]), (3.4445, -4.7750, 2.0315), 5, 1e-7).leaves[0]
        assert out.dtype == np.float64 and out.shape == shape
        u, _, vt = np.linalg.svd(m, full_matrices=False)
        core = u.T @ out @ vt.T  # diagonal up to bfloat16 rounding
        assert np.all((np.diag(core) > 0.6) & (np.diag(core) < 1.25)), np.diag(core)
        assert np.max(np.abs(core - np.diag(np.diag(core)))) < 0.05
        assert np.array_equal(out, out.astype(np.float32).astype(np.float64))  # bfloat16 values (8 significant bits)
        assert len(np.unique(np.frexp(out)[0].round(10))) <= 2 ** 8 + 2 ** 8


# ----------------------------------------------------------------------------- state and checkpoints


def test_state_names_shapes_and_groups_are_torchs():
    (_, opt), (_, ref) = both({"nesterov": False}, steps=3)
    for p, q in zip(opt.param_groups[0]["params"], ref.param_groups[0]["params"]):
        assert set(ref.state[q]) == {"momentum_buffer"}
        assert set(opt.state[p]) == {"momentum_buffer", "step"}  # dynopt's step counter, which torch ignores
        assert opt.state[p]["momentum_buffer"].shape == p.shape and opt.state[p]["momentum_buffer"].dtype == p.dtype
    mine, theirs = opt.state_dict()["param_groups"][0], ref.state_dict()["param_groups"][0]
    assert set(theirs) <= set(mine)
    assert all(mine[k] == theirs[k] for k in theirs if k != "params")


def test_a_torch_optim_muon_checkpoint_loads_into_dynopt_and_continues():
    kwargs = {"lr": 0.02, "momentum": 0.9, "adjust_lr_fn": "match_rms_adamw"}
    theirs = [torch.nn.Parameter(x) for x in initial()]
    ref = torch.optim.Muon(theirs, **kwargs)
    run(ref, theirs, 5)
    buffer = io.BytesIO()
    torch.save(ref.state_dict(), buffer)
    buffer.seek(0)
    mine = [torch.nn.Parameter(p.detach().clone()) for p in theirs]
    opt = dynopt.torch.Muon(mine, lr=0.5)  # the hyperparameters come from the state_dict
    opt.load_state_dict(torch.load(buffer, weights_only=True))
    assert opt.param_groups[0]["adjust_lr_fn"] == "match_rms_adamw" and opt.param_groups[0]["lr"] == 0.02
    assert_close(run(opt, mine, 10, begin=5), run(ref, theirs, 10, begin=5))


def test_a_dynopt_muon_checkpoint_loads_into_torch_optim_and_continues():
    kwargs = {"lr": 0.02, "nesterov": False, "weight_decay": 0.05}
    mine = [torch.nn.Parameter(x) for x in initial()]
    opt = dynopt.torch.Muon(mine, **kwargs)
    run(opt, mine, 5)
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in mine]
    ref = torch.optim.Muon(theirs, lr=0.5)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    ref.load_state_dict(torch.load(buffer, weights_only=True))
    assert ref.param_groups[0]["nesterov"] is False and ref.param_groups[0]["lr"] == 0.02
    assert_close(run(ref, theirs, 10, begin=5), run(opt, mine, 10, begin=5))


def test_a_state_of_another_shape_is_refused_before_anything_changes():
    params = [torch.nn.Parameter(x) for x in initial()]
    opt = dynopt.torch.Muon(params)
    run(opt, params, 2)
    sd = copy.deepcopy(opt.state_dict())
    sd["state"][1]["momentum_buffer"] = torch.zeros(5, 3, dtype=torch.float64)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=r"parameter 1: state 'momentum_buffer' has shape \(5, 3\), the parameter has "
                                         r"shape \(3, 5\)"):
        opt.load_state_dict(sd)
    assert torch.equal(opt.state_dict()["state"][1]["momentum_buffer"], before["state"][1]["momentum_buffer"])


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize("options", [{}, {"fused": True}, {"flat": False}])
def test_every_torch_path_takes_the_reference_path_and_says_so(options):
    params = [torch.nn.Parameter(x) for x in initial()]
    opt = dynopt.torch.Muon(params, **options)
    run(opt, params, 3)
    assert opt.execution.path == "reference"
    assert opt.execution.reason == ("flat=False" if options.get("flat") is False else "the spec reduces inside a parameter")


# ----------------------------------------------------------------------------- errors, as torch raises them


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4), ()])
def test_a_parameter_that_is_not_a_matrix_is_refused_by_every_backend(shape):
    with pytest.raises(ValueError, match=r"Muon only supports 2D parameters") as theirs:
        torch.optim.Muon([torch.nn.Parameter(torch.ones(shape))])
    message = r"Muon: invalid parameter 1 of param group 0: Muon only supports 2D parameters whereas we found a " \
              r"parameter with size: torch\.Size\(\[" + ", ".join(map(str, shape)) + r"\]\)"
    with pytest.raises(ValueError, match=message):
        dynopt.torch.Muon([torch.nn.Parameter(torch.ones(2, 2)), torch.nn.Parameter(torch.ones(shape))])
    assert str(theirs.value) in message.replace("\\", "")
    for make, leaves in ((dynopt.numpy.muon_torch, [np.ones((2, 2)), np.ones(shape)]),
                         (dynopt.jax.muon_torch, [jnp.ones((2, 2)), jnp.ones(shape)])):
        with pytest.raises(ValueError, match=r"Muon: invalid parameter (leaf )?1: Muon only supports 2D parameters"):
            make(0.01).init(leaves)


@pytest.mark.parametrize("name", ["Muon", "Adafactor"])
def test_complex_parameters_and_sparse_gradients_raise_at_the_step_as_in_torch(name):
    for cls in (getattr(torch.optim, name), getattr(dynopt.torch, name)):
        p = torch.nn.Parameter(torch.randn(2, 3, dtype=torch.complex64))
        p.grad = torch.randn_like(p)
        opt = cls([p])  # accepted when built, as in torch
        with pytest.raises(RuntimeError, match=f"{name} does not support complex parameters"):
            opt.step()
        assert not opt.state
        w = torch.nn.Parameter(torch.randn(2, 3))
        w.grad = torch.randn(2, 3).to_sparse()
        with pytest.raises(RuntimeError, match=f"{name} does not support sparse gradients"):
            cls([w]).step()


@pytest.mark.parametrize("kwargs, names", [
    ({"lr": -0.1}, ("learning rate", "-0.1")),
    ({"momentum": -0.5}, ("momentum", "-0.5")),
    ({"weight_decay": -0.1}, ("weight_decay", "-0.1")),
    ({"adjust_lr_fn": "arbitrary"}, ("adjust_lr_fn", "'arbitrary'")),
])
def test_invalid_hyperparameters_raise_torchs_exception_naming_argument_and_value(kwargs, names):
    params = [torch.nn.Parameter(torch.ones(2, 2))]
    with pytest.raises(ValueError):
        torch.optim.Muon(params, **kwargs)
    with pytest.raises(ValueError) as info:
        dynopt.torch.Muon(params, **kwargs)
    assert all(n in str(info.value) for n in names), str(info.value)


def test_ns_steps_is_checked_when_built_where_torch_checks_it_at_the_step():
    p = torch.nn.Parameter(torch.ones(2, 2))
    p.grad = torch.ones(2, 2)
    ref = torch.optim.Muon([p], ns_steps=100)
    with pytest.raises(ValueError, match="Number of steps must be less than 100"):
        ref.step()
    with pytest.raises(ValueError, match=r"Invalid ns_steps value: 100 \(must be an int in \[0, 100\)"):
        dynopt.torch.Muon([p], ns_steps=100)
    with pytest.raises(ValueError, match="ns_steps"):
        dynopt.numpy.muon_torch(0.01, ns_steps=1.5)


def test_signature_is_torchs():
    import inspect

    theirs = [p for p in inspect.signature(torch.optim.Muon.__init__).parameters.values() if p.name not in ("self", "params")]
    mine = inspect.signature(dynopt.torch.Muon.__init__).parameters
    positional = [p for p in mine.values() if p.kind is p.POSITIONAL_OR_KEYWORD and p.name not in ("self", "params")]
    assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs]
    assert dynopt.muon_torch is dynopt.torch.Muon.spec and dynopt.jax.muon_torch.__name__ == "muon_torch"


# ----------------------------------------------------------------------------- state of a shape of its own (Spec.state_shape)


def _row_rms_spec():
    """A user spec whose state is not parameter-shaped: a running mean of g² per row (Adafactor's row factor alone),
    θ ← θ − lr·g/√(r + ε), r ← βr + (1 − β)·mean_row(g²)."""
    from dynopt.schemes import SemiImplicitEuler
    from dynopt.spec import Hyper
    from dynopt.statement import Drift, Relax, from_statement

    def statement(o, hp, t, x):
        cols = o.per_leaf([float(shape[-1]) for shape in o.shapes(x.grad)])
        yield Relax("row_sq", 0.9, o.sum_along(x.grad * x.grad, -1) / cols)
        yield Drift("param", -hp.lr * x.grad / o.sqrt(x.row_sq + 1e-8))

    def initial_state(o, hp, param):
        return {"row_sq": o.sum_along(o.zeros_like(param), -1)}

    return from_statement(name="RowRMS", hyperparams=(Hyper("lr", 0.1, "learning rate"),), state=lambda hp: ("row_sq",),
                          initial_state=initial_state, state_shape=lambda name, shape: shape[:-1] + (1,),
                          statement=statement, scheme=SemiImplicitEuler(), formula="r ← βr + (1−β)mean_row(g²); θ ← θ − lr·g/√r",
                          time_step=lambda hp: hp.lr, needs_params=lambda hp: False, ode="", hyper_map="", doc="")


def test_state_of_its_own_shape_steps_checks_and_loads_in_torch():
    spec = _row_rms_spec()
    assert spec.shape_of("row_sq", (4, 3)) == (4, 1) and dynopt.adam.shape_of("exp_avg", (4, 3)) == (4, 3)
    cls = dynopt.torch.from_spec(spec)
    params = [torch.nn.Parameter(x) for x in initial()]
    opt = cls(params)
    run(opt, params, 4)
    assert [tuple(opt.state[p]["row_sq"].shape) for p in params] == [(4, 1), (3, 1), (4, 1)]
    assert opt.execution.path == "reference" and "state of another shape" in opt.execution.reason
    oracle = dynopt.numpy.from_spec(spec)(0.1)
    values = [x.numpy() for x in initial()]
    state = oracle.init(values)
    for k in range(4):
        updates, state = oracle.update([g.numpy() for g in gradient([torch.tensor(v) for v in values], k)], state, values)
        values = [v + u for v, u in zip(values, updates)]
    assert_close(values, [p.detach() for p in params])
    assert_close(state.values["row_sq"], [opt.state[p]["row_sq"] for p in params])
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    loaded = cls(twin)
    loaded.load_state_dict(copy.deepcopy(opt.state_dict()))  # its own shapes load
    assert_close(run(loaded, twin, 3, begin=4), run(opt, params, 3, begin=4))
    wrong = copy.deepcopy(opt.state_dict())
    wrong["state"][0]["row_sq"] = torch.zeros(4, 3, dtype=torch.float64)  # the parameter's shape is not its shape
    with pytest.raises(ValueError, match=r"parameter 0: state 'row_sq' has shape \(4, 3\), the parameter has shape "
                                         r"\(4, 3\) \(expected \(4, 1\)\)"):
        cls([torch.nn.Parameter(x) for x in initial()]).load_state_dict(wrong)
