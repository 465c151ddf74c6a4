"""README's Python examples run as written, and do what their comments say.

Each example is found by a line of its own text (not by position, so that examples can be added and
moved). An example either asserts its claims itself or has a check here; a check states where each
expected number comes from: the reference the comment names (torch.optim, optax), or algebra.
"""

import inspect
import math
import pathlib
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
CHECKS = {}  # a line of an example -> check(block, namespace the example ran in)


def check(key: str):
    def register(fn):
        CHECKS[key] = fn
        return fn
    return register


def run(block: str, **replace: str) -> dict:
    """Run an example, optionally with some of its text replaced (old=new pairs); its namespace."""
    for old, new in replace.values():
        assert block.count(old) == 1, old
        block = block.replace(old, new)
    namespace = {"__name__": "readme"}
    if "torch.compile" in block:  # as in a fresh process: dynamo's per-code cache limit counts every optimizer
        import torch  # instance compiled before in this worker (README "Compiling a training step")

        torch._dynamo.reset()
    exec(compile(block, "README.md example", "exec"), namespace)
    return namespace


def assert_rel(mine, ref, rtol):
    mine, ref = np.asarray(mine, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert np.max(np.abs(mine - ref)) <= rtol * np.max(np.abs(ref)), (mine, ref)


@check("opt = dynopt.torch.Momentum(model.parameters(), lr=0.1, momentum=0.9)")
def torch_quick_start(block, ns):
    """"== torch.optim.SGD(..., momentum=0.9)" and "every lr_scheduler works": the same example with
    torch.optim.SGD, scheduler included, ends at the same weights (float32: 1e-5, test_parity's tolerance)."""
    ref = run(block, swap=("dynopt.torch.Momentum(", "torch.optim.SGD("))
    assert isinstance(ref["opt"], torch.optim.SGD)
    for mine, theirs in zip(ns["model"].parameters(), ref["model"].parameters()):
        assert_rel(mine.detach(), theirs.detach(), 1e-5)
    # the cosine schedule did reach the optimizer: lr_100 = 0.1·(1 + cos π)/2 = 0
    assert ns["opt"].param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


@check("opt = dynopt.jax.momentum(0.1, momentum=0.9)")
def optax_quick_start(block, ns):
    """"== optax.sgd(0.1, momentum=0.9); a schedule works too": the example with optax.sgd ends at the
    same parameters, and with the same decaying optax schedule given to both, so does it (float64: 1e-12)."""
    line = "dynopt.jax.momentum(0.1, momentum=0.9)"
    ref = run(block, swap=(line, "optax.sgd(0.1, momentum=0.9)"))
    schedule = "optax.exponential_decay(0.1, transition_steps=1, decay_rate=0.99)"
    mine_s = run(block, swap=(line, f"dynopt.jax.momentum({schedule}, momentum=0.9)"))
    ref_s = run(block, swap=(line, f"optax.sgd({schedule}, momentum=0.9)"))
    for a, b in [(ns, ref), (mine_s, ref_s)]:
        for name in ("w", "b"):
            assert a["params"][name].dtype == jnp.float64  # tests run JAX in float64 (conftest)
            assert_rel(a["params"][name], b["params"][name], 1e-12)
    assert float(jnp.max(jnp.abs(ns["params"]["w"] - mine_s["params"]["w"]))) > 1e-6  # the schedule mattered


@check('opt = dynopt.torch.EG([logits_free], lr=0.5, variant="simplex", axis=1)')
def eg_simplex(block, ns):
    """"still 1 in every row" and "mass moves to column 0": the gradient of the linear loss is the constant
    c = (1, 2, 3), and multiplicative steps compose, so each row is (1/3)·exp(−50·0.5·c) normalized, i.e.
    softmax(−25c): (1 − e⁻²⁵ − …, e⁻²⁵, e⁻⁵⁰)."""
    theta = ns["logits_free"].detach().double().numpy()
    c = np.array([1.0, 2.0, 3.0])
    expected = np.exp(-25 * c) / np.exp(-25 * c).sum()
    np.testing.assert_allclose(theta.sum(axis=1), 1.0, rtol=1e-6)
    # every entry to 1e-5 relative, the tiny ones too (float32 over 50 steps; measured 1.7e-6)
    np.testing.assert_allclose(theta, np.broadcast_to(expected, (4, 3)), rtol=1e-5, atol=0)


@check("opt = dynopt.torch.MetaSGD([w], lr=1e-3, meta_lr=0.05)")
def meta_sgd(block, ns):
    """"lr far too small on purpose": plain SGD at lr 1e-3 leaves w = w₀(1 − 2·lr)²⁰⁰ = 0.67·w₀ (algebra,
    ∇‖w‖² = 2w); the adapted scale grows over 100-fold from s₀ (at most e^(200·0.05)-fold, README's bound on
    Δ log s) and w ends 1000x closer to 0. "JAX: state.scale": dynopt.jax.meta_sgd on the same problem in
    float32 reads the same scale (1e-5)."""
    scale = ns["opt"].global_scalars()["scale"].item()
    s0 = ns["opt"].param_groups[0].get("initial_scale", 1.0)  # s₀ = 1 where the meta step has no initial_scale
    assert 100 < scale / s0 <= math.exp(200 * 0.05) * (1 + 1e-6)
    w0 = np.array([2.0, -1.0])
    plain = w0 * (1 - 2 * 1e-3) ** 200
    assert np.linalg.norm(ns["w"].detach().numpy()) < 1e-3 * np.linalg.norm(plain)
    import dynopt.jax

    tx = dynopt.jax.meta_sgd(1e-3, meta_lr=0.05)
    p = jnp.asarray(w0, jnp.float32)
    state = tx.init(p)
    for _ in range(200):
        updates, state = tx.update(2 * p, state, p)
        p = p + updates
    assert float(state.scale) == pytest.approx(scale, rel=1e-5)


@check("Signum = dynopt.torch.from_spec(signum)")
def signum(block, ns):
    """"a torch.optim.Optimizer subclass", "an optax factory: signum_optax(1e-3, momentum=0.9)" (one step from
    a zero velocity moves by −lr·sign g), and "step k sits at ODE time k·lr"."""
    import dynopt.ode

    assert issubclass(ns["Signum"], torch.optim.Optimizer)
    tx = ns["signum_optax"](1e-3, momentum=0.9)
    assert isinstance(tx, optax.GradientTransformation)
    g = jnp.array([0.5, -3.0, 0.0])
    updates, _ = tx.update(g, tx.init(jnp.zeros(3)), jnp.zeros(3))
    np.testing.assert_array_equal(updates, -1e-3 * jnp.sign(g))
    np.testing.assert_allclose(dynopt.ode.times(ns["signum"], {"lr": 0.01, "momentum": 0.9}, 3), [0, 0.01, 0.02, 0.03], rtol=1e-15)


@check("HeunSGD = dynopt.torch.from_spec(dynopt.discretize(dynopt.sgd, Heun()))")
def runge_kutta(block, ns):
    """"called once per gradient the scheme needs (2 for Heun, 4 for RK4)": count the closure's calls."""
    import dynopt.torch

    for scheme, calls in ((ns["Heun"](), 2), (ns["RK4"](), 4)):
        w = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
        opt = dynopt.torch.from_spec(ns["dynopt"].discretize(ns["dynopt"].sgd, scheme))([w], lr=0.1)
        count = []

        def closure(w=w, opt=opt, count=count):
            count.append(1)
            opt.zero_grad()
            loss = (w**2).sum() / 2
            loss.backward()
            return loss

        opt.step(closure)
        assert len(count) == calls, (scheme, len(count))


@check("ref = flow(dynopt.momentum, hyper, lambda theta: [A @ theta[0]], [np.array([1.0, 1.0])], steps=100)")
def ode_flow(block, ns):
    """"ODE times k·√lr of steps k = 0, 1, 2, … and θ at the last step": times 0, 0.1, 0.2 (√0.01 = 0.1), and θ
    at t = 100·0.1 = 10 is the exact solution of θ'' + γθ' + Aθ = 0 with γ = (1 − μ)/h = 1, θ(0) = (1, 1),
    θ'(0) = −h·b₀ = 0: per eigenvalue λ, e^(−t/2)(cos ωt + sin ωt/(2ω)) with ω = √(λ − 1/4)."""
    ref = ns["ref"]
    np.testing.assert_allclose(ref.times[:3], [0.0, 0.1, 0.2], rtol=1e-15, atol=0)
    assert len(ref.times) == 101 and ref.times[-1] == pytest.approx(10.0, rel=1e-15)
    t, lam = 10.0, np.array([1.0, 10.0])
    omega = np.sqrt(lam - 0.25)
    exact = np.exp(-t / 2) * (np.cos(omega * t) + np.sin(omega * t) / (2 * omega))
    np.testing.assert_allclose(ref.params[0][-1], exact, rtol=1e-8)


@check("opt = dynopt.torch.Adam(model.parameters(), lr=1e-3, skip_nonfinite=True)")
def skip_nonfinite(block, ns):
    """"keyword-only, stored in param_groups" and "jit-able, no host sync": under jit (where a host read
    would raise) a NaN gradient gives zero updates and leaves the count, and a finite one moves."""
    import dynopt.jax
    import dynopt.torch

    for factory in (dynopt.torch.Adam, dynopt.jax.adam):
        assert inspect.signature(factory).parameters["skip_nonfinite"].kind is inspect.Parameter.KEYWORD_ONLY
    assert ns["opt"].param_groups[0]["skip_nonfinite"] is True
    tx, params = ns["tx"], jnp.ones(3)
    state = tx.init(params)
    update = jax.jit(tx.update)
    skipped, after_nan = update(jnp.array([1.0, jnp.nan, 0.0]), state, params)
    moved, after_finite = update(jnp.array([1.0, 2.0, 3.0]), state, params)
    assert float(jnp.max(jnp.abs(skipped))) == 0.0 and int(after_nan.count) == 0
    assert float(jnp.min(jnp.abs(moved))) > 0 and int(after_finite.count) == 1


@check("manager.restore(manager.latest_step(), args=ocp.args.StandardRestore(jax.eval_shape(create)))")
def orbax_train_state(block, ns):
    """The comment "# <step> True (scale ≈ <s>)": the restored TrainState is at that step, equal to the trained
    one leaf by leaf (parameters, optimizer state, the meta step's scale), and its scale is s to the digits given."""
    claim = re.search(r"# (\d+) True \(scale ≈ ([\d.]+)\)", block)
    assert claim, "the example's last comment no longer states '# <step> True (scale ≈ <s>)'"
    restored, state = ns["restored"], ns["state"]
    assert int(restored.step) == int(claim[1])
    for a, b in zip(jax.tree.leaves((restored.params, restored.opt_state)), jax.tree.leaves((state.params, state.opt_state))):
        np.testing.assert_array_equal(a, b)
    digits = len(claim[2].partition(".")[2])
    assert round(float(restored.opt_state.scale), digits) == float(claim[2]), float(restored.opt_state.scale)


def test_readme_has_examples():
    assert len(BLOCKS) >= 4


def test_every_check_finds_its_example():
    for key in CHECKS:
        assert sum(key in block for block in BLOCKS) == 1, f"no single README example contains {key!r}"


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs_and_does_what_it_says(index, capsys):
    block = BLOCKS[index]
    namespace = run(block)
    checks = [fn for key, fn in CHECKS.items() if key in block]
    assert checks or re.search(r"^assert ", block, re.M), (
        f"README example {index} neither asserts its claims nor has a check in tests/test_readme.py:\n{block}")
    for fn in checks:
        fn(block, namespace)
