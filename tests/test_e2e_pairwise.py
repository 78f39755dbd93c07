"""Pairwise end to end: Labelbox import through the CLI, two-order judge pre-labels through Label
Studio's own retrieve-predictions, human labels, the pairwise report and the preference export."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from ml_backend.workflows.reporting import project_report

from .conftest import ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_pairwise import content_judge

pytestmark = pytest.mark.e2e


def conversations(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        good_first = i % 2 == 0
        good, bad = {"content": f"helpful answer {i} GOOD", "modelConfigName": "model-good"}, \
            {"content": f"unhelpful answer {i}", "modelConfigName": "model-bad"}
        rows.append({"globalKey": f"c{i}", "messages": [{"user": {"type": "human"}, "content": f"question {i}"}],
                     "modelOutputs": [good, bad] if good_first else [bad, good]})
    return rows


def test_pairwise_project_end_to_end(tmp_path, ls_api, label_studio):
    (tmp_path / "conv.json").write_text(json.dumps(conversations(12)))
    env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    run = subprocess.run([sys.executable, "-m", "ml_backend.cli", "import", str(tmp_path / "conv.json"),
                          "--format", "labelbox", "--config", "pairwise_preference", "--title", "e2e pairwise"],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    project = json.loads(run.stdout)["project"]
    assert json.loads(run.stdout)["imported"] == 12

    with FakeOpenAI(decide=content_judge) as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url,
                                  LABEL_STUDIO_API_KEY=label_studio.token, FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            ls_api.connect_backend(project, srv.url)
            ls_api.retrieve_predictions(project)
            assert len(fake.requests) == 24  # both orders for every pair
            assert "model-good" not in json.dumps([r["body"] for r in fake.requests])
            tasks = list(ls_api.tasks(project))
            for task in tasks:
                (pred,) = task.predictions
                label = [r for r in pred.result if r["from_name"] == "preference"][0]["value"]["choices"][0]
                assert label == ("A" if "GOOD" in task.data["response_a"] else "B")
                assert any(r["from_name"] == "reason" for r in pred.result)
            for task in tasks[:6]:  # a human agrees on half of them
                side = "A" if task.data["model_a"] == "model-good" else "B"
                ls_api.client.annotations.create(id=task.id, result=[{
                    "from_name": "preference", "to_name": "response_a", "type": "choices",
                    "value": {"choices": [side]}}])
            rep = project_report(ls_api, srv.backend.store, project)
            pw = rep["pairwise"]
            judge_rates = {r["model"]: r for r in pw["win_rates_judge"]}
            assert judge_rates["model-good"]["win_rate"] == 1.0 and judge_rates["model-good"]["comparisons"] == 12
            assert {r["model"]: r["win_rate"] for r in pw["win_rates_human"]} == {"model-good": 1.0, "model-bad": 0.0}
            assert pw["judge_vs_human"] == {"n": 6, "agreement": 1.0, "kappa": 1.0}
            (bias,) = pw["position_bias"].values()
            assert bias["n"] == 12 and bias["flip_rate"] == 0.0

    out = tmp_path / "prefs.jsonl"
    run = subprocess.run([sys.executable, "-m", "ml_backend.cli", "export", "--project", str(project), "--out",
                          str(out), "--preferences"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 6 and all("GOOD" in r["chosen"] and r["chosen_model"] == "model-good" for r in rows)
    assert rows[0]["prompt"] == [{"role": "human", "content": rows[0]["prompt"][0]["content"]}]


def test_pairwise_evaluator_trains_on_start_training_and_serves_predict(tmp_path, fake_llm, ls_api, label_studio):
    """Human preferences -> Start Training -> a reward-model evaluator is promoted -> Label Studio's
    retrieve-predictions gets A/B choices from it (evaluator mode: no LLM call), P(A better) as score."""
    from .test_e2e_evaluator import wait_job
    from .test_reward_evaluator import pair_records

    config = (ROOT / "label_configs" / "pairwise_preference.xml").read_text()
    records = pair_records(120, seed=5)
    project = ls_api.create_project("e2e pairwise evaluator", config)
    ls_api.import_tasks(project, [{"data": {**r["data"], "truth": r["annotations"][0]["answers"]["preference"]}}
                                  for r in records])
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=label_studio.url,
                              LABEL_STUDIO_API_KEY=label_studio.token, TRAIN_EVERY="0", TRAIN_EPOCHS="3",
                              TRAIN_MAX_LENGTH="64", FEW_SHOT_K="0")
    with serve_backend(settings) as srv:
        ls_api.connect_backend(project, srv.url)
        for task in ls_api.tasks(project):
            ls_api.client.annotations.create(id=task.id, result=[{
                "from_name": "preference", "to_name": "response_a", "type": "choices",
                "value": {"choices": [task.data["truth"]]}}])
        ml_id = ls_api.backends(project)[0].id
        ls_api.client.ml.train(id=ml_id)
        (job,) = wait_job(srv, project)
        result = job["result"]
        assert job["status"] == "finished" and result["kind"] == "reward" and result["promoted"], job
        assert result["accuracy"] > 0.7 and result["n_test"] >= 20
        assert srv.backend.state(project).version.startswith(result["version"] + "+judge-")  # cascade by default

        ls_api.set_extra_params(project, ml_id, srv.url, {"mode": "evaluator"})
        deadline = time.time() + 10
        while srv.backend.state(project).mode != "evaluator" and time.time() < deadline:
            time.sleep(0.2)
        ev_version = srv.backend.state(project).version
        assert ev_version == result["version"]
        calls = len(fake_llm.requests)
        ls_api.retrieve_predictions(project)
        assert len(fake_llm.requests) == calls  # the evaluator answered every task
        right = 0
        for task in ls_api.tasks(project):
            (pred,) = [p for p in task.predictions if p.model_version == ev_version]
            (region,) = pred.result
            assert region["from_name"] == "preference" and region["value"]["choices"][0] in ("A", "B")
            assert 0.5 <= pred.score <= 1
            right += region["value"]["choices"][0] == task.data["truth"]
        assert right / len(records) > 0.7
