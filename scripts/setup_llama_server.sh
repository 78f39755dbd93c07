#!/usr/bin/env bash
# Build llama-cpp-python's OpenAI-compatible server once into a cache venv, for the real_server tests
# and benchmark (outside the default test run: the build takes about 10 minutes on 2 cores).
# PyPI has only its sdist; a portable build works where the native one crashed:
# AVX2/FMA/F16C on, native CPU detection off.
set -euo pipefail
CACHE=${LABELJUDGE_CACHE:-$HOME/.cache/labeljudge}
VENV="$CACHE/venv-llama"
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp.server" 2>/dev/null; then
  echo "llama-cpp-python server already built in $VENV"; exit 0
fi
python3 -m venv "$VENV"
CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
  "$VENV/bin/pip" install -q --disable-pip-version-check "llama-cpp-python[server]==${LLAMA_CPP_VERSION:-0.3.36}"
echo "built llama-cpp-python's server in $VENV"
