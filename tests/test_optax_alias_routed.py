"""optax's own alias tests, routed to dynopt.jax: nothing fails with dynopt's factories that passes with optax's.

``optax/_src/alias_test.py`` (shipped in the optax wheel) runs twice in subprocesses, on the tests whose parameters
name an optimizer dynopt.jax shares with optax (tests/optax_alias_routing.py): once as shipped, once with
``optax._src.alias.<name>`` replaced by ``dynopt.jax.<name>`` for every such name. The per-test outcomes, read
from pytest's JUnit XML, are compared: every test that passes with optax passes with dynopt. The expected outcomes
are optax's own, measured in the same run. The two runs go in parallel (one core each).

By default the two slowest tests run on part of their dtypes (``DYNOPT_ALIAS_QUICK``, tests/optax_alias_routing.py):
3.5 to 4 minutes on two shared cores (about 200 s of test time per run, the two in parallel). ``DYNOPT_ALIAS_FULL=1`` runs every case (about 6 minutes): with optax 0.2.8, 260
passed and 14 skipped in each run, the same tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

optax = pytest.importorskip("optax")
pytest.importorskip("sklearn")  # alias_test.py imports them
pytest.importorskip("absl")

ALIAS_TEST = Path(optax.__file__).parent / "_src" / "alias_test.py"
HERE = Path(__file__).parent


def outcomes(xml: Path) -> dict[str, str]:
    """``{class::test: passed | skipped | failed}`` from a JUnit XML report; a test reported more than once (its
    subtests) takes its worst outcome."""
    rank = {"passed": 0, "skipped": 1, "failed": 2}
    result: dict[str, str] = {}
    for case in ET.parse(xml).getroot().iter("testcase"):
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped" and kind == "passed":
                kind = "skipped"
        key = f"{case.get('classname')}::{case.get('name')}"
        result[key] = max(result.get(key, "passed"), kind, key=rank.__getitem__)
    return result


def start(route: bool, xml: Path) -> subprocess.Popen:
    quick = "0" if os.environ.get("DYNOPT_ALIAS_FULL") == "1" else "1"
    env = {**os.environ, "DYNOPT_ROUTE": "1" if route else "0", "OMP_NUM_THREADS": "1", "DYNOPT_ALIAS_QUICK": quick,
           "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "optax_alias_routing",
               str(ALIAS_TEST), f"--junitxml={xml}", "-o", "junit_family=xunit1"]
    return subprocess.Popen(command, env=env, cwd=xml.parent, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.skipif(not ALIAS_TEST.exists(), reason="this optax wheel does not ship alias_test.py")
def test_optax_alias_tests_pass_with_dynopt_jax(tmp_path):
    runs = {route: start(route, tmp_path / f"{'dynopt' if route else 'optax'}.xml") for route in (False, True)}
    logs = {route: run.communicate(timeout=900)[0] for route, run in runs.items()}
    theirs, ours = (outcomes(tmp_path / f"{name}.xml") for name in ("optax", "dynopt"))
    assert set(ours) == set(theirs), "the two runs collected different tests"
    passed = [name for name, kind in theirs.items() if kind == "passed"]
    # 14 configurations of the 12 first shared names: 274 tests (260 pass with optax 0.2.8), 176 of them in the quick
    # run; noisy_sgd's configuration adds its own (its complex cases are skipped by optax's tests)
    assert len(passed) >= (250 if os.environ.get("DYNOPT_ALIAS_FULL") == "1" else 160), (len(passed), logs[False][-2000:])
    broken = sorted(name for name in passed if ours[name] != "passed")
    assert not broken, f"{len(broken)} tests pass with optax and not with dynopt.jax: {broken[:20]}\n{logs[True][-4000:]}"
    # and the route is real: the dynopt run called dynopt (the plugin's summary line checks optax's alias module)
    assert "routed to dynopt.jax" in logs[True] and "routed to dynopt.jax" not in logs[False]
