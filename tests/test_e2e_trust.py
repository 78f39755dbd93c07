"""Trust end to end, against a real Label Studio: where the backend's credentials go, that a labeling
job's overrides and budget stay inside the job, that no canary secret reaches Label Studio, the store
or a report, and that a webhook burst is coalesced."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest

from .conftest import judge_settings, serve_backend
from .test_e2e_labelstudio import PASS_FAIL, _tasks, _wait, predictions_per_task

pytestmark = pytest.mark.e2e
CANARY = "sk-canaryE2E0000000000000042"


def _job(url: str, body: dict, auth=None, timeout: float = 60) -> dict:
    r = httpx.post(f"{url}/jobs/label", json=body, auth=auth)
    assert r.status_code == 202, r.text
    job = r.json()
    return _wait(lambda: (j := httpx.get(f"{url}/jobs/{job['id']}", auth=auth).json())["status"]
                 in ("finished", "failed") and j, timeout=timeout, what="the labeling job")


def test_the_host_header_never_decides_where_credentials_go(tmp_path, fake_llm, ls_api, label_studio):
    """Without LABELJUDGE_URL no authenticated webhook is registered at all (the request's Host is never
    used); with it, concurrent /setup calls register exactly one."""
    import concurrent.futures
    import time

    auth = ("u", "pw-e2e-host")
    env = dict(BASIC_AUTH_USER="u", BASIC_AUTH_PASS="pw-e2e-host", LABEL_STUDIO_URL=label_studio.url,
               LABEL_STUDIO_API_KEY=label_studio.token)
    project = ls_api.create_project("e2e host header", PASS_FAIL)
    body = {"project": project, "schema": PASS_FAIL}
    with serve_backend(judge_settings(tmp_path / "a", fake_llm, **env), public_url=False) as srv:
        r = httpx.post(f"{srv.url}/setup", json=body, auth=auth, headers={"Host": "attacker.example:4444"})
        assert r.status_code == 200
        time.sleep(1.5)  # the registration runs in the background
        assert not [h.url for h in ls_api.client.webhooks.list(project=project)]
    with serve_backend(judge_settings(tmp_path / "b", fake_llm, **env)) as srv:
        def call(_):
            return httpx.post(f"{srv.url}/setup", json=body, auth=auth,
                              headers={"Host": "attacker.example:4444"}).status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(call, range(8))) == {200}
        _wait(lambda: list(ls_api.client.webhooks.list(project=project)), what="the webhook")
        time.sleep(1.5)  # give any duplicate registration time to land
        hooks = list(ls_api.client.webhooks.list(project=project))
        assert not any("attacker" in h.url for h in hooks)
        assert [h.url for h in hooks] == [f"{srv.url}/webhook"]
        assert hooks[0].headers["Authorization"].startswith("Basic ")


def test_a_jobs_overrides_apply_to_that_run_only(fake_llm, ls_project):
    lp = ls_project("e2e overrides", PASS_FAIL, _tasks(3), fake=fake_llm, extra_params={"metric": "faithfulness"})
    srv, project = lp.srv, lp.project
    served = srv.backend.state(project).version
    job = _job(srv.url, {"project": project, "metric": "toxicity", "model": "other-model"})
    assert job["status"] == "finished" and job["result"]["model_version"] != served
    stored = srv.backend.store.project(str(project))
    assert stored["extra_params"] == {"metric": "faithfulness"}
    r = httpx.post(f"{srv.url}/predict", json={"project": project, "tasks": [
        {"id": 1, "data": _tasks(1)[0]["data"]}]})
    assert r.json()["results"][0]["model_version"] == served
    assert fake_llm.requests[-1]["body"]["model"] == "fake-judge"  # not the job's "other-model"


def test_a_budget_stops_the_run_cleanly_and_a_rerun_continues(fake_llm, ls_api, ls_project):
    lp = ls_project("e2e budget", PASS_FAIL, _tasks(40), fake=fake_llm, JUDGE_MODEL="gpt-4o")
    srv, project = lp.srv, lp.project
    first = _job(srv.url, {"project": project, "max_cost": 0.0005, "concurrency": 1})
    assert first["status"] == "finished", first
    result = first["result"]
    assert result["stopped"] == "budget" and 0 < result["labeled"] < 40
    assert result["cost"] >= 0.0005
    second = _job(srv.url, {"project": project, "concurrency": 4})
    assert second["result"]["stopped"] is None
    assert second["result"]["skipped"] == result["labeled"]
    per_task = predictions_per_task(ls_api, project)
    assert len(per_task) == 40 and set(per_task.values()) == {1}  # none twice, none lost


def test_no_canary_reaches_label_studio_the_store_or_the_report(tmp_path, fake_llm, ls_api, label_studio, caplog):
    caplog.set_level(logging.INFO)
    settings = judge_settings(tmp_path, fake_llm, OPENAI_API_KEY=CANARY, LABEL_STUDIO_URL=label_studio.url,
                              LABEL_STUDIO_API_KEY=label_studio.token)
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e canary", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(6))
        ls_api.connect_backend(project, srv.url)
        fake_llm.faults.extend(["echo_auth", "echo_auth_rationale", "echo_auth_error", "echo_auth_error",
                                "echo_auth_error"])
        job = _job(srv.url, {"project": project, "concurrency": 1})
        assert job["result"]["failed"] >= 1  # the echoes really happened and failed tasks
        texts = [json.dumps(job), httpx.get(f"{srv.url}/jobs").text, httpx.get(f"{srv.url}/metrics").text,
                 httpx.get(f"{srv.url}/report/{project}").text, httpx.get(f"{srv.url}/report/{project}?format=json").text,
                 json.dumps([p.result for p in ls_api.predictions(project)]), caplog.text]
        texts.append(json.dumps(srv.backend.store.failures(str(project))))
    for file in Path(settings.model_dir).glob("labeljudge.sqlite3*"):
        texts.append(file.read_bytes().decode("latin-1"))
    blob = "\n".join(texts)
    assert "The header said" in blob  # the echoed rationale reached Label Studio, redacted
    assert CANARY not in blob


def test_the_report_page_allows_no_script(fake_llm, ls_project):
    lp = ls_project("e2e csp", PASS_FAIL, _tasks(2), fake=fake_llm, connect=False)
    srv, project = lp.srv, lp.project
    r = httpx.get(f"{srv.url}/report/{project}?ls_url=https://ls.example.org")
    assert r.status_code == 200
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "script-src" not in r.headers["Content-Security-Policy"]
    assert "<script" not in r.text.lower()
    bad = httpx.get(f"{srv.url}/report/{project}?ls_url=javascript:alert(1)//x")
    assert bad.status_code == 400
    assert httpx.get(f"{srv.url}/report/99999").status_code == 404


def test_a_webhook_burst_is_coalesced_into_one_look_per_project(tmp_path, fake_llm, ls_api, label_studio):
    """300 annotation events for one project: stored as they come, then one resync of the project
    (one export) instead of a Label Studio request per event."""
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=label_studio.url,
                              LABEL_STUDIO_API_KEY=label_studio.token, TRAIN_EVERY="0")
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e burst", PASS_FAIL)
        ids = ls_api.import_tasks(project, _tasks(30))
        region = {"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": ["Pass"]}}
        anns = [ls_api.client.annotations.create(id=t, result=[region]) for t in ids]
        _wait(lambda: srv.backend.worker.wait_idle(1), what="Label Studio's own webhooks to drain")
        calls = {"resync": 0, "task": 0}
        resync, task_predictions = srv.backend.learner.resync_project, srv.backend.labelstudio().task_predictions

        def counting_resync(p):
            calls["resync"] += 1
            return resync(p)

        def counting_task(t):
            calls["task"] += 1
            return task_predictions(t)

        srv.backend.learner.resync_project, srv.backend.labelstudio().task_predictions = counting_resync, counting_task
        srv.backend.worker.stop()  # hold the burst, as a busy worker would, then drain it at once
        import time

        time.sleep(0.3)
        for i in range(300):
            a = anns[i % len(anns)]
            event = {"action": "ANNOTATION_UPDATED", "project": {"id": project},
                     "task": {"id": a.task, "data": _tasks(1)[0]["data"]},
                     "annotation": {"id": a.id, "task": a.task, "result": [region]}}
            assert httpx.post(f"{srv.url}/webhook", json=event).status_code == 201
        from ml_backend.events.worker import EventWorker

        srv.backend.worker = EventWorker(srv.backend.store, srv.backend.handle_events)
        srv.backend.worker.start()
        assert srv.backend.worker.wait_idle(60)
        assert calls["task"] == 0 and 1 <= calls["resync"] <= 2  # one per burst the worker took
        assert len(srv.backend.store.annotations(str(project))) == 30
