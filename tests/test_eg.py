"""Exponentiated gradient: invariants over long runs, conservation, axes, and bad input."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch

import dynopt.jax
import dynopt.numpy
import dynopt.torch

torch.set_num_threads(1)


def linear_grad(w, target):
    return w - target  # ∇ of ½‖w − target‖²


@pytest.mark.parametrize("variant", ["positive", "simplex"])
def test_positivity_and_simplex_hold_over_10000_steps_in_torch(variant):
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.rand(5, 4, dtype=torch.float64) + 0.01)
    with torch.no_grad():
        w /= w.sum(dim=1, keepdim=True)
    opt = dynopt.torch.EG([w], lr=0.5, variant=variant, axis=1)
    for k in range(10_000):
        w.grad = torch.randn(5, 4, dtype=torch.float64) * 3  # noisy, sometimes large gradients
        opt.step()
        if k % 500 == 0 or k == 9_999:
            assert bool((w > 0).all()), f"step {k}"
            if variant == "simplex":
                torch.testing.assert_close(w.sum(dim=1), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-12)


def test_simplex_invariants_over_10000_steps_in_jax():
    opt = dynopt.jax.eg(0.5, variant="simplex", axis=0, total=2.0)
    w0 = jnp.full((3, 2), 2.0 / 3)
    keys = jax.random.split(jax.random.key(0), 10_000)

    def body(carry, key):
        w, state = carry
        updates, state = opt.update(3 * jax.random.normal(key, w.shape), state, w)
        w = optax.apply_updates(w, updates)
        return (w, state), (jnp.min(w), jnp.max(jnp.abs(w.sum(axis=0) - 2.0)))

    _, (minimum, drift) = jax.lax.scan(body, (w0, opt.init(w0)), keys)
    assert float(minimum.min()) > 0 and float(drift.max()) < 1e-12


def test_signed_conserves_product_and_tracks_parameter():
    rng = np.random.default_rng(1)
    theta = [rng.normal(size=6)]
    opt = dynopt.numpy.eg(0.05, variant="signed", init_scale=0.3)
    state = opt.init(theta)
    product0 = state.values["w_plus"][0] * state.values["w_minus"][0]
    np.testing.assert_allclose(product0, 0.09, rtol=1e-12)  # c² by construction of the split
    np.testing.assert_allclose(state.values["w_plus"][0] - state.values["w_minus"][0], theta[0], atol=1e-15)
    target = rng.normal(size=6)
    for _ in range(2000):
        updates, state = opt.update([linear_grad(theta[0], target)], state, theta)
        theta = [theta[0] + updates[0]]
    product = state.values["w_plus"][0] * state.values["w_minus"][0]
    assert np.max(np.abs(product / product0 - 1)) < 1e-12
    np.testing.assert_allclose(theta[0], state.values["w_plus"][0] - state.values["w_minus"][0], atol=1e-14)
    np.testing.assert_allclose(theta[0], target, atol=1e-6)  # and it still minimizes


def test_signed_simplex_keeps_total_weight():
    theta = [np.array([0.2, -0.1, 0.05])]
    opt = dynopt.numpy.eg(0.1, variant="signed_simplex", total=3.0)
    state = opt.init(theta)
    for _ in range(500):
        updates, state = opt.update([linear_grad(theta[0], np.array([1.0, -1.0, 0.5]))], state, theta)
        theta = [theta[0] + updates[0]]
        total = state.values["w_plus"][0].sum() + state.values["w_minus"][0].sum()
        assert abs(total - 3.0) < 1e-12


def test_off_simplex_start_is_projected_by_the_first_step():
    w = [np.array([1.0, 3.0])]  # sums to 4, not 1
    opt = dynopt.numpy.eg(1e-9, variant="simplex")
    updates, _ = opt.update([np.zeros(2)], opt.init(w), w)
    np.testing.assert_allclose(w[0] + updates[0], [0.25, 0.75], rtol=1e-12)


def test_egu_is_multiplicative():
    """One step by hand: θ ⊙ exp(−lr·g)."""
    theta, g = np.array([0.5, 2.0]), np.array([1.0, -3.0])
    opt = dynopt.numpy.eg(0.1)
    updates, _ = opt.update([g], opt.init([theta]), [theta])
    np.testing.assert_allclose(theta + updates[0], theta * np.exp(-0.1 * g), rtol=1e-15)


def test_non_positive_parameter_is_rejected_naming_group_and_index():
    good, bad = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.tensor([0.5, -0.5]))
    with pytest.raises(ValueError, match=r"EG: invalid parameter 1 of param group 0: variant 'positive' needs positive entries, the smallest is -0.5"):
        dynopt.torch.EG([good, bad], lr=0.1)
    opt = dynopt.torch.EG([good], lr=0.1, variant="simplex")
    with pytest.raises(ValueError, match=r"invalid parameter 0 of param group 1: variant 'simplex' needs positive entries"):
        opt.add_param_group({"params": [bad]})
    assert len(opt.param_groups) == 1
    with pytest.raises(ValueError, match=r"EG: invalid parameter leaf 1: variant 'positive' needs positive entries"):
        dynopt.jax.eg(0.1).init([jnp.ones(2), jnp.array([0.5, 0.0])])
    dynopt.torch.EG([bad], lr=0.1, variant="signed")  # any sign is fine for EG±


def test_missing_axis_is_rejected():
    w = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match=r"EG: invalid parameter 0 of param group 0: axis 1 does not exist for a parameter with 1 dimension\(s\)"):
        dynopt.torch.EG([w], lr=0.1, variant="simplex", axis=1)
    with pytest.raises(ValueError, match=r"axis 2 does not exist"):
        dynopt.jax.eg(0.1, variant="signed_simplex", axis=2).init({"w": jnp.ones((2, 2))})


def test_bad_options_name_argument_and_value():
    with pytest.raises(ValueError, match=r"Invalid variant value: 'unit' \(must be one of \('positive', 'simplex', 'signed', 'signed_simplex'\)\)"):
        dynopt.jax.eg(0.1, variant="unit")
    with pytest.raises(ValueError, match=r"Invalid axis value: 1.5 \(must be an int or None\)"):
        dynopt.torch.EG([torch.nn.Parameter(torch.ones(1))], variant="simplex", axis=1.5)
    with pytest.raises(ValueError, match=r"Invalid total value: 0.0 \(must be > 0.0\)"):
        dynopt.numpy.eg(0.1, total=0.0)
