"""A pytest plugin for tests/test_optax_alias_routed.py: runs optax's own ``optax/_src/alias_test.py`` on the
optimizers dynopt.jax shares with optax, with optax's aliases (``DYNOPT_ROUTE=0``) or with dynopt.jax's in their
place (``DYNOPT_ROUTE=1``: ``optax._src.alias.<name>`` is replaced by ``dynopt.jax.<name>`` before the tests run,
so ``alias.adam(...)`` and ``getattr(alias, "adam")`` in the tests call dynopt).

Load it with ``-p optax_alias_routing`` and ``tests/`` on ``PYTHONPATH``. Only the tests whose parameters name one
of ``ROUTED`` are kept (``opt_name='adam'``; ``test_explicit_dtype``'s ``sgd_mom`` is optax.sgd with momentum).
``DYNOPT_ALIAS_QUICK=1`` keeps, of the two slowest tests, the float32 cases of ``test_optimization`` (10,000 steps
each; the complex64 ones are left out) and the complex64 cases of ``test_state_shape_dtype_shard_stability``
(float16, bfloat16, float32, float64 and complex128 left out): about half the time.
"""

from __future__ import annotations

import os
import re

ROUTED = ("sgd", "adam", "adamw", "amsgrad", "nadam", "nadamw", "radam", "adamax", "adagrad", "adadelta", "rprop",
          "rmsprop", "noisy_sgd")
_OPT_NAME = re.compile(r"opt_name='([a-z_0-9]+)'")


def pytest_configure(config):
    if os.environ.get("DYNOPT_ROUTE") == "1":
        from optax._src import alias

        import dynopt.jax

        for name in ROUTED:
            setattr(alias, name, getattr(dynopt.jax, name))


QUICK = {"test_optimization": ("jax.numpy.float32'",),
         "test_state_shape_dtype_shard_stability": ("jax.numpy.complex64'",)}


def _keep(item) -> bool:
    params = getattr(getattr(item, "obj", None), "__x_params_repr__", "") or ""
    found = _OPT_NAME.search(params)
    if not found or found.group(1) not in ROUTED + ("sgd_mom",):
        return False
    if os.environ.get("DYNOPT_ALIAS_QUICK") == "1":
        for test, dtypes in QUICK.items():
            if item.name.rstrip("0123456789") == test:
                return any(dtype in params for dtype in dtypes)
    return True


def pytest_collection_modifyitems(config, items):
    kept, dropped = [], []
    for item in items:
        (kept if _keep(item) else dropped).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept


def pytest_terminal_summary(terminalreporter):
    """One line saying which factories the tests called (tests/test_optax_alias_routed.py reads it)."""
    from optax._src import alias

    routed = [name for name in ROUTED if getattr(getattr(alias, name), "__module__", "") == "dynopt.jax"]
    if routed:
        terminalreporter.write_line(f"routed to dynopt.jax: {len(routed)} aliases: {', '.join(routed)}")
    else:
        terminalreporter.write_line("optax's own aliases")
