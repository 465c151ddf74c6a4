"""The optimizers no library has, against small implementations written here from their papers.

Neither torch.optim nor optax has EG or NesterovSBC, so test_parity.py can only check dynopt's
backends against each other (all three run the same spec). Here each is compared with a NumPy
implementation written from the paper, using no dynopt code:

* EG, Kivinen & Warmuth, "Exponentiated Gradient versus Gradient Descent for Linear Predictors",
  Information and Computation 132, 1997: EGU (unnormalized) w ← w⊙r, EG (normalized, total U)
  w ← U·w⊙r/Σ w⊙r, EGU± w⁺ ← w⁺⊙r, w⁻ ← w⁻/r, and EG± w± ← U·w±⊙r^{±1}/Σ(w⁺⊙r + w⁻/r),
  with r = exp(−η ∂L/∂w) for EGU/EG/EGU± and r = exp(−ηU ∂L/∂w) for EG±.
* NesterovSBC, Su, Boyd & Candès, JMLR 17 (2016), eq. (2): x_k = y_{k−1} − s∇L(y_{k−1}),
  y_k = x_k + (k − 1)/(k + 2)·(x_k − x_{k−1}), x_0 = y_0.

What the papers leave open enters as dynopt documents it (README "Exponentiated gradient" and the
hyperparameter notes; dynopt/optimizers/eg.py, nesterov_sbc.py docstrings), each stated where it is
used below: η = lr (for EG±, lr = ηU), the force ±∇L + λθ (maximize negates, then the coupled decay
is added, as torch does), a simplex normalized along ``axis``, the split of a signed θ₀ into
w± = (√(θ₀² + 4c²) ± θ₀)/2, the parameter of NesterovSBC is y and its state is y − x.

dynopt runs 20 steps on its NumPy oracle, on torch (default path and ``flat=False``) and on JAX
(jit), all in float64, each from the gradient of its own iterate (computed here in NumPy); every
parameter and state leaf must match the paper's iterate to a max relative difference ≤ 1e-12.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import dynopt.jax
import dynopt.numpy
import dynopt.torch

STEPS = 20
TOL = 1e-12


# ------------------------------------------------------------------------- problems
class Quadratic:
    """L(θ) = Σ_i ½(θ_i − c_i)ᵀA_i(θ_i − c_i) + ⟨ξ_{k,i}, θ_i⟩ over leaves θ_i, A_i random SPD, with a
    fixed noise sequence ξ_k; ``sign`` = −1 flips L, so that a maximizing run converges too."""

    def __init__(self, seed: int, shapes, positive: bool, sign: float = 1.0):
        rng = np.random.default_rng(seed)
        self.shapes, self.sign = shapes, sign
        self.A, self.c, self.noise, self.theta0 = [], [], [], []
        for shape in shapes:
            n = int(np.prod(shape))
            Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
            self.A.append(Q @ np.diag(rng.uniform(0.1, 2.0, size=n)) @ Q.T)
            self.c.append(rng.normal(size=n))
            self.noise.append(0.1 * rng.normal(size=(STEPS, n)))
            self.theta0.append(np.abs(rng.normal(size=shape)) + 0.1 if positive else rng.normal(size=shape))

    def grads(self, k: int, params) -> list[np.ndarray]:
        out = []
        for A, c, xi, p, shape in zip(self.A, self.c, self.noise, params, self.shapes):
            flat = np.asarray(p, dtype=np.float64).reshape(-1)
            out.append((self.sign * (A @ (flat - c) + xi[k])).reshape(shape))
        return out


def force(g, theta, weight_decay, maximize):
    """dynopt's force (README: maximize negates the gradient before the coupled decay λθ is added)."""
    return (-g if maximize else g) + weight_decay * theta


# ------------------------------------------------------------------------- the papers' iterates
def eg_paper(problem: Quadratic, variant, lr, total=1.0, init_scale=1.0, weight_decay=0.0, maximize=False, axis=None):
    """Kivinen & Warmuth's four updates, leaf by leaf; returns θ_20 and, for the signed ones, w±."""
    theta = [t.astype(np.float64) for t in problem.theta0]
    signed = variant in ("signed", "signed_simplex")
    if signed:  # dynopt's split (README): w⁺ − w⁻ = θ₀, w⁺ ⊙ w⁻ = c²
        root = [np.sqrt(t * t + 4 * init_scale**2) for t in theta]
        w_plus = [(r + t) / 2 for r, t in zip(root, theta)]
        w_minus = [(r - t) / 2 for r, t in zip(root, theta)]
    for k in range(STEPS):
        grads = problem.grads(k, theta)
        for i, g in enumerate(grads):
            F = force(g, theta[i], weight_decay, maximize)
            if variant == "positive":  # EGU
                theta[i] = theta[i] * np.exp(-lr * F)
            elif variant == "simplex":  # EG with total weight U, normalized along axis
                w = theta[i] * np.exp(-lr * F)
                theta[i] = total * w / np.sum(w, axis=axis, keepdims=True)
            elif variant == "signed":  # EGU±
                r = np.exp(-lr * F)
                w_plus[i], w_minus[i] = w_plus[i] * r, w_minus[i] / r
                theta[i] = w_plus[i] - w_minus[i]
            else:  # EG±: the exponent is η·U·∂L/∂w, and dynopt's lr is η·U (eg.py docstring)
                eta = lr / total
                r = np.exp(-eta * total * F)
                p, m = w_plus[i] * r, w_minus[i] / r
                norm = np.sum(p + m, axis=axis, keepdims=True)
                w_plus[i], w_minus[i] = total * p / norm, total * m / norm
                theta[i] = w_plus[i] - w_minus[i]
    return theta, ({"w_plus": w_plus, "w_minus": w_minus} if signed else {})


def sbc_paper(problem: Quadratic, lr, weight_decay=0.0, maximize=False):
    """Su–Boyd–Candès eq. (2) with s = lr; returns y_20 and the state d = y − x."""
    y = [t.astype(np.float64) for t in problem.theta0]
    x_prev = [t.copy() for t in y]  # x_0 = y_0
    for k in range(1, STEPS + 1):
        grads = problem.grads(k - 1, y)
        x = [yi - lr * force(g, yi, weight_decay, maximize) for yi, g in zip(y, grads)]
        y = [xi + (k - 1) / (k + 2) * (xi - xp) for xi, xp in zip(x, x_prev)]
        x_prev = x
    return y, {"lookahead": [yi - xi for yi, xi in zip(y, x_prev)]}


# ------------------------------------------------------------------------- dynopt, three backends
def run_numpy(name, lr, kw, problem):
    opt = getattr(dynopt.numpy, name)(lr, **kw)
    params = [t.copy() for t in problem.theta0]
    state = opt.init(params)
    for k in range(STEPS):
        updates, state = opt.update(problem.grads(k, params), state, params)
        params = [p + u for p, u in zip(params, updates)]
    return params, state.values


def run_torch(cls_name, lr, kw, problem, **path):
    params = [torch.tensor(t, dtype=torch.float64, requires_grad=True) for t in problem.theta0]
    opt = getattr(dynopt.torch, cls_name)(params, lr=lr, **kw, **path)
    for k in range(STEPS):
        for p, g in zip(params, problem.grads(k, [p.detach().numpy() for p in params])):
            p.grad = torch.from_numpy(g)
        opt.step()
    names = [n for n in opt.state[params[0]] if n != "step"]
    return [p.detach().numpy().copy() for p in params], {n: [opt.state[p][n].numpy() for p in params] for n in names}


def run_jax(name, lr, kw, problem):
    spec = next(s for s in dynopt.REGISTRY.values() if s.jax_name == name)  # the spec itself, in torch's names (as here)
    opt = dynopt.jax.from_spec(spec)(lr, **kw)  # (dynopt.jax.<name> speaks optax: tests/test_optax_names.py)
    params = [jnp.asarray(t, dtype=jnp.float64) for t in problem.theta0]
    state = opt.init(params)
    update = jax.jit(opt.update)
    for k in range(STEPS):
        updates, state = update([jnp.asarray(g) for g in problem.grads(k, params)], state, params)
        params = [p + u for p, u in zip(params, updates)]
    return [np.asarray(p) for p in params], state


def assert_matches(mine, paper, what):
    """Per leaf: max |a − b| / max |b| ≤ 1e-12."""
    for i, (a, b) in enumerate(zip(mine, paper, strict=True)):
        a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
        assert a.shape == b.shape, f"{what} leaf {i}: shape {a.shape} != {b.shape}"
        scale = float(np.max(np.abs(b)))
        err = float(np.max(np.abs(a - b)))
        assert err <= TOL * scale, f"{what} leaf {i}: max |Δ| {err:.3g} > {TOL:g} × {scale:.3g}"


def assert_all_backends(name, cls_name, lr, kw, problem, paper_params, paper_state):
    runs = {"numpy": run_numpy(name, lr, kw, problem),
            "torch": run_torch(cls_name, lr, kw, problem),
            "torch flat=False": run_torch(cls_name, lr, kw, problem, flat=False),
            "jax": run_jax(name, lr, kw, problem)}
    for backend, (params, state) in runs.items():
        assert_matches(params, paper_params, f"{cls_name} {kw} {backend} params")
        for field, leaves in paper_state.items():
            got = state[field] if isinstance(state, dict) else getattr(state, field)
            assert_matches(got, leaves, f"{cls_name} {kw} {backend} state {field}")
    # and the run went somewhere: 20 steps moved every leaf well beyond the tolerance
    for start, end in zip(problem.theta0, paper_params):
        assert np.max(np.abs(end - start)) > 1e-3 * np.max(np.abs(start))


# ------------------------------------------------------------------------- the cases
VARIANTS = ("positive", "simplex", "signed", "signed_simplex")
NORMALIZED = ("simplex", "signed_simplex")
# (seed, lr, extra hyperparameters): plain; decay with another total and split; maximize + decay + an axis
EG_CASES = [
    (0, 0.05, {}),
    (1, 0.08, {"weight_decay": 0.05, "total": 1.7, "init_scale": 0.4}),
    (2, 0.03, {"weight_decay": 0.02, "maximize": True, "total": 0.6, "init_scale": 1.5, "axis": 1}),
]


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("seed, lr, extra", EG_CASES, ids=["plain", "decay", "maximize-axis"])
def test_eg_equals_kivinen_warmuth(variant, seed, lr, extra):
    kw = dict(extra)
    if variant not in NORMALIZED:  # total and axis belong to the simplex variants
        kw.pop("total", None), kw.pop("axis", None)
    if variant not in ("signed", "signed_simplex"):
        kw.pop("init_scale", None)
    shapes = [(2, 3), (4, 3)] if "axis" in kw else [(5,), (2, 3)]
    problem = Quadratic(seed, shapes, positive=variant in ("positive", "simplex"), sign=-1.0 if kw.get("maximize") else 1.0)
    params, state = eg_paper(problem, variant, lr, **kw)
    assert_all_backends("eg", "EG", lr, {"variant": variant, **kw}, problem, params, state)
    if variant in NORMALIZED:  # the paper's iterate is on the simplex (a check of this file's own algebra)
        axis, total = kw.get("axis"), kw.get("total", 1.0)
        mass = [np.sum(w, axis=axis) for w in (params if variant == "simplex" else
                                                 [p + m for p, m in zip(state["w_plus"], state["w_minus"])])]
        np.testing.assert_allclose(np.concatenate([np.ravel(m) for m in mass]), total, rtol=1e-13)


@pytest.mark.parametrize("seed, lr, extra", [(3, 0.05, {}), (4, 0.1, {"weight_decay": 0.1}),
                                             (5, 0.04, {"weight_decay": 0.03, "maximize": True})],
                         ids=["plain", "decay", "maximize"])
def test_nesterov_sbc_equals_su_boyd_candes(seed, lr, extra):
    problem = Quadratic(seed, [(5,), (2, 3)], positive=False, sign=-1.0 if extra.get("maximize") else 1.0)
    params, state = sbc_paper(problem, lr, **extra)
    assert_all_backends("nesterov_sbc", "NesterovSBC", lr, extra, problem, params, state)
