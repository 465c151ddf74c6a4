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


def make_problem(seed: int, steps: int, curvature: float = 2.0, maximize: bool = False, positive: bool = False) -> Problem:
    rng = np.random.default_rng(seed)
    A, c, theta0 = [], [], []
    for shape in SHAPES:
        n = int(np.prod(shape))
        M = rng.normal(size=(n, n))
        Q, _ = np.linalg.qr(M)
        A.append(Q @ np.diag(rng.uniform(0.1, curvature, size=n)) @ Q.T)
        c.append(rng.normal(size=n) + 1.0)
        theta0.append(np.abs(rng.normal(size=shape)) + 0.1 if positive else rng.normal(size=shape))
    total = sum(int(np.prod(s)) for s in SHAPES)
    return Problem(A, c, 0.1 * rng.normal(size=(steps, total)), theta0, -1.0 if maximize else 1.0)


RANDOM = {
    "momentum": lambda rng, positive: float(rng.choice([0.05 if positive else 0.0, rng.uniform(0.05, 0.95)])),
    "alpha": lambda rng, _: float(rng.uniform(0.5, 0.999)),
    "betas": lambda rng, _: (float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999))),
    "dampening": lambda rng, _: float(rng.choice([0.0, rng.uniform(0, 0.9)])),
    "weight_decay": lambda rng, _: float(rng.choice([0.0, rng.uniform(0, 0.1)])),
    "eps": lambda rng, _: float(10 ** rng.uniform(-8, -2)),
    "variant": lambda rng, _: str(rng.choice(["positive", "simplex", "signed", "signed_simplex"])),
    "axis": lambda rng, _: None,  # one axis must exist in every leaf, and SHAPES has a 0-d leaf
    "total": lambda rng, _: float(rng.uniform(0.5, 2.0)),
    "init_scale": lambda rng, _: float(rng.uniform(0.1, 2.0)),
    "meta_lr": lambda rng, _: float(rng.uniform(0.0, 0.05)),
    "gain_lr": lambda rng, _: float(rng.choice([0.0, rng.uniform(0.0, 0.05)])),
    "rule": lambda rng, _: str(rng.choice(["eg", "hd"])),
    "shrink_lr": lambda rng, _: float(rng.uniform(0.0, 0.1)),
    "brake_cos": lambda rng, _: float(rng.uniform(-0.5, 0.9)),
    "max_log_step": lambda rng, _: float(rng.uniform(0.01, 0.2)),
    "scale_range": lambda rng, _: (0.1, 10.0),
    "gain_range": lambda rng, _: (0.5, 2.0),
}


def random_hyper(spec, rng: np.random.Generator, *, torch_compatible=False, optax_compatible=False) -> dict:
    """Random valid hyperparameters covering every option of ``spec``."""
    hp: dict = {"lr": float(10 ** rng.uniform(-3, -1.5))}
    for h in spec.hyperparams[1:]:
        if h.name in RANDOM:
            hp[h.name] = RANDOM[h.name](rng, h.check is not None and not h.check.test(0.0))
        elif h.static and h.check is None:
            hp[h.name] = bool(rng.integers(2))
        else:
            raise AssertionError(f"random_hyper does not know {h.name}; add it to RANDOM")
    if torch_compatible and "eps_in_sqrt" in hp:
        hp["eps_in_sqrt"] = False
    if optax_compatible:
        for name, neutral in (("weight_decay", 0.0), ("dampening", 0.0), ("maximize", False)):
            if name in hp:
                hp[name] = neutral
    return hp


def needs_positive_params(hp: dict) -> bool:
    return hp.get("variant") in ("positive", "simplex")


def rel_diff(a, b) -> float:
    """max |a − b| / max |b| over one leaf (the scale of b, so a leaf near zero is not amplified)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b), initial=0.0))
