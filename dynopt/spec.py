"""The single definition of an optimizer: hyperparameters, state, discrete step, continuous flow.

An optimizer in dynopt is a :class:`Spec`: frozen data plus pure functions, written once and
never mentioning a backend. Every backend (NumPy oracle, ``torch.optim``, optax) and the
reference ODE flow are derived from it.

The functions of a spec receive ``o``, the tree-level maths namespace (:class:`dynopt.tree.TreeMath`),
and parameter-shaped values as :class:`dynopt.tree.Tree` objects, which support elementwise
arithmetic (``a * b + c``) and tree-wide reductions (``o.dot(a, b)``). A spec must not branch in
Python on the *value* of a numeric hyperparameter (under ``optax.inject_hyperparams`` they are
traced); it may branch on static options (booleans) and use :func:`is_static_zero` to skip work
for a hyperparameter that is a literal zero.

The signatures:

``update(o, hp, t, grad, param, state) -> (delta, new_state)``
    One discrete step. ``hp`` holds the hyperparameters by name (``hp.lr`` is the learning rate
    in effect at this step), ``t`` is the 1-based step number, ``grad`` and ``param`` are trees,
    ``state`` holds the state trees by name. Returns the increment ``delta`` (θ_new = θ + delta)
    and a dict with the new value of every state variable.

``vector_field(o, hp, time, param, state, grad) -> (d_param, d_state)``
    The continuous-time dynamics over the same variables (θ and the discrete state), at ODE time
    ``time``; ``grad`` is ∇L(param).

``time_step(hp) -> h``
    How much ODE time one discrete step advances: step k sits at ``time = k * h``.

``modified_field(o, hp, time, param, state, grad, hvp) -> (d_param, d_state)`` (optional)
    The modified equation: the vector field, over the same variables as ``vector_field``, that
    the iterates follow to one order higher in h (backward error analysis). ``hvp(v)`` returns
    the Hessian-of-the-loss-vector product ∇²L(param)·v as a tree (the spec applies ``maximize``
    and weight decay itself). ``dynopt.ode.flow(..., modified=True)`` integrates it.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping

__all__ = [
    "Check",
    "Hyper",
    "one_of",
    "optional_int",
    "Spec",
    "interval",
    "is_static_zero",
    "nonnegative",
    "REGISTRY",
    "register",
]


def is_static_zero(value: Any) -> bool:
    """True only for a literal Python zero: safe to skip work without branching on a traced value."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


# ----------------------------------------------------------------------------- validation


def _as_real(value: Any) -> float:
    """A concrete real number from a float, int, or 1-element array/tensor; TypeError otherwise."""
    if isinstance(value, bool):
        raise TypeError("a bool is not a number here")
    if isinstance(value, numbers.Real):
        return float(value)
    numel = getattr(value, "numel", None)
    size = numel() if callable(numel) else getattr(value, "size", None)
    if size is not None and not isinstance(value, (str, bytes)):
        if size != 1:
            raise ValueError(f"must have exactly 1 element, got {size}")
        return float(value.reshape(()) if hasattr(value, "reshape") else value)
    raise TypeError(f"must be a real number, got {type(value).__name__}")


@dataclass(frozen=True)
class Check:
    """A validation rule: ``test(x)`` on a concrete float, described by ``rule`` in messages."""

    test: Callable[[float], bool]
    rule: str


def interval(low: float, high: float = math.inf, *, low_open: bool = False, high_open: bool = True) -> Check:
    """Values in the interval between ``low`` and ``high`` (closed below, open above by default)."""
    left, right = ("(" if low_open else "["), (")" if high_open else "]")
    text = f">= {low}" if high == math.inf and not low_open else f"in {left}{low}, {high}{right}"
    if high == math.inf and low_open:
        text = f"> {low}"

    def test(x: float) -> bool:
        above = x > low if low_open else x >= low
        below = x < high if high_open else x <= high
        return above and below and not math.isnan(x)

    return Check(test, f"must be {text}")


nonnegative = interval(0.0)
unit_interval = interval(0.0, 1.0)  # [0, 1): momentum, decay rates


def one_of(*choices: Any) -> Check:
    """A static option that takes one of ``choices``."""
    return Check(lambda value: any(value == c and type(value) is type(c) for c in choices), f"must be one of {choices}")


def optional_int() -> Check:
    """A static option that is an int (an axis) or None."""
    return Check(lambda value: value is None or (isinstance(value, int) and not isinstance(value, bool)), "must be an int or None")


@dataclass(frozen=True)
class Hyper:
    """One hyperparameter: name, default, meaning, and its validation.

    ``static`` options are fixed at construction and a spec may branch on them: Python booleans,
    or, with a ``check`` such as :func:`one_of`, any value the check accepts. Numeric ones may be
    traced values in JAX. ``length`` > 0 declares a tuple of that many numbers (``betas``), each
    checked against ``check``.
    """

    name: str
    default: Any
    doc: str
    check: Check | None = None
    static: bool = False
    length: int = 0
    label: str = ""

    def message(self, value: Any, reason: str) -> str:
        label = self.label or f"{self.name} value"
        return f"Invalid {label}: {value!r} ({reason})"

    def validate(self, value: Any, is_concrete: Callable[[Any], bool]) -> None:
        """Raise ValueError/TypeError naming the argument and value; skip traced or scheduled values."""
        if self.static:
            if self.check is None and not isinstance(value, bool):
                raise TypeError(self.message(value, "must be a bool"))
            if self.check is not None and not self.check.test(value):
                raise ValueError(self.message(value, self.check.rule))
            return
        items = value
        if self.length:
            if not isinstance(value, (tuple, list)) or len(value) != self.length:
                raise TypeError(self.message(value, f"must be a tuple of {self.length} numbers"))
        else:
            items = (value,)
        for item in items:
            if not is_concrete(item):
                continue
            try:
                x = _as_real(item)
            except TypeError as err:
                raise TypeError(self.message(value, str(err))) from None
            except ValueError as err:
                raise ValueError(self.message(value, str(err))) from None
            if self.check is not None and not self.check.test(x):
                raise ValueError(self.message(value, self.check.rule))


LR = "lr"


@dataclass(frozen=True)
class Spec:
    """An optimizer written once: continuous dynamics plus a discretization.

    Optional parts, for optimizers that need them:

    ``initial_state(o, hp, param) -> dict``
        The state at step 0 as a function of the parameters (default: zeros).
    ``scalars(hp) -> {name: initial value}``
        Global scalar state, one value shared by all parameters (a meta-learned step size).
    ``reductions(o, hp, grad, param, state) -> {name: scalar}``
        Sums over *all* parameters, computed before the step; every backend adds them up over
        everything it steps at once (in torch: all param groups) and passes the totals to
        ``update(..., totals=...)``. Use this, not ``o.dot`` inside ``update``, for a reduction that
        must span param groups.
    ``effective_lr(hp, scalars) -> step size``
        The step size in effect given the global scalars, for logging and plots (default: ``hp.lr``;
        the meta-step wrappers return ``hp.lr * scalars["scale"]``).
    ``check_param(o, hp, leaf) -> reason or None``
        Validates one parameter when the optimizer is built (positivity for EG); backends raise
        ``ValueError`` naming the param group and index.
    ``modified_field(o, hp, time, param, state, grad, hvp) -> (d_param, d_state)``
        The order-h correction of ``vector_field`` (see the module docstring); None when the
        spec does not state one.

    Attributes:
        name: class-style name (``"Momentum"``); the torch class takes it, the optax factory
            takes ``name.lower()`` unless ``jax_name`` is given.
        hyperparams: every hyperparameter, the learning rate ``lr`` first.
        state: names of the parameter-shaped state variables, as a function of the
            hyperparameters (so that, for instance, ``grad_avg`` exists only when ``centered``).
        update, vector_field, time_step: see the module docstring.
        needs_params: whether ``update`` reads ``param`` for these hyperparameters.
        ode, scheme, hyper_map: one-line formulas for docs and the README table.
        doc: the long docstring (math, conventions, references) of the generated classes.
    """

    name: str
    hyperparams: tuple[Hyper, ...]
    state: Callable[[SimpleNamespace], tuple[str, ...]]
    update: Callable[..., tuple[Any, dict]]
    vector_field: Callable[..., tuple[Any, dict]]
    time_step: Callable[[SimpleNamespace], Any]
    needs_params: Callable[[SimpleNamespace], bool]
    ode: str
    scheme: str
    hyper_map: str
    doc: str = ""
    jax_name: str = ""
    initial_state: Callable[..., dict] | None = None
    scalars: Callable[[SimpleNamespace], dict[str, float]] = field(default=lambda hp: {})
    reductions: Callable[..., dict] | None = None
    check_param: Callable[..., str | None] | None = None
    effective_lr: Callable[[SimpleNamespace, dict], Any] | None = None
    modified_field: Callable[..., tuple[Any, dict]] | None = None

    def __post_init__(self) -> None:
        names = [h.name for h in self.hyperparams]
        if not names or names[0] != LR:
            raise ValueError(f"Spec {self.name!r}: the first hyperparameter must be 'lr', got {names[:1]}")
        if len(set(names)) != len(names):
            raise ValueError(f"Spec {self.name!r}: duplicate hyperparameter names {names}")
        for name in ("step", "count", "params"):
            if name in names:
                raise ValueError(f"Spec {self.name!r}: {name!r} is reserved and cannot be a hyperparameter")
        if not self.jax_name:
            object.__setattr__(self, "jax_name", self.name.lower())

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparams}

    def validate(self, hp: Mapping[str, Any], is_concrete: Callable[[Any], bool] = lambda v: True) -> None:
        """Check every hyperparameter in ``hp``; unknown names raise TypeError."""
        known = {h.name: h for h in self.hyperparams}
        for name in hp:
            if name not in known:
                raise TypeError(f"{self.name} got an unexpected hyperparameter {name!r}; expected one of {list(known)}")
        for name, value in hp.items():
            known[name].validate(value, is_concrete)

    def initial(self, o, hp: SimpleNamespace, param) -> dict:
        """The state variables at step 0 (zeros unless the spec says otherwise)."""
        if self.initial_state is not None:
            return self.initial_state(o, hp, param)
        return {name: o.zeros_like(param) for name in self.state(hp)}

    def step_size(self, hp: SimpleNamespace, scalars: Mapping[str, Any]) -> Any:
        """The effective learning rate at hyperparameters ``hp`` (lr in effect) and global ``scalars``."""
        return hp.lr if self.effective_lr is None else self.effective_lr(hp, scalars)

    def check_params(self, o, hp: SimpleNamespace, leaves, where: Callable[[int], str]) -> None:
        """Raise ValueError for the first parameter that ``check_param`` rejects."""
        if self.check_param is None:
            return
        for index, leaf in enumerate(leaves):
            reason = self.check_param(o, hp, leaf)
            if reason:
                raise ValueError(f"{self.name}: invalid {where(index)}: {reason}")

    def namespace(self, hp: Mapping[str, Any]) -> SimpleNamespace:
        """Attribute access to hyperparameters, defaults filled in."""
        return SimpleNamespace(**{**self.defaults, **hp})


REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add a spec to the registry that drives the test matrix and the docs table."""
    if spec.name in REGISTRY and REGISTRY[spec.name] is not spec:
        raise ValueError(f"a spec named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec
