#!/usr/bin/env bash
# Set up .venv and run the first shipped workflow headless. Where a model or input file it names is missing,
# tiny untrained stand-ins are built (the output is then noise, and the runner says so loudly).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup-env.sh
exec .venv/bin/pae run workflows/api/audio_roundtrip_api.json --demo --ui-workflow workflows/audio_roundtrip.json "$@"
