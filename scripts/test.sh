#!/usr/bin/env bash
# The full test suite: set up, lint, then every test (torch, JAX, notebooks, experiments).
# A skipped test fails the run (tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${DYNOPT_VENV:-.venv}"
export MPLBACKEND=Agg OMP_NUM_THREADS=1
"$venv/bin/ruff" check dynopt tests experiments benchmarks
# one worker per core (DYNOPT_TEST_WORKERS to override; 0: in this process), each with one torch thread
log="$(mktemp)"
status=0
"$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${DYNOPT_TEST_WORKERS:-auto}" "$@" 2>&1 | tee "$log" || status=$?
if [ "$status" -ne 0 ]; then
  # a run that failed only because workers crashed (scripts/crashed_tests.py says why that happens) reruns
  # those tests in a fresh process; any other failure, or a crashed test that fails again, fails the run
  crashed="$(mktemp)"
  "$venv/bin/python" scripts/crashed_tests.py < "$log" > "$crashed" || exit "$status"
  echo "worker crash (not a test failure): rerunning in a fresh process: $(tr '\n' ' ' < "$crashed")"
  "$venv/bin/python" -m pytest -q -p no:cacheprovider -n 0 @"$crashed"
fi
