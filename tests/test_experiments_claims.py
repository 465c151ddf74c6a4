"""The remaining claims of the ODE view (``experiments/ode_claims.py``) and Su's Heun optimizer measured
(``experiments/heun_digits.py``): both run in fast mode and write what they promise, and every claim
is asserted on numbers the experiment measured with dynopt's own optimizers.

Where each expected number comes from is said next to it. Every claim test can fail: the tests of
the "negative" statements (a naive coefficient, a start that is not matched, Heun's missing
regularization) assert on the same fitted quantities as the positive ones.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch
from PIL import Image

import dynopt
from dynopt import schemes
from experiments import heun_digits, ode_claims
from experiments.__main__ import EXPERIMENTS

torch.set_num_threads(1)


class _Progress:
    def update(self, *_):
        pass

    def set_postfix_str(self, *_):
        pass


def _png(path: pathlib.Path) -> None:
    with Image.open(path) as image:
        assert image.format == "PNG" and min(image.size) > 300


@pytest.fixture(scope="module")
def claims(tmp_path_factory):
    out = tmp_path_factory.mktemp("ode_claims")
    return out, ode_claims.main(["--fast", "--out", str(out)]), ode_claims.Config.fast()


def test_ode_claims_writes_its_files_and_is_registered(claims):
    out, summary, cfg = claims
    for name in ("schemes", "heun_igr", "momentum_limits", "stability", "implicit_bias"):
        _png(out / f"{name}.png")
    assert json.loads((out / "config.json").read_text())["c9_thresholds"] == json.loads(json.dumps(summary["c9_thresholds"]))
    data = np.load(out / "claims.npz")
    assert list(data["orders/hs"]) == list(cfg.order_hs) and data["c13/eg"].shape == (len(cfg.eg_scales), cfg.ls_cols)
    assert {"ode_claims", "heun_digits"} <= set(EXPERIMENTS)


# ----------------------------------------------------------------------------- orders of the schemes (and C3's O(h²))


def test_each_scheme_converges_at_its_declared_order(claims):
    """Fitted slopes of log error against log h equal the classical orders of the tableaux (Euler 1,
    Heun 2, Kutta's RK3 3, RK4 4; Butcher's order conditions, as ``scheme.order`` also says), for the
    gradient flow and for the heavy-ball ODE, against ``dynopt.ode.flow`` at rtol 1e-13."""
    _, summary, _ = claims
    expected = {"Euler": 1, "Heun": 2, "RK3": 3, "RK4": 4}
    assert {name: ode_claims.SCHEMES[name]().order for name in expected} == expected
    for ode_name in ("gradient flow", "heavy ball"):
        for scheme, order in expected.items():
            fitted = summary["orders"][f"{ode_name}/{scheme}"]
            assert fitted["declared"] == order
            assert abs(fitted["slope"] - order) < 0.2, (ode_name, scheme, fitted)
            assert np.all(np.diff(fitted["errors"]) < 0)


# ----------------------------------------------------------------------------- C3: Heun has no implicit regularization


def test_heun_has_no_implicit_gradient_regularization(claims):
    """Barrett & Dherin: GD follows L + (h/4)‖∇L‖² to O(h²), so its final a² + b² falls below the
    gradient flow's by an amount ∝ h (slope 1). Heun is second order: no O(h) term, so its
    shrinkage is of higher order (measured slope ≈ 3) and far smaller at small h."""
    _, summary, _ = claims
    c3 = summary["c3_heun_igr"]
    h = np.array(c3["final_h"])
    flow = c3["gradient_flow"]
    gd, heun = np.array(c3["final_a2_plus_b2"]["GD"]), np.array(c3["final_a2_plus_b2"]["Heun"])
    assert abs(flow - np.sqrt(20)) < 1e-6  # the flow keeps a² − b² = 4 and ends on ab = 1: a² + b² = √(16 + 4)
    assert np.all(np.diff(gd) < 0), "GD's minimum flattens as h grows"
    assert 0.8 < c3["shrinkage_slope"]["GD"] < 1.2
    assert c3["shrinkage_slope"]["Heun"] > 1.8
    small = h <= 0.03
    assert np.all(flow - heun[small] < 0.05 * (flow - gd[small])), (heun, gd)
    # and the distance of each to the gradient flow: GD O(h), Heun O(h²)
    assert abs(c3["slope_to_gradient_flow"]["GD"] - 1) < 0.15
    assert abs(c3["slope_to_gradient_flow"]["Heun"] - 2) < 0.2


# ----------------------------------------------------------------------------- C6 and C8: heavy ball's two limits


def test_heavy_ball_with_fixed_momentum_follows_the_sped_up_flow_and_its_modified_loss(claims):
    """μ = 0.9 fixed, lr = h → 0 (brief §C6; the modified loss is Ghosh et al. 2023, derived again in
    ``matched_buffer``): O(h) against θ' = −∇L/(1 − μ) from torch's start, O(h²) against
    L + h(1 + μ)/(4(1 − μ)²)‖∇L‖² from the matched start; the naive h/(4(1 − μ)) and the unmatched
    start both stay O(h)."""
    _, summary, _ = claims
    slopes = summary["c6_fixed_momentum"]["slopes"]
    errors = summary["c6_fixed_momentum"]["errors"]
    assert 0.8 < slopes["flow"] < 1.2
    assert 1.8 < slopes["modified"] < 2.2
    assert slopes["naive"] < 1.3 and slopes["modified_default"] < 1.3
    assert np.all(np.array(errors["modified"]) < 0.2 * np.array(errors["naive"]))


def test_loss_curves_collapse_on_the_right_clock(claims):
    """C8: with (1 − μ)/√lr fixed the loss at step k approaches the ODE's loss at t = k√lr (O(√lr),
    heavy ball being first order in h = √lr), and is O(1) away from it at t = k·lr; with μ fixed it
    approaches the gradient flow's loss at t = k·lr/(1 − μ)."""
    _, summary, cfg = claims
    c8 = summary["c8_clocks"]
    gaps = [c8["gamma_fixed"][f"{lr:g}"]["gap"] for lr in cfg.c8_lrs]
    assert np.all(np.diff(gaps) < 0) and 0.8 < c8["gamma_fixed_slope_in_sqrt_lr"] < 1.2
    for lr in cfg.c8_lrs:
        assert c8["gamma_fixed"][f"{lr:g}"]["gap_wrong_clock"] > 1.0  # the loss starts at 4.19 and falls to ~1e-4
    assert gaps[-1] < 0.1 * c8["gamma_fixed"][f"{cfg.c8_lrs[-1]:g}"]["gap_wrong_clock"]
    mu_gaps = [c8["mu_fixed"][f"{lr:g}"]["gap"] for lr in cfg.c8_mu_lrs]
    assert np.all(np.diff(mu_gaps) < 0)
    assert mu_gaps[-1] < 0.2 * c8["mu_fixed"][f"{cfg.c8_mu_lrs[-1]:g}"]["gap_wrong_clock"]


# ----------------------------------------------------------------------------- C9: stability thresholds


def test_stability_thresholds_match_their_formulas(claims):
    """Largest stable lr·λ on λθ²/2: GD 2 (|1 − z| ≤ 1); heavy ball 2(1 + μ) and torch's Nesterov
    2(1 + μ)/(1 + 2μ) (a root −1 of r² − (1 + μ − z)r + μ, and of r² − (1 + μ)(1 − z)r + μ(1 − z));
    Heun 2 (1 − z + z²/2 = 1); RK3 2.5127 and RK4 2.7853 (real roots of R(−z) = ±1; for RK4, of
    z³ − 4z² + 12z − 24 = 0). The fast sweep brackets each to 6e-7."""
    _, summary, cfg = claims
    mu = cfg.stability_mu
    rk4 = next(r.real for r in np.roots([1, -4, 12, -24]) if abs(r.imag) < 1e-9)  # the cubic's one real root
    assert abs(rk4 - 2.7853) < 1e-4
    formulas = {"GD (SGD)": 2.0, f"heavy ball μ = {mu:g}": 2 * (1 + mu), f"Nesterov (torch) μ = {mu:g}": 2 * (1 + mu) / (1 + 2 * mu),
                "Heun on the gradient flow": 2.0, "RK4 on the gradient flow": rk4}
    measured = summary["c9_thresholds"]
    for name, formula in formulas.items():
        assert abs(measured[name]["measured"] - formula) < 1e-6, (name, measured[name], formula)
        low, high = measured[name]["bracket"]
        assert low <= measured[name]["measured"] <= high and high - low < 1e-6
    assert abs(measured["RK3 on the gradient flow"]["measured"] - 2.5127) < 1e-4
    for name, curve in summary["c9_threshold_vs_mu"].items():
        measured_mu = np.array(curve["measured"], dtype=float)
        ok = ~np.isnan(measured_mu)
        np.testing.assert_allclose(measured_mu[ok], np.array(curve["formula"])[ok], atol=1e-6, err_msg=name)


def test_rk_threshold_reads_the_tableau():
    """The formula side comes from the tableau: forward Euler's real edge is 2, and a tableau whose
    stability polynomial is known (Heun: 1 + z + z²/2) gives the edge solved by hand."""
    assert ode_claims.rk_threshold(schemes.Euler()) == pytest.approx(2.0, abs=1e-12)
    assert ode_claims.rk_threshold(schemes.Heun()) == pytest.approx(2.0, abs=1e-9)
    midpoint = schemes.ExplicitRK(((0, 0), (0.5, 0)), (0, 1), (0, 0.5))  # same R(z) as Heun
    assert ode_claims.rk_threshold(midpoint) == pytest.approx(2.0, abs=1e-9)


@pytest.mark.parametrize("backend", ["torch", "jax"])
def test_thresholds_are_the_same_on_torch_and_jax(backend):
    """The sweep runs each backend's real optimizer: dynopt.torch.Nesterov / dynopt.jax.nesterov, and
    RK4 through step(closure) in torch and update(..., grad_fn=...) in JAX (the NumPy oracle is the
    main run)."""
    cfg = ode_claims.Config(sweep_points=100, sweep_steps=200, sweep_rounds=3)
    nesterov = ode_claims.measure_threshold(cfg, dynopt.nesterov, {"lr": 0.1, "momentum": 0.9}, False, backend)
    assert abs(nesterov["threshold"] - 2 * 1.9 / 2.8) < 1e-5
    rk4 = ode_claims.measure_threshold(cfg, dynopt.discretize(dynopt.sgd, schemes.RK4()), {"lr": 0.1}, True, backend)
    assert abs(rk4["threshold"] - ode_claims.rk_threshold(schemes.RK4())) < 1e-5


def test_divergence_test_reads_growth_not_size():
    """A coordinate that decays but starts large is stable; one that grows slowly from tiny is not."""
    k = np.arange(1, 401)[:, None]
    history = np.hstack([1e6 * 0.999**k, 1e-9 * (-1.001) ** k, np.where(k > 300, np.inf, 1.0)])
    assert list(ode_claims._diverged(history)) == [False, True, True]


# ----------------------------------------------------------------------------- C13: implicit bias


def test_gd_finds_min_l2_and_egu_from_a_small_scale_a_sparse_near_min_l1_solution(claims):
    """C13. Expected: GD from 0 stays in the row space of A, so it ends at A⁺b (numpy.linalg.pinv);
    EGU±'s mirror map arcsinh(θ/2c) stays in the row space of A too, so it ends at the
    hyperbolic-entropy minimizer (Newton on the dual, ``hyperbolic_minimizer``), which → min ℓ1
    (scipy linprog) as c → 0 (Woodworth et al. 2020) and → A⁺b as c → ∞."""
    _, summary, cfg = claims
    c13 = summary["c13_implicit_bias"]
    norms = c13["l1_norms"]
    assert c13["gd_to_min_l2"] < 1e-10 and c13["gd_residual"] < 1e-10
    assert norms["gd"] > 2 * norms["min_l1"]
    assert abs(norms["min_l1"] - norms["truth"]) < 1e-9  # 4-sparse θ*, 40 Gaussian rows: the LP recovers it
    eg = {e["c"]: e for e in c13["eg"]}
    small, large = eg[min(cfg.eg_scales)], eg[max(cfg.eg_scales)]
    assert small["l1"] < 1.01 * norms["min_l1"] and small["to_l1"] < 0.01
    assert small["support"] <= 2 * cfg.ls_nonzeros < 0.5 * eg[max(cfg.eg_scales)]["support"]
    assert large["to_l2"] < 1e-4
    for e in c13["eg"]:
        assert e["to_predicted"] < 5e-3, e
    ordered = [eg[c]["l1"] for c in sorted(eg)]
    assert np.all(np.diff(ordered) > 0), "the ℓ1 norm grows with c, from min ℓ1 to that of A⁺b"


def test_hyperbolic_minimizer_and_lp_solve_their_problems():
    """The two references: the LP's answer is feasible and no worse in ℓ1 than the minimum-ℓ2 point
    or random feasible points; the hyperbolic minimizer is feasible, and at large c equals A⁺b."""
    problem = ode_claims.least_squares(ode_claims.Config(ls_rows=10, ls_cols=30, ls_nonzeros=2))
    A, b = problem["A"], problem["b"]
    l1 = ode_claims.min_l1(A, b)
    assert np.linalg.norm(A @ l1 - b) < 1e-9
    null = np.linalg.svd(A)[2][A.shape[0]:]
    rng = np.random.default_rng(0)
    for _ in range(20):
        other = l1 + null.T @ rng.normal(size=null.shape[0]) * 0.1
        assert np.abs(other).sum() >= np.abs(l1).sum() - 1e-9
    for c in (1e-3, 1.0):
        theta = ode_claims.hyperbolic_minimizer(A, b, c)
        assert np.linalg.norm(A @ theta - b) < 1e-9
    np.testing.assert_allclose(ode_claims.hyperbolic_minimizer(A, b, 1e4), np.linalg.pinv(A) @ b, atol=1e-6)


# ----------------------------------------------------------------------------- part 7: Su's Heun optimizer, measured


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("heun_digits")
    return out, heun_digits.main(["--fast", "--out", str(out)]), heun_digits.Config.fast()


def test_heun_digits_compares_at_equal_gradient_evaluations(digits):
    out, summary, cfg = digits
    _png(out / "heun_digits.png")
    assert json.loads((out / "config.json").read_text())["results"] == json.loads(json.dumps(summary["results"]))
    e = cfg.evaluations
    for lr in cfg.lrs:
        runs = summary["results"][f"{lr:g}"]
        assert runs["GD"]["evaluations_per_step"] == [1]
        assert runs["Heun (2η)"]["evaluations_per_step"] == runs["Heun (η)"]["evaluations_per_step"] == [2]
        assert runs["GD"]["final"]["evaluations"] == runs["Heun (2η)"]["final"]["evaluations"] == e
        assert runs["Heun (η)"]["final"]["evaluations"] == 2 * e
        assert runs["GD"]["ode_time"] == pytest.approx(runs["Heun (2η)"]["ode_time"]) == pytest.approx(e * lr)
        for run in runs.values():
            final = run["final"]
            assert np.isfinite([final["loss"], final["grad_norm"], final["sharpness"]]).all() and 0 <= final["test_accuracy"] <= 1
    data = np.load(out / "curves.npz")
    assert data[f"lr={cfg.lrs[0]:g}/GD/curve/loss"].shape == (e,)
    assert np.all(np.diff(data[f"lr={cfg.lrs[0]:g}/GD/curve/evaluations"]) == 1)
    assert np.all(np.diff(data[f"lr={cfg.lrs[0]:g}/Heun (η)/curve/evaluations"]) == 2)
    for label in ("GD", "Heun (η)"):
        levels = data[f"lr={cfg.lrs[0]:g}/{label}/level"]
        losses = data[f"lr={cfg.lrs[0]:g}/{label}/loss"]
        assert set(levels[np.isfinite(levels)]) == set(cfg.loss_levels)  # both got below 0.3 and were measured there
        assert np.all(losses[np.isfinite(levels)] <= 1.05 * levels[np.isfinite(levels)])


def test_at_a_moderate_step_gd_and_heun_follow_the_same_flow(digits):
    """At η = 1 (below GD's stability edge: the measured sharpness stays under 2/η) GD and Heun at
    the same ODE time T = Eη end at the same training loss, to 1%: both discretize the gradient flow,
    GD to O(η) and Heun to O(η²), and the O(η) term moves the loss by less than that here."""
    _, summary, cfg = digits
    runs = summary["results"][f"{cfg.lrs[0]:g}"]
    gd, heun = runs["GD"]["final"], runs["Heun (η)"]["final"]
    assert runs["GD"]["ode_time"] == runs["Heun (η)"]["ode_time"]
    assert abs(gd["loss"] - heun["loss"]) < 0.01 * gd["loss"], (gd, heun)


def test_sharpness_is_the_top_hessian_eigenvalue():
    """The power iteration on Hessian-vector products against the full Hessian of a tiny MLP
    (torch.autograd.functional.hessian, then numpy eigvalsh)."""
    torch.manual_seed(0)
    x, y = torch.randn(30, 3, dtype=torch.float64), torch.randint(0, 4, (30,))
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4)).double()
    params = list(model.parameters())
    shapes, sizes = [p.shape for p in params], [p.numel() for p in params]

    def loss_fn(m):
        return torch.nn.functional.cross_entropy(m(x), y)

    def flat_loss(flat):
        chunks = torch.split(flat, sizes)
        weights = {name: c.reshape(s) for (name, _), c, s in zip(model.named_parameters(), chunks, shapes)}
        return torch.nn.functional.cross_entropy(torch.func.functional_call(model, weights, (x,)), y)

    flat = torch.cat([p.detach().reshape(-1) for p in params])
    exact = np.linalg.eigvalsh(torch.autograd.functional.hessian(flat_loss, flat).numpy())
    top = exact[np.argmax(np.abs(exact))]
    value, _ = heun_digits.sharpness(model, loss_fn, [torch.randn_like(p) for p in params], 1000, 1e-12)
    assert value == pytest.approx(top, rel=1e-6)
