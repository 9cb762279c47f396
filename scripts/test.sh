#!/usr/bin/env bash
# Set up .venv, lint (ruff: pyflakes rules, 120 columns) and run the whole test suite (tiny models built on
# the fly; no weights, no network).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
