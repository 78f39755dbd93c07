#!/usr/bin/env bash
# The README's first command: install everything, then start Label Studio + the backend on the
# embedded local judge, create a demo project and pre-label it. Extra arguments go to
# `labeljudge quickstart` (e.g. --config rating).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/labeljudge quickstart "$@"
