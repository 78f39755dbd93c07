"""Label Studio's own "Retrieve predictions" on a big selection, against a real Label Studio and an
OpenAI-compatible server with a fixed latency: how long the button takes (Label Studio gives up at
100 s), how many tasks /predict answered itself, how long the background job took for the rest, and
whether every task ended with exactly one prediction.

Prints a table and writes JSON (default bench_results/retrieve.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.labelstudio import LabelStudioAPI  # noqa: E402
from ml_backend.labelstudio.local import FAST_PREDICTION_IMPORT, LocalLabelStudio, find_ls_venv  # noqa: E402
from tests.conftest import judge_settings, serve_backend  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--budget", type=float, default=30.0)
    ap.add_argument("--max-answers", type=int, default=None, help="PREDICT_MAX_ANSWERS (default: the backend's)")
    ap.add_argument("--stock", action="store_true",
                    help="Label Studio as installed: without the memory-efficient prediction import flag")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "retrieve.json"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    if args.stock:
        os.environ[FAST_PREDICTION_IMPORT] = "false"
    extra = {"PREDICT_MAX_ANSWERS": str(args.max_answers)} if args.max_answers else {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ls = LocalLabelStudio(data_dir=tmp / "ls", venv=find_ls_venv(ROOT)).start()
        server = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", "--latency", str(args.latency)],
                                  cwd=ROOT, stdout=subprocess.PIPE, text=True)
        fake = type("Fake", (), {"url": server.stdout.readline().strip()})()
        try:
            api = LabelStudioAPI(ls.url, ls.token, timeout=300)
            settings = judge_settings(tmp, fake, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token, FEW_SHOT_K="0",
                                      PREDICT_BUDGET=str(args.budget), PREDICT_CONCURRENCY=str(args.concurrency),
                                      JUDGE_TIMEOUT="30", **extra)
            with serve_backend(settings) as srv:
                project = api.create_project("bench retrieve predictions", CONFIG)
                for i in range(0, args.tasks, 1000):
                    api.import_tasks(project, [{"data": {"input": f"q{j}", "context": "c", "output": f"o{j}"}}
                                               for j in range(i, min(args.tasks, i + 1000))])
                api.connect_backend(project, srv.url)
                t0 = time.perf_counter()
                api.retrieve_predictions(project)
                press = time.perf_counter() - t0
                jobs = httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"]
                job_s, by_job = None, 0
                if jobs:
                    while (job := httpx.get(f"{srv.url}/jobs/{jobs[0]['id']}").json())["status"] not in ("finished", "failed"):
                        time.sleep(1)
                    job_s = time.perf_counter() - t0
                    by_job = (job.get("result") or {}).get("labeled", 0)
                per_task: dict[int, int] = {}
                for p in api.predictions(project):
                    per_task[int(p.task)] = per_task.get(int(p.task), 0) + 1
        finally:
            server.terminate()
            ls.stop()
    row = {"tasks": args.tasks, "stock_label_studio": args.stock, "max_answers": args.max_answers, "latency_s": args.latency, "concurrency": args.concurrency, "budget_s": args.budget,
           "button_seconds": round(press, 1), "answered_by_predict": len(per_task) - by_job,
           "labeled_by_job": by_job, "all_done_seconds": round(job_s, 1) if job_s else None,
           "tasks_with_a_prediction": len(per_task), "tasks_with_two": sum(1 for n in per_task.values() if n > 1),
           "jobs": len(jobs), "cpus": os.cpu_count()}
    print(f"Retrieve predictions, {args.tasks} tasks, {args.latency * 1000:.0f} ms a call, {args.concurrency} in flight, "
          f"budget {args.budget:.0f} s")
    for k, v in row.items():
        print(f"  {k:<26}{v}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(row, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
