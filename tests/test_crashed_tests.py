"""scripts/crashed_tests.py decides whether a failed run is rerun: only when every failure is a worker crash.

The inputs are in pytest-xdist's format (the crash report copied from CI's log of a real crash)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

SCRIPT = pathlib.Path(__file__).resolve().parent.parent / "scripts" / "crashed_tests.py"
NODE = "tests/test_optax_noisy_muon.py::test_contrib_muon_weight_dimension_numbers_equal_optax[3-1-float64-False]"
CRASH = f"worker 'gw0' crashed while running '{NODE}'"
SPACED = "worker 'gw1' crashed while running 'tests/test_torch_paths.py::test_paths[Adam-fused reference]'"


def crashed(*lines):
    run = subprocess.run([sys.executable, str(SCRIPT)], input="\n".join(("....", *lines)) + "\n",
                         capture_output=True, text=True)
    return run.returncode, run.stdout.splitlines()


def test_only_crashes_are_rerun_by_node_id():
    assert crashed(CRASH, "FAILED ... - worker 'gw0' cr...", "1 failed, 4452 passed, 47 warnings in 1136.39s (0:18:56)") \
        == (0, [NODE])
    assert crashed(CRASH, SPACED, "2 failed, 9 passed in 3.0s") == (0, [NODE, "tests/test_torch_paths.py::test_paths"
                                                                       "[Adam-fused reference]"])
    assert crashed(CRASH, "=== 1 failed, 9 passed in 3.0s ===")[0] == 0  # the line as a terminal shows it


def test_any_other_failure_or_no_crash_fails_the_run():
    assert crashed(CRASH, "FAILED tests/test_parity.py::test_x - AssertionError", "2 failed, 9 passed in 3.0s")[0] == 1
    assert crashed(CRASH, "1 failed, 1 error, 9 passed in 3.0s")[0] == 1
    assert crashed("1 failed, 9 passed in 3.0s")[0] == 1
    assert crashed(CRASH)[0] == 1  # no final counts: nothing to trust
