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

``vector_field(o, hp, time, grad, param, state) -> (d_param, d_state)``
    The continuous-time dynamics over the same variables (θ and the discrete state), at ODE time
    ``time``; ``grad`` is ∇L(param). The arguments come in ``update``'s order.

``time_step(hp) -> h``
    How much ODE time one discrete step advances: step k sits at ``time = k * h``.

``modified_field(o, hp, time, grad, param, state, hvp) -> (d_param, d_state)`` (optional)
    The modified equation: the vector field, over the same variables as ``vector_field``, that
    the iterates follow to one order higher in h (backward error analysis). ``hvp(v)`` returns
    the Hessian-of-the-loss-vector product ∇²L(param)·v as a tree (the spec applies ``maximize``
    and weight decay itself). ``dynopt.ode.flow(..., modified=True)`` integrates it.

Most optimizers are not written with these functions by hand: :func:`dynopt.statement.from_statement`
derives ``update`` and ``vector_field`` from one ODE *statement* and a scheme
(:mod:`dynopt.schemes`). Only rules that are discrete by nature (the meta step's lagged
hypergradient, NesterovSBC's k-dependent momentum) write ``update`` themselves.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Callable, Mapping

__all__ = [
    "Check",
    "Hyper",
    "OptaxView",
    "one_of",
    "optional_int",
    "Spec",
    "interval",
    "is_static_zero",
    "scalar_value",
    "nonnegative",
    "REGISTRY",
    "register",
]


def is_static_zero(value: Any) -> bool:
    """True only for a literal Python zero: safe to skip work without branching on a traced value."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and value == 0


def scalar_value(value: Any, name: str) -> Any:
    """A numeric hyperparameter as backends use it: an array or tensor of one element (shape (1,), as
    optax accepts a learning rate) as a 0-dim one; a number, a 0-dim value or a callable as it is.
    ValueError naming ``name`` for more than one element (a tree operation takes scalars only)."""
    shape = getattr(value, "shape", None)
    if shape is None or callable(value) or len(shape) == 0:
        return value
    if math.prod(shape) == 1:
        return value.reshape(())
    raise ValueError(f"Invalid {name} value: an array of shape {tuple(shape)} (must be a scalar or have exactly 1 element)")


_PLAIN = frozenset({float, int, bool, str, type(None)})


def _has_dims(value: Any) -> bool:
    """An array or tensor of at least one dimension, alone or in a tuple (cheap for plain numbers)."""
    kind = type(value)
    if kind in _PLAIN:
        return False
    if kind is tuple or kind is list:
        return any(map(_has_dims, value))
    return bool(getattr(value, "shape", None))


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
    checked against ``check``. ``ordered`` (with ``length``): a range ``(low, high)`` whose items
    must not decrease; a reversed one raises ValueError. ``shared``: one value for every torch param
    group (it drives a global scalar of the spec, e.g. the meta step's scale); the torch backend
    refuses param groups that set different values. ``keyword_only``: keyword-only in the torch class
    (torch.optim's signatures put ``maximize`` and some flags after ``*``), so positional calls bind as
    in torch.optim. ``optional``: the positions of a tuple's items that may be None (torch.optim.Adafactor's
    ``eps=(None, 1e-3)``: None stands for a value the spec picks at the step); a None item is not checked.
    ``schedule``: the value may also be a schedule, a callable of the step count evaluated at every step as the
    learning rate's is (optax.contrib.muon's ``adam_learning_rate``); the learning rate always may be one.
    ``formerly``: the names this hyperparameter had in an earlier release, one per item of a tuple (``betas`` was
    ``b1`` and ``b2`` in dynopt.torch.Lion): passing one raises TypeError with the migration, and a torch param group
    saved with them loads as this hyperparameter.
    """

    name: str
    default: Any
    doc: str
    check: Check | None = None
    static: bool = False
    length: int = 0
    label: str = ""
    ordered: bool = False
    shared: bool = False
    keyword_only: bool = False
    optional: tuple[int, ...] = ()
    schedule: bool = False
    formerly: tuple[str, ...] = ()

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
        for position, item in enumerate(items):
            if item is None and position in self.optional:
                continue
            if callable(item) and self.name != LR and not self.schedule:  # backends evaluate these schedules only
                raise TypeError(self.message(value, "only the learning rate may be a schedule (a callable); "
                                                    "in optax, optax.inject_hyperparams schedules any hyperparameter"))
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
        if self.ordered and all(map(is_concrete, items)) and all(item is not None for item in items):
            bounds = [_as_real(item) for item in items]
            if any(high < low for low, high in zip(bounds, bounds[1:])):
                raise ValueError(self.message(value, "a range (low, high) must have low <= high"))


LR = "lr"


@dataclass(frozen=True)
class OptaxView:
    """How an optimizer reads in optax: optax's factory for it, as data that ``dynopt.jax`` builds from.

    ``dynopt.torch`` follows torch.optim and ``dynopt.jax`` follows optax: where the two ecosystems name,
    default or compute an optimizer differently (``betas`` vs ``b1``/``b2``, RMSprop's ε inside the root,
    AMSGrad's maximum of the bias-corrected v), a spec carries one view per optax factory in
    ``Spec.optax``, and the JAX backend builds ``dynopt.jax.<name>`` from the view instead of the spec.

    Attributes:
        name: the optax name of the factory (``"adam"``, ``"amsgrad"``).
        spec: the statement the factory computes, with optax's algorithm (a :class:`Spec`, not registered).
        arguments: optax's arguments in optax's order, ``learning_rate`` first, as :class:`Hyper` objects
            (name, default, validation; ``keyword_only`` ones come after ``*``). A numeric argument whose
            default is None (``sgd``'s ``momentum``) also takes None. Arguments that are not numbers nor
            flags (``mu_dtype``, ``mask``) are ``static`` with a check that accepts what optax accepts.
        dtypes: pairs ``(argument, state variable)``: the argument names the dtype the variable is stored in
            (``("mu_dtype", "mu")``); None keeps the parameter's dtype.
        masks: pairs ``(argument, hyperparameter)``: the argument is optax's mask (a pytree of bools like the
            parameters, or a callable ``params -> pytree``) of the leaves where the hyperparameter applies; it is
            0 on the others (``("mask", "weight_decay")``).
        to_spec: optax's arguments (a dict, dtypes and masks removed) -> the hyperparameters of ``spec``,
            ``lr`` included. None: ``learning_rate`` becomes ``lr``, every other argument keeps its name.
        namespace: where optax keeps the factory: "" for ``optax.<name>`` (exported as ``dynopt.jax.<name>``),
            "contrib" for ``optax.contrib.<name>`` (``dynopt.jax.contrib.<name>``). A spec whose views all live in a
            namespace keeps its own factory in ``dynopt.jax`` (``muon_torch``).
        leafwise: pairs ``(hyperparameter, is_value)``: a static argument optax takes as a pytree of per-leaf values
            (a prefix of the parameters: a value, where ``is_value(node)``, or None, applies to every leaf beneath
            it) or as a callable ``params -> such a pytree``; unless None, the spec's hyperparameter is the tuple of
            one value per parameter leaf (``optax.contrib.muon``'s ``muon_weight_dimension_numbers``). An
            ``initial_state`` may then return one leaf per parameter with None where a leaf holds no variable.
    """

    name: str
    spec: Any
    arguments: tuple[Hyper, ...]
    dtypes: tuple[tuple[str, str], ...] = ()
    masks: tuple[tuple[str, str], ...] = ()
    to_spec: Callable[[dict], dict] | None = None
    namespace: str = ""
    leafwise: tuple[tuple[str, Callable[[Any], bool]], ...] = ()

    def __post_init__(self) -> None:
        names = [h.name for h in self.arguments]
        if not names or names[0] != "learning_rate":
            raise ValueError(f"OptaxView {self.name!r}: the first argument must be 'learning_rate', got {names[:1]}")

    def hyperparameters(self, arguments: Mapping[str, Any]) -> dict[str, Any]:
        """The spec's hyperparameters for these optax arguments (dtypes and masks already removed)."""
        if self.to_spec is not None:
            return dict(self.to_spec(dict(arguments)))
        return {(LR if name == "learning_rate" else name): value for name, value in arguments.items()}

    def validate(self, arguments: Mapping[str, Any], is_concrete: Callable[[Any], bool]) -> None:
        """ValueError/TypeError naming the optax argument and its value (traced or scheduled values are skipped)."""
        known = {h.name: h for h in self.arguments}
        for name, value in arguments.items():
            h = known[name]
            if value is None and h.default is None:
                continue  # an optional argument left out (sgd's momentum=None, adadelta's learning_rate=None)
            if name == "learning_rate" and callable(value):
                continue  # a schedule
            h.validate(value, is_concrete)

# Spec.implies flags of derived optimizers (discretize, accumulate); absent: the base optimizer's meaning.
VARIANT_FLAGS = ("scheme", "soft_batch", "embedded")


@dataclass(frozen=True)
class Spec:
    """An optimizer written once: continuous dynamics plus a discretization.

    Optional parts, for optimizers that need them:

    ``initial_state(o, hp, param) -> dict``
        The state at step 0 as a function of the parameters (default: zeros).
    ``scalars(hp) -> {name: initial value}``
        Global scalar state, one value shared by all parameters (a meta-learned step size); with
        ``scalars_per_param``, torch.optim's per-parameter 0-dim state instead (NAdam's ``mu_product``,
        ASGD's ``eta`` and ``mu``): each torch parameter keeps its own value, the parameters of one
        bucket (param group, device, dtype, step count) step with one value, nothing is shared across
        param groups. In optax and NumPy (one set of hyperparameters) it is one value either way.
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
    ``modified_field(o, hp, time, grad, param, state, hvp) -> (d_param, d_state)``
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
        statement: the ODE statement ``update`` and ``vector_field`` were derived from
            (:mod:`dynopt.statement`), or None for a rule written by hand.
        discretization: the :mod:`dynopt.schemes` scheme of ``update`` (None when written by hand).
        gradient_calls: gradients one step needs; above 1, ``update`` takes ``grad_fn=`` (the
            gradient at a parameter point) and ``staged_update`` is a generator that yields each
            intermediate parameter point and receives its gradient (torch drives it with the
            closure, across every param group at once).
        micro_steps: calls per optimizer step (``dynopt.accumulate``); schedules are evaluated at
            ``count // micro_steps``.
        meta_defaults: defaults of :func:`dynopt.meta_step`'s hyperparameters when it wraps this optimizer,
            where the generic ones do not carry (``{"meta_lr": 0.4, "initial_scale": 0.03}`` for Lion and
            Rprop, whose fixed-size sign steps move the scale's alignment little; ``{"initial_scale": 0.1}`` for
            NesterovSBC); the meta step checks them.
        scalable_step: whether :func:`dynopt.meta_step` may multiply this optimizer's step by its scale s: True (the
            default) where the state neither defines θ nor follows the iterates and a scaled step keeps what the
            optimizer keeps (SGD, Adam, Rprop). False for EG (its step θ ⊙ (exp(−lr·F) − 1) scaled can make θ
            negative, and the signed variants' state w± defines θ) and ASGD (its state averages the iterates): the
            meta step runs these at the learning rate lr·s instead, which keeps θ > 0, θ = w⁺ − w⁻ and the average
            of the iterates taken.
        implies: settings this optimizer does not take as hyperparameters but that checkpoints of
            other optimizers carry (torch.optim's flags), with the value under which they mean this
            optimizer: ``{"nesterov": False}`` for heavy-ball momentum, ``{"decoupled_weight_decay":
            False, ...}`` for Adam. The torch backend writes them into its param groups (so
            torch.optim can load dynopt's state_dict) and refuses a state_dict that sets them
            otherwise; a state_dict without them (an older checkpoint) takes these values. A mapping
            or pairs; stored as sorted pairs (the spec stays hashable).
            The flags in ``VARIANT_FLAGS`` (``scheme``, ``soft_batch``, ``embedded``) mark an optimizer derived by
            ``dynopt.discretize`` or ``dynopt.accumulate``; for them a state_dict group without the flag means
            the base optimizer, so the torch backend refuses a checkpoint whose flags differ either way.
        counts_steps: whether ``update`` depends on the step number t other than through t > 1
            (Adam's bias correction does). When False, a checkpoint that holds the state but no
            step counter (torch.optim.SGD keeps none) resumes as after its first step.
        sparse_grads: whether a sparse gradient means the same as its dense form here, so the
            torch backend accepts one (densified), as torch.optim.SGD does; when False it raises
            RuntimeError, as torch.optim.Adam does.
        constraints: ``constraints(values) -> (name, reason) or None``, the rules that tie several
            hyperparameters together (torch.optim.SGD: nesterov needs momentum > 0 and no dampening;
            Rprop: 0 < etaminus < 1 < etaplus). ``values`` holds every concrete hyperparameter (numbers
            as floats, tuples of floats; traced ones are left out); a violated rule raises ValueError
            naming ``name`` and its value.
        smooth: whether the field is smooth (Lipschitz) in the variables and in time for these
            hyperparameters; False for a sign, a running maximum or a switch in time (Rprop, Adamax,
            AMSGrad, RAdam's warm-up), where the classical order of a higher-order scheme does not apply.
        decoupled_decay: whether the step holds a decoupled weight decay −lr·λ·θ (λ = ``weight_decay``) beside the
            loss's step, for these hyperparameters (Lion's); None: where ``decoupled_weight_decay`` says so
            (AdamW's ``implies``, Adam's flag). The meta step leaves that decay out of its hypergradient.
        group_keys: param-group keys that every torch.optim state_dict of this optimizer carries together
            (hyperparameters or implied flags); a state_dict group that sets some of them and lacks others
            comes from another optimizer type (RAdam's has ``decoupled_weight_decay`` but no ``amsgrad``,
            Adam's both), and the torch backend refuses it.
        complex_params: whether complex parameters are stepped (as real views, as torch.optim does); False:
            the torch backend raises RuntimeError ``"<name> does not support complex parameters"`` at the step,
            as torch.optim.Adafactor and Muon do.
        state_shape: ``state_shape(name, param_shape) -> shape`` of state variable ``name`` for a parameter of
            that shape, for state that is not parameter-shaped (Adafactor's row and column factors, created by
            ``initial_state``); None: every state variable has the parameter's shape. The torch backend checks
            a loaded state_dict against it, and its flat path leaves such a spec on the reference path.
            A shape of None: the parameter does not hold that variable (Adafactor keeps ``row_var`` and
            ``col_var`` for matrices, ``variance`` for vectors). The spec's functions then see the variable as
            the tree of the parameters that hold it, in order (``initial_state`` returns it so; ``o.pick``
            takes the matching leaves of another tree, ``o.join`` puts per-leaf results back together);
            torch keeps no state entry for the others, optax and NumPy store None there.
        random_seed: ``random_seed(hp) -> seed`` of the spec's random stream (None, the default: the spec draws no
            random numbers). Its statement reads ξ ~ N(0, I), shaped like the parameters, as ``x.noise``, drawn once
            per step (:mod:`dynopt.statement`). Backends keep the stream in the state under ``rng_key`` (beside
            ``spec.state(hp)``), each in its own form: a JAX PRNG key, split as optax splits it; the state of a
            NumPy PCG64 generator; in torch one ``torch.Generator`` state per parameter (a uint8 tensor in
            ``state[p]``, so a checkpoint resumes the same draws). The streams of different backends differ.
        optax: the optax factories of this optimizer (:class:`OptaxView`), which ``dynopt.jax`` exports in place of
            the spec's own (torch-named) factory: Adam's ``adam`` and ``amsgrad``, RMSprop's ``rmsprop`` with ε inside
            the root. Empty (the default): ``dynopt.jax.<jax_name>(learning_rate, <hyperparameters>...)`` computes the
            spec itself. ``dynopt.jax.from_spec`` always computes the spec itself.
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
    statement: Callable[..., Any] | None = None
    discretization: Any = None
    staged_update: Callable[..., Any] | None = None
    gradient_calls: int = 1
    micro_steps: int = 1
    implies: Any = ()
    meta_defaults: Any = ()
    scalable_step: bool = True
    counts_steps: Callable[[SimpleNamespace], bool] = field(default=lambda hp: True)
    sparse_grads: bool = False
    constraints: Callable[[Mapping[str, Any]], tuple[str, str] | None] | None = None
    group_keys: tuple[str, ...] = ()
    scalars_per_param: bool = False
    smooth: Callable[[SimpleNamespace], bool] = field(default=lambda hp: True)
    decoupled_decay: Callable[[SimpleNamespace], bool] | None = None
    optax: tuple[OptaxView, ...] = ()
    complex_params: bool = True
    state_shape: Callable[[str, tuple], tuple] | None = None
    random_seed: Callable[[SimpleNamespace], Any] | None = None

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
        meta = self.meta_defaults.items() if isinstance(self.meta_defaults, Mapping) else self.meta_defaults
        object.__setattr__(self, "meta_defaults", tuple(sorted((str(k), v) for k, v in meta)))
        pairs = self.implies.items() if isinstance(self.implies, Mapping) else self.implies
        object.__setattr__(self, "implies", tuple(sorted((str(k), v) for k, v in pairs)))
        clash = [k for k, _ in self.implies if k in names]
        if clash:
            raise ValueError(f"Spec {self.name!r}: implies {clash}, which are hyperparameters of this spec")

    @functools.cached_property
    def schedulable(self) -> tuple[str, ...]:
        """The hyperparameters that may be a schedule (a callable of the step count): the learning rate, and those
        declared ``Hyper(schedule=True)``."""
        return tuple(h.name for h in self.hyperparams if h.name == LR or h.schedule)

    @property
    def defaults(self) -> dict[str, Any]:
        return {h.name: h.default for h in self.hyperparams}

    @functools.cached_property
    def former_names(self) -> dict[str, Hyper]:
        """The names hyperparameters had in an earlier release (``Hyper.formerly``), each to its hyperparameter."""
        return {old: h for h in self.hyperparams for old in h.formerly if old not in self.defaults}

    def refuse_former_names(self, owner: str, arguments: Mapping[str, Any]) -> None:
        """TypeError with the migration when ``arguments`` (a call's keywords) use a former name of a hyperparameter:
        ``Lion got b1=0.95: b1 and b2 were renamed to torch.optim's 'betas'; pass betas=(0.95, 0.99)``."""
        used = [name for name in arguments if name in self.former_names]
        if not used:
            return
        h = self.former_names[used[0]]
        values = tuple(arguments.get(old, default) for old, default in
                       zip(h.formerly, h.default if h.length else (h.default,)))
        new = values if h.length else values[0]
        given = ", ".join(f"{name}={arguments[name]!r}" for name in used)
        were = "were" if len(h.formerly) > 1 else "was"
        raise TypeError(f"{owner} got {given}: {' and '.join(h.formerly)} {were} renamed to torch.optim's {h.name!r}; "
                        f"pass {h.name}={new!r}")

    def upgrade_group(self, group: Mapping[str, Any]) -> dict[str, Any]:
        """A saved torch param group with hyperparameters under their former names (``Hyper.formerly``) given their
        current names: ``{"b1": 0.9, "b2": 0.99}`` becomes ``{"betas": (0.9, 0.99)}``."""
        group = dict(group)
        for h in self.hyperparams:
            if h.formerly and h.name not in group and all(old in group for old in h.formerly):
                values = tuple(group.pop(old) for old in h.formerly)
                group[h.name] = values if h.length else values[0]
        return group

    def validate(self, hp: Mapping[str, Any], is_concrete: Callable[[Any], bool] = lambda v: True) -> None:
        """Check every hyperparameter in ``hp``; unknown names raise TypeError."""
        known = {h.name: h for h in self.hyperparams}
        for name in hp:
            if name not in known:
                raise TypeError(f"{self.name} got an unexpected hyperparameter {name!r}; expected one of {list(known)}")
        for name, value in hp.items():
            known[name].validate(value, is_concrete)
        if self.constraints is not None:
            merged = {**self.defaults, **hp}
            values = {}
            for name, value in merged.items():
                items = tuple(value) if known[name].length and isinstance(value, (tuple, list)) else (value,)
                if known[name].static:
                    values[name] = value
                elif all(map(is_concrete, items)) and not any(map(callable, items)):
                    reals = tuple(None if item is None else _as_real(item) for item in items)
                    values[name] = reals if known[name].length else reals[0]
            broken = self.constraints(values)
            if broken is not None:
                name, reason = broken
                raise ValueError(known[name].message(merged[name], reason))

    def initial(self, o, hp: SimpleNamespace, param) -> dict:
        """The state variables at step 0 (zeros unless the spec says otherwise)."""
        if self.initial_state is not None:
            return self.initial_state(o, hp, param)
        return {name: o.zeros_like(param) for name in self.state(hp)}

    def shape_of(self, name: str, param_shape: tuple) -> tuple | None:
        """The shape state variable ``name`` has for a parameter of shape ``param_shape`` (see ``state_shape``);
        None where that parameter does not hold it."""
        if self.state_shape is None:
            return tuple(param_shape)
        shape = self.state_shape(name, tuple(param_shape))
        return None if shape is None else tuple(shape)

    def holds(self, name: str, param_shape: tuple) -> bool:
        """Whether a parameter of shape ``param_shape`` holds state variable ``name`` (see ``state_shape``)."""
        return self.state_shape is None or self.state_shape(name, tuple(param_shape)) is not None

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

    def scalar_values(self, hp: Mapping[str, Any]) -> dict[str, Any]:
        """``hp`` with every numeric value, tuple items included, made 0-dim by :func:`scalar_value`."""
        if not any(map(_has_dims, hp.values())):
            return dict(hp)  # no array of at least one dimension: the common case, on every step
        known = {h.name: h for h in self.hyperparams}
        out = dict(hp)
        for name, value in hp.items():
            h = known.get(name)
            if h is None or h.static:
                continue
            if h.length and isinstance(value, (tuple, list)):
                out[name] = type(value)(scalar_value(v, name) for v in value)
            else:
                out[name] = scalar_value(value, name)
        return out

    def namespace(self, hp: Mapping[str, Any]) -> SimpleNamespace:
        """Attribute access to hyperparameters, defaults filled in."""
        return Namespace(**{**self.defaults, **hp})


class Namespace:
    """``types.SimpleNamespace`` (attribute access, equality, repr) as a plain class: torch.compile
    (dynamo) traces the construction of a plain class, not that of ``SimpleNamespace`` (a graph break),
    and a step traced by torch.compile builds these (hyperparameters, state) every step."""

    __hash__ = None  # type: ignore[assignment]  # unhashable, as SimpleNamespace

    def __init__(self, **values: Any):
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"namespace({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"

    def __eq__(self, other: Any) -> bool:
        if isinstance(other, (Namespace, SimpleNamespace)):
            return vars(self) == vars(other)
        return NotImplemented


REGISTRY: dict[str, Spec] = {}


def register(spec: Spec) -> Spec:
    """Add a spec to the registry that drives the test matrix and the docs table."""
    if spec.name in REGISTRY and REGISTRY[spec.name] is not spec:
        raise ValueError(f"a spec named {spec.name!r} is already registered")
    REGISTRY[spec.name] = spec
    return spec
