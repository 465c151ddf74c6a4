"""Shared test problems and the registry of configurations that drives the parity tests.

Every expected value in the tests comes from an oracle (the NumPy backend, torch.optim, optax)
or from algebra written in the test; nothing here is a golden number.
"""

from __future__ import annotations

import ast
import zlib
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
    shapes: tuple = tuple(SHAPES)

    def grads(self, k: int, params, xp_matmul):
        out, offset = [], 0
        for A, c, p, shape in zip(self.A, self.c, params, self.shapes):
            n = A.shape[0]
            flat = p.reshape(-1)
            g = xp_matmul(A, flat - c) + self.noise[k, offset : offset + n]
            out.append(self.sign * g.reshape(shape))
            offset += n
        return out


def shapes_for(spec, shapes=SHAPES) -> list[tuple]:
    """The shapes among ``shapes`` whose parameters ``spec`` accepts (its ``check_param`` on a leaf of ones):
    all of them, except for an optimizer of matrices only (Muon: 2-D parameters)."""
    if spec is None or spec.check_param is None:
        return list(shapes)
    from dynopt.tree import ArrayLeafOps, TreeMath

    o = TreeMath(ArrayLeafOps(np))
    return [s for s in shapes if not spec.check_param(o, spec.namespace({}), np.ones(s))]


def make_problem(seed: int, steps: int, curvature: float = 2.0, maximize: bool = False, positive: bool = False,
                 spec=None) -> Problem:
    """``spec``: keep only the shapes of :data:`SHAPES` that it accepts (:func:`shapes_for`)."""
    rng = np.random.default_rng(seed)
    A, c, theta0 = [], [], []
    shapes = shapes_for(spec) if spec is not None else SHAPES
    for shape in shapes:
        n = int(np.prod(shape))
        M = rng.normal(size=(n, n))
        Q, _ = np.linalg.qr(M)
        A.append(Q @ np.diag(rng.uniform(0.1, curvature, size=n)) @ Q.T)
        c.append(rng.normal(size=n) + 1.0)
        theta0.append(np.abs(rng.normal(size=shape)) + 0.1 if positive else rng.normal(size=shape))
    total = sum(int(np.prod(s)) for s in shapes)
    return Problem(A, c, 0.1 * rng.normal(size=(steps, total)), theta0, -1.0 if maximize else 1.0, tuple(shapes))


# Hyperparameters whose value 0 is a choice of its own: it switches a term, a branch or a state
# variable off (momentum 0 is plain SGD and drops RMSprop's buffer, gain_lr 0 drops the gains,
# trace_decay 0 takes the last step alone), and a literal 0 is folded away by the tree maths.
ZERO, NONZERO = "zero", "non-zero"
ZERO_OR_NOT = ("momentum", "dampening", "weight_decay", "gain_lr", "trace_decay")

# The values that switch the noise of a spec with a random stream (Spec.random_seed) off, for the suites that compare
# backends: torch, NumPy and JAX draw from different streams (NoisySGD's eta; its noise is tested on its own).
NOISE_OFF = {"eta": 0.0}

# Continuous draws; for a ZERO_OR_NOT hyperparameter, its non-zero value.
RANDOM = {
    "momentum": lambda rng: float(rng.uniform(0.05, 0.95)),
    "alpha": lambda rng: float(rng.uniform(0.5, 0.999)),
    "betas": lambda rng: (float(rng.uniform(0.5, 0.95)), float(rng.uniform(0.9, 0.9999))),
    "dampening": lambda rng: float(rng.uniform(0.05, 0.9)),
    "weight_decay": lambda rng: float(rng.uniform(0.01, 0.1)),
    "eps": lambda rng: float(10 ** rng.uniform(-8, -2)),
    "total": lambda rng: float(rng.uniform(0.5, 2.0)),
    "init_scale": lambda rng: float(rng.uniform(0.1, 2.0)),
    "meta_lr": lambda rng: float(rng.uniform(0.0, 0.05)),
    "gain_lr": lambda rng: float(rng.uniform(0.005, 0.05)),
    "shrink_lr": lambda rng: float(rng.uniform(0.0, 0.1)),
    "brake_cos": lambda rng: float(rng.uniform(-0.5, 0.9)),
    "max_log_step": lambda rng: float(rng.uniform(0.01, 0.2)),
    "scale_range": lambda rng: (0.1, 10.0),
    "gain_range": lambda rng: (0.5, 2.0),
    "trace_decay": lambda rng: float(rng.uniform(0.0, 0.97)),
    "initial_scale": lambda rng: float(10 ** rng.uniform(-1, 0.5)),
    "lr_decay": lambda rng: float(rng.uniform(0.0, 0.1)),
    "initial_accumulator_value": lambda rng: float(rng.uniform(0.0, 1.0)),
    "rho": lambda rng: float(rng.uniform(0.5, 0.99)),
    "etas": lambda rng: (float(rng.uniform(0.3, 0.9)), float(rng.uniform(1.05, 1.5))),
    "step_sizes": lambda rng: (float(10 ** rng.uniform(-7, -4)), float(rng.uniform(0.005, 0.05))),  # the cap binds
    "momentum_decay": lambda rng: float(10 ** rng.uniform(-3, -1)),
    "lambd": lambda rng: float(10 ** rng.uniform(-4, -1)),
    "t0": lambda rng: float(rng.integers(0, 150)),  # averaging starts within the 200 steps
    "ns_coefficients": lambda rng: tuple(float(x + rng.uniform(-0.05, 0.05)) for x in (3.4445, -4.7750, 2.0315)),
    "eps_root": lambda rng: float(10 ** rng.uniform(-16, -8)),
    "trust_coefficient": lambda rng: float(10 ** rng.uniform(-3, 0)),  # LARS
    "beta2_decay": lambda rng: float(rng.uniform(-1.0, -0.5)),  # Adafactor
    "d": lambda rng: float(rng.uniform(1.0, 2.0)),  # Adafactor's clipping threshold (RMS(U) exceeds 1 at first)
    # NoisySGD: torch, NumPy and JAX draw from different random streams, and these cases drive cross-backend parity,
    # so no noise (the rule is then SGD's, with its annealing clock unused); tests/test_optax_noisy_muon.py tests the
    # noise itself (optax's draws exactly, torch's checkpoints, the statistics of every backend)
    "eta": lambda rng: NOISE_OFF["eta"],
    "gamma": lambda rng: float(rng.uniform(0.0, 1.0)),
}
# Draws of one spec's own hyperparameter where its name means something else elsewhere (Adafactor's eps is a pair
# (ε₁, ε₂), ε₁ None or a number).
RANDOM_OF = {
    ("Adafactor", "eps"): lambda rng: (None if rng.uniform() < 0.5 else float(10 ** rng.uniform(-8, -3)),
                                       float(10 ** rng.uniform(-4, -2))),
}
# Static options the draws leave at their default, and why.
NOT_DRAWN = {"axis": "one axis must exist in every leaf, and SHAPES has a 0-d leaf (tests/test_independent.py covers axis=1)",
             "key": "NoisySGD's seed, an int: the default 0 (the cases have eta = 0: no noise, see RANDOM)",
             "ns_steps": "Muon's Newton–Schulz iteration count, an int: the default 5 (tests/test_adafactor_muon.py and "
                         "torch's optim_db grid in tests/test_conformance_torch.py vary it)"}


def choices(h) -> tuple | None:
    """The discrete choices of one hyperparameter: both values of a bool, every value of a ``one_of``
    option (read from the spec's own validation message), zero or not for ZERO_OR_NOT; None otherwise."""
    if h.static and h.check is None:
        return (False, True)
    if h.static and h.check.rule.startswith("must be one of "):
        return tuple(ast.literal_eval(h.check.rule.removeprefix("must be one of ")))
    if h.static:
        assert h.name in NOT_DRAWN, f"hyper_cases does not know the static option {h.name}; add it to NOT_DRAWN or teach choices()"
        return None
    if h.name in ZERO_OR_NOT and h.check.test(0.0):
        return (ZERO, NONZERO)
    return None


def compatible(spec, *, torch_compatible=False, optax_compatible=False) -> dict:
    """The options a reference cannot express, at the value it has: torch.optim.RMSprop puts ε outside
    the square root only; optax's aliases have no weight decay, dampening or maximize, and its amsgrad differs."""
    fixed = {}
    if torch_compatible:
        fixed["eps_in_sqrt"] = False
    if optax_compatible:  # optax.amsgrad takes the maximum of the bias-corrected v, torch of the raw v
        fixed.update(weight_decay=0.0, dampening=0.0, maximize=False, amsgrad=False)
    names = {h.name for h in spec.hyperparams}
    return {k: v for k, v in fixed.items() if k in names}


def hyper_cases(spec, n: int, seed: int, **compat) -> list[dict]:
    """``n`` valid hyperparameter sets for ``spec`` (n a power of 2), stratified so that every discrete
    choice (see :func:`choices`) takes each of its values in some case: a choice with two values follows
    a Walsh column (case i is at level parity(popcount(i & m)) for a mask m), neighbouring choices get
    different masks, so two of them (momentum and dampening) meet in all four combinations; a choice
    with more values follows a random permutation of the cases. The rest is drawn from RANDOM.
    ``compat``: ``torch_compatible`` / ``optax_compatible``, see :func:`compatible`.

    A case that breaks one of the spec's joint rules (``spec.constraints``: SGD's nesterov needs
    momentum and no dampening) has its boolean options set back to their defaults; if the cases then
    miss a choice, the design is drawn again from the next seed (deterministically)."""
    assert n >= 2 and n & (n - 1) == 0, f"n = {n} must be a power of 2"
    for attempt in range(100):
        seeds = [seed, zlib.crc32(spec.name.encode())] + ([attempt] if attempt else [])
        cases, design = _draw_cases(spec, n, np.random.default_rng(seeds), compatible(spec, **compat))
        if spec.constraints is None or _repair(spec, cases, design):
            return cases
    raise AssertionError(f"hyper_cases found no valid stratified design for {spec.name}")


def _valid(spec, hp: dict) -> bool:
    try:
        spec.validate(hp)
    except ValueError:
        return False
    return True


def _repair(spec, cases: list[dict], design: dict) -> bool:
    """Make each case satisfy the spec's joint rules by resetting boolean options; True when every choice
    of the design still occurs, and a dampening occurs both zero and non-zero with a non-zero momentum."""
    flags = [h for h in spec.hyperparams if h.static and h.check is None]
    for hp in cases:
        for h in flags:
            if not _valid(spec, hp) and hp[h.name] is not h.default:
                hp[h.name] = h.default
        if not _valid(spec, hp):
            return False
    for name, column in design.items():
        if {drawn_level(hp, name) for hp in cases} != set(column):
            return False
    if "momentum" in design and "dampening" in design:
        return {drawn_level(hp, "dampening") for hp in cases if hp["momentum"] != 0} == {ZERO, NONZERO}
    return True


def drawn_level(hp: dict, name: str):
    value = hp[name]
    return value if value is None or isinstance(value, (bool, str)) else (ZERO if value == 0 else NONZERO)


def _draw_cases(spec, n: int, rng, fixed: dict) -> tuple[list[dict], dict]:
    masks, binary, design = rng.permutation(np.arange(1, n)), 0, {}
    for h in spec.hyperparams[1:]:
        levels = None if h.name in fixed else choices(h)
        if levels is None:
            continue
        assert len(levels) <= n, f"{spec.name}.{h.name} has {len(levels)} choices, more than the {n} cases"
        if len(levels) == 2:
            mask, flip = int(masks[binary % (n - 1)]), int(rng.integers(2))
            binary += 1
            column = [(bin(i & mask).count("1") + flip) % 2 for i in range(n)]
        else:
            perm = rng.permutation(n)
            column = [int(perm[i]) % len(levels) for i in range(n)]
        design[h.name] = [levels[j] for j in column]
    cases = []
    for i in range(n):
        hp: dict = {"lr": float(10 ** rng.uniform(-3, -1.5))}
        for h in spec.hyperparams[1:]:
            level = design.get(h.name, [None] * n)[i]
            if h.name in fixed:
                hp[h.name] = fixed[h.name]
            elif h.name in design and level is None:  # None is one of the option's choices (Muon's adjust_lr_fn)
                hp[h.name] = None
            elif level == ZERO:
                hp[h.name] = 0.0
            elif level is None and (spec.name, h.name) in RANDOM_OF:
                hp[h.name] = RANDOM_OF[spec.name, h.name](rng)
            elif level == NONZERO or (level is None and h.name in RANDOM):
                hp[h.name] = RANDOM[h.name](rng)
            elif level is not None or h.name in NOT_DRAWN:
                hp[h.name] = level if level is not None else h.default
            else:
                raise AssertionError(f"hyper_cases does not know {h.name}; add it to RANDOM")
        cases.append(hp)
    return cases, design


def needs_positive_params(hp: dict) -> bool:
    return hp.get("variant") in ("positive", "simplex")


def rel_diff(a, b) -> float:
    """max |a − b| / max |b| over one leaf (the scale of b, so a leaf near zero is not amplified)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.max(np.abs(b)) if b.size else 0.0
    return float(np.max(np.abs(a - b)) / scale) if scale > 0 else float(np.max(np.abs(a - b), initial=0.0))
