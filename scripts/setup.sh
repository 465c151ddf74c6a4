#!/usr/bin/env bash
# Create (or reuse) the virtual environment and install dynopt with every extra.
# DYNOPT_VENV picks the folder (default .venv); DYNOPT_TORCH the torch requirement
# (default torch==2.13.0, the CPU build this project is tested with).
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${DYNOPT_VENV:-.venv}"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet "${DYNOPT_TORCH:-torch==2.13.0}" -e '.[all]'
"$venv/bin/python" -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "environment ready: $venv"
