#!/usr/bin/env bash
# Create (or reuse) .venv with a CPU torch and the pack installed editable, for the demo and the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -c constraints-test.txt torch
.venv/bin/python -m pip install --quiet -c constraints-test.txt -e ".[test]"
