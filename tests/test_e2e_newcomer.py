"""What a newcomer's first hour found, end to end against a real Label Studio: the CLI beside a running
demo uses the demo's Label Studio, token and store with no environment; every --json command leaves
exactly one JSON document on stdout; Start Training says what happened, on /jobs and the report page;
the empty report says what to do next; annotators show as people; credentials stay off `ps`."""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import httpx
import pytest

from .conftest import ROOT, judge_settings, serve_backend
from .test_e2e_labelstudio import PASS_FAIL, _tasks, _wait

pytestmark = pytest.mark.e2e


def cli(args: list[str], env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ml_backend.cli", *args], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def demo(tmp_path, fake_llm, label_studio, ls_api):
    """A running 'quickstart': its state file, a backend on its store, a project with 30 tasks (the
    evaluator trains on at least 20 rows)."""
    home = tmp_path / "home"
    home.mkdir()
    creds = label_studio.data_dir / "labeljudge_credentials.json"
    settings = judge_settings(home.parent, fake_llm, MODEL_DIR=str(home), LABEL_STUDIO_URL=label_studio.url,
                              LABEL_STUDIO_API_KEY=label_studio.token, TRAIN_EVERY="0", TRAIN_EPOCHS="1",
                              TRAIN_MAX_LENGTH="64")
    with serve_backend(settings) as srv:
        (home / "quickstart.json").write_text(json.dumps({"ls_url": label_studio.url, "backend_url": srv.url,
                                                          "model_dir": str(home), "credentials": str(creds)}))
        project = ls_api.create_project("e2e newcomer", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(30))
        ls_api.connect_backend(project, srv.url)
        # no Label Studio variables, no MODEL_DIR: only what the demo left behind
        env = {k: v for k, v in os.environ.items() if k not in ("LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "MODEL_DIR")}
        env.update(LABELJUDGE_HOME=str(home), JUDGE_PROVIDER="openai", OPENAI_BASE_URL=fake_llm.url,
                   OPENAI_API_KEY="sk-test-secret-key-123456", JUDGE_MODEL="fake-judge", PRELOAD_MODEL="false",
                   TRAIN_EPOCHS="1", TRAIN_MAX_LENGTH="64")
        yield {"home": home, "srv": srv, "project": project, "env": env, "settings": settings}


def test_the_cli_beside_a_demo_uses_its_label_studio_and_store_and_prints_clean_json(demo, ls_api):
    env, project, home = demo["env"], demo["project"], demo["home"]
    label = cli(["label", "--project", str(project), "--sample", "6", "--json"], env)
    assert label.returncode == 0, label.stderr
    assert label.stdout.strip(), label.stderr[-3000:]
    summary = json.loads(label.stdout)  # exactly one document: json.loads fails on anything around it
    assert summary["labeled"] == 6
    # one store: the CLI's ledger went into the demo's sqlite, where the backend reads it
    db = sqlite3.connect(home / "labeljudge.sqlite3")
    assert db.execute("SELECT SUM(calls) FROM ledger WHERE project_id=?", (str(project),)).fetchone()[0] >= 6
    db.close()
    region = {"from_name": "verdict", "to_name": "output", "type": "choices"}
    for i, task in enumerate(ls_api.task_ids(project)):
        ls_api.client.annotations.create(id=task, result=[{**region, "value": {"choices": ["Fail" if i % 3 == 0 else "Pass"]}}])
    for args in (["report", "--project", str(project), "--json"], ["prompts", "--project", str(project), "--json"],
                 ["evaluators", "--project", str(project), "--json"], ["train", "--project", str(project), "--json"]):
        out = cli(args, env)
        assert out.returncode == 0, (args, out.stderr[-2000:])
        json.loads(out.stdout)  # one JSON document and nothing else
    report = json.loads(cli(["report", "--project", str(project), "--json"], env).stdout)
    assert report["annotators"] and report["annotators"][0]["annotator"] == "admin@example.com"
    evaluators = json.loads(cli(["evaluators", "--project", str(project), "--json"], env).stdout)
    assert evaluators["versions"] and {"current", "promoted", "decision"} <= set(evaluators["versions"][0])
    # a store other than the demo's is pointed out
    other = cli(["prompts", "--project", str(project)], {**env, "MODEL_DIR": str(home.parent / "elsewhere")})
    assert "note: the running demo backend keeps its store in" in other.stderr


def test_start_training_says_what_happened(demo, ls_api):
    srv, project = demo["srv"], demo["project"]
    region = {"from_name": "verdict", "to_name": "output", "type": "choices"}
    for i, task in enumerate(ls_api.task_ids(project)):
        ls_api.client.annotations.create(id=task, result=[{**region, "value": {"choices": ["Fail" if i % 3 == 0 else "Pass"]}}])
    empty = httpx.get(f"{srv.url}/report/{project}").text
    assert "No training run yet" in empty
    ml_id = ls_api.backends(project)[0].id
    ls_api.client.ml.train(id=ml_id)  # Label Studio's own Start Training: a START_TRAINING webhook
    jobs = _wait(lambda: httpx.get(f"{srv.url}/jobs?project={project}&kind=train").json()["jobs"],
                 what="the training job")
    job = _wait(lambda: (j := httpx.get(f"{srv.url}/jobs/{jobs[0]['id']}").json())["status"] in ("finished", "failed")
                and j, timeout=300, what="training to end")
    assert job["status"] == "finished", job
    runs = httpx.get(f"{srv.url}/report/{project}?format=json").json()["training"]
    assert runs[0]["job"] == job["id"] and runs[0]["decision"] and runs[0]["promoted"] is not None
    page = httpx.get(f"{srv.url}/report/{project}").text
    assert "Evaluator training" in page and runs[0]["version"] in page
    # the legacy /train answer (and /job_status) says where to watch
    answer = httpx.post(f"{srv.url}/train", json={"project": project})
    assert answer.status_code == 201
    body = answer.json()
    assert body["status"] in ("queued", "running") and body["watch"] == f"/jobs/{body['job']}"
    assert body["report"] == f"/report/{project}" and "job" in body["message"]
    status = httpx.post(f"{srv.url}/job_status", json={"job": body["job"]}).json()
    # in Label Studio's words (it counts queued and started as training); ours beside them
    assert status["job"] == body["job"] and status["status"] in ("queued", "started", "finished")
    assert status["labeljudge_status"] in ("queued", "running", "finished")
    _wait(lambda: httpx.get(f"{srv.url}/jobs/{body['job']}").json()["status"] in ("finished", "failed"),
          timeout=300, what="the second run")


def test_an_empty_report_says_what_to_do_next(demo):
    srv, project, env = demo["srv"], demo["project"], demo["env"]
    page = httpx.get(f"{srv.url}/report/{project}").text
    assert "Only one version" not in page and "No task has a human label yet" in page
    out = cli(["report", "--project", str(project)], env)
    assert out.returncode == 0 and "next: No task has a human label yet" in out.stdout


def test_the_quickstart_says_what_it_labeled_and_hides_credentials(demo, label_studio):
    from ml_backend.cli.quickstart import _label_sample

    srv, project = demo["srv"], demo["project"]
    missing, what = _label_sample(srv.url, project, 3)
    assert missing == 0 and what.startswith("labeled 3 now with judge-")
    missing, what = _label_sample(srv.url, project, 3)
    assert what.startswith("all 3 already labeled by judge-")
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert label_studio.password not in ps and label_studio.token not in ps


def test_a_fresh_quickstart_refuses_a_backend_it_did_not_start_and_stop_ends_it_by_port(tmp_path, capsys):
    # a .labeljudge removed while its backend still runs: the next quickstart must not label through that
    # backend's store and Label Studio, must say what holds the port, and --stop must end it with no state
    from ml_backend.cli.quickstart import run_quickstart, stop_quickstart
    from ml_backend.labelstudio.local import free_port

    port, other = free_port(), free_port()
    env = dict(os.environ, MODEL_DIR=str(tmp_path / "removed-home"), PRELOAD_MODEL="false")
    backend = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "serve", "--host", "127.0.0.1", "--port",
                                str(port)], env=env, cwd=ROOT, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stranger = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(other)],
                                start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait(lambda: _up(f"http://127.0.0.1:{port}"), timeout=120)
        fresh = tmp_path / "fresh-home"
        assert run_quickstart("pass_fail", fresh, ls_port=0, port=port) == 1
        err = capsys.readouterr().err
        # the listener is the backend or its gunicorn worker: named by pid and command
        assert "ml_backend.cli serve" in err and "did not start it" in err and f"--stop --home {fresh}" in err
        assert not (fresh / "label-studio").exists() and not (fresh / "quickstart.json").exists()  # nothing started

        # no state in the fresh home: --stop finds the quickstart backend by its port, and leaves a
        # process that is not a quickstart's alone
        _wait(lambda: _listening(other), timeout=30)
        assert stop_quickstart(fresh, port=port, ls_port=other) == 0
        out = capsys.readouterr()
        assert f"stopped backend on port {port}" in out.out and "left alone" in out.err
        backend.wait(timeout=30)
        assert not _up(f"http://127.0.0.1:{port}") and stranger.poll() is None
    finally:
        for proc in (backend, stranger):
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
            proc.wait(timeout=30)


def _up(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _listening(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code < 500
    except httpx.HTTPError:
        return False


def test_the_printed_next_steps_run_exactly_as_printed(demo, label_studio, ls_api, tmp_path, capsys):
    """The quickstart's printout, line by line: the one review tab is `next`'s, and every command it
    prints (next, label, report, export, import of a CSV with the columns it names) runs as printed,
    beside the demo, with no environment. The demo's data carries no answer column."""
    import re
    import shlex

    from ml_backend.cli.quickstart import _label_sample, _review_tab, _summary, halueval_tasks

    srv, project, env, home = demo["srv"], demo["project"], demo["env"], demo["home"]
    assert all(set(t["data"]) == {"input", "context", "output"} for t in halueval_tasks(6))
    _label_sample(srv.url, project, 6)
    tab = _review_tab(srv.url, project)
    assert tab and f"/projects/{project}/data?tab=" in tab
    (view,) = [v for v in ls_api.client.views.list(project=project) if v.data.get("title") == ls_api.QUEUE_VIEW]
    assert not [v for v in ls_api.client.views.list(project=project) if v.data.get("title") == ls_api.REVIEW_VIEW]
    _summary(label_studio, project, srv.url, home, "6 tasks", 0, tab)
    text = capsys.readouterr().out
    assert f"Review next  : the '{ls_api.QUEUE_VIEW}' tab: {tab}" in text
    printed = re.findall(r"(\S*labeljudge (?:next|label|report|export|import) .*?)(?:\s{3,}|$)", text, flags=re.M)
    assert [shlex.split(c)[1] for c in printed] == ["next", "label", "report", "export", "import"], printed
    (tmp_path / "your_data.csv").write_text("input,context,output\nq1,c1,a1\nq2,c2,a2\n")
    for command in printed:
        argv = shlex.split(command)
        out = subprocess.run([sys.executable, "-m", "ml_backend.cli", *argv[1:]], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, (command, out.stderr[-2000:])
        assert "Traceback" not in out.stderr and "INFO" not in out.stderr, (command, out.stderr[-2000:])
    assert (tmp_path / "labels.csv").exists()
    imported = json.loads(out.stdout)
    assert imported["imported"] == 2 and imported["connected"] == srv.url
    assert ls_api.connected_backends(imported["project"])[0]["url"].rstrip("/") == srv.url


def test_an_import_whose_columns_miss_the_configs_fields_says_which_before_creating_anything(demo, ls_api, tmp_path):
    before = len(list(ls_api.client.projects.list()))
    (tmp_path / "qa.csv").write_text("question,answer\nq,a\n")
    out = subprocess.run([sys.executable, "-m", "ml_backend.cli", "import", "qa.csv", "--config", "pass_fail"],
                         env=demo["env"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "qa.csv lacks" in out.stderr and "(it has: answer, question)" in out.stderr, out.stderr
    assert len(list(ls_api.client.projects.list())) == before
    out = subprocess.run([sys.executable, "-m", "ml_backend.cli", "import", "qa.csv", "--config", "nope"],
                         env=demo["env"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no label config 'nope'" in out.stderr and "pass_fail" in out.stderr
