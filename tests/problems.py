"""Shared test problems and the registry of configurations that drives the parity tests.

Every expected value in the tests comes from an oracle (the NumPy backend, torch.optim, optax)
or from algebra written in the test; nothing here is a golden number.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SHAPES = [(3,), (2, 3), (), (4, 1)]


@dataclass
class Problem:
    """L(θ) = Σ_i ½(θ_i − c_i)ᵀA_i(θ_i − c_i) + ⟨ξ_k, θ_i⟩: a random quadratic with a fixed noise
    sequence ξ_k (so that buffers do not decay to zero) and minimisers away from 0."""

    A: list[np.ndarray]
    c: list[np.ndarray]
    noise: np.ndarray  # (steps, total size)
    theta0: list[np.ndarray]
    sign: float = 1.0  # −1 flips the loss, so that a maximizing optimizer converges too

    def grads(self, k: int, params, xp_matmul):
        out, offset = [], 0
        for A, c, p, shape in zip(self.A, self.c, params, SHAPES):
            n = A.shape[0]
            flat = p.reshape(-1)
            g = xp_matmul(A, flat - c) + self.noise[k, offset : offset + n]
            out.append(self.sign * g.reshape(shape))
            offset += n
        return out


def make_problem(seed: int, steps: int, curvature: float = 2.0, maximize: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    A, c, theta0 = [], [], []
    for shape in SHAPES:
        n = int(np.prod(shape))
        M = rng.normal(size=(n, n))
        Q, _ = np.linalg.qr(M)
        A.append(Q @ np.diag(rng.uniform(0.1, curvature, size=n)) @ Q.T)
        c.append(rng.normal(size=n) + 1.0)
        theta0.append(rng.normal(size=shape))
    total = sum(int(np.prod(s)) for s in SHAPES)
    return Problem(A, c, 0.1 * rng.normal(size=(steps, total)), theta0, -1.0 if maximize else 1.0)


def random_hyper(spec, rng: np.random.Generator, *, torch_compatible=False, optax_compatible=False) -> dict:
    """Random valid hyperparameters covering every option of ``spec``."""
    hp: dict = {"lr": float(10 ** rng.uniform(-3, -1.5))}
    for h in spec.hyperparams[1:]:
        if h.static:
            hp[h.name] = bool(rng.integers(2))
        elif h.name in ("momentum",):
            low = 0.05 if h.check.test(0.0) is False else 0.0
            hp[h.name] = float(rng.choice([low, rng.uniform(max(low, 0.05), 0.95)]))
        elif h.name in ("alpha",):
            hp[h.name] = float(rng.uniform(0.5, 0.999))
        elif h.name == "betas":
            hp[h.name] = (float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999)))
        elif h.name == "dampening":
            hp[h.name] = float(rng.choice([0.0, rng.uniform(0, 0.9)]))
        elif h.name == "weight_decay":
            hp[h.name] = float(rng.choice([0.0, rng.uniform(0, 0.1)]))
        elif h.name == "eps":
            hp[h.name] = float(10 ** rng.uniform(-8, -2))
        else:
            raise AssertionError(f"random_hyper does not know {h.name}; add it here")
    if torch_compatible and "eps_in_sqrt" in hp:
        hp["eps_in_sqrt"] = False
    if optax_compatible:
        for name, neutral in (("weight_decay", 0.0), ("dampening", 0.0), ("maximize", False)):
            if name in hp:
                hp[name] = neutral
    return hp


def rel_diff(a, b) -> float:
    """max |a − b| / max |b| over one leaf (the scale of b, so a leaf near zero is not amplified)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b), initial=0.0))
