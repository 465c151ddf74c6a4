"""Docs derived from the specs: the README's optimizer and scheme tables (``python -m dynopt.docs``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from . import schemes
from .spec import REGISTRY, Spec

__all__ = ["optimizer_table", "scheme_table", "ode_scheme_table", "SCHEMES"]

# The schemes the README lists, in its order.
SCHEMES = (schemes.Euler(), schemes.SemiImplicitEuler(), schemes.Lookahead(), schemes.Heun(), schemes.Midpoint(),
           schemes.RK4(), schemes.Leapfrog())


def _cell(text: str) -> str:
    """Table-cell text: a literal ``|`` (as in |∇L|) would split the Markdown cell."""
    return str(text).replace("|", "\\|")


def optimizer_table(specs: list[Spec] | None = None) -> str:
    """Markdown table: optimizer | torch / optax names | ODE | scheme | hyperparameter map."""
    specs = list(REGISTRY.values()) if specs is None else specs
    rows = [
        "| optimizer | `dynopt.torch` / `dynopt.jax` | ODE | scheme | hyperparameter map |",
        "|---|---|---|---|---|",
    ]
    for s in specs:
        rows.append(f"| {s.name} | `{s.name}` / `{s.jax_name}` | {_cell(s.ode)} | {_cell(s.scheme)} | {_cell(s.hyper_map)} |")
    return "\n".join(rows)


def scheme_table() -> str:
    """Markdown table of the schemes: name, order, gradients per step, what it does."""
    rows = ["| scheme | order | gradients per step | what one step does |", "|---|---|---|---|"]
    for scheme in SCHEMES:
        doc = (type(scheme).__doc__ if not callable(getattr(schemes, scheme.name, None)) else getattr(schemes, scheme.name).__doc__)
        first = " ".join((doc or "").split(". ")[0].split())
        rows.append(f"| `{scheme.name}()` | {scheme.order} | {scheme.gradient_calls} | {first}. |")
    return "\n".join(rows)


def _variables(spec: Spec) -> tuple[set[str], set[str]]:
    """The variables a statement integrates, and those it defines, found by running it once on a tiny problem."""
    from ._backends.numpy_oracle import MATH
    from .statement import INTEGRATING, Define

    hp = spec.namespace({})
    leaf = next(x for x in (np.full(2, 0.5), np.full((2, 2), 0.5))  # a vector, or a matrix where only those are taken
                if spec.check_param is None or not spec.check_param(MATH, hp, x))
    param = MATH.tree([leaf])
    state = spec.initial(MATH, hp, param)
    noise = {"noise": MATH.tree([np.zeros_like(leaf)])} if spec.random_seed is not None else {}  # ξ (x.noise): any value
    point = SimpleNamespace(grad=MATH.tree([np.ones_like(leaf)]), param=param, **state, **spec.scalars(hp), **noise)
    with np.errstate(all="ignore"):  # a zero state may divide by zero here; only the terms' targets matter
        terms = list(spec.statement(MATH, hp, 1, point))
    return ({t.target for t in terms if isinstance(t, INTEGRATING)}, {t.target for t in terms if isinstance(t, Define)})


def ode_scheme_table(specs: list[Spec] | None = None) -> str:
    """Markdown table: each statement of the zoo × each scheme → the order of the optimizer it gives.

    ★ marks the zoo's own optimizer; — a pair that does not apply (leapfrog needs θ as a position
    variable and a velocity variable); † a scheme of order above 1 on a field that is not smooth
    (``Spec.smooth``: a sign, a maximum, a switch in time), where its classical order does not apply; ‡ a scheme of
    order above 1 on a stochastic statement (``Spec.random_seed``: it reads noise ξ), where the order is the drift's,
    with the noise off (the fitted order); with it on, one draw enters every stage of a step, an Euler–Maruyama
    increment, and no order above 1 is claimed."""
    specs = [s for s in (REGISTRY.values() if specs is None else specs) if s.statement is not None]
    header = "| ODE (statement) | " + " | ".join(f"`{s.name}`" for s in SCHEMES) + " |"
    rows = [header, "|---|" + "---|" * len(SCHEMES)]
    seen: dict = {}
    for spec in specs:
        key = spec.statement
        own = seen.setdefault(key, {"names": [], "schemes": {}, "spec": spec})
        own["names"].append(spec.name)
        own["schemes"][spec.discretization.name] = spec.name
    for entry in seen.values():
        spec = entry["spec"]
        integrated, _defined = _variables(spec)
        cells = []
        for scheme in SCHEMES:
            if scheme.name == "Leapfrog" and ("param" not in integrated or len(integrated) < 2):
                cells.append("—")
                continue
            mine = entry["schemes"].get(scheme.name)
            order = f"{scheme.order}" if scheme.order == 1 or spec.smooth(spec.namespace({})) else "1†"
            if scheme.order > 1 and spec.random_seed is not None:
                order = f"{order}‡"
            cells.append(f"{order} ★ {mine}" if mine else order)
        name = spec.statement.__name__.replace("_", " ")
        rows.append(f"| {name}: {_cell(spec.ode)} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(optimizer_table())
    print()
    print(scheme_table())
    print()
    print(ode_scheme_table())
