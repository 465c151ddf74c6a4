"""What every backend needs from a spec: its call signature and its bound hyperparameters."""

from __future__ import annotations

import inspect
import sys
from typing import Any

from ..spec import LR, Spec

__all__ = ["signature", "bind", "caller_module"]


def signature(spec: Spec, leading: tuple[str, ...], lr_name: str, lr_default: Any = inspect.Parameter.empty) -> inspect.Signature:
    """``(leading..., lr_name=lr_default, <other hyperparameters with their defaults>)``."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter(name, kind) for name in leading]
    params.append(inspect.Parameter(lr_name, kind, default=lr_default))
    params += [inspect.Parameter(h.name, kind, default=h.default) for h in spec.hyperparams if h.name != LR]
    return inspect.Signature(params)


def bind(sig: inspect.Signature, owner: str, args: tuple, kwargs: dict, spec: Spec | None = None) -> dict[str, Any]:
    """Bind a call against ``sig`` with defaults applied; a clear TypeError names ``owner`` (with the migration when a
    keyword is a former name of one of ``spec``'s hyperparameters)."""
    if spec is not None:
        spec.refuse_former_names(owner, kwargs)
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError as err:
        raise TypeError(f"{owner}{sig}: {err}") from None
    bound.apply_defaults()
    return dict(bound.arguments)


def caller_module(depth: int = 2) -> str:
    """The module that called ``from_spec``, so generated classes pickle by qualified name."""
    try:
        return sys._getframe(depth).f_globals.get("__name__", "__main__")
    except (AttributeError, ValueError):  # pragma: no cover - non-CPython
        return "__main__"
