#!/usr/bin/env bash
# The main job: set up, then run every trajectory experiment; figures and data go to results/,
# small copies of the figures README shows to docs/gallery/ (committed; see experiments/__main__.py).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
venv="${DYNOPT_VENV:-.venv}"
export MPLBACKEND=Agg
"$venv/bin/python" -m experiments --out results "$@"
