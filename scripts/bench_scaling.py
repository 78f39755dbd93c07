"""Scale-out benchmark: labeling throughput with 1, 2 and 4 `labeljudge worker` processes (RQ, a real
Redis) against one OpenAI-compatible provider with a fixed latency and one real Label Studio, all on
this machine. The same work each time: ``--projects`` projects of ``--tasks`` tasks, one labeling job
per project queued through POST /jobs/label. Reports tasks/s, the speed-up over one worker, and the
CPU each side spent (Label Studio's, the workers', the provider's), which says who the limit is.
Prints a table and writes JSON (default bench_results/scaling.json).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import psutil  # noqa: E402

from ml_backend.labelstudio import LabelStudioAPI  # noqa: E402
from ml_backend.labelstudio.local import LocalLabelStudio, find_ls_venv  # noqa: E402
from scripts.bench_labeling import cpu_seconds, tasks  # noqa: E402
from tests.conftest import judge_settings, serve_backend  # noqa: E402
from tests.fake_openai import FakeOpenAI  # noqa: E402
from tests.test_e2e_rq import redis_server  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()


def run(workers: int, args, ls: LocalLabelStudio, api: LabelStudioAPI, fake: FakeOpenAI, redis_url: str,
        tmp: Path) -> dict:
    settings = judge_settings(tmp / f"w{workers}", fake, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
                              REDIS_URL=redis_url, FEW_SHOT_K="0", TRAIN_EVERY="0")
    env = dict(os.environ, MODEL_DIR=str(settings.model_dir), LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
               REDIS_URL=redis_url, PRELOAD_MODEL="false", JUDGE_PROVIDER="openai", OPENAI_BASE_URL=fake.url,
               OPENAI_API_KEY="sk-bench", JUDGE_MODEL="fake-judge", FEW_SHOT_K="0", LOG_LEVEL="WARNING",
               OMP_NUM_THREADS="1")
    with serve_backend(settings) as srv:
        projects = []
        for i in range(args.projects):
            project = api.create_project(f"scaling w{workers} p{i}", CONFIG)
            # content of its own per project and run: the verdict cache must not answer for another project
            api.import_tasks(project, [{"data": {**t["data"], "input": f"w{workers} p{i} {t['data']['input']}"}}
                                       for t in tasks(args.tasks)])
            api.connect_backend(project, srv.url)
            projects.append(project)
        procs = [subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "worker", "--burst"], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for _ in range(workers)]
        ls_cpu0, me_cpu0 = cpu_seconds(ls.proc.pid), psutil.Process().cpu_times()
        t0 = time.perf_counter()
        jobs = [httpx.post(f"{srv.url}/jobs/label", json={"project": p, "concurrency": args.concurrency}).json()["id"]
                for p in projects]
        worker_cpu = 0.0
        while any(p.poll() is None for p in procs):
            worker_cpu = max(worker_cpu, sum(cpu_seconds(p.pid) for p in procs if p.poll() is None))
            time.sleep(0.2)
        seconds = time.perf_counter() - t0
        ls_cpu = cpu_seconds(ls.proc.pid) - ls_cpu0
        me = psutil.Process().cpu_times()
        provider_cpu = (me.user + me.system) - (me_cpu0.user + me_cpu0.system)  # the fake provider runs in here
        results = [httpx.get(f"{srv.url}/jobs/{j}").json() for j in jobs]
    done = sum((r.get("result") or {}).get("labeled", 0) for r in results)
    failed = [r for r in results if r["status"] != "finished"]
    n = args.projects * args.tasks
    return {"workers": workers, "tasks": n, "labeled": done, "failed_jobs": len(failed), "seconds": round(seconds, 2),
            "tasks_per_s": round(done / seconds, 1), "ideal_tasks_per_s": round(min(workers, args.projects) *
                                                                                 args.concurrency / args.latency, 1),
            "cpu_label_studio_s": round(ls_cpu, 1), "cpu_workers_s_at_least": round(worker_cpu, 1),
            "cpu_provider_and_backend_s": round(provider_cpu, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--projects", type=int, default=4)
    ap.add_argument("--tasks", type=int, default=250)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "scaling.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, redis_server() as redis_url, FakeOpenAI(latency=args.latency) as fake:
        tmp = Path(tmp)
        ls = LocalLabelStudio(tmp / "ls", find_ls_venv(ROOT)).start()
        try:
            api = LabelStudioAPI(ls.url, ls.token)
            print(f"{os.cpu_count()} CPUs; {args.projects} projects x {args.tasks} tasks; provider latency "
                  f"{args.latency * 1000:.0f} ms; concurrency {args.concurrency} per job")
            print(f"{'workers':>8}{'tasks/s':>9}{'ideal':>8}{'speed-up':>10}{'seconds':>9}{'LS cpu s':>10}{'workers cpu s':>15}")
            for w in (int(x) for x in args.workers.split(",")):
                row = run(w, args, ls, api, fake, redis_url, tmp)
                row["speed_up"] = round(row["tasks_per_s"] / rows[0]["tasks_per_s"], 2) if rows else 1.0
                rows.append(row)
                print(f"{w:>8}{row['tasks_per_s']:>9}{row['ideal_tasks_per_s']:>8}{row['speed_up']:>9}x{row['seconds']:>9}"
                      f"{row['cpu_label_studio_s']:>10}{row['cpu_workers_s_at_least']:>15}", flush=True)
        finally:
            ls.stop()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
