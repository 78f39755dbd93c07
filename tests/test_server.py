"""The HTTP contract and bad input, over real HTTP (werkzeug server) with the fake LLM server."""
from __future__ import annotations

import base64
import logging
from pathlib import Path

import httpx
import pytest

from .conftest import CONFIGS, judge_settings, serve_backend

PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()
KEY = "sk-test-secret-key-123456"


def setup_body(project="1.1700000000", config=PASS_FAIL, extra=None):
    return {"project": project, "schema": config, "hostname": "http://localhost:8080",
            "access_token": "legacy-token-abc", "extra_params": extra}


def predict_body(tasks, project="1.1700000000", config=PASS_FAIL):
    return {"tasks": tasks, "project": project, "label_config": config, "params": {"context": None}}


TASK = {"id": 1, "data": {"input": "q", "context": "c", "output": "o EXPECT=Fail"}}


@pytest.fixture
def srv(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as running:
        yield running


def test_health_setup_predict_versions_metrics(srv):
    assert httpx.get(f"{srv.url}/health").json()["status"] == "UP"
    version = httpx.post(f"{srv.url}/setup", json=setup_body()).json()["model_version"]
    r = httpx.post(f"{srv.url}/predict", json=predict_body([TASK, TASK]))
    assert r.status_code == 200
    results = r.json()["results"]
    assert len(results) == 2 and all(p["model_version"] == version for p in results)
    assert results[0]["result"][0]["value"] == {"choices": ["Fail"]}
    versions = httpx.get(f"{srv.url}/versions").json()
    assert versions["projects"][0]["model_version"] == version
    metrics = httpx.get(f"{srv.url}/metrics").json()
    assert metrics["counters"]["tasks_predicted"] == 2


def test_predict_pays_once_per_task_content_and_judge_version(tmp_path, srv, fake_llm):
    """An annotator opening a task again, or Retrieve predictions after a labeling run, is answered
    from the verdict cache (same judge version, same task content): no new call, the same prediction,
    counted as a cache hit. An unusable answer is not cached; a new judge version asks again."""
    from ml_backend.store import Store

    version = httpx.post(f"{srv.url}/setup", json=setup_body()).json()["model_version"]
    tasks = [{"id": i, "data": {"input": f"q{i}", "context": "c", "output": f"o{i} EXPECT=Pass"}} for i in range(3)]
    extra = {"id": 9, "data": {"input": "q9", "context": "c", "output": "o9 EXPECT=Fail"}}
    asked = len(fake_llm.requests)
    first = httpx.post(f"{srv.url}/predict", json=predict_body(tasks)).json()["results"]
    assert len(fake_llm.requests) - asked == 3 and all(p["model_version"] == version for p in first)
    fake_llm.faults.append("invalid_label")  # the one new task gets an answer that is not a label
    second = httpx.post(f"{srv.url}/predict", json=predict_body(tasks + [extra])).json()["results"]
    assert len(fake_llm.requests) - asked == 4
    assert second[:3] == first and second[3] == []
    third = httpx.post(f"{srv.url}/predict", json=predict_body([extra])).json()["results"]
    assert len(fake_llm.requests) - asked == 5 and third[0]["result"][0]["value"] == {"choices": ["Fail"]}
    ledger = Store(tmp_path / "models" / "labeljudge.sqlite3").ledger("1")
    assert [(r["calls"], r["cache_hits"], r["failures"]) for r in ledger] == [(5, 3, 1)]
    newer = httpx.post(f"{srv.url}/setup", json=setup_body(extra={"temperature": 0.5})).json()["model_version"]
    fourth = httpx.post(f"{srv.url}/predict", json=predict_body(tasks)).json()["results"]
    assert newer != version and len(fake_llm.requests) - asked == 8
    assert all(p["model_version"] == newer for p in fourth)


@pytest.mark.parametrize("setting,expected", [(None, 8), ("16", 16)])
def test_predict_runs_up_to_predict_concurrency_calls_at_once(tmp_path, setting, expected):
    """Label Studio sends a whole selection in one /predict: PREDICT_CONCURRENCY calls go at once."""
    from .fake_openai import FakeOpenAI

    env = {"PREDICT_CONCURRENCY": setting} if setting else {}
    # calls long enough that a busy machine still starts the pool's threads before the first one ends
    with FakeOpenAI(latency=2.0) as fake, serve_backend(judge_settings(tmp_path, fake, JUDGE_TIMEOUT="10", **env)) as running:
        httpx.post(f"{running.url}/setup", json=setup_body())
        tasks = [{"id": i, "data": {"input": f"q{i}", "context": "c", "output": f"o{i}"}} for i in range(24)]
        results = httpx.post(f"{running.url}/predict", json=predict_body(tasks), timeout=60).json()["results"]
        assert len(results) == 24 and all(results)
        assert fake.max_in_flight == expected


def test_extra_params_as_string_or_object_give_the_same_version(srv):
    a = httpx.post(f"{srv.url}/setup", json=setup_body(extra='{"metric": "toxicity"}')).json()
    b = httpx.post(f"{srv.url}/setup", json=setup_body(extra={"metric": "toxicity"})).json()
    c = httpx.post(f"{srv.url}/setup", json=setup_body(extra=None)).json()
    assert a == b and a != c


@pytest.mark.parametrize("body,status,needle", [
    (setup_body(config="<View><Text name='a' value='$a'/>"), 400, "not valid XML"),
    (setup_body(config="<View><Text name='a' value='$a'/><Labels name='l' toName='a'><Label value='X'/></Labels></View>"),
     400, "no control the judge can fill"),
    (setup_body(extra='{"temprature": 0.1}'), 400, "unknown extra_params key"),
    (setup_body(config="<View><Text name='a' value='$a'/><Choices name='a' toName='a'><Choice value='X'/></Choices></View>"),
     400, "must be unique"),
    (setup_body(extra='{"prompt": "{input"}'), 400, "unbalanced braces"),
    (setup_body(extra='{"control": "nope"}'), 400, "not in the label config"),
    (setup_body(extra='{"metric": "vibes"}'), 400, "unknown metric"),
])
def test_setup_rejects_bad_config_with_a_clear_message(srv, body, status, needle):
    r = httpx.post(f"{srv.url}/setup", json=body)
    assert r.status_code == status and needle in r.json()["error"]
    assert httpx.get(f"{srv.url}/health").status_code == 200


@pytest.mark.parametrize("path", ["/setup", "/predict", "/webhook"])
def test_non_json_body_is_a_400(srv, path):
    r = httpx.post(f"{srv.url}{path}", content=b"not json{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "JSON" in r.json()["error"]


def test_predict_bad_requests(srv):
    assert httpx.post(f"{srv.url}/predict", json={"tasks": []}).status_code == 400
    r = httpx.post(f"{srv.url}/predict", json={"tasks": [TASK], "project": "77.1"})
    assert r.status_code == 409 and "not set up" in r.json()["error"]
    assert httpx.get(f"{srv.url}/nope").json()["error"]


def test_task_missing_field_abstains_and_oversized_text_is_truncated(srv, fake_llm, caplog):
    httpx.post(f"{srv.url}/setup", json=setup_body(extra={"metric": "correctness"}))
    huge = {"id": 3, "data": {"input": "q", "context": "c", "output": "x" * 100_000 + " EXPECT=Pass",
                              "ground_truth": "g"}}
    with caplog.at_level(logging.WARNING):
        r = httpx.post(f"{srv.url}/predict", json=predict_body([TASK, huge]))
    assert r.status_code == 200
    missing, big = r.json()["results"]
    assert missing == []  # no ground_truth in the task: abstain, label nothing
    assert big["result"][0]["value"]["choices"][0] in ("Pass", "Fail")
    sent = fake_llm.requests[-1]["body"]["messages"][-1]["content"]
    assert len(sent) < 10_000 and "[truncated 92012 characters]" in sent
    assert "missing field 'ground_truth'" in caplog.text and "truncated" in caplog.text


def test_provider_outage_abstains_and_leaks_no_key(srv, fake_llm, caplog):
    httpx.post(f"{srv.url}/setup", json=setup_body())
    fake_llm.faults.extend(["500"] * 10)
    with caplog.at_level(logging.WARNING):
        r = httpx.post(f"{srv.url}/predict", json=predict_body([TASK]))
    assert r.status_code == 200 and r.json()["results"] == [[]]
    assert "500" in caplog.text and KEY not in caplog.text


def test_unhandled_error_is_json_500_without_secrets(srv, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError(f"exploded with {KEY}")
    monkeypatch.setattr(srv.backend, "predict", boom)
    httpx.post(f"{srv.url}/setup", json=setup_body())
    r = httpx.post(f"{srv.url}/predict", json=predict_body([TASK]))
    assert r.status_code == 500 and "RuntimeError" in r.json()["error"] and KEY not in r.text


def test_webhook_acknowledges_every_event_and_survives_bad_ones(srv):
    for payload, status in (({"action": "PROJECT_UPDATED", "project": {"id": 1}}, 201),
                            ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "annotation": {}}, 422),
                            ({"action": "ANNOTATION_CREATED", "project": {"id": 1}, "task": {"id": 5, "data": {"a": 1}},
                              "annotation": {"id": 9, "task": 5, "result": [], "completed_by": 1}}, 201)):
        assert httpx.post(f"{srv.url}/webhook", json=payload).status_code == status
    assert srv.backend.worker.wait_idle(10)
    assert all(e["error"] is None for e in srv.backend.store.events("1"))
    quarantined = httpx.get(f"{srv.url}/metrics").json()["quarantine"]
    assert quarantined["total"] == 1 and "annotation.id" in quarantined["latest"][0]["reason"]
    assert [a["id"] for a in srv.backend.store.annotations("1")] == [9]


def test_restart_keeps_project_config(tmp_path, fake_llm):
    settings = judge_settings(tmp_path, fake_llm)
    with serve_backend(settings) as first:
        v = httpx.post(f"{first.url}/setup", json=setup_body(extra={"metric": "toxicity"})).json()
    with serve_backend(settings) as second:
        r = httpx.post(f"{second.url}/predict", json={"tasks": [TASK], "project": "1.1700000000"})
        assert r.status_code == 200 and r.json()["results"][0]["model_version"] == v["model_version"]


def test_basic_auth_and_webhook_secret(tmp_path, fake_llm):
    settings = judge_settings(tmp_path, fake_llm, BASIC_AUTH_USER="u", BASIC_AUTH_PASS="p4ss-word",
                              WEBHOOK_SECRET="hook-secret")
    with serve_backend(settings) as s:
        assert httpx.get(f"{s.url}/health").status_code == 200  # open for health checks
        r = httpx.post(f"{s.url}/setup", json=setup_body())
        assert r.status_code == 401 and "p4ss-word" not in r.text
        assert httpx.post(f"{s.url}/setup", json=setup_body(), auth=("u", "wrong")).status_code == 401
        assert httpx.post(f"{s.url}/setup", json=setup_body(), auth=("u", "p4ss-word")).status_code == 200
        hook = {"action": "PROJECT_UPDATED", "project": {"id": 1}}
        assert httpx.post(f"{s.url}/webhook", json=hook).status_code == 401
        assert httpx.post(f"{s.url}/webhook", json=hook, headers={"X-Webhook-Secret": "hook-secret"}).status_code == 201
        token = base64.b64encode(b"u:p4ss-word").decode()
        assert httpx.post(f"{s.url}/webhook", json=hook, headers={"Authorization": f"Basic {token}"}).status_code == 201


def test_start_leaves_transformers_imports_to_the_background_and_threads_share_them(tmp_path):
    """/health and /setup must not wait for transformers' imports (seconds; Label Studio gives /setup
    3 s when a backend is connected); threads that need them wait for the one import instead of
    racing it ("cannot import name"). In a fresh interpreter."""
    import subprocess
    import sys

    code = f"""
import sys, threading
from tests.conftest import judge_settings
from ml_backend.app import LabelJudgeBackend
from ml_backend import warmup
backend = LabelJudgeBackend(judge_settings(__import__('pathlib').Path({str(tmp_path)!r})))
backend.start()
print("resolved at start:", warmup._done)
backend.setup(1, open("label_configs/pass_fail.xml").read(), {{}})  # Label Studio allows /setup 3 s
print("resolved after setup:", warmup._done)
errors = []
def use():
    try:
        warmup.resolve_transformers()
        from transformers import AutoModel, AutoTokenizer
    except Exception as exc:
        errors.append(repr(exc))
threads = [threading.Thread(target=use) for _ in range(8)]
[t.start() for t in threads]; [t.join() for t in threads]
print("resolved after:", warmup._done, "errors:", errors)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])
    assert "resolved at start: False" in out.stdout, out.stdout + out.stderr
    assert "resolved after setup: False" in out.stdout, out.stdout + out.stderr
    assert "resolved after: True errors: []" in out.stdout, out.stdout + out.stderr



def test_setup_is_never_undone_by_a_concurrent_rebuild(srv):
    """Webhooks rebuild a project's state (a new few-shot pool) while Label Studio sends /setup with new
    extra_params. A rebuild that read the stored params before /setup saved them must not overwrite the
    state /setup built: once /setup has answered, requests are served with its params. Found by CI: a
    stale rebuild put a project back in cascade mode after it had been switched to evaluator. The
    interleaving is forced: the rebuild pauses right after reading the stored project."""
    import threading

    pid = "1"
    httpx.post(f"{srv.url}/setup", json=setup_body(extra={"temperature": 0.1})).raise_for_status()
    store = srv.backend.store
    read_old, setup_answered = threading.Event(), threading.Event()
    real_project = store.project

    def project_then_pause(key):  # the real read; then the rebuild is slow, as building a judge can be
        row = real_project(key)
        if threading.current_thread().name == "rebuild" and not read_old.is_set():
            read_old.set()
            setup_answered.wait(3)
        return row

    store.project = project_then_pause
    try:
        srv.backend.projects.labels_changed(pid)  # a burst of annotations arrived
        rebuild = threading.Thread(target=srv.backend.state, args=(pid,), name="rebuild", daemon=True)
        rebuild.start()
        assert read_old.wait(5)
        r = httpx.post(f"{srv.url}/setup", json=setup_body(extra={"temperature": 0.7}), timeout=30)
        assert r.status_code == 200, r.text
        setup_answered.set()
        rebuild.join(10)
    finally:
        store.project = real_project
    assert srv.backend.state(pid).params.get("temperature") == 0.7
    assert store.project(pid)["extra_params"].get("temperature") == 0.7
