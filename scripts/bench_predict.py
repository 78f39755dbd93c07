"""Benchmark the backend's own /predict overhead and its cold start.

- /predict over real HTTP with a zero-latency provider (answers instantly, in process) for 1 and 100
  tasks: what the backend itself costs per request (parse, render, build and validate results, JSON).
- the same through the deterministic OpenAI-compatible HTTP server (adds a real HTTP round trip per call).
  Every request carries new task content, so every task is judged; a third row asks for the same
  tasks again, answered from the verdict cache.
- cold start: `labeljudge serve` (gunicorn) spawned -> first 200 from /health.

Prints a table and writes JSON (default bench_results/predict.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.judge.providers.base import Decoding  # noqa: E402
from ml_backend.judge.types import Answer, Question, Usage  # noqa: E402
from ml_backend.labelstudio.local import free_port  # noqa: E402
from tests.conftest import judge_settings, serve_backend  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()


class InstantProvider:
    """A provider with zero latency: always the first option, fixed probability."""

    name, model, as_json = "instant", "instant", True

    def answer(self, messages: list[dict], question: Question, decoding: Decoding) -> Answer:
        return Answer(question.options[0], 0.9, "instant" if decoding.rationale else None, Usage(1, 1, 1))

    async def aanswer(self, messages: list[dict], question: Question, decoding: Decoding) -> Answer:
        return self.answer(messages, question, decoding)

    async def aclose(self) -> None:
        return None


def _tasks(n: int, salt: str = "") -> list[dict]:
    return [{"id": i, "data": {"input": f"q{i}{salt}", "context": "c" * 500, "output": "o" * 300}} for i in range(n)]


def _time_predict(url: str, n: int, repeats: int, cached: bool = False) -> list[float]:
    """Median-able times of ``repeats`` /predict requests of ``n`` tasks: new task content each time
    (every task judged), or, with ``cached``, the same tasks again (every verdict from the cache)."""
    out = []
    with httpx.Client(timeout=120) as client:
        warm = {"tasks": _tasks(n, "warm"), "project": "1.1", "label_config": CONFIG}
        client.post(f"{url}/predict", json=warm).raise_for_status()
        for i in range(repeats):
            body = warm if cached else {"tasks": _tasks(n, f"{time.time_ns()}-{i}"), "project": "1.1",
                                        "label_config": CONFIG}
            t0 = time.perf_counter()
            r = client.post(f"{url}/predict", json=body)
            out.append(time.perf_counter() - t0)
            r.raise_for_status()
    return out


def bench_overhead(tmp: Path, repeats: int) -> list[dict]:
    rows = []
    with FakeOpenAI() as fake:
        settings = judge_settings(tmp, fake, JUDGE_MAX_RETRIES="0")
        with serve_backend(settings) as srv:
            httpx.post(f"{srv.url}/setup", json={"project": "1.1", "schema": CONFIG}).raise_for_status()
            for label, swap, cached in (("zero-latency provider", True, False), ("fake OpenAI over HTTP", False, False),
                                        ("verdict cache (asked before)", False, True)):
                state = srv.backend.state("1")
                original = state.judge.provider
                if swap:
                    state.judge.provider = InstantProvider()
                for n in (1, 100):
                    times = _time_predict(srv.url, n, repeats if n == 1 else max(5, repeats // 10), cached)
                    med = statistics.median(times)
                    rows.append({"provider": label, "tasks": n, "median_ms": round(med * 1000, 2),
                                 "per_task_ms": round(med * 1000 / n, 3), "runs": len(times)})
                state.judge.provider = original
    return rows


@contextmanager
def serve_process(env: dict[str, str], timeout: float = 60.0) -> Iterator[tuple[str, float]]:
    """`labeljudge serve` (gunicorn, as deployed) in its own process with ``env`` added:
    yields (its URL, seconds from spawn to the first 200 from /health); stopped afterwards."""
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port)], env=dict(os.environ, **env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.02)
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("labeljudge serve did not start")
        yield url, time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait(10)


def bench_cold_start(tmp: Path, repeats: int) -> dict:
    times = []
    for i in range(repeats):
        env = dict(MODEL_DIR=str(tmp / f"cold{i}"), JUDGE_PROVIDER="openai",
                   OPENAI_BASE_URL="http://127.0.0.1:9/v1", PRELOAD_MODEL="false")
        with serve_process(env) as (_, seconds):
            times.append(seconds)
    return {"cold_start_median_s": round(statistics.median(times), 3), "runs": len(times)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "predict.json"))
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # per-request logs would be timed too
    with tempfile.TemporaryDirectory() as tmp:
        rows = bench_overhead(Path(tmp), args.repeats)
        cold = bench_cold_start(Path(tmp), 3)
    print(f"{'provider':<30}{'tasks':>6}{'median ms':>12}{'ms/task':>10}{'runs':>6}")
    for r in rows:
        print(f"{r['provider']:<30}{r['tasks']:>6}{r['median_ms']:>12}{r['per_task_ms']:>10}{r['runs']:>6}")
    print(f"cold start to first /health: {cold['cold_start_median_s']} s (median of {cold['runs']})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"predict": rows, "cold_start": cold, "cpus": os.cpu_count()}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
