"""Exactness: dynopt equals torch.optim and optax where they have the same optimizer, and its
torch, JAX and NumPy backends agree with each other, parameters and state.

Over 200 steps of random problems with random hyperparameters (seeded); tolerances are max
relative difference ≤ 1e-12 in float64 and ≤ 1e-5 in float32 (issue #2).
"""

from __future__ import annotations

import ast
import functools

import numpy as np
import optax
import pytest
import torch
from problems import NOT_DRAWN, hyper_cases, make_problem, needs_positive_params, rel_diff
from runners import dynopt_optax, dynopt_torch, optax_state, run_numpy, run_optax, run_torch, torch_state
from torch_references import torch_class

import dynopt
import dynopt.jax
import dynopt.numpy

STEPS = 200
SEEDS = range(4)
TOL = {"float64": 1e-12, "float32": 1e-5}


# -------- the references: how each torch.optim / optax optimizer is configured from dynopt's hyperparameters
def torch_reference(name: str, hp: dict):
    hp = dict(hp)
    if name == "SGD":
        return lambda ps: torch.optim.SGD(ps, **hp)
    if name == "Momentum":
        return lambda ps: torch.optim.SGD(ps, **hp)
    if name == "Nesterov":
        return lambda ps: torch.optim.SGD(ps, nesterov=True, **hp)
    if name == "RMSprop":
        assert not hp.pop("eps_in_sqrt")
        return lambda ps: torch.optim.RMSprop(ps, **hp)
    if name in TORCH_REFERENCED:  # the same name, the same arguments (NAdam's, ASGD's scalar state in float64)
        return lambda ps: torch_class(name)(ps, **hp)
    raise AssertionError(name)


def optax_reference(name: str, hp: dict):
    lr = hp["lr"]
    if name == "SGD":
        return optax.sgd(lr, momentum=hp["momentum"] or None, nesterov=hp["nesterov"])
    if name in ("Momentum", "Nesterov"):
        return optax.sgd(lr, momentum=hp["momentum"], nesterov=name == "Nesterov")
    if name == "RMSprop":
        return optax.rmsprop(lr, decay=hp["alpha"], eps=hp["eps"], eps_in_sqrt=hp["eps_in_sqrt"],
                             centered=hp["centered"], momentum=hp["momentum"] or None)
    if name in ("Adam", "AdamW"):  # weight decay 0 in these draws (test_adamw_equals_optax_adamw has it)
        return optax.adam(lr, b1=hp["betas"][0], b2=hp["betas"][1], eps=hp["eps"])
    if name == "Adamax":
        return optax.adamax(lr, b1=hp["betas"][0], b2=hp["betas"][1], eps=hp["eps"])
    if name == "Adadelta":
        return optax.adadelta(lr, rho=hp["rho"], eps=hp["eps"])
    raise AssertionError(name)


SPECS = sorted(dynopt.REGISTRY.values(), key=lambda s: s.name)
TORCH_REFERENCED = ["Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "ASGD", "Muon", "NAdam", "RAdam", "RMSprop", "Rprop",
                    "SGD"]
ALWAYS_DECOUPLED = ["Muon", "Adafactor"]  # torch.optim.Muon's and Adafactor's decay is θ(1 − lr·λ), with no flag
TORCH_VIEWS = ["Momentum", "Nesterov"]  # torch.optim.SGD(momentum=μ[, nesterov=True])
OPTAX_REFERENCED = ["Adadelta", "Adam", "Adamax", "AdamW", "Momentum", "Nesterov", "RMSprop", "SGD"]  # optax has the same rule
PARAMS = [pytest.param(spec, seed, id=f"{spec.name}-{seed}") for spec in SPECS for seed in SEEDS]
TORCH_PARAMS = [p for p in PARAMS if p.values[0].name in TORCH_REFERENCED + TORCH_VIEWS]
OPTAX_PARAMS = [p for p in PARAMS if p.values[0].name in OPTAX_REFERENCED]
DRAWS = {  # each test's hyperparameter draws: (seed, what its reference can express)
    "torch": (0, {"torch_compatible": True}),
    "optax": (0, {"optax_compatible": True}),
    "oracle": (100, {}),
}


@functools.cache
def _cases(name: str, mode: str) -> tuple[dict, ...]:
    seed, compat = DRAWS[mode]
    return tuple(hyper_cases(dynopt.REGISTRY[name], len(SEEDS), seed, **compat))


def hyper(spec, seed: int, mode: str) -> dict:
    """The hyperparameters of case ``seed``: the cases of one (spec, mode) are drawn together, stratified."""
    return dict(_cases(spec.name, mode)[seed])


def assert_close(mine, ref, tol, what):
    """Per leaf: max |a − b| / max |b| ≤ tol."""
    worst = max(rel_diff(a, b) for a, b in zip(mine, ref))
    assert worst <= tol, f"{what}: max relative difference {worst:.3g} > {tol:g}"


def assert_state_close(mine, ref, tol, what):
    """A state variable relative to its scale over the whole tree: an average of ± gradients can be
    near zero in one leaf while its rounding is set by the gradients' size (e.g. RMSprop's grad_avg). A leaf that does
    not hold the variable (None: Adafactor's factors of a vector) must be None in both."""
    assert [a is None for a in mine] == [b is None for b in ref], f"{what}: held by other leaves"
    mine, ref = [a for a in mine if a is not None], [b for b in ref if b is not None]
    scale = max((float(np.max(np.abs(b), initial=0.0)) for b in ref), default=0.0)
    worst = max((float(np.max(np.abs(np.asarray(a) - b), initial=0.0)) for a, b in zip(mine, ref)), default=0.0) / (scale or 1.0)
    assert worst <= tol, f"{what}: max difference {worst:.3g} of the state's scale > {tol:g}"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec, seed", TORCH_PARAMS)
def test_torch_equals_torch_optim(spec, seed, dtype):
    """In float32 with a decoupled weight decay the reference runs in float64: torch.optim rounds the factor
    1 − lr·λ to float32 at every step, a systematic 2⁻²⁴ relative drift (measured: AdamW-2's float32 run is
    9.1e-6 from its float64 run, dynopt's float32 run 9.6e-7), while dynopt forms −lr·λ·θ."""
    hp = hyper(spec, seed, "torch")
    problem = make_problem(seed, STEPS, maximize=hp.get("maximize", False), spec=spec)
    mine, opt = run_torch(dynopt_torch(spec, hp), problem, STEPS, dtype)
    decoupled = (hp.get("decoupled_weight_decay", dict(spec.implies).get("decoupled_weight_decay"))
                 or spec.name in ALWAYS_DECOUPLED) and hp["weight_decay"]
    ref, ref_opt = run_torch(torch_reference(spec.name, hp), problem, STEPS, "float64" if decoupled else dtype)
    assert_close(mine, ref, TOL[dtype], f"{spec.name} {hp} params")
    shared = [n for n in spec.state(spec.namespace(hp)) if n in ref_opt.state[ref_opt.param_groups[0]["params"][0]]]
    for name, leaves in torch_state(opt, shared).items():
        assert_state_close(leaves, torch_state(ref_opt, [name])[name], TOL[dtype], f"{spec.name} state {name}")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("spec, seed", OPTAX_PARAMS)
def test_jax_equals_optax(spec, seed, dtype):
    hp = hyper(spec, seed, "optax")
    problem = make_problem(seed, STEPS)
    mine, _ = run_optax(dynopt_optax(spec, hp), problem, STEPS, dtype)
    ref, _ = run_optax(optax_reference(spec.name, hp), problem, STEPS, dtype)
    assert_close(mine, ref, TOL[dtype], f"{spec.name} {hp}")


@pytest.mark.parametrize("spec, seed", PARAMS)
def test_backends_agree_with_numpy_oracle(spec, seed):
    """Every option, including those without an external reference (dampening, eps_in_sqrt, ...)."""
    hp = hyper(spec, seed, "oracle")
    problem = make_problem(seed, STEPS, maximize=hp.get("maximize", False), positive=needs_positive_params(hp), spec=spec)
    names = spec.state(spec.namespace(hp))
    oracle, oracle_state = run_numpy(spec, hp, problem, STEPS)
    torch_params, opt = run_torch(dynopt_torch(spec, hp), problem, STEPS)
    jax_params, jax_state = run_optax(dynopt_optax(spec, hp), problem, STEPS)
    assert_close(torch_params, oracle, 1e-12, f"torch {spec.name} {hp}")
    assert_close(jax_params, oracle, 1e-12, f"jax {spec.name} {hp}")
    for name in spec.scalars(spec.namespace(hp)):
        values = {float(opt.state[p][name]) for p in opt.param_groups[0]["params"]}
        assert len(values) == 1, f"the global scalar {name} differs between parameters: {values}"
        assert abs(values.pop() - oracle_state[name]) <= 1e-12 * abs(oracle_state[name])
        assert abs(float(getattr(jax_state, name)) - oracle_state[name]) <= 1e-12 * abs(oracle_state[name])
    for name in names:
        assert_state_close(torch_state(opt, [name])[name], oracle_state[name], 1e-12, f"torch state {name}")
        assert_state_close(optax_state(jax_state, [name])[name], oracle_state[name], 1e-12, f"jax state {name}")
    steps = {float(opt.state[p]["step"]) for p in opt.param_groups[0]["params"]}
    assert steps == {STEPS} and int(jax_state.count) == STEPS


def test_weight_decay_equals_optax_add_decayed_weights():
    """torch-style coupled weight decay == optax.add_decayed_weights chained first."""
    problem = make_problem(7, STEPS)
    for spec, ref in [(dynopt.momentum, optax.sgd(0.01, momentum=0.9)), (dynopt.adam, optax.adam(0.01))]:
        mine, _ = run_optax(dynopt_optax(spec, {"lr": 0.01, "weight_decay": 0.05}), problem, STEPS)
        theirs, _ = run_optax(optax.chain(optax.add_decayed_weights(0.05), ref), problem, STEPS)
        assert_close(mine, theirs, 1e-12, spec.name)


def test_decoupled_weight_decay_equals_optax_adamw():
    """AdamW, and Adam with decoupled_weight_decay=True, == optax.adamw with the same weight decay (which
    optax, like torch, scales by the learning rate in effect): at a constant lr and under a schedule."""
    problem = make_problem(8, STEPS)
    for lr in (0.01, optax.exponential_decay(0.02, transition_steps=1, decay_rate=0.99)):
        theirs, _ = run_optax(optax.adamw(lr, b1=0.8, b2=0.99, weight_decay=0.05), problem, STEPS)
        # dynopt.jax.adamw is optax's; the torch statements (from_spec, torch's names) compute the same numbers
        for mine in (dynopt.jax.adamw(lr, b1=0.8, b2=0.99, weight_decay=0.05),
                     dynopt.jax.from_spec(dynopt.adamw)(lr, betas=(0.8, 0.99), weight_decay=0.05),
                     dynopt.jax.from_spec(dynopt.adam)(lr, betas=(0.8, 0.99), weight_decay=0.05, decoupled_weight_decay=True)):
            assert_close(run_optax(mine, problem, STEPS)[0], theirs, 1e-12, "adamw")
        coupled, _ = run_optax(dynopt.jax.from_spec(dynopt.adam)(lr, betas=(0.8, 0.99), weight_decay=0.05), problem, STEPS)
        assert max(rel_diff(a, b) for a, b in zip(coupled, theirs)) > 1e-4  # the coupled decay is another optimizer


def test_schedules_match_torch_and_optax():
    """A decaying lr: dynopt.torch + ExponentialLR == torch.optim + ExponentialLR, and
    dynopt.jax with an optax schedule == optax with the same schedule."""
    problem = make_problem(3, STEPS)
    hp = {"lr": 0.05, "momentum": 0.9}
    sched = lambda opt: torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.99)  # noqa: E731
    mine, _ = run_torch(dynopt_torch(dynopt.momentum, hp), problem, STEPS, scheduler=sched)
    ref, _ = run_torch(lambda ps: torch.optim.SGD(ps, **hp), problem, STEPS, scheduler=sched)
    assert_close(mine, ref, 1e-12, "torch schedule")
    schedule = optax.exponential_decay(0.05, transition_steps=1, decay_rate=0.99)
    mine, _ = run_optax(dynopt.jax.momentum(schedule, momentum=0.9), problem, STEPS)
    ref, _ = run_optax(optax.sgd(schedule, momentum=0.9), problem, STEPS)
    assert_close(mine, ref, 1e-12, "optax schedule")


def test_rmsprop_momentum_form_differs_from_optax_only_under_schedules():
    """optax.rmsprop keeps the lr inside the momentum buffer (Sutskever form); torch, and dynopt's RMSprop spec
    (dynopt.torch.RMSprop, and dynopt.jax.from_spec(dynopt.rmsprop)), scale the whole buffer. Equal at constant lr,
    different under a decaying schedule (documented); dynopt.jax.rmsprop is optax's, under the schedule too."""
    problem = make_problem(5, STEPS)
    kw = dict(alpha=0.9, eps=1e-8, eps_in_sqrt=True, momentum=0.9)
    ref_kw = dict(decay=0.9, eps=1e-8, eps_in_sqrt=True, momentum=0.9)
    torch_form = dynopt.jax.from_spec(dynopt.rmsprop)
    mine, _ = run_optax(torch_form(0.01, **kw), problem, STEPS)
    ref, _ = run_optax(optax.rmsprop(0.01, **ref_kw), problem, STEPS)
    assert_close(mine, ref, 1e-12, "constant lr")
    schedule = lambda count: 0.01 * 0.98**count  # noqa: E731  (float64 for both JAX and NumPy counts)
    mine, _ = run_optax(torch_form(schedule, **kw), problem, STEPS)
    ref, _ = run_optax(optax.rmsprop(schedule, **ref_kw), problem, STEPS)
    assert max(rel_diff(a, b) for a, b in zip(mine, ref)) > 1e-3
    assert_close(run_optax(dynopt.jax.rmsprop(schedule, **ref_kw), problem, STEPS)[0], ref, 1e-12, "optax's form")
    # and under the same schedule the spec in JAX still equals torch's form, via the NumPy oracle
    oracle, _ = run_numpy(dynopt.rmsprop, {"lr": schedule, **kw}, problem, STEPS)
    assert_close(mine, oracle, 1e-12, "dynopt.jax vs oracle under a schedule")


def test_rmsprop_eps_placement_differs_from_optax_default():
    """optax.rmsprop defaults to eps inside the square root, and so does dynopt.jax.rmsprop; the RMSprop spec's
    default (torch's, dynopt.torch.RMSprop's) is outside, and its eps_in_sqrt=True reproduces optax."""
    problem = make_problem(6, STEPS)
    ref, _ = run_optax(optax.rmsprop(0.01, decay=0.9, eps=1e-2), problem, STEPS)
    torch_form = dynopt.jax.from_spec(dynopt.rmsprop)
    outside, _ = run_optax(torch_form(0.01, alpha=0.9, eps=1e-2), problem, STEPS)
    inside, _ = run_optax(torch_form(0.01, alpha=0.9, eps=1e-2, eps_in_sqrt=True), problem, STEPS)
    assert_close(inside, ref, 1e-12, "eps_in_sqrt=True reproduces optax")
    assert_close(run_optax(dynopt.jax.rmsprop(0.01, decay=0.9, eps=1e-2), problem, STEPS)[0], ref, 1e-12, "dynopt.jax")
    assert max(rel_diff(a, b) for a, b in zip(outside, ref)) > 1e-4


def test_dampening_first_buffer_is_the_gradient():
    """torch's convention b_1 = g_1 (no (1 − τ) on the first step), then b_t = μb + (1 − τ)g.
    Algebra for one scalar: two steps from θ0 on L = θ²/2 (g = θ)."""
    lr, mu, tau, theta0 = 0.1, 0.9, 0.5, 1.0
    b1 = theta0
    theta1 = theta0 - lr * b1
    b2 = mu * b1 + (1 - tau) * theta1
    theta2 = theta1 - lr * b2
    opt = dynopt.numpy.momentum(lr, momentum=mu, dampening=tau)
    params = [np.array(theta0)]
    state = opt.init(params)
    for _ in range(2):
        updates, state = opt.update(params, state, params)
        params = [params[0] + updates[0]]
    assert params[0] == pytest.approx(theta2, rel=1e-15)


# -------- the draws above cover every option: otherwise a parity test can pass on a special case
SWITCHES = ("momentum", "dampening", "weight_decay", "gain_lr", "trace_decay")  # 0 turns a term, a branch or a state off
CANNOT_EXPRESS = {  # options a reference lacks (README, "Reproducing torch.optim and optax exactly")
    "torch": {"eps_in_sqrt"},  # torch.optim.RMSprop has ε outside the square root only
    "optax": {"weight_decay", "dampening", "maximize", "amsgrad"},  # optax's aliases have none; its amsgrad differs
    "oracle": set(),
}


def required_choices(spec, mode: str) -> dict[str, set]:
    """From the spec alone: both values of every bool option, every value a ``one_of`` option accepts
    (listed in its validation message), and zero and non-zero for every switch whose check admits 0."""
    required = {}
    for h in spec.hyperparams[1:]:
        if h.name in CANNOT_EXPRESS[mode] or h.name in NOT_DRAWN:
            continue
        if h.static and h.check is None:
            required[h.name] = {False, True}
        elif h.static:
            values = ast.literal_eval(h.check.rule.removeprefix("must be one of "))
            assert all(h.check.test(v) for v in values)
            required[h.name] = set(values)
        elif h.name in SWITCHES and h.check.test(0.0):
            required[h.name] = {"zero", "non-zero"}
    return required


def drawn(hp: dict, name: str):
    value = hp[name]
    return value if value is None or isinstance(value, (bool, str)) else ("zero" if value == 0 else "non-zero")


COVERAGE = [pytest.param(spec, mode, id=f"{spec.name}-{mode}") for mode in DRAWS for spec in SPECS
            if mode == "oracle" or spec.name in {"torch": TORCH_REFERENCED + TORCH_VIEWS, "optax": OPTAX_REFERENCED}[mode]]


@pytest.mark.parametrize("spec, mode", COVERAGE)
def test_draws_cover_every_option(spec, mode):
    """Every discrete option and every zero/non-zero choice occurs among the cases a parity test runs,
    and a non-zero dampening occurs with a non-zero momentum (torch ignores dampening at momentum 0)."""
    cases = [hyper(spec, seed, mode) for seed in SEEDS]
    for name, values in required_choices(spec, mode).items():
        seen = {drawn(hp, name) for hp in cases}
        assert seen == values, f"{spec.name} ({mode}): {name} takes {seen} in the cases, not {values}"
    if "dampening" in required_choices(spec, mode) and "momentum" in required_choices(spec, mode):
        with_momentum = {drawn(hp, "dampening") for hp in cases if hp["momentum"] != 0}
        assert with_momentum == {"zero", "non-zero"}, f"{spec.name}: dampening {with_momentum} when momentum ≠ 0"
    for hp in cases:  # and every case is valid: the optimizer accepts it
        dynopt.numpy.from_spec(spec)(**hp)
