"""End to end: a real Label Studio 1.23.2 calls the real backend over HTTP; the judge is a real
OpenAI-compatible HTTP server (deterministic). Everything is checked through Label Studio's API."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from ml_backend.labelstudio.config import parse_label_config

from .conftest import CONFIGS, judge_settings, serve_backend

pytestmark = pytest.mark.e2e

PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()


def _tasks(n: int, start: int = 0) -> list[dict]:
    tasks = []
    for i in range(start, start + n):
        label = "Fail" if i % 3 == 0 else "Pass"
        tasks.append({"data": {"input": f"question {i}", "context": f"context {i} {{braces}}",
                               "output": f"answer {i}. EXPECT={label}"}})
    return tasks


def _wait(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def predictions_per_task(ls_api, project: int) -> dict[int, int]:
    """How many predictions each task of the project has (every check that none is written twice)."""
    from collections import Counter

    return dict(Counter(int(p.task) for p in ls_api.predictions(project)))


def _by_task(ls_api, project: int, version: str | None = None) -> dict[int, list]:
    out: dict[int, list] = {}
    for p in ls_api.predictions(project):
        if version is None or p.model_version == version:
            out.setdefault(int(p.task), []).append(p)
    return out


def test_retrieve_predictions_labels_every_task_then_prompt_change_repredicts(
        tmp_path, fake_llm, ls_api):
    settings = judge_settings(tmp_path, fake_llm)
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e pass/fail", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(9))
        ls_api.connect_backend(project, srv.url, extra_params={"metric": "faithfulness"})
        version = srv.backend.state(project).version

        ls_api.retrieve_predictions(project)
        preds = _by_task(ls_api, project)
        task_ids = ls_api.task_ids(project)
        assert sorted(preds) == sorted(task_ids)
        schema = parse_label_config(PASS_FAIL)
        for task in ls_api.tasks(project):
            (p,) = preds[int(task.id)]
            assert p.model_version == version and version.startswith("judge-")
            assert p.score == pytest.approx(0.9, abs=1e-3)  # the fake's answer probability
            verdict = [r for r in p.result if r["from_name"] == "verdict"][0]
            expected = "Fail" if "EXPECT=Fail" in task.data["output"] else "Pass"
            assert verdict["value"]["choices"] == [expected]
            assert verdict["value"]["choices"][0] in schema.controls["verdict"].question.options
            assert any(r["from_name"] == "reason" for r in p.result)
        # the prompt went to the LLM with the task's braces intact and no model secret in it
        sent = fake_llm.requests[-1]["body"]["messages"][-1]["content"]
        assert "{braces}" in sent and "Context:" in sent

        # Same config again: Label Studio keeps the version, nothing is re-predicted.
        calls = len(fake_llm.requests)
        ls_api.retrieve_predictions(project)
        assert len(fake_llm.requests) == calls
        assert sum(len(v) for v in _by_task(ls_api, project).values()) == len(task_ids)

        # A new prompt in extra_params -> a new version -> every task predicted again.
        ml_id = ls_api.backends(project)[0].id
        ls_api.set_extra_params(project, ml_id, srv.url,
                                {"prompt": "Is this answer any good? {output}"})
        new_version = _wait(lambda: (v := srv.backend.state(project).version) != version and v,
                            what="the new version")
        ls_api.retrieve_predictions(project)
        fresh = _by_task(ls_api, project, new_version)
        assert sorted(fresh) == sorted(task_ids)
        assert all(len(v) == 1 for v in fresh.values())


def test_two_projects_keep_their_own_config_and_version(tmp_path, fake_llm, ls_api):
    settings = judge_settings(tmp_path, fake_llm)
    rating = (CONFIGS / "rating.xml").read_text()
    with serve_backend(settings) as srv:
        a = ls_api.create_project("e2e project A", PASS_FAIL)
        b = ls_api.create_project("e2e project B", rating)
        ls_api.import_tasks(a, _tasks(3))
        ls_api.import_tasks(b, [{"data": {"input": "q", "output": f"a {i} EXPECT=4"}} for i in range(3)])
        ls_api.connect_backend(a, srv.url, extra_params={"metric": "faithfulness"})
        ls_api.connect_backend(b, srv.url, extra_params={"metric": "answer_relevance", "temperature": 0.5})
        ls_api.retrieve_predictions(a)
        ls_api.retrieve_predictions(b)
        va, vb = srv.backend.state(a).version, srv.backend.state(b).version
        assert va != vb
        pa, pb = ls_api.predictions(a), ls_api.predictions(b)
        assert len(pa) == 3 and {p.model_version for p in pa} == {va}
        assert len(pb) == 3 and {p.model_version for p in pb} == {vb}
        assert all(r["value"] == {"rating": 4} for p in pb for r in p.result if r["type"] == "rating")
        temps = {r["body"]["temperature"] for r in fake_llm.requests}
        assert temps == {0.0, 0.5}


def test_missing_field_abstains_without_breaking_the_batch(tmp_path, fake_llm, ls_api):
    settings = judge_settings(tmp_path, fake_llm)
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e missing field", PASS_FAIL)
        tasks = _tasks(3)
        for t in tasks[:2]:
            t["data"]["ground_truth"] = "the reference"  # the third task lacks the prompt's field
        ids = ls_api.import_tasks(project, tasks)
        ls_api.connect_backend(project, srv.url, extra_params={"metric": "correctness"})
        ls_api.retrieve_predictions(project)
        predicted = {int(p.task) for p in ls_api.predictions(project)}
        # the two complete tasks are labeled; the broken one gets no prediction (never a made-up one)
        assert predicted == set(ids[:2]) and all(p.result for p in ls_api.predictions(project))
        # and the server is still serving
        assert httpx.get(f"{srv.url}/health").json()["status"] == "UP"


def test_annotation_webhook_reaches_the_backend_and_is_acknowledged_fast(tmp_path, fake_llm, ls_api):
    settings = judge_settings(tmp_path, fake_llm)
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e webhook", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(2))
        ls_api.connect_backend(project, srv.url)
        task = ls_api.task_ids(project)[0]
        result = [{"from_name": "verdict", "to_name": "output", "type": "choices",
                   "value": {"choices": ["Fail"]}}]
        ann = ls_api.client.annotations.create(id=task, result=result, ground_truth=True)
        stored = _wait(lambda: srv.backend.store.annotations(str(project)), what="the synced annotation")
        assert stored[0]["id"] == ann.id and stored[0]["result"] == result and stored[0]["ground_truth"] == 1
        events = srv.backend.store.events(str(project))
        assert "ANNOTATION_CREATED" in {e["action"] for e in events}
        assert all(e["error"] is None for e in events)
        webhook = httpx.get(f"{srv.url}/metrics").json()["latency"]["/webhook"]
        assert webhook["p50_ms"] < 1000  # Label Studio's own webhook timeout is 1 s

        ls_api.client.annotations.delete(id=ann.id)
        _wait(lambda: not srv.backend.store.annotations(str(project)), what="the deletion to sync")


def test_basic_auth_predictions_and_webhooks_get_through(tmp_path, fake_llm, ls_api, label_studio):
    settings = judge_settings(tmp_path, fake_llm, BASIC_AUTH_USER="labeljudge", BASIC_AUTH_PASS="s3cret-pass",
                              LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    with serve_backend(settings) as srv:
        assert httpx.post(f"{srv.url}/setup", json={}).status_code == 401
        project = ls_api.create_project("e2e basic auth", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(2))
        ls_api.connect_backend(project, srv.url, basic_auth=("labeljudge", "s3cret-pass"))
        ls_api.retrieve_predictions(project)
        assert len(ls_api.predictions(project)) == 2
        # the backend registered a webhook that carries its credentials
        _wait(lambda: any((h.headers or {}).get("Authorization", "").startswith("Basic ")
                          for h in ls_api.client.webhooks.list(project=project)), what="the auth webhook")
        task = ls_api.task_ids(project)[0]
        ls_api.client.annotations.create(id=task, result=[{"from_name": "verdict", "to_name": "output",
                                                           "type": "choices", "value": {"choices": ["Pass"]}}])
        _wait(lambda: srv.backend.store.annotations(str(project)), what="the webhook through auth")
        log_text = json.dumps(srv.backend.store.events(str(project)))
        assert "s3cret-pass" not in log_text


def test_project_tasks_reads_the_export_and_pages_the_same_where_it_is_gone(ls_api, monkeypatch):
    """Bulk reads come from one JSON export (annotated-only really filters, predictions are joined in
    oldest first); where the export answers 404 (Enterprise) paging /api/tasks gives the same tasks."""
    from label_studio_sdk.core.api_error import ApiError

    project = ls_api.create_project("e2e bulk reads", PASS_FAIL)
    ids = ls_api.import_tasks(project, _tasks(6))
    choice = {"from_name": "verdict", "to_name": "output", "type": "choices"}
    for version in ("judge-old", "judge-new"):
        ls_api.client.projects.import_predictions(id=project, request=[
            {"task": ids[1], "model_version": version, "score": 0.5, "result": [{**choice, "value": {"choices": ["Pass"]}}]}])
    ls_api.client.annotations.create(id=ids[1], result=[{**choice, "value": {"choices": ["Fail"]}}])
    ls_api.client.annotations.create(id=ids[4], result=[{**choice, "value": {"choices": ["Pass"]}}])

    def shape(tasks: list[dict]) -> list[tuple]:
        return [(t["id"], t["data"]["output"], [a["result"][0]["value"]["choices"] for a in t["annotations"]],
                 [p["model_version"] for p in t.get("predictions", [])]) for t in sorted(tasks, key=lambda t: t["id"])]

    everything = ls_api.project_tasks(project, with_predictions=True)
    annotated = ls_api.project_tasks(project, annotated_only=True, with_predictions=True)
    assert [t["id"] for t in everything] == ids
    assert shape(annotated) == [(ids[1], "answer 1. EXPECT=Pass", [["Fail"]], ["judge-old", "judge-new"]),
                                (ids[4], "answer 4. EXPECT=Pass", [["Pass"]], [])]
    assert "predictions" not in ls_api.project_tasks(project)[0]

    def gone(*args, **kwargs):
        raise ApiError(status_code=404, headers={}, body={"detail": "use the async export API"})

    monkeypatch.setattr(ls_api.client.projects.exports, "download_sync", gone)
    assert shape(ls_api.project_tasks(project, with_predictions=True)) == shape(everything)
    assert shape(ls_api.project_tasks(project, annotated_only=True, with_predictions=True)) == shape(annotated)


def test_retrieve_predictions_answers_within_the_budget_and_a_job_labels_the_rest(tmp_path, ls_api, label_studio):
    """Label Studio's Retrieve predictions on a selection bigger than the budget allows: /predict
    answers in time with what is ready, a background job writes the rest, a second press starts no
    second job, and every task ends with exactly one prediction."""
    from .fake_openai import FakeOpenAI

    with FakeOpenAI(latency=0.2) as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  PREDICT_BUDGET="3", PREDICT_CONCURRENCY="4", FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e retrieve budget", PASS_FAIL)
            ls_api.import_tasks(project, _tasks(160))
            ls_api.connect_backend(project, srv.url)
            t0 = time.time()
            ls_api.retrieve_predictions(project)
            first_press = time.time() - t0
            assert first_press < 20  # the budget (3 s) plus Label Studio's own work, far below its 100 s
            answered = len(ls_api.predictions(project))
            assert 0 < answered < 160
            jobs = httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"]
            assert len(jobs) == 1 and "Retrieve predictions" in jobs[0]["progress"]["reason"]
            ls_api.retrieve_predictions(project)  # a second press while the job runs
            assert len(httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"]) == 1
            job = _wait(lambda: (j := httpx.get(f"{srv.url}/jobs/{jobs[0]['id']}").json())["status"]
                        in ("finished", "failed") and j, timeout=120, what="the background job")
            assert job["status"] == "finished", job
            per_task = predictions_per_task(ls_api, project)
            assert len(per_task) == 160 and set(per_task.values()) == {1}
            assert len(fake.requests) <= 160 + 8  # at most the calls in flight at the budget are asked twice


def test_retrieve_returns_at_most_max_answers_and_the_job_writes_after_label_studio_saved_them(
        tmp_path, ls_api, label_studio):
    """A fast provider (or a warm cache) makes every task of a big selection ready within the budget, and
    Label Studio saves what /predict returns one by one before its button returns (5,000 answers held it
    263 s). /predict judges at most PREDICT_MAX_ANSWERS; the job labels the rest once Label Studio has
    saved the answer (its ids come after the answer's), each task judged once, no task predicted twice."""
    from .fake_openai import FakeOpenAI

    with FakeOpenAI() as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  PREDICT_MAX_ANSWERS="10", FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e retrieve cap", PASS_FAIL)
            ls_api.import_tasks(project, _tasks(40))
            ls_api.connect_backend(project, srv.url)
            ls_api.retrieve_predictions(project)
            assert len(ls_api.predictions(project)) >= 10
            (job,) = httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"]
            assert "30 tasks left by /predict" in job["progress"]["reason"] and "at most 10 answers" in job["progress"]["reason"]
            job = _wait(lambda: (j := httpx.get(f"{srv.url}/jobs/{job['id']}").json())["status"]
                        in ("finished", "failed") and j, timeout=120, what="the background job")
            assert job["status"] == "finished" and job["result"]["labeled"] == 30, job
            per_task = predictions_per_task(ls_api, project)
            assert len(per_task) == 40 and set(per_task.values()) == {1}
            assert len(fake.requests) == 40  # /predict judged 10, the job 30: nothing judged twice
            preds = sorted(ls_api.predictions(project), key=lambda p: p.id)
            job_tasks = {int(p.task) for p in preds[10:]}
            assert len(job_tasks) == 30 and not job_tasks & {int(p.task) for p in preds[:10]}


def test_the_hand_over_waits_until_label_studio_has_saved_the_answer(ls_api):
    """wait_for_saved: True once the task carries a prediction of that version (not another version's),
    False at its limit or when Label Studio cannot be read, never an exception."""
    import threading

    from ml_backend.workflows.label_jobs import wait_for_saved

    project = ls_api.create_project("e2e wait for the save", PASS_FAIL)
    (task,) = ls_api.import_tasks(project, _tasks(1))
    ls_api.import_predictions(project, [{"task": task, "model_version": "other", "score": 0.5,
                                         "result": [{"from_name": "verdict", "to_name": "output", "type": "choices",
                                                     "value": {"choices": ["Pass"]}}]}])
    assert wait_for_saved(ls_api, task, "judge-v1", limit=1.5, every=0.3) is False
    later = threading.Timer(1.0, ls_api.import_predictions, args=(project, [
        {"task": task, "model_version": "judge-v1", "score": 0.5,
         "result": [{"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": ["Fail"]}}]}]))
    t0 = time.monotonic()
    later.start()
    assert wait_for_saved(ls_api, task, "judge-v1", limit=30, every=0.2) is True
    assert 0.9 <= time.monotonic() - t0 < 30
    assert wait_for_saved(ls_api, 10**9, "judge-v1", limit=5) is False  # no such task: Label Studio's 404


def test_the_review_queue_tab_sorts_tasks_least_confident_first(tmp_path, ls_api, label_studio):
    project = ls_api.create_project("e2e review queue", PASS_FAIL)
    ids = ls_api.import_tasks(project, _tasks(5))
    region = {"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": ["Pass"]}}
    scores = [0.9, 0.55, 0.99, 0.6, 0.7]
    ls_api.client.projects.import_predictions(id=project, request=[
        {"task": t, "model_version": "judge-x", "score": s, "result": [region]} for t, s in zip(ids, scores)])
    # the Data Manager scores tasks by the predictions of the project's current model version (with
    # LabelJudge connected: the version /setup answered)
    ls_api.client.projects.update(id=project, model_version="judge-x")
    view = ls_api.ensure_review_view(project)
    assert ls_api.ensure_review_view(project) == view  # one tab, updated in place
    tabs = httpx.get(f"{label_studio.url}/api/dm/views/", params={"project": project},
                     headers={"Authorization": f"Token {label_studio.token}"}).json()
    assert [t["id"] for t in tabs] == [view]
    shown = httpx.get(f"{label_studio.url}/api/tasks", params={"project": project, "view": view, "fields": "all"},
                      headers={"Authorization": f"Token {label_studio.token}"}).json()["tasks"]
    assert [t["id"] for t in shown] == [ids[i] for i in sorted(range(5), key=lambda i: scores[i])]
    assert "tasks:predictions_score" not in tabs[0]["data"]["hiddenColumns"]["explore"]


def test_the_backend_reads_label_studio_without_making_it_rerun_setup(tmp_path, fake_llm, ls_api, label_studio):
    """Label Studio's ML-backend list and detail calls re-run /setup and save the backend whole: one
    made in the background beside a PATCH of extra_params sent a stale /setup and put the old params
    back (found by CI: a switch to evaluator mode undone). The backend's own reads of Label Studio
    must not cause a /setup; the Data Manager's model version still follows the served version, from
    the first prediction on, and a person's choice there is kept."""
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=label_studio.url,
                              LABEL_STUDIO_API_KEY=label_studio.token)
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e no setup storm", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(3))
        ls_api.connect_backend(project, srv.url, title="LabelJudge here")
        version = srv.backend.state(project).version

        def setups() -> int:
            return httpx.get(f"{srv.url}/metrics").json()["counters"]["setup_calls"]

        api = srv.backend.labelstudio()
        time.sleep(2)  # the connect's own /setup calls and their background work are over
        before = setups()
        (ml,) = api.connected_backends(project)
        assert ml["url"].rstrip("/") == srv.url and ml["title"] == "LabelJudge here"
        # nothing has predicted this version yet: Label Studio would refuse it, so it is not sent
        assert api.show_model_version(project, version) == "pending"
        assert ls_api.client.projects.get(id=project).model_version == "LabelJudge here"
        time.sleep(1)
        assert setups() == before
        ls_api.backends(project)  # what it read before: Label Studio's list re-runs /setup on the spot
        assert setups() == before + 1

        ls_api.retrieve_predictions(project)  # the predictions exist: /predict's hook shows the version
        _wait(lambda: ls_api.client.projects.get(id=project).model_version == version, timeout=20,
              what="the Data Manager to show the served version")
        assert api.show_model_version(project, version) == "kept"

        # a switch of extra_params sticks, in Label Studio and in the backend
        ls_api.set_extra_params(project, ml["id"], srv.url, {"temperature": 0.3})
        _wait(lambda: srv.backend.state(project).params == {"temperature": 0.3}, what="the new params")
        time.sleep(2)
        assert srv.backend.state(project).params == {"temperature": 0.3}
        (ml,) = api.connected_backends(project)
        assert json.loads(ml["extra_params"]) == {"temperature": 0.3}

        # a person picks another model's predictions for the Data Manager: kept
        ls_api.client.projects.import_predictions(id=project, request=[
            {"task": next(iter(ls_api.tasks(project))).id, "model_version": "their-model", "score": 0.5,
             "result": [{"from_name": "verdict", "to_name": "output", "type": "choices",
                         "value": {"choices": ["Pass"]}}]}])
        ls_api.client.projects.update(id=project, model_version="their-model")
        assert api.show_model_version(project, version) == "kept"  # a version with predictions
        assert ls_api.client.projects.get(id=project).model_version == "their-model"


def test_tasks_handed_over_while_a_job_runs_are_labeled_by_a_follow_up_job(tmp_path, ls_api, label_studio):
    """Two Retrieve predictions on different selections, the second while the first one's background
    job still runs: the second's hand-over used to be dropped (3 of 10 written); now a follow-up job
    labels it, and every task ends with exactly one prediction."""
    from .fake_openai import FakeOpenAI

    with FakeOpenAI(latency=0.6) as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  PREDICT_BUDGET="1", PREDICT_CONCURRENCY="1", FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e hand-over during a job", PASS_FAIL)
            ids = ls_api.import_tasks(project, _tasks(10))
            ls_api.connect_backend(project, srv.url)
            ls_api.retrieve_predictions(project, ids[:5])
            first = httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"]
            assert len(first) == 1 and first[0]["status"] in ("queued", "running")
            ls_api.retrieve_predictions(project, ids[5:])  # while the first hand-over's job runs
            _wait(lambda: len(predictions_per_task(ls_api, project)) == 10, timeout=90, what="all ten tasks")
            jobs = _wait(lambda: (js := httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"])
                         and all(j["status"] == "finished" for j in js) and js, timeout=60, what="the jobs")
            assert len(jobs) == 2 and "handed over while job" in jobs[0]["progress"]["reason"]
            assert set(predictions_per_task(ls_api, project).values()) == {1}


@pytest.mark.slow
def test_a_labeling_job_says_it_is_loading_the_local_model_before_its_first_task(tmp_path, ls_api, label_studio):
    """The quickstart's bar sat at 0/12 for minutes while the local model loaded: the job says so."""
    settings = judge_settings(tmp_path, None, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                              JUDGE_PROVIDER="local", PRELOAD_MODEL="false", FEW_SHOT_K="0", JUDGE_TIMEOUT="120")
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e local model stage", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(2))
        job = httpx.post(f"{srv.url}/jobs/label", json={"project": project}, timeout=30).json()
        stages = set()
        deadline = time.time() + 300
        while job["status"] not in ("finished", "failed") and time.time() < deadline:
            job = httpx.get(f"{srv.url}/jobs/{job['id']}").json()
            stages.add((job.get("progress") or {}).get("stage"))
            time.sleep(0.1)
        assert job["status"] == "finished", job
        assert any(s and s.startswith("loading the local judge model") for s in stages), stages
