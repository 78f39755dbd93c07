"""The no-key, no-network demo: a real Label Studio, the backend on the embedded local judge, a demo
project pre-labeled through Label Studio's own "Retrieve predictions". Running it twice reuses
everything that is already there."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from ..labelstudio import LabelStudioAPI
from ..labelstudio.local import LocalLabelStudio, find_ls_venv

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "label_configs"
BATCH = 4  # tasks per /predict call: the local judge takes ~3-5 s a task, Label Studio waits 100 s
HALUEVAL_TASKS = 200
SAMPLE = 12
# the demo's 135M judge on a CPU: two few-shot examples keep its prompts short (HaluEval dialogues are long)
DEMO_PARAMS: dict[str, dict] = {"halueval": {"metric": "faithfulness", "few_shot_k": 2}, "pass_fail": {"metric": "faithfulness"},
               "rag_faithfulness": {"metric": "faithfulness"}, "rating": {"metric": "answer_relevance"}}


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _pids(home: Path) -> dict:
    path = home / "quickstart.json"
    return json.loads(path.read_text()) if path.exists() else {}


def demo_homes() -> list[Path]:
    """Where a quickstart may have left its state: $LABELJUDGE_HOME alone when set, else ./.labeljudge
    and this checkout's .labeljudge."""
    if os.environ.get("LABELJUDGE_HOME"):
        return [Path(os.environ["LABELJUDGE_HOME"])]
    return [Path(".labeljudge"), ROOT / ".labeljudge"]


def find_demo() -> dict | None:
    """The running quickstart's Label Studio URL, token, MODEL_DIR and backend URL, so the commands
    it prints work as printed with no environment set; None when no quickstart is running."""
    for home in demo_homes():
        state = _pids(home)
        creds = Path(state.get("credentials") or home / "label-studio" / "labeljudge_credentials.json")
        if state.get("ls_url") and creds.exists() and _up(state["ls_url"]):
            return {"ls_url": state["ls_url"], "token": json.loads(creds.read_text())["token"],
                    "model_dir": state.get("model_dir") or str(home.resolve()), "backend_url": state.get("backend_url"),
                    "home": str(home.resolve())}
    return None


def run_quickstart(config: str, home: Path, *, ls_port: int, port: int) -> int:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = _pids(home)
    halueval = config == "halueval"
    xml_path = CONFIGS / ("pass_fail.xml" if halueval else f"{config}.xml")
    tasks_path = CONFIGS / "demo" / f"{config}.json"
    if not xml_path.exists():
        print(f"no label config {xml_path}", file=sys.stderr)
        return 2

    backend_url = f"http://127.0.0.1:{port}"
    if _up(backend_url) and not _alive(state.get("backend_pid")):
        # reusing it would label through another store and Label Studio (seen: a removed .labeljudge whose
        # backend still ran; the demo's labeling then sat at 0 for minutes)
        holder = _listener(port)
        who = f" (pid {holder.pid}: {' '.join(holder.cmdline())[:120]})" if holder else ""
        print(f"{backend_url} already answers{who}, but this quickstart (state in {home}) did not start it: a "
              "backend of another checkout or home, or of a .labeljudge that was removed. Stop it with "
              f"`labeljudge quickstart --stop --home {home} --port {port} --ls-port {ls_port}`, or pass another --port.",
              file=sys.stderr)
        return 1

    ls = LocalLabelStudio(data_dir=home / "label-studio", venv=find_ls_venv(ROOT), port=ls_port)
    if state.get("ls_url") and _up(state["ls_url"]):
        ls.port = int(state["ls_url"].rsplit(":", 1)[1])
        ls._credentials()
        print(f"Label Studio already running at {ls.url}")
    else:
        print("Starting Label Studio (first start migrates its database: about a minute) ...")
        ls.start()
        state.update(ls_url=ls.url, ls_pid=ls.proc.pid if ls.proc else None)

    if not _up(backend_url):
        print("Starting the LabelJudge backend (embedded local judge, no key needed) ...")
        # the CLI's default store (MODEL_DIR=.labeljudge) is this one: one cache, ledger and registry
        env = dict(os.environ, MODEL_DIR=str(home), LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token)
        log = open(home / "backend.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "serve", "--host", "127.0.0.1",
                                 "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd=ROOT)
        state["backend_pid"] = proc.pid
        deadline = time.time() + 60
        while not _up(backend_url):
            if proc.poll() is not None or time.time() > deadline:
                print(f"the backend did not start; see {home / 'backend.log'}", file=sys.stderr)
                return 1
            time.sleep(0.3)
    state.update(backend_url=backend_url, model_dir=str(home),
                 credentials=str(home / "label-studio" / "labeljudge_credentials.json"))
    (home / "quickstart.json").write_text(json.dumps(state))
    (home / "quickstart.json").chmod(0o600)

    api = LabelStudioAPI(ls.url, ls.token)
    title = "LabelJudge demo (HaluEval dialogue)" if halueval else f"LabelJudge demo ({config})"
    project = api.find_project(title)
    if project is None:
        project = api.create_project(title, xml_path.read_text())
        api.import_tasks(project, halueval_tasks(HALUEVAL_TASKS, api.ensure_user(**REFERENCE_USER)) if halueval
                         else json.loads(tasks_path.read_text()))
        print(f"Created project {project}: {title}")
    api.connect_backend(project, backend_url, title="LabelJudge (local judge)", extra_params=DEMO_PARAMS.get(config, {}))
    if halueval:
        missing, what = _label_sample(backend_url, project, SAMPLE)
        _summary(ls, project, backend_url, home, f"{what} (a diverse sample of {SAMPLE} of {HALUEVAL_TASKS} tasks; "
                 f"{HALUEVAL_TASKS // 2} carry HaluEval's own label as ground truth by {REFERENCE_USER['email']})",
                 missing, _review_tab(backend_url, project))
        return 0 if not missing else 1

    task_ids = api.task_ids(project)
    have = {int(p.task) for p in api.predictions(project)}
    todo = [t for t in task_ids if t not in have]
    with tqdm(total=len(task_ids), initial=len(task_ids) - len(todo), desc="pre-labeling", unit="task") as bar:
        for i in range(0, len(todo), BATCH):
            chunk = todo[i:i + BATCH]
            api.retrieve_predictions(project, chunk)
            bar.update(len(chunk))
    done = {int(p.task) for p in api.predictions(project)}
    missing = len([t for t in task_ids if t not in done])
    _summary(ls, project, backend_url, home, f"{len(done)} of {len(task_ids)} tasks", missing,
             _review_tab(backend_url, project))
    return 0 if not missing else 1


def _review_tab(backend_url: str, project: int) -> str | None:
    """The review queue `labeljudge next` builds (the judge's likeliest mistakes, then random audits),
    as the one Data Manager tab to review in; its URL, or None when it could not be built."""
    try:
        r = httpx.get(f"{backend_url}/review/{project}", timeout=120)
        return r.json().get("tab") if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


REFERENCE_USER = {"email": "reference@halueval.dataset", "username": "halueval-reference",
                  "first_name": "HaluEval", "last_name": "reference"}


def halueval_tasks(n: int, reference_user: int | None = None) -> list[dict]:
    """HaluEval dialogue items as tasks. With ``reference_user``, every other one carries the dataset's
    own label as a ground-truth annotation by that clearly named user, so the demo's report scores the
    judge and Start Training has labels on the first run (the rest is left for people to label)."""
    from ..datasets import halueval_rows

    df = halueval_rows("dialogue", n, seed=7)
    # half of each class (the rows alternate Pass/Fail, so every other row would all be one class and
    # Start Training would refuse the demo's labels)
    reference = set(df.groupby("label").head((len(df) + 1) // 4 or 1).index)
    tasks = []
    for i, r in zip(df.index, df.itertuples()):
        # the dataset's label only as a ground-truth annotation: never in the data an annotator is shown
        task: dict = {"data": {"input": r.input, "context": r.context, "output": r.output}}
        if reference_user is not None and i in reference:
            task["annotations"] = [{"ground_truth": True, "completed_by": reference_user, "result": [{
                "from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": [r.label]}}]}]
        tasks.append(task)
    return tasks


def _label_sample(backend_url: str, project: int, sample: int) -> tuple[int, str]:
    """Pre-label a diverse sample through the backend's labeling job, with a progress bar; returns the
    failures and what was done, as it happened (labeled now, or already labeled by this version)."""
    job = httpx.post(f"{backend_url}/jobs/label", json={"project": project, "sample": sample}, timeout=30).json()
    with tqdm(total=sample, desc="pre-labeling a sample", unit="task") as bar:
        while job.get("status") not in ("finished", "failed"):
            time.sleep(1)
            job = httpx.get(f"{backend_url}/jobs/{job['id']}", timeout=10).json()
            progress = job.get("progress") or {}
            bar.n = progress.get("done", bar.n) + (job.get("result") or {}).get("skipped", 0)
            bar.set_description(progress.get("stage") or "pre-labeling a sample", refresh=False)
            bar.refresh()
    if job["status"] == "failed":
        print(f"labeling failed: {job.get('error')}", file=sys.stderr)
        return sample, "nothing"
    r = job["result"]
    done = f"labeled {r['labeled']} now with {r['model_version']}" if r["labeled"] else \
        f"all {r['skipped']} already labeled by {r['model_version']}"
    if r["labeled"] and r["skipped"]:
        done += f", {r['skipped']} already were"
    return r["failed"], done


def _summary(ls: LocalLabelStudio, project: int, backend_url: str, home: Path, what: str, missing: int,
             tab: str | None = None) -> None:
    cli = str(Path(sys.executable).parent / "labeljudge")  # the venv's, so the lines work without activating it
    if home.resolve() not in [h.resolve() for h in demo_homes()]:  # the CLI looks there; a --home elsewhere is named
        cli = f"LABELJUDGE_HOME={home} {cli}"
    queue = f"the '{LabelStudioAPI.QUEUE_VIEW}' tab: {tab}" if tab else \
        f"run step 2's `{cli} next --project {project}` to build the '{LabelStudioAPI.QUEUE_VIEW}' tab"
    print(f"""
Label Studio : {ls.url}/projects/{project}/data
Review next  : {queue}
Login        : {ls.username} / {ls.password}
Backend      : {backend_url}  (logs: {home / 'backend.log'})
Report       : {backend_url}/report/{project}
Pre-labeled  : {what}{f'  ({missing} failed, run again to retry)' if missing else ''}

Next (the CLI finds this demo's Label Studio, token and store by itself):
 1. Open the '{LabelStudioAPI.QUEUE_VIEW}' tab: the judge's likeliest mistakes first, then a few random
    audits. Click a task: the prediction shows the judge's label, score and reason.
 2. Correct or accept each one (Submit): your labels become the judge's few-shot examples.
    {cli} next --project {project}   refreshes the tab with the next tasks to review.
 3. After step 2: {cli} label --project {project} --sample 16
    labels a sample with the judge your labels taught (a new prompt version); the report compares versions.
 4. {cli} report --project {project}   (or the Report page above)
 5. Project settings > Model > Start Training: fine-tunes the fast evaluator from your labels. Label
    Studio's dialog shows only "Response: {{}}"; watch the run under Training runs on the Report page.
 6. {cli} export --project {project} --out labels.csv   the final label of every task, and where it came from.
 7. Your own data: a CSV (or JSONL, Parquet) of yours with columns input, context, output:
    {cli} import your_data.csv --config pass_fail   (this demo's backend is connected to it)
    Your own LLM: JUDGE_PROVIDER=openai OPENAI_BASE_URL=... JUDGE_MODEL=... {cli} serve
Stop everything with: {cli} quickstart --stop --home {home}
(or `source {Path(sys.executable).parent}/activate` once, then plain `labeljudge ...`)
""")


def _alive(pid: int | None) -> bool:
    """Whether the process ``pid`` (a quickstart's own backend, recorded in its state) still runs."""
    import psutil

    return pid is not None and pid > 0 and psutil.pid_exists(int(pid))


def _listener(port: int):
    """The process of this user listening on ``port`` on this machine (a psutil.Process), or None."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return psutil.Process(conn.pid)
    except (psutil.AccessDenied, psutil.NoSuchProcess):
        pass
    return None


# what a quickstart's own processes run: --stop ends only these when it finds them by port
OURS = {"backend": ("ml_backend.cli", "serve"), "Label Studio": ("label-studio", "start")}


def _stop_group(pid: int) -> None:
    """SIGTERM the process group a quickstart started ``pid`` in (its own session), never ours."""
    group = os.getpgid(pid)
    if group == os.getpgrp():
        os.kill(pid, signal.SIGTERM)
    else:
        os.killpg(group, signal.SIGTERM)


def stop_quickstart(home: Path, *, port: int | None = None, ls_port: int | None = None) -> int:
    """Stop what the quickstart in ``home`` started; with no state there (a removed home), the backend
    and Label Studio of a quickstart that listen on ``port`` / ``ls_port``."""
    state = _pids(home.resolve())
    stopped = 0
    for key in ("backend_pid", "ls_pid"):
        pid = state.get(key)
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
                print(f"stopped {key.split('_')[0]} (pid {pid})")
                stopped += 1
            except ProcessLookupError:
                pass
    (home / "quickstart.json").unlink(missing_ok=True)
    if state:
        return 0
    for what, listen in (("backend", port), ("Label Studio", ls_port)):
        proc = _listener(listen) if listen else None
        if proc is None:
            continue
        cmd = " ".join(proc.cmdline())
        if not all(part in cmd for part in OURS[what]):
            print(f"port {listen} is held by pid {proc.pid} ({cmd[:120]}), not a quickstart's {what}: left alone",
                  file=sys.stderr)
            continue
        _stop_group(proc.pid)
        print(f"stopped {what} on port {listen} (pid {proc.pid})")
        stopped += 1
    if not stopped:
        print(f"nothing to stop: no quickstart state in {home}"
              + (f" and no quickstart listening on ports {port}/{ls_port}" if port or ls_port else ""))
    return 0
