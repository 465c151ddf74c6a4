"""The optimizers added from optax's zoo (issue #12): SignSGD, Signum, Lion, AdaBelief, Yogi, LAMB, LARS.

Expected values come from optax 0.2.8 itself (the installed package: ``optax.<name>`` with the same
arguments is the reference of every parity test here), from torch running the same gradients
through ``dynopt.torch`` (compared with optax), and, for the continuous-time claims, from algebra
written in the test (the sign flow's finite-time bound, Lion's box ‖θ‖∞ ≤ 1/λ). The registry-driven
suites (test_parity, test_ode, test_torch_paths, test_faults, test_properties, the conventions
tests) cover these specs too.
"""

from __future__ import annotations

import math

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

NAMES = ["sign_sgd", "signum", "lion", "adabelief", "yogi", "lamb", "lars"]
CLASSES = {"sign_sgd": "SignSGD", "signum": "Signum", "lion": "Lion", "adabelief": "AdaBelief", "yogi": "Yogi",
           "lamb": "Lamb", "lars": "Lars"}
SCHEDULE = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.9)

# A small grid of options per optimizer (optax's names): defaults, every number changed, every flag, switches at 0.
GRID = {
    "sign_sgd": [{}],
    "signum": [{}, {"beta": 0.5}, {"beta": 0.0}],
    "lion": [{}, {"b1": 0.5, "b2": 0.9, "weight_decay": 0.0}, {"weight_decay": 0.1},
             {"b2": 0.0}],  # m = the last gradient: the direction from the old m, not the new one, is visible
    "adabelief": [{}, {"b1": 0.8, "b2": 0.95, "eps": 1e-8, "eps_root": 1e-10}, {"nesterov": True}, {"b1": 0.0}],
    "yogi": [{}, {"b1": 0.5, "b2": 0.9, "eps": 1e-6}],
    "lamb": [{}, {"b1": 0.8, "b2": 0.95, "eps": 1e-8, "eps_root": 1e-10, "weight_decay": 0.1}],
    "lars": [{}, {"weight_decay": 0.1, "trust_coefficient": 0.1, "eps": 1e-3, "momentum": 0.5, "nesterov": True},
             {"weight_decay": 0.1, "weight_decay_mask": False, "trust_ratio_mask": False}, {"momentum": 0.0},
             {"weight_decay": 0.1, "trust_ratio_mask": False, "momentum": 0.7}],
}
LR = {"sign_sgd": 0.05, "signum": 0.05, "lion": 0.05, "adabelief": 0.05, "yogi": 0.05, "lamb": 0.05, "lars": 0.5}
CASES = [pytest.param(name, kw, lr, id=f"{name}-{i}{'-schedule' if callable(lr) else ''}")
         for name in NAMES for i, kw in enumerate(GRID[name]) for lr in (LR[name], SCHEDULE)]
STEPS = 5
TOL = {jnp.float64: 1e-12, jnp.float32: 2e-6}


def torch_names(name, kw):
    """optax's arguments under dynopt.torch's (torch.optim's) names: b1 and b2 are betas=(b1, b2), as in
    torch.optim.Adam, and Signum's beta is momentum; the others keep optax's names."""
    kw, defaults = dict(kw), getattr(dynopt.torch, CLASSES[name]).spec.defaults
    if "b1" in kw or "b2" in kw:
        kw["betas"] = (kw.pop("b1", defaults["betas"][0]), kw.pop("b2", defaults["betas"][1]))
    if "beta" in kw:
        kw["momentum"] = kw.pop("beta")
    return kw


def params0(dtype):
    """A 2-D, a 1-D and a 0-d leaf, a zero leaf (‖θ‖ = 0: the trust ratio's fallback) and a leaf whose gradient is
    always 0 (sign 0, ‖u‖ = 0)."""
    return {"w": jnp.linspace(-1.0, 1.5, 6, dtype=dtype).reshape(2, 3), "b": jnp.asarray([0.3, -0.2, 0.9], dtype),
            "s": jnp.asarray(0.7, dtype), "z": jnp.zeros(2, dtype), "still": jnp.asarray([1.0, -2.0], dtype)}


def grads_at(params, k):
    def one(name, x):
        if name == "still":
            return jnp.zeros_like(x)
        wobble = 0.6 * (-1) ** k * jnp.sin(3.0 * x + k)  # flips signs between steps: m and g disagree somewhere
        return (jnp.cos((1.0 + 0.3 * k) * x) + 0.5 * x - 0.2 + 0.1 * k + wobble).astype(x.dtype)
    return {name: one(name, x) for name, x in params.items()}


def run(opt, dtype, steps=STEPS):
    params = params0(dtype)
    state = opt.init(params)
    updates_seen = []
    for k in range(steps):
        updates, state = opt.update(grads_at(params, k), state, params)
        updates_seen.append(updates)
        params = optax.apply_updates(params, updates)
    return params, updates_seen


def assert_trees_close(mine, ref, tol, what):
    for key in ref:
        a, b = np.asarray(mine[key], np.float64), np.asarray(ref[key], np.float64)
        assert np.asarray(mine[key]).dtype == np.asarray(ref[key]).dtype, (what, key)
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
        worst = float(np.max(np.abs(a - b), initial=0.0)) / scale
        assert worst <= tol, f"{what} leaf {key}: max difference {worst:.3g} of the leaf's scale > {tol:g}"


@pytest.mark.parametrize("dtype", [jnp.float64, jnp.float32])
@pytest.mark.parametrize("name, kw, lr", CASES)
def test_equals_optax(name, kw, lr, dtype):
    """dynopt.jax.<name>(lr, **kw) == optax.<name>(lr, **kw): every step's updates and the parameters after 5 steps."""
    mine_params, mine_updates = run(getattr(dynopt.jax, name)(lr, **kw), dtype)
    ref_params, ref_updates = run(getattr(optax, name)(lr, **kw), dtype)
    for k, (a, b) in enumerate(zip(mine_updates, ref_updates)):
        assert_trees_close(a, b, TOL[dtype], f"{name} {kw} updates of step {k}")
    assert_trees_close(mine_params, ref_params, TOL[dtype], f"{name} {kw} params")
    moved = max(float(jnp.max(jnp.abs(mine_params[key] - params0(dtype)[key]))) for key in ("w", "b"))
    assert moved > 1e-5  # the comparison is not between two optimizers that do nothing (LARS: η = 1e-3)


@pytest.mark.parametrize("name", NAMES)
def test_signature_follows_optax(name):
    """optax's arguments in optax's positions with optax's defaults (dtypes and masks included), and
    skip_nonfinite (keyword-only) besides."""
    import inspect

    ours = {k: p.default for k, p in inspect.signature(getattr(dynopt.jax, name)).parameters.items() if k != "skip_nonfinite"}
    theirs = {k: p.default for k, p in inspect.signature(getattr(optax, name)).parameters.items()}
    assert list(ours) == list(theirs)
    for k in ours:
        assert ours[k] == theirs[k] or (k == "learning_rate" and ours[k] is theirs[k]), (name, k)
    if name == "lars":  # the masks keep their positions: a positional call binds as in optax
        assert list(ours)[:3] == ["learning_rate", "weight_decay", "weight_decay_mask"]


NUMERIC = {  # every numeric argument, with a value to inject and a value to switch to mid-run
    "sign_sgd": {"learning_rate": (0.05, 0.02)},
    "signum": {"learning_rate": (0.05, 0.02), "beta": (0.8, 0.3)},
    "lion": {"learning_rate": (0.05, 0.02), "b1": (0.9, 0.0), "b2": (0.95, 0.5), "weight_decay": (0.1, 0.5)},  # b1: a sign must flip
    "adabelief": {"learning_rate": (0.05, 0.02), "b1": (0.8, 0.3), "b2": (0.95, 0.5), "eps": (1e-3, 1e-1),
                  "eps_root": (1e-4, 1e-2)},
    "yogi": {"learning_rate": (0.05, 0.02), "b1": (0.8, 0.3), "b2": (0.95, 0.5), "eps": (1e-2, 1e-1)},
    "lamb": {"learning_rate": (0.05, 0.02), "b1": (0.8, 0.3), "b2": (0.95, 0.5), "eps": (1e-3, 1e-1),
             "eps_root": (1e-4, 1e-2), "weight_decay": (0.1, 0.5)},
    "lars": {"learning_rate": (0.5, 0.2), "weight_decay": (0.1, 0.5), "trust_coefficient": (0.1, 0.3), "eps": (1e-3, 0.5),
             "momentum": (0.8, 0.3)},
}
INJECTED = [pytest.param(name, arg, id=f"{name}-{arg}") for name in NAMES for arg in NUMERIC[name]]


@pytest.mark.parametrize("name, arg", INJECTED)
def test_inject_hyperparams_each_numeric_argument(name, arg):
    """optax.inject_hyperparams(dynopt.jax.<name>) takes each numeric argument alone as a traced value; changing it in
    the state mid-run changes the steps exactly as it does for optax.inject_hyperparams(optax.<name>)."""
    first, second = NUMERIC[name][arg]
    others = {} if arg == "learning_rate" else {"learning_rate": LR[name]}
    runs = []
    for factory in (getattr(dynopt.jax, name), getattr(optax, name)):
        opt = optax.inject_hyperparams(factory)(**others, **{arg: first})
        params = params0(jnp.float64)
        state = opt.init(params)
        assert arg in state.hyperparams and jnp.ndim(state.hyperparams[arg]) == 0
        step = jax.jit(opt.update)  # traced: the value is never a Python number inside
        for k in range(6):
            if k == 3:
                state.hyperparams[arg] = jnp.asarray(second, state.hyperparams[arg].dtype)
            updates, state = step(grads_at(params, k), state, params)
            params = optax.apply_updates(params, updates)
        runs.append(params)
    assert_trees_close(runs[0], runs[1], 1e-12, f"{name} injected {arg}")
    constant, _ = run(getattr(dynopt.jax, name)(**others, **{arg: first}), jnp.float64, steps=6)
    differs = max(float(jnp.max(jnp.abs(runs[0][key] - constant[key]))) for key in runs[0])
    assert differs > 0, f"changing the injected {arg} had no effect"


@pytest.mark.parametrize("name", NAMES)
def test_torch_class_equals_optax_in_float64(name):
    """dynopt.torch.<Class> (torch's training loop, the same gradients) == optax.<name>, default options and a
    changed one, 5 steps in float64 (each tensor a leaf: LAMB's and LARS's trust ratios per tensor)."""
    for kw in GRID[name][:2]:
        ref_params, _ = run(getattr(optax, name)(LR[name], **kw), jnp.float64)
        start = params0(jnp.float64)
        tensors = {key: torch.nn.Parameter(torch.tensor(np.asarray(x))) for key, x in start.items()}
        opt = getattr(dynopt.torch, CLASSES[name])(list(tensors.values()), lr=LR[name], **torch_names(name, kw))
        for k in range(STEPS):
            current = {key: jnp.asarray(t.detach().numpy()) for key, t in tensors.items()}
            for key, g in grads_at(current, k).items():
                tensors[key].grad = torch.tensor(np.asarray(g))
            opt.step()
        mine = {key: t.detach().numpy() for key, t in tensors.items()}
        assert_trees_close(mine, {key: np.asarray(v) for key, v in ref_params.items()}, 1e-12, f"torch {name} {kw}")


# -------- bad input: ValueError/TypeError naming the argument and the value (the same messages on every backend)
BAD = [
    ("lion", {"b1": 1.5}, ValueError, "Invalid b1 value: 1.5 (must be in [0.0, 1.0])"),
    ("lion", {"weight_decay": -0.1}, ValueError, "Invalid weight_decay value: -0.1 (must be >= 0.0)"),
    ("signum", {"beta": 1.0}, ValueError, "Invalid beta value: 1.0 (must be in [0.0, 1.0))"),
    ("adabelief", {"eps": -1.0}, ValueError, "Invalid epsilon value: -1.0 (must be >= 0.0)"),
    ("adabelief", {"eps_root": float("nan")}, ValueError, "Invalid eps_root value: nan (must be >= 0.0)"),
    ("yogi", {"b2": "0.9"}, TypeError, "Invalid b2 value: '0.9' (must be a real number, got str)"),
    ("lamb", {"b1": -0.5}, ValueError, "Invalid b1 value: -0.5 (must be in [0.0, 1.0))"),
    ("lars", {"momentum": 1.0}, ValueError, "Invalid momentum value: 1.0 (must be in [0.0, 1.0))"),
    ("lars", {"trust_coefficient": -1.0}, ValueError, "Invalid trust_coefficient value: -1.0 (must be >= 0.0)"),
    ("lars", {"weight_decay_mask": {"w": True}}, TypeError, "Invalid weight_decay_mask value: {'w': True} (must be a bool)"),
    ("lars", {"nesterov": 1}, TypeError, "Invalid nesterov value: 1 (must be a bool)"),
    ("sign_sgd", {"learning_rate": -0.1}, ValueError, "Invalid learning rate: -0.1 (must be >= 0.0)"),
    ("lion", {"weight_decay": optax.constant_schedule(0.1)}, TypeError, "Invalid weight_decay value"),
]


@pytest.mark.parametrize("name, kw, error, message", BAD, ids=[f"{b[0]}-{next(iter(b[1]))}" for b in BAD])
def test_bad_input_names_the_argument_and_the_value(name, kw, error, message):
    kw = {"learning_rate": 0.1, **kw}
    with pytest.raises(error) as jax_err:
        getattr(dynopt.jax, name)(**kw)
    assert message in str(jax_err.value)
    lr = kw.pop("learning_rate")
    spec = getattr(dynopt.optimizers, name)
    oracle = dynopt.numpy.from_spec(spec.optax[0].spec) if spec.optax else getattr(dynopt.numpy, name)  # optax's names
    with pytest.raises(error) as numpy_err:
        oracle(lr, **kw)  # the float64 oracle: the same check, the same message
    assert message in str(numpy_err.value)


def test_bad_input_in_torch():
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"Invalid betas value: \(0\.9, 2\.0\) \(must be in \[0\.0, 1\.0\]\)"):
        dynopt.torch.Lion([w], lr=1e-4, betas=(0.9, 2.0))
    with pytest.raises(TypeError, match=r"Lion got b2=0\.95: b1 and b2 were renamed to torch\.optim's 'betas'; pass "
                                        r"betas=\(0\.9, 0\.95\)"):
        dynopt.torch.Lion([w], lr=1e-4, b2=0.95)  # the names before (CHANGELOG): the migration in the message
    with pytest.raises(TypeError, match=r"Signum got beta=0\.5: beta was renamed to torch\.optim's 'momentum'; pass "
                                        r"momentum=0\.5"):
        dynopt.torch.Signum([w], beta=0.5)
    with pytest.raises(ValueError, match=r"Invalid learning rate: -1\.0"):
        dynopt.torch.Lars([w], lr=-1.0)
    with pytest.raises(TypeError, match=r"Invalid trust_ratio_mask value: 'yes' \(must be a bool\)"):
        dynopt.torch.Lars([w], trust_ratio_mask="yes")



TORCH_NAMED = ["signum", "lion", "adabelief", "yogi", "lamb"]  # their decays under torch's names in dynopt.torch


@pytest.mark.parametrize("name", TORCH_NAMED)
def test_one_cycle_lr_cycles_the_decay_as_optax_fed_the_same_values(name):
    """OneCycleLR (cycle_momentum=True, its default) needs 'betas' or 'momentum' in the param groups and refused these
    classes when they took optax's b1/b2 and beta. Now it cycles β₁ (Signum: β) against the lr. Reference:
    optax.<name> under optax.inject_hyperparams, fed the lr and β₁ that the scheduler set before each step (float64)."""
    start = params0(jnp.float64)
    tensors = {key: torch.nn.Parameter(torch.tensor(np.asarray(x))) for key, x in start.items()}
    opt = getattr(dynopt.torch, CLASSES[name])(list(tensors.values()), lr=LR[name])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=STEPS + 1, pct_start=0.5)
    key = "beta" if name == "signum" else "b1"
    seen = []
    for k in range(STEPS):
        group = opt.param_groups[0]
        seen.append((group["lr"], group["momentum"] if name == "signum" else group["betas"][0]))
        current = {key_: jnp.asarray(t.detach().numpy()) for key_, t in tensors.items()}
        for key_, g in grads_at(current, k).items():
            tensors[key_].grad = torch.tensor(np.asarray(g))
        opt.step()
        sched.step()
    assert len({beta for _, beta in seen}) == STEPS, seen  # the scheduler moved β₁ at every step
    ref = optax.inject_hyperparams(getattr(optax, name))(learning_rate=seen[0][0], **{key: seen[0][1]})
    params = params0(jnp.float64)
    state = ref.init(params)
    for k, (lr, beta) in enumerate(seen):
        state.hyperparams["learning_rate"], state.hyperparams[key] = jnp.asarray(lr), jnp.asarray(beta)
        updates, state = ref.update(grads_at(params, k), state, params)
        params = optax.apply_updates(params, updates)
    mine = {key_: t.detach().numpy() for key_, t in tensors.items()}
    assert_trees_close(mine, {key_: np.asarray(v) for key_, v in params.items()}, 1e-12, f"OneCycleLR {name}")


def test_checkpoints_with_optax_names_load_and_continue():
    """A state_dict that dynopt.torch.Lion (b1, b2) and Signum (beta) wrote before they took torch's names
    (tests/data/optax_names_checkpoints.py says how: dynopt at e68391f) loads into today's classes, which read the
    decays as betas and momentum, and continues exactly as an uninterrupted run of today's class from the same start."""
    from pathlib import Path

    saved = torch.load(Path(__file__).parent / "data" / "optax_names_checkpoints.pt", weights_only=False)
    settings = {"Lion": {"lr": 0.01, "betas": (0.8, 0.95), "weight_decay": 0.1}, "Signum": {"lr": 0.01, "momentum": 0.7}}

    def start():
        return [torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3)),
                torch.nn.Parameter(torch.tensor([0.5, -0.3], dtype=torch.float64))]

    def gradients(params, k):  # the generator's
        for i, p in enumerate(params):
            p.grad = torch.sin(p.detach() * (k + 1) + i)

    for name, kw in settings.items():
        straight = start()
        opt = getattr(dynopt.torch, name)(straight, **kw)
        for k in range(5):
            gradients(straight, k)
            opt.step()
            if k == 2:  # the old release computed the same numbers: only the names changed
                assert all(torch.equal(a, b) for a, b in zip(straight, saved[name]["params"])), name
        resumed = [torch.nn.Parameter(p.clone()) for p in saved[name]["params"]]
        opt = getattr(dynopt.torch, name)(resumed, lr=0.5)  # the checkpoint's hyperparameters replace these
        opt.load_state_dict(saved[name]["state_dict"])
        group = opt.param_groups[0]
        assert "b1" not in group and "b2" not in group and "beta" not in group, group
        assert (group["betas"] == (0.8, 0.95)) if name == "Lion" else (group["momentum"] == 0.7), group
        for k in range(3, 5):
            gradients(resumed, k)
            opt.step()
        assert all(torch.equal(a, b) for a, b in zip(resumed, straight)), name

NOT_NUMBERS = [  # optax's arguments that are not numbers: the state's dtype and the mask of the decay
    ("lion", (0.05, 0.9, 0.99, jnp.bfloat16, 0.1), {}),  # positional, as optax binds them
    ("lion", (0.05,), {"weight_decay": 0.1, "mask": {"w": True, "b": False, "s": True, "z": False, "still": True}}),
    ("lion", (0.05,), {"weight_decay": 0.1, "mask": lambda p: {k: k != "w" for k in p}}),
    ("signum", (0.05, 0.8, jnp.bfloat16), {}),
    ("lamb", (0.05,), {"weight_decay": 0.1, "mask": {"w": False, "b": True, "s": True, "z": True, "still": False}}),
    ("lamb", (0.05,), {"weight_decay": 0.1, "mask": lambda p: {k: k == "w" for k in p}}),
]


@pytest.mark.parametrize("name, args, kw", NOT_NUMBERS, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(NOT_NUMBERS)])
def test_dtype_and_mask_arguments_equal_optax(name, args, kw):
    """mu_dtype/accumulator_dtype keep the average in that dtype (the state's dtype equals optax's), a mask (a pytree
    of bools or a callable) restricts the decay to its leaves; updates equal optax's, float32 parameters."""
    mine, theirs = getattr(dynopt.jax, name)(*args, **kw), getattr(optax, name)(*args, **kw)
    mine_params, mine_updates = run(mine, jnp.float32)
    ref_params, ref_updates = run(theirs, jnp.float32)
    for k, (a, b) in enumerate(zip(mine_updates, ref_updates)):
        assert_trees_close(a, b, TOL[jnp.float32], f"{name} {args} {kw} updates of step {k}")
    ours_state = mine.init(params0(jnp.float32))
    ref_dtypes = {x.dtype for x in jax.tree.leaves(theirs.init(params0(jnp.float32))) if x.ndim}
    assert {x.dtype for x in jax.tree.leaves(ours_state) if x.ndim} == ref_dtypes
    if "mask" in kw:  # the mask matters: without it the run differs
        unmasked, _ = run(getattr(dynopt.jax, name)(*args, **{k: v for k, v in kw.items() if k != "mask"}), jnp.float32)
        assert max(float(jnp.max(jnp.abs(unmasked[k] - mine_params[k]))) for k in unmasked) > 1e-4


# -------- the continuous-time claims of the non-smooth flows


def test_sign_flow_converges_in_finite_time_then_chatters_within_a_step():
    """signSGD on L = ½θᵀAθ (A SPD, not diagonal): the sign flow reaches the minimizer 0 by
    T* ≤ √(2L(θ₀)/μ) (μ = λ_min(A); algebra: d/dt(L − L*) = −‖∇L‖₁ ≤ −‖∇L‖₂ ≤ −√(2μL)). The iterates enter an
    O(h) neighbourhood of 0 by step T*/h and stay in it (each coordinate overshoots by at most a step): after T*,
    ‖θ_k‖∞ ≤ c·h with c independent of h (measured max ‖θ‖∞/h over the tail: 1.0 at every h; the iterates are first
    within 2h of 0 at t = 1.46, 1.48, 1.495, 1.4975 for the four h). No faster than the speed allows: each coordinate
    moves by h per step, so ‖θ_k‖∞ ≥ ‖θ₀‖∞ − k·h (algebra)."""
    A = np.array([[2.0, 0.6], [0.6, 1.0]])
    mu = float(np.linalg.eigvalsh(A)[0])
    theta0 = np.array([1.5, -1.0])
    loss0 = 0.5 * theta0 @ A @ theta0
    bound = math.sqrt(2 * loss0 / mu)
    ratios = []
    for h in (0.02, 0.01, 0.005, 0.0025):
        opt = dynopt.numpy.sign_sgd(h)
        params, state = [theta0.copy()], opt.init([theta0])
        tail, hit = [], None
        for k in range(1, int(round(2 * bound / h)) + 1):
            updates, state = opt.update([A @ params[0]], state, params)
            params = [params[0] + updates[0]]
            assert np.max(np.abs(params[0])) >= np.max(np.abs(theta0)) - k * h - 1e-12
            if hit is None and np.max(np.abs(params[0])) <= 2 * h:
                hit = k * h
            if k * h >= bound:
                tail.append(np.max(np.abs(params[0])))
        assert hit is not None and hit <= bound, (h, hit, bound)
        ratios.append(max(tail) / h)
    assert all(r <= 2.0 for r in ratios), ratios  # within two steps of the minimizer after T*
    assert max(ratios) / min(ratios) < 3  # the neighbourhood shrinks linearly with h


def test_signum_reaches_the_minimizer_in_finite_time():
    """Signum (c = (1 − β)/h fixed) on the same quadratic: after a lag of O(1/c), the iterates are within
    O(h) of the minimizer by twice signSGD's bound plus that lag, and the neighbourhood shrinks with h."""
    A = np.array([[2.0, 0.6], [0.6, 1.0]])
    theta0 = np.array([1.5, -1.0])
    bound = math.sqrt(2 * (0.5 * theta0 @ A @ theta0) / float(np.linalg.eigvalsh(A)[0]))
    c = 10.0
    distances = []
    for h in (0.01, 0.005, 0.0025):
        opt = dynopt.numpy.signum(h, momentum=1 - c * h)
        params, state = [theta0.copy()], opt.init([theta0])
        tail = []
        for k in range(1, int(round(3 * bound / h)) + 1):
            updates, state = opt.update([A @ params[0]], state, params)
            params = [params[0] + updates[0]]
            if k * h >= 2 * bound + 1.0:
                tail.append(np.max(np.abs(params[0])))
        distances.append(max(tail))
    assert all(d <= 0.3 for d in distances), distances
    assert distances[-1] < distances[0], distances


def test_lion_box_is_invariant_and_attracting():
    """Lion's constraint ‖θ‖∞ ≤ 1/λ (Chen et al. 2024): |θ_t| ≤ (1 − lr·λ)|θ_{t−1}| + lr (algebra), so from inside
    the box the iterates never leave it, whatever the gradients, and from outside the excess over 1/λ shrinks by at
    least (1 − lr·λ) per step. Adversarial gradients (large, random signs), lr·λ = 0.05."""
    lr, lam = 0.05, 1.0
    rng = np.random.default_rng(0)
    for theta0, inside in ((rng.uniform(-1.0, 1.0, 50) / lam, True), (rng.uniform(-5.0, 5.0, 50) / lam, False)):
        opt = dynopt.numpy.lion(lr, weight_decay=lam)
        params, state = [theta0.copy()], opt.init([theta0])
        excess = np.maximum(np.abs(theta0) - 1 / lam, 0.0)
        for _ in range(400):
            updates, state = opt.update([100 * rng.normal(size=50)], state, params)
            params = [params[0] + updates[0]]
            excess = (1 - lr * lam) * excess
            assert np.all(np.maximum(np.abs(params[0]) - 1 / lam, 0.0) <= excess + 1e-12)
        if inside:
            assert np.max(np.abs(params[0])) <= 1 / lam + 1e-12
        assert np.max(np.abs(params[0])) <= 1 / lam + 1e-6  # (1 − 0.05)^400 · 4 ≈ 5e-9: in the box


def test_lion_solves_the_box_constrained_problem():
    """On L = ½‖θ − c‖² with c outside the box, Lion's iterates approach the constrained minimizer, the projection
    of c onto ‖θ‖∞ ≤ 1/λ (the paper's claim), within O(lr); the unconstrained minimizer c is not reached."""
    lam = 0.5
    c = np.array([3.0, -0.5, -6.0])  # 1/λ = 2: the projection is (2, −0.5, −2)
    target = np.clip(c, -1 / lam, 1 / lam)
    for lr in (0.01, 0.002):
        opt = dynopt.numpy.lion(lr, betas=(0.9, 0.99), weight_decay=lam)
        params, state = [np.zeros(3)], opt.init([np.zeros(3)])
        for _ in range(int(round(40 / lr))):
            updates, state = opt.update([params[0] - c], state, params)
            params = [params[0] + updates[0]]
        assert np.max(np.abs(params[0] - target)) <= 3 * lr, (lr, params[0], target)


def test_specs_flag_their_non_smooth_flows():
    hp = lambda name: dynopt.REGISTRY[name].namespace({})  # noqa: E731
    assert {name for name in ("SignSGD", "Signum", "Lion", "Yogi", "AdaBelief", "Lamb", "Lars")
            if not dynopt.REGISTRY[name].smooth(hp(name))} == {"SignSGD", "Signum", "Lion", "Yogi"}
