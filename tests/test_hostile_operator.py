"""What an operator, a provider or Label Studio's event order did in the third hostile review, one
test per finding (each failed before its fix): unbounded calls and replies, a hung provider starving
other projects, jobs that looked alive after a kill, events out of order, messages naming the wrong
cause, secrets in a base URL."""
from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from ml_backend.app import LabelJudgeBackend
from ml_backend.quality.html import render_html
from ml_backend.store import Store
from ml_backend.workflows.reporting import labeling_jobs

from .conftest import ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_trust import PASS_FAIL, TASK, predict, setup

CLI = [sys.executable, "-m", "ml_backend.cli"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _verdict_error(srv, task=TASK, project="7") -> list:
    answer = predict(srv.url, [task], project=project, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()["results"]


# -- bounded cost and time ---------------------------------------------------------------------------
def test_a_config_asking_for_a_thousand_judge_calls_per_task_is_refused_at_setup(tmp_path, fake_llm):
    controls = "".join(f'<Choices name="c{i}" toName="output"><Choice value="A"/><Choice value="B"/></Choices>'
                       for i in range(1000))
    config = f'<View><Text name="output" value="$output"/>{controls}</View>'
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        answer = setup(srv.url, config)
        assert answer.status_code == 400
        assert "1,000 controls" in answer.json()["error"] and "at most 16" in answer.json()["error"]
        # naming the controls to judge is the way through
        assert setup(srv.url, config, extra={"control": ["c0", "c1"]}).status_code == 200
        assert fake_llm.requests == []


@pytest.mark.parametrize("fault", ["huge", "huge_undeclared"])
def test_a_provider_reply_past_the_bound_is_not_read_and_says_why(tmp_path, fault, caplog):
    caplog.set_level(logging.WARNING)
    with FakeOpenAI() as fake, serve_backend(judge_settings(tmp_path, fake, JUDGE_MAX_RETRIES="0")) as srv:
        fake.faults.append(fault)
        assert setup(srv.url).status_code == 200
        assert _verdict_error(srv) == [[]]  # an abstention, not a 3 MB rationale
        assert "passed 1048576 bytes" in caplog.text
        assert "could not connect" not in caplog.text  # the real cause, not a connection error


def test_a_long_rationale_is_cut_in_the_prediction(tmp_path):
    with FakeOpenAI() as fake, serve_backend(judge_settings(tmp_path, fake)) as srv:
        fake.faults.append("long_rationale")
        rationale_config = PASS_FAIL.replace("</View>", '<TextArea name="why" toName="output"/></View>')
        assert setup(srv.url, rationale_config).status_code == 200
        result = _verdict_error(srv)[0]["result"]
        texts = [r["value"]["text"][0] for r in result if r["type"] == "textarea"]
        assert texts and len(texts[0]) <= 4100 and texts[0].endswith("[cut]")


def test_a_dripping_reply_stops_at_the_per_call_deadline(tmp_path, caplog):
    """A reply that sends a byte every 0.25 s never trips a read timeout; the whole-reply deadline
    (JUDGE_TIMEOUT=1 s per attempt) ends it, and the message names the deadline."""
    caplog.set_level(logging.WARNING)
    with FakeOpenAI() as fake, serve_backend(judge_settings(tmp_path, fake, JUDGE_MAX_RETRIES="1")) as srv:
        fake.drip_models.add("fake-judge")
        assert setup(srv.url).status_code == 200
        started = time.monotonic()
        assert _verdict_error(srv) == [[]]
        took = time.monotonic() - started
        assert took < 20, took  # two attempts of ~1 s and a backoff (slower on shared cores); the drip lasts 60 s
        assert "did not arrive in full within 1 s" in caplog.text


def test_one_projects_hung_provider_does_not_starve_another_projects_predict(tmp_path):
    """Project 7's model drips; project 8's answers at once. Project 8's /predict is judged while
    project 7's calls fill its own pool (they used to share one)."""
    with FakeOpenAI() as fake, serve_backend(judge_settings(tmp_path, fake, JUDGE_TIMEOUT="20", PREDICT_BUDGET="3",
                                                            PREDICT_CONCURRENCY="2")) as srv:
        fake.drip_models.add("drip-model")
        assert setup(srv.url, project="7", extra={"model": "drip-model"}).status_code == 200
        assert setup(srv.url, project="8").status_code == 200
        tasks = [{"id": i, "data": {**TASK["data"], "output": f"o{i}"}} for i in range(1, 9)]
        with ThreadPoolExecutor(4) as pool:
            hung = [pool.submit(predict, srv.url, tasks, project="7", timeout=60) for _ in range(2)]
            time.sleep(0.5)  # project 7's calls are in flight
            started = time.monotonic()
            other = predict(srv.url, [{"id": 100, "data": TASK["data"]}], project="8", timeout=60)
            took = time.monotonic() - started
            assert other.status_code == 200 and other.json()["results"][0]["result"], other.text
            assert took < 5, took  # project 7's calls drip for 20 s
            health = time.monotonic()
            assert httpx.get(f"{srv.url}/health", timeout=5).status_code == 200
            assert time.monotonic() - health < 3
            for future in hung:
                assert future.result().status_code == 200


def test_a_project_past_its_share_of_threads_answers_at_once(tmp_path):
    """The admission bound: with SERVE_THREADS=4, two /predicts may wait on the judge, one per project;
    a third for the same project answers what is ready at once (an abstention here)."""
    with FakeOpenAI(latency=2.0) as fake, serve_backend(judge_settings(tmp_path, fake, SERVE_THREADS="4",
                                                                       PREDICT_BUDGET="5", JUDGE_TIMEOUT="10")) as srv:
        assert setup(srv.url).status_code == 200
        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(predict, srv.url, [{"id": 1, "data": {**TASK["data"], "output": "a"}}], timeout=30)
            time.sleep(0.3)
            started = time.monotonic()
            second = predict(srv.url, [{"id": 2, "data": {**TASK["data"], "output": "b"}}], timeout=30)
            assert time.monotonic() - started < 1.5  # the judge takes 2 s
            assert second.json()["results"] == [[]]
            assert first.result().json()["results"][0]["result"]


# -- state that tells the truth ----------------------------------------------------------------------
def test_a_job_whose_process_was_killed_is_reaped_as_failed_with_the_reason(tmp_path):
    settings = judge_settings(tmp_path, None)
    store_path = settings.model_dir / "labeljudge.sqlite3"
    code = (f"import os, signal, socket\nfrom ml_backend.store import Store\ns = Store({str(store_path)!r})\n"
            "owner = f'{socket.gethostname()}:{os.getpid()}'\n"
            "j = s.create_job('7', 'label', owner=owner)\ns.update_job(j, status='running', progress={'done': 3})\n"
            "t = s.create_job('7', 'train', owner=owner)\n"
            "os.kill(os.getpid(), signal.SIGKILL)\n")
    killed = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, timeout=60)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    store = Store(store_path)
    assert {j["status"] for j in store.jobs("7")} == {"running", "queued"}
    backend = LabelJudgeBackend(settings, store)
    backend.start()
    try:
        jobs = {j["kind"]: j for j in store.jobs("7")}
        assert jobs["label"]["status"] == "failed" and jobs["train"]["status"] == "failed"
        assert "died before it finished (killed or crashed) while it was running" in jobs["label"]["error"]
        assert "while it was queued" in jobs["train"]["error"]
    finally:
        backend.worker.stop()


def test_a_failed_jobs_why_is_its_error_and_a_queued_ones_is_what_it_waits_for(tmp_path):
    from ml_backend.quality.html import _job_why

    store = Store(tmp_path / "s.sqlite3")
    failed = store.create_job("7", "label")
    store.update_job(failed, status="failed", progress={"reason": "Retrieve predictions: 5 tasks past the budget"},
                     error="Label Studio answered 404 Not Found: project 7 is gone")
    waiting = store.create_job("7", "label")
    store.update_job(waiting, progress={"reason": "Retrieve predictions", "waiting_for": "3 judge calls"})
    rows = {r["job"]: r for r in labeling_jobs(store, 7)}
    assert _job_why(rows[failed]).startswith("failed: Label Studio answered 404")
    assert "waiting for 3 judge calls" in _job_why(rows[waiting])


def test_start_training_on_the_webhook_answers_a_job_label_studio_keeps_and_polls(tmp_path, fake_llm):
    """Label Studio 1.23 sends Start Training to /webhook and keeps a ``job`` key from the answer. A
    project Label Studio does not have fails the job with the status and body, not response headers."""
    port = _free_port()  # nothing listens: the run fails reading the project
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=f"http://127.0.0.1:{port}",
                              LABEL_STUDIO_API_KEY="lstoken0123456789")
    with serve_backend(settings) as srv:
        answer = httpx.post(f"{srv.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
        assert answer.status_code == 201, answer.text
        job = answer.json()["job"]
        assert isinstance(job, int)
        status = None
        for _ in range(100):
            status = httpx.post(f"{srv.url}/job_status", json={"job": job}).json()
            if status["status"] in ("finished", "failed"):
                break
            assert status["status"] in ("queued", "started")  # Label Studio's words for a job in progress
            time.sleep(0.1)
        assert status["status"] == "failed"
        assert status["error"].startswith(f"could not connect to Label Studio at http://127.0.0.1:{port}")
        assert len(status["error"]) < 300
        # the event is on record, handled, and not run a second time by the worker
        srv.backend.worker.wait_idle(5)
        assert len(srv.backend.store.jobs("7", "train")) == 1
    with serve_backend(judge_settings(tmp_path / "nols", fake_llm)) as srv:
        answer = httpx.post(f"{srv.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 7}})
        assert answer.status_code == 503 and "LABEL_STUDIO_URL" in answer.json()["error"]


def test_events_out_of_order_never_leave_a_deleted_or_stale_label(tmp_path, fake_llm):
    def event(action, ann_id, choice, updated):
        return {"action": action, "project": {"id": 7},
                "task": {"id": 1, "data": TASK["data"]},
                "annotation": {"id": ann_id, "task": 1, "updated_at": updated, "result": [
                    {"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": [choice]}}]}}

    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        b = srv.backend
        assert setup(srv.url).status_code == 200
        # deleted before its CREATED arrives
        b.handle_events([{"id": 1, "action": "ANNOTATIONS_DELETED", "payload": {
            "action": "ANNOTATIONS_DELETED", "project": {"id": 7}, "annotations": [{"id": 50}]}}])
        b.handle_events([{"id": 2, "action": "ANNOTATION_CREATED",
                          "payload": event("ANNOTATION_CREATED", 50, "Pass", "2026-12-01T10:00:00.000Z")}])
        assert [a["id"] for a in b.store.annotations("7")] == []
        # UPDATED (newer) before CREATED (older)
        b.handle_events([{"id": 3, "action": "ANNOTATION_UPDATED",
                          "payload": event("ANNOTATION_UPDATED", 51, "Fail", "2026-12-01T10:05:00.000Z")}])
        b.handle_events([{"id": 4, "action": "ANNOTATION_CREATED",
                          "payload": event("ANNOTATION_CREATED", 51, "Pass", "2026-12-01T10:00:00.000Z")}])
        stored = {a["id"]: a for a in b.store.annotations("7")}
        assert stored[51]["result"][0]["value"]["choices"] == ["Fail"]
        # Label Studio's own export (a resync) is the truth and wins over a tombstone
        b.store.upsert_annotation("7", {"id": 50, "task": 1, "result": []}, None, authoritative=True)
        assert 50 in {a["id"] for a in b.store.annotations("7")}


def test_redis_unreachable_is_a_503_and_leaves_no_orphan_job(tmp_path, fake_llm):
    port = _free_port()
    settings = judge_settings(tmp_path, fake_llm, REDIS_URL=f"redis://:redispass99@127.0.0.1:{port}/0",
                              LABEL_STUDIO_URL="http://127.0.0.1:1", LABEL_STUDIO_API_KEY="lstoken0123456789")
    with serve_backend(settings) as srv:
        answer = httpx.post(f"{srv.url}/jobs/label", json={"project": 7}, timeout=30)
        assert answer.status_code == 503, answer.text
        assert "Redis" in answer.json()["error"] and "redispass99" not in answer.text
        jobs = srv.backend.store.jobs("7", "label")
        assert [j["status"] for j in jobs] == ["failed"] and "Redis" in jobs[0]["error"]


# -- secrets and input -------------------------------------------------------------------------------
def test_a_password_in_the_provider_base_url_never_reaches_the_log(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    with FakeOpenAI() as fake:
        url = fake.url.replace("http://", "http://judge-user:Url-Pa55word-77@")
        with serve_backend(judge_settings(tmp_path, fake, OPENAI_BASE_URL=url)) as srv:
            fake.faults.append("reject_format")  # the step-down warning names the server
            assert setup(srv.url).status_code == 200
            assert _verdict_error(srv)[0]["result"]
    assert "judge-user:***@" in caplog.text or "HTTP Request" not in caplog.text
    assert "Url-Pa55word-77" not in caplog.text


def test_the_root_route_needs_auth_like_every_route_but_health_and_openapi(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm, BASIC_AUTH_USER="u", BASIC_AUTH_PASS="p4ssword")) as srv:
        assert httpx.get(f"{srv.url}/").status_code == 401
        assert httpx.get(f"{srv.url}/", auth=("u", "p4ssword")).status_code == 200
        assert httpx.get(f"{srv.url}/health").status_code == 200
        assert httpx.get(f"{srv.url}/openapi.json").status_code == 200


def test_a_null_field_abstains_like_a_missing_one(tmp_path, fake_llm, caplog):
    caplog.set_level(logging.WARNING)
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        assert setup(srv.url).status_code == 200
        assert setup(srv.url, extra={"prompt": "Is this answer right? {output}"}).status_code == 200
        null = {"id": 1, "data": {**TASK["data"], "output": None}}
        missing = {"id": 2, "data": {k: v for k, v in TASK["data"].items() if k != "output"}}
        assert predict(srv.url, [null, missing]).json()["results"] == [[], []]
        assert fake_llm.requests == []
        assert "missing field 'output' used by the prompt (it is null)" in caplog.text


def test_a_control_naming_a_missing_object_is_refused_even_when_not_judged(tmp_path, fake_llm):
    config = PASS_FAIL.replace("</View>", '<TextArea name="why" toName="nowhere"/></View>')
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        answer = setup(srv.url, config)
        assert answer.status_code == 400 and "toName='nowhere'" in answer.json()["error"]


def _serve(env_extra: dict, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PRELOAD_MODEL": "false", **env_extra}
    return subprocess.run([*CLI, "serve", "--port", str(port), "--host", "127.0.0.1"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["file", "corrupt", "read_only"])
def test_serve_with_a_bad_model_dir_says_so_in_one_line(tmp_path, case):
    model_dir = tmp_path / "models"
    if case == "file":
        model_dir.write_text("not a folder")
    elif case == "corrupt":
        model_dir.mkdir()
        (model_dir / "labeljudge.sqlite3").write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes to a read-only folder: the check cannot be seen failing as root")
        model_dir.mkdir()
        model_dir.chmod(0o555)
    done = _serve({"MODEL_DIR": str(model_dir)}, _free_port())
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and f"MODEL_DIR={model_dir}" in lines[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


def test_serve_on_a_busy_port_names_the_holder_and_suggests_another_port(tmp_path):
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = _serve({"MODEL_DIR": str(tmp_path / "models")}, port)
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    assert f"port {port}" in lines[0] and f"pid {os.getpid()}" in lines[0] and f"--port {port + 1}" in lines[0]


def test_the_report_says_why_there_is_no_agreement_table():
    """No overlapping tasks: a sentence saying how to get the table, not an empty one with headers."""
    from ml_backend.labelstudio.config import parse_label_config
    from ml_backend.quality.report import build_report
    from ml_backend.workflows.records import records_from_export

    verdict = [{"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": ["Pass"]}}]
    export = [{"id": i, "data": TASK["data"], "predictions": [{"model_version": "judge-1", "result": verdict,
                                                               "score": 0.9}],
               "annotations": [{"id": 10 + i, "completed_by": 1, "result": verdict}]} for i in (1, 2)]
    tasks, controls = records_from_export(export, parse_label_config(PASS_FAIL))
    report = build_report(tasks, controls)
    page = render_html({**report, "project": 7, "seconds": 0.1})
    assert "<th>pair</th>" not in page and "set the project's overlap" in page


def test_a_running_training_row_says_what_it_is_doing():
    from ml_backend.quality.html import _run_why

    assert _run_why({"status": "running", "progress": {"reason": "Start Training", "epoch": 2, "val_accuracy": 0.81,
                                                        "seconds": 12.5}}) \
        == "running (started for: Start Training)<br>epoch 2, validation accuracy 0.810, 12.500 s"
    assert "waiting for" in _run_why({"status": "queued", "progress": {"waiting_for": "training of project 7"}})
    assert _run_why({"status": "finished", "progress": None, "decision": "promoted: beats 0.7"}) == "promoted: beats 0.7"


def test_a_store_from_before_job_owners_and_annotation_times_is_migrated(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.executescript("""CREATE TABLE jobs (id INTEGER PRIMARY KEY AUTOINCREMENT, project_id TEXT NOT NULL,
        kind TEXT NOT NULL, status TEXT NOT NULL, progress TEXT NOT NULL DEFAULT '{}', result TEXT, error TEXT,
        created_at REAL NOT NULL, updated_at REAL NOT NULL);
        INSERT INTO jobs (project_id, kind, status, created_at, updated_at) VALUES ('7', 'label', 'running', 0, 0);
        CREATE TABLE annotations (id INTEGER PRIMARY KEY, project_id TEXT NOT NULL, task_id INTEGER NOT NULL,
        result TEXT NOT NULL, ground_truth INTEGER NOT NULL DEFAULT 0, completed_by INTEGER, task_data TEXT,
        updated_at REAL NOT NULL, correction INTEGER);""")
    db.commit()
    db.close()
    store = Store(path)
    assert store.unfinished_jobs()[0]["owner"] is None  # no owner: left alone by the reaper
    assert store.upsert_annotation("7", {"id": 1, "task": 1, "result": [], "updated_at": "2026-12-01T10:00:00Z"}, None)
    assert json.loads(json.dumps(store.annotations("7")))[0]["id"] == 1


def test_the_reply_bound_spares_batch_result_files(tmp_path):
    """A Batch API result file holds every verdict of a run (megabytes): only chat completions are
    bounded, so the same client still downloads it whole."""
    from ml_backend.judge.providers.openai_compat import OpenAIProvider

    with FakeOpenAI() as fake:
        fake.files["file-big"] = b"x" * (3 << 20)
        provider = OpenAIProvider("fake-judge", api_key="sk-test-000000", base_url=fake.url, timeout=5, max_retries=0)
        assert len(provider.client.files.content("file-big").content) == 3 << 20


def test_a_reused_pid_does_not_keep_a_dead_job_alive(tmp_path):
    """A restarted container's server is often the same pid as the one killed: the owner's start time
    tells them apart. This very process, named with another start time, is a dead owner."""
    import socket as sock

    from ml_backend.store import process_owner
    from ml_backend.workflows.training import reap_dead_jobs

    store = Store(tmp_path / "s.sqlite3")
    mine = store.create_job("7", "label", owner=process_owner())
    reused = store.create_job("7", "label", owner=f"{sock.gethostname()}:{os.getpid()}:12345")
    other_host = store.create_job("7", "train", owner="some-other-host:1:1")
    assert reap_dead_jobs(store) == [reused]
    assert {j["id"]: j["status"] for j in store.jobs("7")} == {mine: "queued", reused: "failed", other_host: "queued"}


def test_a_running_labeling_job_says_what_it_does_before_its_first_task(tmp_path, fake_llm):
    """The demo's bar sat at 0/12 for a minute: reading the project and choosing a diverse sample come
    before the first task, and the job says so. Here Label Studio is unreachable, so it fails there."""
    from ml_backend.workflows.label_jobs import run_label_job

    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=f"http://127.0.0.1:{_free_port()}",
                              LABEL_STUDIO_API_KEY="lstoken0123456789")
    backend = LabelJudgeBackend(settings, Store(settings.model_dir / "labeljudge.sqlite3"))
    job = backend.store.create_job("7", "label")
    seen = []
    update = backend.store.update_job
    backend.store.update_job = lambda j, **kw: (seen.append(kw), update(j, **kw))[1]
    assert run_label_job(backend, 7, job) is None
    assert seen[0]["progress"]["stage"].startswith("reading the project from Label Studio")
    assert backend.store.job(job)["status"] == "failed"
