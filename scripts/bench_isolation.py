"""Benchmark isolation between projects: one project's provider drips its replies (a byte every
0.25 s, for minutes) while another project's /predict and /health are timed, against the real server
(`labeljudge serve`: gunicorn, its default threads) and a deterministic OpenAI-compatible server.

Each code version is measured quiet (nobody loads the dripping project) and under the drip (8 clients
sending /predict to it in a loop). ``--compare REF`` runs the same against another git revision's code
in the same run (a worktree), so the before/after figures are side by side.

Prints a table and writes JSON (default bench_results/isolation.json).
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.fake_openai import FakeOpenAI  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server(code: Path, fake: FakeOpenAI, model_dir: Path) -> Iterator[str]:
    """`labeljudge serve` from ``code`` (a checkout), stopped afterwards."""
    port = _port()
    env = {**os.environ, "PYTHONPATH": str(code), "MODEL_DIR": str(model_dir), "JUDGE_PROVIDER": "openai",
           "OPENAI_BASE_URL": fake.url, "OPENAI_API_KEY": "sk-bench-000000", "JUDGE_MODEL": "fake-judge",
           "PRELOAD_MODEL": "false", "FEW_SHOT_K": "0", "LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
                            cwd=code, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the server did not start")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(url: str, n: int, tag: str) -> dict:
    """``n`` sequential /predict calls to the healthy project and ``n`` /health calls, in seconds
    (a call that gets no answer in 35 s counts as 35 s)."""
    predicts, healths, judged = [], [], 0
    with httpx.Client(timeout=35) as client:
        for i in range(n):
            task = {"id": 100_000 + i, "data": {"input": "q", "context": "c", "output": f"{tag} answer {i}"}}
            t0 = time.perf_counter()
            try:
                r = client.post(f"{url}/predict", json={"project": "8", "tasks": [task]})
                judged += bool(r.status_code == 200 and r.json()["results"][0])
            except httpx.HTTPError:
                pass
            predicts.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            try:
                client.get(f"{url}/health", timeout=35)
            except httpx.HTTPError:
                pass
            healths.append(time.perf_counter() - t0)
    q = lambda xs, p: sorted(xs)[min(len(xs) - 1, int(round(p * (len(xs) - 1))))]  # noqa: E731
    return {"predict_p50_ms": round(statistics.median(predicts) * 1000, 1), "predict_p99_ms": round(q(predicts, 0.99) * 1000, 1),
            "health_p50_ms": round(statistics.median(healths) * 1000, 1), "health_p99_ms": round(q(healths, 0.99) * 1000, 1),
            "judged": judged, "n": n}


def run(code: Path, label: str, args, fake: FakeOpenAI) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp, server(code, fake, Path(tmp)) as url:
        for project, params in (("7", {"model": "drip-model"}), ("8", None)):
            httpx.post(f"{url}/setup", json={"project": project, "schema": CONFIG, "extra_params": params},
                       timeout=10).raise_for_status()
        rows.append({"code": label, "load": "quiet", **measure(url, args.n, f"{label}-quiet")})
        stop = threading.Event()

        def drip_client(k: int) -> None:
            i = 0
            with httpx.Client(timeout=120) as client:
                while not stop.is_set():
                    tasks = [{"id": k * 10_000 + i + j, "data": {"input": "q", "context": "c", "output": f"{k}-{i}-{j}"}}
                             for j in range(4)]
                    i += 4
                    try:
                        client.post(f"{url}/predict", json={"project": "7", "tasks": tasks})
                    except httpx.HTTPError:
                        pass

        clients = [threading.Thread(target=drip_client, args=(k,), daemon=True) for k in range(args.clients)]
        for c in clients:
            c.start()
        time.sleep(args.warmup)  # the dripping project's calls fill whatever they can
        rows.append({"code": label, "load": f"project 7 dripping ({args.clients} clients)",
                     **measure(url, args.n, f"{label}-drip")})
        stop.set()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=40, help="timed calls of each kind per condition")
    ap.add_argument("--clients", type=int, default=8, help="clients sending /predict to the dripping project")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of drip before timing")
    ap.add_argument("--compare", help="a git revision to measure too, side by side (e.g. the code before a fix)")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "isolation.json"))
    args = ap.parse_args()
    rows: list[dict] = []
    with FakeOpenAI() as fake:
        fake.drip_models.add("drip-model")
        fake.drip_seconds = 300
        if args.compare:
            with tempfile.TemporaryDirectory() as tmp:
                tree = Path(tmp) / "before"
                subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tree), args.compare], cwd=ROOT, check=True)
                try:
                    rows += run(tree, args.compare, args, fake)
                finally:
                    subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
        rows += run(ROOT, "this checkout", args, fake)
    header = f"{'code':<16} {'load':<32} {'predict p50':>12} {'predict p99':>12} {'health p50':>11} {'health p99':>11} {'judged':>7}"
    print(header)
    for r in rows:
        print(f"{r['code'][:16]:<16} {r['load']:<32} {r['predict_p50_ms']:>10.1f}ms {r['predict_p99_ms']:>10.1f}ms "
              f"{r['health_p50_ms']:>9.1f}ms {r['health_p99_ms']:>9.1f}ms {r['judged']:>3}/{r['n']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
