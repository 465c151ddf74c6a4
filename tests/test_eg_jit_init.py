"""EG's parameter check and ``jax.jit``: what README and EG's docstring say happens.

``dynopt.jax.eg(...).init`` checks the parameters (every entry > 0 for ``positive`` and ``simplex``,
a ``simplex`` axis the parameter has) when it sees values. Under ``jit`` it sees tracers, so the
check is skipped and nothing is raised; EG then runs on the entries as they are:

* ``positive``: every entry is multiplied by exp(−lr·F), so a zero entry stays 0 for ever and a
  negative entry keeps its sign and moves up the loss (towards 0 when F > 0), not down;
* ``simplex``: the same, then the division by Σθ along the axis: a sum ≤ 0 gives inf/NaN or flipped signs;
* an axis the parameter lacks is reported by jax when ``update`` is traced, as a ValueError;
* the signed variants need no check: a jitted ``init`` equals the eager one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import dynopt.jax

BAD = {"w": jnp.array([1.0, 0.0, -0.5]), "v": jnp.array([[0.2, 0.3], [0.1, 0.4]])}
GRAD = {"w": jnp.array([0.3, 0.3, 0.3]), "v": jnp.array([[0.1, -0.2], [0.0, 0.3]])}  # F = ∇L, constant


def steps(opt, params, n, jit_init):
    state = (jax.jit(opt.init) if jit_init else opt.init)(params)
    step = jax.jit(lambda p, s: opt.update(GRAD, s, p))
    trajectory = [params]
    for _ in range(n):
        updates, state = step(params, state)
        params = optax.apply_updates(params, updates)
        trajectory.append(params)
    return trajectory


@pytest.mark.parametrize("variant", ["positive", "simplex"])
def test_eager_init_refuses_non_positive_entries_and_jitted_init_does_not(variant):
    opt = dynopt.jax.eg(0.5, variant=variant)
    with pytest.raises(ValueError, match=rf"EG: invalid parameter leaf 1: variant '{variant}' needs positive entries, the smallest is -0.5"):
        opt.init(BAD)
    state = jax.jit(opt.init)(BAD)  # no error: the values are not known while tracing
    assert type(state) is type(opt.init({"w": jnp.ones(3), "v": jnp.ones((2, 2))})) and int(state.count) == 0


def test_under_jit_positive_eg_keeps_each_sign_and_a_zero_stays_zero():
    lr = 0.5
    trajectory = steps(dynopt.jax.eg(lr, variant="positive"), BAD, 5, jit_init=True)
    for k, params in enumerate(trajectory):
        np.testing.assert_allclose(params["w"], BAD["w"] * np.exp(-lr * k * GRAD["w"]), rtol=1e-12, atol=0)
    w = np.array([p["w"] for p in trajectory])
    assert np.all(w[:, 1] == 0.0)  # a zero entry never moves
    assert np.all(w[:, 2] < 0) and np.all(np.diff(w[:, 2]) > 0)  # negative, moving up: L = 0.3·Σw grows
    assert np.all(np.diff(w[:, 0]) < 0)  # the positive entry moves down, as EG should
    # the other leaf, all positive, is unaffected by its neighbour
    eager = steps(dynopt.jax.eg(lr, variant="positive"), {"w": jnp.ones(3), "v": BAD["v"]}, 5, jit_init=False)
    assert np.array_equal(trajectory[-1]["v"], eager[-1]["v"])


def test_under_jit_the_simplex_divides_by_whatever_sum_the_entries_have():
    trajectory = steps(dynopt.jax.eg(0.5, variant="simplex"), BAD, 3, jit_init=True)
    np.testing.assert_allclose(trajectory[1]["w"], [2.0, 0.0, -1.0], rtol=1e-12)  # rescaled by 1/Σθ = 2, signs kept
    zero_sum = steps(dynopt.jax.eg(0.5, variant="simplex"), {"w": jnp.array([1.0, -1.0, 0.0]), "v": BAD["v"]}, 1, jit_init=True)
    assert not np.all(np.isfinite(zero_sum[1]["w"]))


def test_under_jit_a_missing_simplex_axis_is_reported_when_update_is_traced():
    opt = dynopt.jax.eg(0.5, variant="simplex", axis=3)
    params = {"w": jnp.ones(3)}
    with pytest.raises(ValueError, match="axis 3 does not exist for a parameter with 1 dimension"):
        opt.init(params)
    state = jax.jit(opt.init)(params)
    with pytest.raises(ValueError, match="axis 3 is out of bounds"):
        jax.jit(opt.update)({"w": jnp.ones(3)}, state, params)


@pytest.mark.parametrize("variant", ["signed", "signed_simplex"])
def test_signed_variants_need_no_check(variant):
    opt = dynopt.jax.eg(0.5, variant=variant)
    eager, jitted = opt.init(BAD), jax.jit(opt.init)(BAD)
    for a, b in zip(jax.tree.leaves(eager), jax.tree.leaves(jitted)):
        np.testing.assert_allclose(a, b, rtol=1e-15, atol=0)
    assert np.all(np.isfinite(np.concatenate([np.ravel(x) for x in jax.tree.leaves(steps(opt, BAD, 3, jit_init=True)[-1])])))
