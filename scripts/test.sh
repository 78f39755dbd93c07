#!/usr/bin/env bash
# The README's second command: install everything, then run every test (unit, real local model,
# real Label Studio end to end). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest --all --durations=25 "$@"
