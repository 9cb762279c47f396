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
exec .venv/bin/python -m pytest -q "$@"
