"""The evaluator end to end with a real Label Studio: annotate -> Start Training -> promoted ->
re-predict shows evaluator predictions; a burst of webhooks trains once."""
from __future__ import annotations

import json
import time

import httpx
import pytest

from ml_backend.datasets import halueval_rows

from .conftest import CONFIGS

pytestmark = pytest.mark.e2e
PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()


def qa_tasks(n: int, seed: int = 0):
    df = halueval_rows("qa", n, seed=seed)
    return [{"data": {"input": r.input, "context": r.context, "output": r.output, "truth": r.label}}
            for r in df.itertuples()]


def annotate_all(ls_api, project):
    for task in ls_api.tasks(project):
        ls_api.client.annotations.create(id=task.id, result=[{
            "from_name": "verdict", "to_name": "output", "type": "choices",
            "value": {"choices": [task.data["truth"]]}}])


def wait_job(srv, project, count=1, timeout=400):
    deadline = time.time() + timeout
    while time.time() < deadline:
        jobs = httpx.get(f"{srv.url}/jobs", params={"project": str(project), "kind": "train"}).json()["jobs"]
        if len(jobs) >= count and all(j["status"] in ("finished", "failed") for j in jobs) and not srv.backend.trainer.busy(str(project)):
            return jobs
        time.sleep(1)
    raise AssertionError("training did not finish")


def test_burst_of_webhooks_trains_once_then_start_training_promotes_and_repredicts(
        fake_llm, ls_api, ls_project):
    lp = ls_project("e2e evaluator", PASS_FAIL, qa_tasks(200), fake=fake_llm, TRAIN_EVERY="50", TRAIN_EPOCHS="3",
                    TRAIN_MAX_LENGTH="64", TRAIN_DEBOUNCE="3", FEW_SHOT_K="0")
    srv, project = lp.srv, lp.project
    judge_version = srv.backend.state(project).version
    annotate_all(ls_api, project)  # 200 annotations -> 200 webhooks, as fast as Label Studio sends them
    jobs = wait_job(srv, project)
    assert srv.backend.trainer.runs == 1 and len(jobs) == 1, jobs
    result = jobs[0]["result"]
    assert jobs[0]["status"] == "finished" and result["promoted"], jobs[0]
    assert result["n_test"] >= 20 and result["accuracy"] > 0.7
    # 160 training rows: the served model is the mean of two seeds' weights (TRAIN_SOUP's default)
    metrics = json.loads((srv.backend.evaluators.registry(str(project)).path(result["version"]) / "metrics.json").read_text())
    assert metrics["config"]["soup"] == 2 and metrics["soup"]["seeds"] == [0, 1], metrics.get("soup")
    latency = httpx.get(f"{srv.url}/metrics").json()["latency"]["/webhook"]
    assert latency["n"] >= 200

    # /setup now answers the cascade version, so Label Studio re-predicts with the evaluator
    version = srv.backend.state(project).version
    assert version.startswith(result["version"] + "+judge-") and version != judge_version
    ls_api.retrieve_predictions(project)
    preds = [p for p in ls_api.predictions(project) if p.model_version == version]
    assert len(preds) == 200
    assert all(0.5 <= p.score <= 1 for p in preds)
    saved = [r for r in srv.backend.store.ledger(str(project)) if r["version"] == version][0]
    assert saved["evaluator_answered"] > 0  # the cascade saved LLM calls

    # Start Training (Label Studio's button) trains again; the gate decides, the registry stays sane
    ml_id = ls_api.backends(project)[0].id
    ls_api.client.ml.train(id=ml_id)
    jobs = wait_job(srv, project, count=2)
    assert len(jobs) == 2 and jobs[0]["status"] == "finished"
    second = jobs[0]["result"]
    assert second["version"] == "evaluator-0002"
    assert srv.backend.evaluators.registry(str(project)).current() in ("evaluator-0001", "evaluator-0002")

    # evaluator-only mode: predictions carry evaluator-<id>
    ls_api.set_extra_params(project, ml_id, srv.url, {"mode": "evaluator"})
    deadline = time.time() + 10
    while srv.backend.state(project).mode != "evaluator" and time.time() < deadline:
        time.sleep(0.2)
    ev_version = srv.backend.state(project).version
    assert ev_version.startswith("evaluator-") and "+" not in ev_version
    calls = len(fake_llm.requests)
    ls_api.retrieve_predictions(project)
    assert len([p for p in ls_api.predictions(project) if p.model_version == ev_version]) == 200
    assert len(fake_llm.requests) == calls  # no LLM call at all
