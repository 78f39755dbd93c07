#!/usr/bin/env bash
# The README's second command: install everything, then run every test (unit, real local model,
# real Label Studio end to end). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# One process by default: on CI's 2 cores the evaluator's training tests are CPU-bound (one takes 6 min
# alone), and two workers made them time out. TEST_WORKERS=N (a host with spare cores) runs N workers
# (pytest-xdist), each with its own Label Studio, a file's tests on one worker.
WORKERS="${TEST_WORKERS:-0}"
if [ "$WORKERS" != "0" ]; then
  exec .venv/bin/python -m pytest --all --durations=25 -n "$WORKERS" --dist loadfile "$@"
fi
exec .venv/bin/python -m pytest --all --durations=25 "$@"
