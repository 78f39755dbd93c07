"""Interactive pre-annotation: Label Studio's ``context`` (what an annotator typed in a TextArea, as in
HumanSignal's llm_interactive example) reaches the judge as a note for that task, answered as its own
version, cached apart, and never as the project's few-shot examples; and the /predict budget."""
from __future__ import annotations

import time

import httpx

from .conftest import CONFIGS, judge_settings, serve_backend
from .fake_openai import FakeOpenAI

PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()
TASK = {"id": 1, "data": {"input": "q", "context": "c", "output": "o EXPECT=Pass"}}


def context(text):
    return {"result": [{"from_name": "hint", "to_name": "output", "type": "textarea", "value": {"text": [text]}}]}


def test_an_annotators_note_reaches_the_judge_as_its_own_version(tmp_path, fake_llm):
    with serve_backend(judge_settings(tmp_path, fake_llm)) as srv:
        version = httpx.post(f"{srv.url}/setup", json={"project": 3, "schema": PASS_FAIL}).json()["model_version"]
        plain = httpx.post(f"{srv.url}/predict", json={"project": 3, "tasks": [TASK]}).json()["results"][0]
        assert plain["result"][0]["value"]["choices"] == ["Pass"] and plain["model_version"] == version
        hinted = httpx.post(f"{srv.url}/predict", json={"project": 3, "tasks": [TASK], "params": {
            "context": context("The output contradicts the context {really}. EXPECT=Fail")}}).json()["results"][0]
        assert hinted["result"][0]["value"]["choices"] == ["Fail"]
        assert hinted["model_version"] == f"{version}+hint"
        sent = fake_llm.requests[-1]["body"]["messages"][-1]["content"]
        assert "A note from the annotator" in sent and "{really}" in sent
        # the plain version is untouched: from the cache, still Pass, no new call
        calls = len(fake_llm.requests)
        again = httpx.post(f"{srv.url}/predict", json={"project": 3, "tasks": [TASK]}).json()["results"][0]
        assert again["result"][0]["value"]["choices"] == ["Pass"] and len(fake_llm.requests) == calls
        # a note never becomes a few-shot example: the project's pool (human annotations) is empty
        assert srv.backend.projects.examples("3", srv.backend.state(3).schema) == ()
        # an empty or malformed context is no note
        for ctx in ({"result": []}, {"result": "x"}, "text", {"result": [{"value": {"text": ["  "]}}]}):
            r = httpx.post(f"{srv.url}/predict", json={"project": 3, "tasks": [TASK], "params": {"context": ctx}})
            assert r.status_code == 200 and r.json()["results"][0]["model_version"] == version


def test_predict_answers_within_its_budget_without_label_studio(tmp_path):
    """With no Label Studio to hand the rest to, the late tasks abstain (Label Studio asks again) and
    what finished in time is returned, within the budget."""
    with FakeOpenAI(latency=0.5) as fake, \
            serve_backend(judge_settings(tmp_path, fake, PREDICT_BUDGET="1", PREDICT_CONCURRENCY="2")) as srv:
        assert httpx.post(f"{srv.url}/setup", json={"project": 4, "schema": PASS_FAIL}).status_code == 200
        tasks = [{"id": i, "data": {"input": "q", "context": "c", "output": f"o{i}"}} for i in range(20)]
        t0 = time.monotonic()
        results = httpx.post(f"{srv.url}/predict", json={"project": 4, "tasks": tasks}, timeout=30).json()["results"]
        assert time.monotonic() - t0 < 5
        done = [r for r in results if r]
        assert len(results) == 20 and 0 < len(done) < 20
