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

from .labelstudio import LabelStudioAPI
from .lsserver import LocalLabelStudio, find_ls_venv

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "label_configs"
BATCH = 4  # tasks per /predict call: the local judge takes ~3-5 s a task, Label Studio waits 100 s


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _pids(home: Path) -> dict:
    path = home / "quickstart.json"
    return json.loads(path.read_text()) if path.exists() else {}


def run_quickstart(config: str, home: Path, *, ls_port: int, port: int) -> int:
    home = home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    state = _pids(home)
    xml_path, tasks_path = CONFIGS / f"{config}.xml", CONFIGS / "demo" / f"{config}.json"
    if not xml_path.exists():
        print(f"no label config {xml_path}", file=sys.stderr)
        return 2

    ls = LocalLabelStudio(data_dir=home / "label-studio", venv=find_ls_venv(ROOT), port=ls_port)
    if state.get("ls_url") and _up(state["ls_url"]):
        ls.port = int(state["ls_url"].rsplit(":", 1)[1])
        ls._credentials()
        print(f"Label Studio already running at {ls.url}")
    else:
        print("Starting Label Studio (first start migrates its database: about a minute) ...")
        ls.start()
        state.update(ls_url=ls.url, ls_pid=ls.proc.pid)

    backend_url = f"http://127.0.0.1:{port}"
    if not _up(backend_url):
        print("Starting the LabelJudge backend (embedded local judge, no key needed) ...")
        env = dict(os.environ, MODEL_DIR=str(home / "models"), LABEL_STUDIO_URL=ls.url,
                   LABEL_STUDIO_API_KEY=ls.token)
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
    state["backend_url"] = backend_url
    (home / "quickstart.json").write_text(json.dumps(state))

    api = LabelStudioAPI(ls.url, ls.token)
    title = f"LabelJudge demo ({config})"
    project = api.find_project(title)
    if project is None:
        project = api.create_project(title, xml_path.read_text())
        api.import_tasks(project, json.loads(tasks_path.read_text()))
        print(f"Created project {project} with demo tasks from {tasks_path.name}")
    api.connect_backend(project, backend_url, title="LabelJudge (local judge)")

    task_ids = api.task_ids(project)
    have = {int(p.task) for p in api.predictions(project)}
    todo = [t for t in task_ids if t not in have]
    with tqdm(total=len(task_ids), initial=len(task_ids) - len(todo), desc="pre-labeling", unit="task") as bar:
        for i in range(0, len(todo), BATCH):
            chunk = todo[i:i + BATCH]
            api.client.actions.create(id="retrieve_tasks_predictions", project=project,
                                      selected_items={"all": False, "included": chunk})
            bar.update(len(chunk))
    done = {int(p.task) for p in api.predictions(project)}
    missing = [t for t in task_ids if t not in done]

    print(f"""
Label Studio : {ls.url}/projects/{project}/data
Login        : {ls.username} / {ls.password}
Backend      : {backend_url}  (logs: {home / 'backend.log'})
Predictions  : {len(done)} of {len(task_ids)} tasks{'  (missing: ' + str(missing) + ')' if missing else ''}

Next: open the project, click a task to see the judge's label, score and reason; correct it and
submit. Point the judge at your own LLM with JUDGE_PROVIDER=openai OPENAI_BASE_URL=... JUDGE_MODEL=...
Stop everything with: labeljudge quickstart --stop
""")
    return 0 if not missing else 1


def stop_quickstart(home: Path) -> int:
    state = _pids(home.resolve())
    for key in ("backend_pid", "ls_pid"):
        pid = state.get(key)
        if pid:
            try:
                os.killpg(pid, signal.SIGTERM)
                print(f"stopped {key.split('_')[0]} (pid {pid})")
            except ProcessLookupError:
                pass
    (home / "quickstart.json").unlink(missing_ok=True)
    return 0
