"""What already held under the trust review, kept as tests: an acknowledged webhook survives SIGKILL of
the serving process mid-burst (three times), and every event acknowledged is processed after the
restart. The backend runs as `labeljudge serve` (gunicorn) in its own process."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from ml_backend.labelstudio.local import free_port

ROOT = Path(__file__).resolve().parents[1]


def _serve(model_dir: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, MODEL_DIR=str(model_dir), PRELOAD_MODEL="false", JUDGE_PROVIDER="openai",
               OPENAI_BASE_URL="http://127.0.0.1:9/v1", JUDGE_MODEL="m", TRAIN_EVERY="0")
    proc = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "serve", "--host", "127.0.0.1", "--port",
                             str(port)], env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=0.5).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise TimeoutError("labeljudge serve did not start")


def test_acknowledged_webhooks_survive_three_sigkills_mid_burst(tmp_path):
    acked: set[int] = set()
    for round_ in range(3):
        port = free_port()
        proc = _serve(tmp_path, port)
        stop = threading.Event()

        def burst(offset: int) -> None:
            with httpx.Client(timeout=5) as client:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    ann = offset + i + 1
                    try:
                        r = client.post(f"http://127.0.0.1:{port}/webhook", json={
                            "action": "ANNOTATION_CREATED", "project": {"id": 3},
                            "task": {"id": ann, "data": {"output": "o"}},
                            "annotation": {"id": ann, "task": ann, "result": []}})
                    except httpx.HTTPError:
                        return  # killed mid-request: not acknowledged, so not counted
                    if r.status_code == 201:
                        acked.add(ann)

        sender = threading.Thread(target=burst, args=(round_ * 100_000,))
        sender.start()
        time.sleep(1.5)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stop.set()
        sender.join()
    assert len(acked) > 30  # the bursts really ran
    # every acknowledged event was stored before its 201; a restart processes them all
    port = free_port()
    proc = _serve(tmp_path, port)
    try:
        db = sqlite3.connect(tmp_path / "labeljudge.sqlite3")
        deadline = time.time() + 60
        while time.time() < deadline:
            pending = db.execute("SELECT COUNT(*) FROM events WHERE processed_at IS NULL").fetchone()[0]
            if pending == 0:
                break
            time.sleep(0.2)
        stored = {r[0] for r in db.execute("SELECT id FROM annotations WHERE project_id='3'")}
        db.close()
        assert acked <= stored, f"{len(acked - stored)} acknowledged annotations lost"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
