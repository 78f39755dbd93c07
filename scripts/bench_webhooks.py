"""Benchmark webhook ingestion against a real Label Studio: acknowledgement latency under a steady
stream, and how long a burst takes to drain, coalesced (one look per project per burst) beside the
per-event path (one Label Studio request per annotated task, forced with PER_TASK_LOOKUPS), in one run.

Prints a table and writes JSON (default bench_results/webhooks.json).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import ml_backend.workflows.learning as backend_module  # noqa: E402  (PER_TASK_LOOKUPS lives there)
from ml_backend.events.worker import EventWorker  # noqa: E402
from ml_backend.labelstudio import LabelStudioAPI  # noqa: E402
from ml_backend.labelstudio.local import LocalLabelStudio, find_ls_venv  # noqa: E402
from tests.conftest import judge_settings, serve_backend  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()
REGION = {"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": ["Pass"]}}


def drain(srv, project: int, anns: list, n: int, per_task_lookups: int) -> float:
    """Seconds from the first event of a held burst of ``n`` to the worker going idle."""
    backend_module.PER_TASK_LOOKUPS = per_task_lookups
    srv.backend.worker.stop()
    time.sleep(0.3)
    with httpx.Client() as client:
        for i in range(n):
            a = anns[i % len(anns)]
            client.post(f"{srv.url}/webhook", json={
                "action": "ANNOTATION_UPDATED", "project": {"id": project, "label_config": CONFIG},
                "task": {"id": a.task, "data": {"input": "q", "context": "c", "output": "o"}},
                "annotation": {"id": a.id, "task": a.task, "result": [REGION]}}).raise_for_status()
    pending = len(srv.backend.store.pending_events(100_000))
    assert pending == n, f"{pending} of {n} events pending before the drain"
    calls = {"resync": 0, "task": 0}
    api = srv.backend.labelstudio()
    learner = srv.backend.learner
    resync, task_predictions = learner.resync_project, type(api).task_predictions
    learner.resync_project = lambda p: (calls.__setitem__("resync", calls["resync"] + 1), resync(p))[1]
    api.task_predictions = lambda t: (calls.__setitem__("task", calls["task"] + 1), task_predictions(api, t))[1]
    t0 = time.perf_counter()
    srv.backend.worker = EventWorker(srv.backend.store, srv.backend.handle_events)
    srv.backend.worker.start()
    if not srv.backend.worker.wait_idle(600):
        raise TimeoutError("the burst did not drain")
    seconds = time.perf_counter() - t0
    del learner.resync_project, api.task_predictions
    print(f"drained {n} events: {calls['resync']} resyncs, {calls['task']} per-task lookups, {seconds:.2f} s")
    return seconds


def ack_latency(srv, project: int, anns: list, rate: float, seconds: float) -> dict:
    """Acknowledgement times of a steady stream at ``rate`` events/s (the worker draining meanwhile)."""
    lat = []
    with httpx.Client() as client:
        t_end = time.perf_counter() + seconds
        i = 0
        while time.perf_counter() < t_end:
            a = anns[i % len(anns)]
            t0 = time.perf_counter()
            client.post(f"{srv.url}/webhook", json={
                "action": "ANNOTATION_UPDATED", "project": {"id": project}, "task": {"id": a.task, "data": {}},
                "annotation": {"id": a.id, "task": a.task, "result": [REGION]}}).raise_for_status()
            lat.append(time.perf_counter() - t0)
            i += 1
            time.sleep(max(0.0, 1 / rate - lat[-1]))
    lat.sort()
    return {"events": len(lat), "p50_ms": round(statistics.median(lat) * 1000, 2),
            "p99_ms": round(lat[int(len(lat) * 0.99) - 1] * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=200, help="annotated tasks the events are spread over")
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "webhooks.json"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAI() as fake:
        ls = LocalLabelStudio(data_dir=Path(tmp) / "ls", venv=find_ls_venv(ROOT)).start()
        try:
            api = LabelStudioAPI(ls.url, ls.token)
            settings = judge_settings(Path(tmp), fake, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
                                      TRAIN_EVERY="0")
            with serve_backend(settings) as srv:
                project = api.create_project("bench webhooks", CONFIG)
                ids = api.import_tasks(project, [{"data": {"input": f"q{i}", "context": "c", "output": "o"}}
                                                 for i in range(args.tasks)])
                api.client.projects.import_predictions(id=project, request=[
                    {"task": t, "model_version": "judge-bench", "result": [REGION]} for t in ids])
                anns = [api.client.annotations.create(id=t, result=[REGION]) for t in ids]
                srv.backend.worker.wait_idle(120)
                rows = {
                    "coalesced_s": round(drain(srv, project, anns, args.events, 8), 2),
                    "per_event_s": round(drain(srv, project, anns, args.events, 10**9), 2),
                }
                backend_module.PER_TASK_LOOKUPS = 8
                rows["ack_at_100_per_s"] = ack_latency(srv, project, anns, 100, 10)
        finally:
            ls.stop()
    rows.update(events=args.events, tasks=args.tasks, cpus=os.cpu_count(),
                speedup=round(rows["per_event_s"] / rows["coalesced_s"], 1))
    print(f"{'webhook burst of ' + str(args.events) + ' events over ' + str(args.tasks) + ' tasks':<52}{'seconds':>9}")
    print(f"{'  drained coalesced (one resync per burst)':<52}{rows['coalesced_s']:>9.2f}")
    print(f"{'  drained per event (one Label Studio call per task)':<52}{rows['per_event_s']:>9.2f}")
    ack = rows["ack_at_100_per_s"]
    print(f"ack at 100 events/s: p50 {ack['p50_ms']} ms, p99 {ack['p99_ms']} ms over {ack['events']} events")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
