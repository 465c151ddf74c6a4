"""The optax views of the zoo (:class:`dynopt.spec.OptaxView`): optax's arguments and a builder.

``dynopt.jax`` follows optax: ``dynopt.jax.adam(learning_rate, b1, b2, eps, eps_root, mu_dtype, *,
nesterov)`` takes optax's arguments, in optax's order, with optax's defaults, and computes optax's
numbers; ``dynopt.torch.Adam`` keeps torch.optim's. Where the algorithms differ (RMSprop's ε inside
the root, Adagrad's initial accumulator, AMSGrad's maximum of the bias-corrected v, NAdam's form),
the optimizer's file writes optax's rule as a second statement, in optax's variable names (``mu``,
``nu``, ``trace``), and :func:`view` ties it to the argument list. A spec without a view keeps its
own factory, ``(learning_rate, <hyperparameters>...)``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

from ..schemes import SemiImplicitEuler
from ..spec import Check, Hyper, OptaxView, interval, is_static_zero, nonnegative, unit_interval
from ..statement import from_statement

__all__ = ["REQUIRED", "ANY", "learning_rate", "b1", "b2", "eps", "EPS_ROOT", "MU_DTYPE", "NESTEROV_KW", "weight_decay",
           "MASK", "abs_sq", "view"]

REQUIRED = inspect.Parameter.empty  # an argument without a default (optax's learning_rate)
ANY = Check(lambda value: True, "any value optax accepts")


def learning_rate(default: Any = REQUIRED) -> Hyper:
    return Hyper("learning_rate", default, "learning rate: a number, or an optax schedule of the step count", nonnegative,
                 label="learning rate")


def b1(default: float = 0.9) -> Hyper:
    return Hyper("b1", default, "decay β₁ of the first moment", unit_interval)


def b2(default: float = 0.999) -> Hyper:
    return Hyper("b2", default, "decay β₂ of the second moment", unit_interval)


def eps(default: float, doc: str = "ε added to the root of the second moment") -> Hyper:
    return Hyper("eps", default, doc, interval(0.0), label="epsilon value")


EPS_ROOT = Hyper("eps_root", 0.0, "ε added to the second moment inside the root", interval(0.0))
MU_DTYPE = Hyper("mu_dtype", None, "dtype of the first moment (None: the parameters' dtype)", ANY, static=True)
NESTEROV_KW = Hyper("nesterov", False, "Nesterov momentum in the first moment (optax.nadam's form)", static=True,
                    keyword_only=True)
MASK = Hyper("mask", None, "pytree of bools (or params -> pytree) of the leaves that take weight decay", ANY, static=True)


def weight_decay(default: float, doc: str = "decoupled weight decay λ: λθ added to the update before the lr") -> Hyper:
    return Hyper("weight_decay", default, doc, nonnegative)


def abs_sq(o, g):
    """|g|² elementwise (optax's ``abs_sq``): g·g for real g, exactly; the squared modulus for complex g."""
    size = o.abs(g)
    return size * size


def view(name: str, arguments: tuple[Hyper, ...], statement: Callable, state: Callable, *, spec_name: str,
         formula: str, doc: str, dtypes: tuple = (), masks: tuple = (), to_spec: Callable | None = None,
         initial_state: Callable | None = None, needs_params: Callable | None = None, random_seed: Callable | None = None,
         drop: tuple[str, ...] = (), state_shape: Callable | None = None, namespace: str = "",
         leafwise: tuple = ()) -> OptaxView:
    """An :class:`OptaxView` named ``name`` whose spec steps ``statement`` (semi-implicit Euler in the written order):
    its hyperparameters are ``arguments`` with ``learning_rate`` as ``lr``, less the dtype and mask arguments and the
    arguments in ``drop`` (which ``to_spec`` consumes). ``random_seed``: the spec's (``Spec.random_seed``)."""
    extras = {arg for arg, _ in dtypes} | {arg for arg, _ in masks} | set(drop)
    hyperparams = (Hyper("lr", None, "learning rate (optax's learning_rate)"),
                   *(h for h in arguments[1:] if h.name not in extras))
    spec = from_statement(
        name=spec_name,
        jax_name=name,
        hyperparams=hyperparams,
        state=state,
        statement=statement,
        scheme=SemiImplicitEuler(),
        formula=formula,
        initial_state=initial_state,
        time_step=lambda hp: hp.lr,
        needs_params=needs_params or (lambda hp: not is_static_zero(getattr(hp, "weight_decay", 0))),
        random_seed=random_seed,
        state_shape=state_shape,
        ode="optax's discrete rule",
        hyper_map="as optax",
        doc=doc,
    )
    return OptaxView(name=name, spec=spec, arguments=tuple(arguments), dtypes=tuple(dtypes), masks=tuple(masks),
                     to_spec=to_spec, namespace=namespace, leafwise=tuple(leafwise))
