#!/usr/bin/env bash
# Set up .venv, lint (ruff: pyflakes rules, 120 columns; then the Comfy registry's rules) and run the whole test
# suite (tiny models built on the fly; no weights, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
.venv/bin/ruff check .
# The Comfy registry's own lint (ComfyUI's rule set: eval/exec, method arguments, pycodestyle errors), minus print:
# the pae command prints.
.venv/bin/ruff check --select S102,S307,N805,E,W --ignore E501,E722,E731,E712,E402,E741 .
# Two workers (pytest-xdist), whole files per worker so module fixtures are built once; each worker computes on its
# share of the cores (tests/conftest.py). PAE_TEST_WORKERS=0 runs in one process.
exec .venv/bin/python -m pytest -q -n "${PAE_TEST_WORKERS:-2}" --dist loadfile "$@"
