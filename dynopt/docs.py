"""Docs derived from the specs: the README's optimizer table (``python -m dynopt.docs``)."""

from __future__ import annotations

from .spec import REGISTRY, Spec

__all__ = ["optimizer_table"]


def optimizer_table(specs: list[Spec] | None = None) -> str:
    """Markdown table: optimizer | torch / optax names | ODE | scheme | hyperparameter map."""
    specs = list(REGISTRY.values()) if specs is None else specs
    rows = [
        "| optimizer | `dynopt.torch` / `dynopt.jax` | ODE | scheme | hyperparameter map |",
        "|---|---|---|---|---|",
    ]
    for s in specs:
        rows.append(f"| {s.name} | `{s.name}` / `{s.jax_name}` | {s.ode} | {s.scheme} | {s.hyper_map} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(optimizer_table())
