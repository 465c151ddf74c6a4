"""Test-wide settings: one torch thread (2 shared cores), float64 available in JAX.

x64 is switched on here only, never in library code; float32 tests ask for float32 explicitly.
"""

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import jax  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)
jax.config.update("jax_enable_x64", True)


_skipped: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped:
        _skipped.append(report.nodeid)


def pytest_sessionfinish(session, exitstatus):
    """A skipped test is a failure here: every torch, JAX and notebook test must run."""
    if _skipped and exitstatus == 0:
        print(f"\n{len(_skipped)} test(s) skipped, which this project treats as a failure: {_skipped[:5]}")
        session.exitstatus = 1
