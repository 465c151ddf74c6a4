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
"$venv/bin/python" -m pytest -q -p no:cacheprovider -n "${DYNOPT_TEST_WORKERS:-auto}" "$@"
