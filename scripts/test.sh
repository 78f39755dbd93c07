#!/usr/bin/env bash
# The README's second command: install everything, then run every test (unit, real local model,
# real Label Studio end to end). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Both cores (or TEST_WORKERS): each worker starts its own Label Studio once; a file's tests stay on one
# worker, so a module's fixtures (the local model, a PostgreSQL) start once. `-n 0` runs them in one process.
exec .venv/bin/python -m pytest --all --durations=25 -n "${TEST_WORKERS:-2}" --dist loadfile "$@"
