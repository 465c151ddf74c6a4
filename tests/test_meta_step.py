"""The meta-learned step size: the hypergradient sign law, bounds, positivity, global reductions
across param groups without host synchronisation, logging, and composition with schedulers."""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np
import pytest
import torch
from runners import CountOps

import dynopt
import dynopt.jax
import dynopt.numpy
import dynopt.torch

torch.set_num_threads(1)

H = np.array([[3.0, 1.0], [1.0, 2.0]])


def run_oracle(opt, steps, theta0, grad, noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    params = [np.array(theta0, dtype=float)]
    state = opt.init(params)
    scales, grads = [state.values["scale"]], []
    for _ in range(steps):
        g = grad(params[0]) + noise * rng.normal(size=params[0].shape)
        grads.append(g)
        updates, state = opt.update([g], state, params)
        params = [params[0] + updates[0]]
        scales.append(state.values["scale"])
    return np.array(scales), grads


@pytest.mark.parametrize("rule", ["eg", "hd"])
def test_hypergradient_sign_law_on_a_quadratic(rule):
    """s grows while the step α = lr·s is below the Cauchy step ‖g‖²/(gᵀHg) along the previous
    gradient and shrinks above it (derivation: ⟨g_t, u_{t−1}⟩ = −lr(‖g‖² − α gᵀHg) for SGD)."""
    lr = 0.05
    opt = dynopt.numpy.meta_sgd(lr, meta_lr=0.05 if rule == "eg" else 5.0, rule=rule)
    scales, grads = run_oracle(opt, 60, [1.0, -2.0], lambda th: H @ th)
    # scales[k] is s after step k. The change at step t uses ⟨g_t, u_{t−1}⟩, and u_{t−1} was made
    # from grads[t−2] with the step α = lr·scales[t−1]:
    checked = 0
    for t in range(2, 61):
        g = grads[t - 2]
        if np.linalg.norm(g) < 1e-6:  # converged: the change of s is round-off
            break
        cauchy = (g @ g) / (g @ H @ g)
        alpha = lr * scales[t - 1]
        change = np.log(scales[t] / scales[t - 1])
        assert np.sign(change) == np.sign(cauchy - alpha), (t, change, cauchy, alpha)
        checked += 1
    assert checked > 20
    assert scales[-1] > scales[0]  # lr = 0.05 is far below the Cauchy steps (≈ 0.3-0.45) here


@pytest.mark.parametrize("rule, meta_lr", [("eg", 0.08), ("hd", 1e3)])
def test_scale_stays_positive_and_its_log_moves_boundedly(rule, meta_lr):
    max_log_step, shrink_lr = 0.3, 0.5
    opt = dynopt.numpy.meta_momentum(0.02, meta_lr=meta_lr, rule=rule, max_log_step=max_log_step, shrink_lr=shrink_lr,
                                     gain_lr=0.03)
    scales, _ = run_oracle(opt, 3000, [3.0, -1.0], lambda th: H @ th, noise=2.0)
    assert np.all(scales > 0) and np.all(np.isfinite(scales))
    changes = np.diff(np.log(scales))
    grow = min(meta_lr, max_log_step) if rule == "eg" else max_log_step
    shrink = min(max(meta_lr, shrink_lr), max_log_step) if rule == "eg" else max_log_step
    assert changes.max() <= grow * (1 + 1e-12) and -changes.min() <= shrink * (1 + 1e-12)
    assert changes.max() > 0.5 * grow and -changes.min() > 0.5 * shrink  # the bounds are reached: the test can fail


@pytest.mark.parametrize("lr", [1e-3, 1e-2, 0.1])
def test_meta_sgd_does_not_blow_up_on_an_ill_conditioned_quadratic(lr):
    """The failure the brake exists for: without it (shrink_lr = meta_lr) MetaSGD from a small lr
    keeps growing s after the fast direction converged, overshoots 2/λ_max and diverges; with the
    default brake it converges (see meta_step's docstring)."""
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(2, 2)))
    hessian = q @ np.diag([1.0, 25.0]) @ q.T
    loss = lambda th: 0.5 * th @ hessian @ th  # noqa: E731
    final = {}
    for shrink_lr in (0.02, 0.5):
        params = [np.array([1.0, 1.0])]
        opt = dynopt.numpy.meta_sgd(lr, meta_lr=0.02, shrink_lr=shrink_lr)
        state = opt.init(params)
        for _ in range(3000):
            updates, state = opt.update([hessian @ params[0]], state, params)
            params = [params[0] + updates[0]]
            if not np.isfinite(loss(params[0])) or loss(params[0]) > 1e6:
                break
        final[shrink_lr] = loss(params[0])
    assert final[0.5] < 1e-20
    if lr < 0.1:  # from lr = 0.1 even the symmetric rate happens to survive 3000 steps
        assert not final[0.02] < 1e-3, "the symmetric rate no longer diverges: revisit the default"


def test_scale_range_is_respected():
    opt = dynopt.numpy.meta_sgd(1e-4, meta_lr=0.1, scale_range=(0.5, 3.0))
    scales, _ = run_oracle(opt, 500, [1.0, 1.0], lambda th: H @ th)
    assert scales.max() == pytest.approx(3.0) and scales.min() >= 0.5


def test_gains_stay_in_range_and_move_per_coordinate():
    opt = dynopt.numpy.meta_sgd(0.05, gain_lr=0.05, gain_range=(0.5, 2.0))
    params = [np.array([1.0, -2.0])]
    state = opt.init(params)
    for _ in range(400):
        updates, state = opt.update([H @ params[0]], state, params)
        params = [params[0] + updates[0]]
        gain = state.values["gain"][0]
        assert np.all(gain >= 0.5) and np.all(gain <= 2.0)
    assert not np.allclose(gain, 1.0)


def two_group_model(dtype=torch.float64):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(3, dtype=dtype)), torch.nn.Parameter(torch.randn(2, 2, dtype=dtype))]


def quad_loss(params):
    return sum(((k + 1) * p**2).sum() for k, p in enumerate(params))


def test_alignment_is_global_across_param_groups():
    """Two groups give the same result as one group, and as the NumPy oracle over all leaves."""
    results = []
    for grouped in (False, True):
        params = two_group_model()
        groups = [{"params": [p]} for p in params] if grouped else params
        opt = dynopt.torch.MetaAdam(groups, lr=0.05, meta_lr=0.05)
        for _ in range(100):
            opt.zero_grad()
            quad_loss(params).backward()
            opt.step()
        results.append(([p.detach().numpy().copy() for p in params], float(opt.global_scalars()["scale"])))
    for a, b in zip(results[0][0], results[1][0]):
        np.testing.assert_allclose(a, b, rtol=1e-13)
    assert results[0][1] == pytest.approx(results[1][1], rel=1e-13) and results[0][1] != 1.0
    oracle = dynopt.numpy.meta_adam(0.05, meta_lr=0.05)
    params = [p.detach().numpy() for p in two_group_model()]
    state = oracle.init(params)
    for _ in range(100):
        grads = [2 * (k + 1) * p for k, p in enumerate(params)]
        updates, state = oracle.update(grads, state, params)
        params = [p + u for p, u in zip(params, updates)]
    for a, b in zip(results[1][0], params):
        np.testing.assert_allclose(a, b, rtol=1e-12)


@pytest.mark.parametrize("options", [{"flat": False}, {}], ids=["reference", "flat"])
def test_no_host_synchronisation_in_the_step(options, monkeypatch):
    """On an accelerator nothing is read back during a step (emulated on the CPU: the flat path would
    otherwise read a bucket's total on the host, which is free there)."""
    from dynopt._backends import torch_flat

    monkeypatch.setattr(torch_flat, "HOST_CHECK_DEVICES", set())
    params = two_group_model() + [torch.nn.Parameter(torch.ones(3))]
    groups = [{"params": [params[0], params[2]]}, {"params": [params[1]], "lr": 0.1}]
    opt = dynopt.torch.MetaRMSprop(groups, lr=0.01, gain_lr=0.01, **options)
    for _ in range(4):
        opt.zero_grad()
        (quad_loss(params[:2]) + (params[2] ** 2).sum()).backward()
        with CountOps() as counter:
            opt.step()
    assert (opt._flat is None) == (options == {"flat": False})
    assert not [op for op in counter.ops if "local_scalar_dense" in op or op.startswith("aten.item")]


def test_scheduler_multiplies_the_adapted_scale_and_never_overwrites_it():
    params = two_group_model()
    opt = dynopt.torch.MetaSGD(params, lr=0.05, meta_lr=0.05)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.98)
    for _ in range(50):
        opt.zero_grad()
        quad_loss(params).backward()
        opt.step()
        sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05 * 0.98**50)
    scale = float(opt.global_scalars()["scale"])
    oracle = dynopt.numpy.meta_sgd(lambda count: 0.05 * 0.98**count, meta_lr=0.05)
    ps = [p.detach().numpy() for p in two_group_model()]
    state = oracle.init(ps)
    for _ in range(50):
        updates, state = oracle.update([2 * (k + 1) * p for k, p in enumerate(ps)], state, ps)
        ps = [p + u for p, u in zip(ps, updates)]
    assert scale == pytest.approx(float(state.values["scale"]), rel=1e-12) and scale != 1.0
    for a, b in zip(params, ps):
        np.testing.assert_allclose(a.detach().numpy(), b, rtol=1e-12)


def test_scale_is_readable_in_jax_and_state_dict_round_trips_in_torch():
    opt = dynopt.jax.meta_nesterov(0.01, momentum=0.9)
    params = {"w": jnp.ones(3)}
    state = opt.init(params)
    for _ in range(5):
        updates, state = opt.update({"w": 2 * params["w"]}, state, params)
        params = {"w": params["w"] + updates["w"]}
    assert float(state.scale) > 1.0
    params = two_group_model()
    opt = dynopt.torch.MetaNesterov(params, lr=0.01)
    for _ in range(5):
        opt.zero_grad()
        quad_loss(params).backward()
        opt.step()
    clone = [p.detach().clone().requires_grad_() for p in params]
    opt2 = dynopt.torch.MetaNesterov(clone, lr=0.01)
    opt2.load_state_dict(copy.deepcopy(opt.state_dict()))  # a live state_dict shares tensors
    for o, ps in ((opt, params), (opt2, clone)):
        o.zero_grad()
        quad_loss(ps).backward()
        o.step()
    for a, b in zip(params, clone):
        assert torch.equal(a, b)
    assert torch.equal(opt.global_scalars()["scale"], opt2.global_scalars()["scale"])


@pytest.mark.parametrize("dim, floor", [(20, 0.02), (200, 0.3)])
def test_noise_alone_barely_moves_the_scale_in_many_dimensions(dim, floor):
    """Below brake_cos the rule is symmetric in the cosine: pure-noise gradients leave log s a
    random walk. Floors: a drift of (γ↓ − γ)·E[(c − c₀)₊]/(1 − c₀) per step with c ~ N(0, 1/dim)
    gives about −0.0006 per step at dim = 20 (×2000 steps: s ≈ 0.3) and nothing at dim = 200."""
    rng = np.random.default_rng(1)
    opt = dynopt.numpy.meta_sgd(0.01)
    params = [np.zeros(dim)]
    state = opt.init(params)
    for _ in range(2000):
        updates, state = opt.update([rng.normal(size=dim)], state, params)
        params = [params[0] + updates[0]]
    assert floor < state.values["scale"] < 1 / floor


def test_low_precision_parameters_still_adapt_the_scale():
    """With random gradients the cosine is ~1/sqrt(n) and a step changes log s by ~1e-4: computed from
    bfloat16 sums (3 digits) that change rounds to exactly nothing. The global sums are taken in at
    least float32 on every backend and path, so the scale moves as it does in float32."""
    import jax.numpy as jnp

    gen = torch.Generator().manual_seed(3)
    shapes = [(300, 300), (6, 5)]
    init = [torch.rand(s, generator=gen) + 0.5 for s in shapes]
    grads = [[torch.randn(s, generator=gen) for s in shapes] for _ in range(6)]
    scales = {}
    for label, options in (("reference", {"flat": False}), ("flat", {}), ("fused", {"fused": True})):
        params = [torch.nn.Parameter(x.to(torch.bfloat16)) for x in init]
        opt = dynopt.torch.MetaAdam(params, lr=1e-2, **options)
        for g in grads:
            for p, gi in zip(params, g):
                p.grad = gi.to(torch.bfloat16)
            opt.step()
        scales[label] = float(opt.global_scalars()["scale"])
    tx = dynopt.jax.meta_adam(1e-2)
    params = [jnp.asarray(x.numpy(), dtype=jnp.bfloat16) for x in init]
    state = tx.init(params)
    for g in grads:
        updates, state = tx.update([jnp.asarray(gi.numpy(), dtype=jnp.bfloat16) for gi in g], state, params)
        params = [p + u for p, u in zip(params, updates)]
    scales["jax"] = float(state.scale)
    for label, scale in scales.items():
        assert abs(scale - 1.0) > 1e-6, (label, scales)
        assert scale == pytest.approx(scales["reference"], rel=1e-5), (label, scales)
