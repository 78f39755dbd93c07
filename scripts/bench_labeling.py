"""Bulk labeling throughput against a real Label Studio and an OpenAI-compatible server with a fixed
per-call latency, compared with the ideal C / latency and with Label Studio's own "Retrieve
predictions" path (/predict) on the same tasks; plus the per-task overhead with a zero-latency provider.
Each labeling row also gives the CPU each process spent per task (labeljudge, the provider, Label
Studio), which on a small machine says who the limit is, and each asyncio row is followed by the same
calls made by the HTTP clients alone (openai's, plain aiohttp): the ceiling on this machine.
Prints a table and writes JSON (default bench_results/labeling.json).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402

from ml_backend.app import LabelJudgeBackend  # noqa: E402
from ml_backend.labelstudio import LabelStudioAPI  # noqa: E402
from ml_backend.labelstudio.local import FAST_PREDICTION_IMPORT, LocalLabelStudio, find_ls_venv  # noqa: E402
from ml_backend.store import Store  # noqa: E402
from ml_backend.predict import prediction_for  # noqa: E402
from ml_backend.workflows.labeling import label_project  # noqa: E402
from scripts.bench_predict import InstantProvider  # noqa: E402
from tests.conftest import judge_settings, serve_backend  # noqa: E402

CONFIG = (ROOT / "label_configs" / "pass_fail.xml").read_text()
RUNNERS = {True: "asyncio", False: "threads"}


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time (user + system) of a process (and its children) so far."""
    procs = [psutil.Process(pid)]
    procs += procs[0].children(recursive=True) if children else []
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    return total


def import_rows(api: LabelStudioAPI, n: int, mode: str) -> list[dict]:
    """Label Studio's import_predictions alone: ``n`` predictions into an ``n``-task project, in
    batches of 100 and of 500."""
    rows = []
    for batch in (100, 500):
        project = api.create_project(f"bench writes {batch}", CONFIG)
        ids = api.import_tasks(project, tasks(n))
        t0 = time.perf_counter()
        for i in range(0, len(ids), batch):
            api.client.projects.import_predictions(id=project, request=[
                {"task": t, "model_version": "judge-bench", "score": 0.9, "result": [{
                    "from_name": "verdict", "to_name": "output", "type": "choices",
                    "value": {"choices": ["Pass"]}}]} for t in ids[i:i + batch]])
        secs = time.perf_counter() - t0
        rows.append({"path": f"import_predictions, batches of {batch}, {mode}", "tasks": len(ids),
                     "seconds": round(secs, 2), "labeling_seconds": round(secs, 2),
                     "tasks_per_s": round(len(ids) / secs, 1), "ideal_per_s": None, "of_ideal": None,
                     "overhead_ms_per_task": round(1000 * secs / len(ids), 3)})
    return rows


def client_ceiling(url: str, n: int, concurrency: int, latency: float, body: dict) -> list[dict]:
    """What the HTTP clients alone reach against the same provider, with the judge's own request body
    and nothing else (no judge, no cache, no Label Studio): openai's client, through which every
    judge call goes, and plain aiohttp, the floor under it. They bound what labeling can reach here."""
    import asyncio

    import aiohttp
    from openai import AsyncOpenAI

    from ml_backend.judge.providers.openai_compat import aiohttp_client

    async def run(kind: str) -> float:
        remaining = iter(range(n))
        if kind == "openai":
            client = AsyncOpenAI(api_key="no-key", base_url=url, http_client=aiohttp_client())

            async def call() -> None:
                await client.post("/chat/completions", body=body, cast_to=dict)
        else:
            client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

            async def call() -> None:
                async with client.post(url + "/chat/completions", json=body) as response:
                    await response.json()

        async def worker() -> None:
            for _ in remaining:
                await call()

        t0 = time.perf_counter()
        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - t0
        finally:
            await client.close()

    rows = []
    for kind, label in (("openai", "openai's async client alone (aiohttp transport)"), ("aiohttp", "plain aiohttp alone")):
        secs = asyncio.run(run(kind))
        ideal = concurrency / latency
        rows.append({"path": f"{label}, C={concurrency}", "tasks": n, "seconds": round(secs, 2),
                     "labeling_seconds": round(secs, 2), "tasks_per_s": round(n / secs, 1), "ideal_per_s": ideal,
                     "of_ideal": round(n / secs / ideal, 3)})
    return rows


def judge_body(backend: LabelJudgeBackend, project: int) -> dict:
    """The chat-completions body the judge sends for one of the benchmark's tasks."""
    state = backend.state(project)
    messages, question, decoding = next(state.judge.plan(tasks(1)[0]["data"]))[0]
    return state.judge.provider.request_body(messages, question, decoding)


def tasks(n: int) -> list[dict]:
    return [{"data": {"input": f"q{i}", "context": f"c{i}", "output": f"o{i}"}} for i in range(n)]


def engine_only(tmp: Path, n: int, concurrency: int = 8, use_async: bool = True) -> dict:
    """The engine without Label Studio: render, judge (zero-latency provider), cache, build and
    validate the prediction; median of 3 runs (fresh cache each)."""
    from ml_backend.judge.runner import run_judge

    times = []
    for r in range(3):
        settings = judge_settings(tmp / str(r), None, JUDGE_PROVIDER="openai", JUDGE_MODEL="instant", FEW_SHOT_K="0")
        backend = LabelJudgeBackend(settings, Store(settings.model_dir / "s.sqlite3"))
        backend.providers.register("openai", "instant", InstantProvider())
        state = backend.setup(1, CONFIG, {})
        out: list = []
        t0 = time.perf_counter()
        run_judge(state.judge, ((i, t["data"]) for i, t in enumerate(tasks(n))),
                  lambda o: out.append(prediction_for(state, o.verdict)), concurrency=concurrency,
                  cache=backend.store, use_async=use_async)
        times.append(time.perf_counter() - t0)
        assert len(out) == n and all(out)
    secs = sorted(times)[1]
    return {"path": f"engine only (no Label Studio), zero-latency, {RUNNERS[use_async]}", "tasks": n, "seconds": round(secs, 2),
            "labeling_seconds": round(secs, 2), "tasks_per_s": round(n / secs, 1), "ideal_per_s": None,
            "of_ideal": None, "overhead_ms_per_task": round(1000 * secs / n, 3)}


def real_server_rows(n: int, concurrencies: tuple[int, ...] = (1, 2)) -> list[dict]:
    """`labeljudge label` through a real Label Studio against llama-cpp-python's server (the embedded
    SmolLM2 GGUF on this CPU): HaluEval QA rows, the faithfulness metric. The first run pays for the
    capability probe (json_schema refused with a 500, then a JSON object with a schema)."""
    from ml_backend.datasets import halueval_rows
    from tests.llama_server import MODEL_ALIAS, llama_server

    rows = []
    df = halueval_rows("qa", n)
    data = [{"data": {k: str(v) for k, v in r.items() if k in ("input", "context", "output")}} for r in df.to_dict("records")]
    with tempfile.TemporaryDirectory() as tmp_s, llama_server() as url:
        tmp = Path(tmp_s)
        ls = LocalLabelStudio(data_dir=tmp / "ls", venv=find_ls_venv(ROOT)).start()
        try:
            api = LabelStudioAPI(ls.url, ls.token)
            fake = type("Server", (), {"url": url})()
            for c in concurrencies:
                settings = judge_settings(tmp / f"real{c}", fake, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
                                          FEW_SHOT_K="0", JUDGE_MODEL=MODEL_ALIAS, JUDGE_METRIC="faithfulness",
                                          JUDGE_TIMEOUT="120")
                backend = LabelJudgeBackend(settings, Store(settings.model_dir / "s.sqlite3"))
                project = api.create_project(f"bench llama-cpp-python c={c}", CONFIG)
                api.import_tasks(project, data)
                s = label_project(backend, api, project, concurrency=c)
                rows.append({"path": f"labeljudge label, llama-cpp-python server (SmolLM2-135M Q4), C={c}",
                             "tasks": s.labeled, "failed": s.failed, "seconds": round(s.seconds, 2),
                             "labeling_seconds": round(s.labeling_seconds, 2),
                             "tasks_per_s": round(s.labeled / s.labeling_seconds, 2), "ideal_per_s": None,
                             "of_ideal": None, "s_per_task": round(s.labeling_seconds / max(1, s.labeled), 3)})
        finally:
            ls.stop()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real-server", action="store_true",
                    help="only the rows against llama-cpp-python's server (scripts/setup_llama_server.sh first)")
    ap.add_argument("--tasks", type=int, default=1000)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--concurrency", default="8,32,64")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "labeling.json"))
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    if args.real_server:
        rows = real_server_rows(min(args.tasks, 100))
        print(f"{'path':<70}{'tasks':>6}{'failed':>7}{'seconds':>9}{'tasks/s':>9}{'s/task':>8}")
        for r in rows:
            print(f"{r['path']:<70}{r['tasks']:>6}{r['failed']:>7}{r['labeling_seconds']:>9}{r['tasks_per_s']:>9}"
                  f"{r['s_per_task']:>8}")
        out = Path(args.out).with_name("labeling_real_server.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"rows": rows}, indent=2))
        print(f"wrote {out}")
        return
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        ls = LocalLabelStudio(data_dir=tmp / "ls", venv=find_ls_venv(ROOT)).start()
        try:
            api = LabelStudioAPI(ls.url, ls.token)
            server = subprocess.Popen([sys.executable, "-m", "tests.fake_openai", "--latency", str(args.latency)],
                                      cwd=ROOT, stdout=subprocess.PIPE, text=True)
            fake = type("Fake", (), {"url": server.stdout.readline().strip()})()  # its own process: no shared GIL
            try:
                for c, use_async in ((int(x), a) for x in args.concurrency.split(",") for a in (True, False)):
                    settings = judge_settings(tmp / f"c{c}{use_async}", fake, LABEL_STUDIO_URL=ls.url,
                                              LABEL_STUDIO_API_KEY=ls.token, FEW_SHOT_K="0")
                    backend = LabelJudgeBackend(settings, Store(settings.model_dir / "s.sqlite3"))
                    project = api.create_project(f"bench c={c} {RUNNERS[use_async]}", CONFIG)
                    api.import_tasks(project, tasks(args.tasks))
                    pids = {"labeljudge": os.getpid(), "provider": server.pid, "label_studio": ls.proc.pid}
                    own = {"labeljudge": False}  # Label Studio and the provider are this process's children
                    cpu0 = {k: cpu_seconds(v, own.get(k, True)) for k, v in pids.items()}
                    s = label_project(backend, api, project, concurrency=c, use_async=use_async)
                    cpu = {k: round(1000 * (cpu_seconds(v, own.get(k, True)) - cpu0[k]) / args.tasks, 2)
                           for k, v in pids.items()}
                    ideal = c / args.latency
                    rows.append({"path": f"labeljudge label, C={c}, {RUNNERS[use_async]}", "tasks": s.labeled,
                                 "seconds": round(s.seconds, 2),
                                 "labeling_seconds": round(s.labeling_seconds, 2),
                                 "tasks_per_s": round(s.labeled / s.labeling_seconds, 1), "ideal_per_s": ideal,
                                 "of_ideal": round(s.labeled / s.labeling_seconds / ideal, 3),
                                 "judging_seconds": round(s.judging_seconds, 2),
                                 "judging_of_ideal": round(s.labeled / s.judging_seconds / ideal, 3),
                                 "cpu_ms_per_task": cpu})
                    if use_async:  # the same calls with nothing but the HTTP client, just after
                        rows += client_ceiling(fake.url, args.tasks, c, args.latency, judge_body(backend, project))
                # Label Studio's own path: one /predict with every task (backend pool of 8 threads)
                settings = judge_settings(tmp / "ls-path", fake, FEW_SHOT_K="0", JUDGE_TIMEOUT="30")
                with serve_backend(settings) as srv:
                    project = api.create_project("bench retrieve predictions", CONFIG)
                    api.import_tasks(project, tasks(args.tasks))
                    api.connect_backend(project, srv.url)
                    t0 = time.time()
                    slow = LabelStudioAPI(ls.url, ls.token, timeout=300)
                    try:
                        slow.retrieve_predictions(project)
                    except Exception as exc:
                        print(f"retrieve predictions failed: {type(exc).__name__}")
                    secs = time.time() - t0
                    n = len(api.predictions(project))
                    rows.append({"path": "Label Studio retrieve predictions (/predict)", "tasks": n, "labeling_seconds": round(secs, 2),
                                 "seconds": round(secs, 2), "tasks_per_s": round(n / secs, 1),
                                 "ideal_per_s": 8 / args.latency, "of_ideal": round(n / secs / (8 / args.latency), 3)})
            finally:
                server.terminate()
            # overhead of the engine itself (includes the writes to Label Studio)
            settings = judge_settings(tmp / "zero", None, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
                                      JUDGE_PROVIDER="openai", JUDGE_MODEL="instant", FEW_SHOT_K="0")
            backend = LabelJudgeBackend(settings, Store(settings.model_dir / "s.sqlite3"))
            backend.providers.register("openai", "instant", InstantProvider())
            project = api.create_project("bench zero latency", CONFIG)
            api.import_tasks(project, tasks(args.tasks))
            s = label_project(backend, api, project, concurrency=8)
            rows.append({"path": "labeljudge label, zero-latency provider (asyncio)", "tasks": s.labeled,
                         "seconds": round(s.seconds, 2), "labeling_seconds": round(s.labeling_seconds, 2),
                         "tasks_per_s": round(s.labeled / s.labeling_seconds, 1),
                         "ideal_per_s": None, "of_ideal": None,
                         "overhead_ms_per_task": round(1000 * s.labeling_seconds / max(1, s.labeled), 3)})
            # the two parts of that overhead, apart: our engine alone, and Label Studio's write API
            rows.append(engine_only(tmp / "engine", args.tasks, use_async=True))
            rows.append(engine_only(tmp / "engine-threads", args.tasks, use_async=False))
            rows += import_rows(api, args.tasks, "memory-efficient import (LocalLabelStudio's default)")
        finally:
            ls.stop()
        # the same writes into a Label Studio with its own defaults (every task recounted per request)
        os.environ[FAST_PREDICTION_IMPORT] = "false"
        ls = LocalLabelStudio(data_dir=tmp / "ls-defaults", venv=find_ls_venv(ROOT)).start()
        try:
            rows += import_rows(LabelStudioAPI(ls.url, ls.token), args.tasks, "Label Studio's defaults")
        finally:
            ls.stop()
    print("tasks/s counts the judge calls and the writes to Label Studio (labeling_seconds); 'seconds' adds "
          "syncing annotations and listing the project")
    print(f"{'path':<78}{'tasks':>6}{'seconds':>9}{'tasks/s':>9}{'ideal/s':>9}{'of ideal':>9}")
    for r in rows:
        print(f"{r['path']:<78}{r['tasks']:>6}{r['seconds']:>9}{r['tasks_per_s']:>9}"
              f"{r['ideal_per_s'] if r['ideal_per_s'] else '-':>9}{r['of_ideal'] if r['of_ideal'] else '-':>9}")
    for r in rows:
        if r.get("cpu_ms_per_task"):
            print(f"{r['path']}: judge calls alone (until the last verdict, without the final write) "
                  f"{r['judging_of_ideal']} of ideal; CPU ms/task "
                  + ", ".join(f"{k} {v}" for k, v in r["cpu_ms_per_task"].items()))
    for r in rows:
        if r.get("overhead_ms_per_task") is not None:
            print(f"{r['path']}: {r['overhead_ms_per_task']} ms/task")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"latency_s": args.latency, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
