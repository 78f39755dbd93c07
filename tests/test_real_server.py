"""The judge against a real OpenAI-compatible server: llama-cpp-python's, serving the embedded
SmolLM2-135M GGUF. Run with `pytest -m real_server` after `scripts/setup_llama_server.sh`.

What that server does (measured): json_schema is refused with a 500 (pydantic: "Input should be
'text' or 'json_object'"), a JSON object with a schema is grammar-constrained, logprobs and
top_logprobs come from the unconstrained distribution, and there is no Batch API."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from ml_backend.judge.providers.openai_compat import capabilities_for

pytestmark = pytest.mark.real_server


@pytest.fixture(scope="module")
def llama_server():
    from .llama_server import llama_server as start

    try:
        with start() as url:
            yield url
    except FileNotFoundError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def env(llama_server, monkeypatch, tmp_path):
    for k, v in {"OPENAI_BASE_URL": llama_server, "OPENAI_API_KEY": "sk-local-none", "JUDGE_PROVIDER": "openai",
                 "MODEL_DIR": str(tmp_path), "JUDGE_MAX_RETRIES": "2", "JUDGE_TIMEOUT": "120"}.items():
        monkeypatch.setenv(k, v)
    return llama_server


def test_every_halueval_row_is_labeled_with_scores_over_the_labels(env):
    from ml_backend.dataframe import label_dataframe
    from ml_backend.datasets import halueval_rows

    df = halueval_rows("qa", 20)
    out = label_dataframe(df, metric="faithfulness", labels=["Pass", "Fail"], provider="openai", model="smollm2",
                          concurrency=2)
    assert out["judge_error"].isna().all(), out["judge_error"].dropna().tolist()[:3]
    assert set(out["judge_label"]) <= {"Pass", "Fail"} and out["judge_label"].notna().all()
    assert (out["judge_score_method"] == "renormalized").mean() >= 0.9  # alternatives were there to use
    assert out["judge_score"].between(0.0, 1.0).all() and out["judge_score"].nunique() > 3  # not a constant
    caps = capabilities_for(env, "smollm2")
    assert caps.format == "json_object_schema" and caps.logprobs and caps.top_logprobs
    assert len(caps.notes) == 1 and caps.notes[0].startswith("500")


def test_the_distribution_sums_to_one_and_the_cache_answers_again(env, tmp_path):
    from ml_backend.judge import Judge, JudgeSpec, resolve_template
    from ml_backend.judge.providers import OpenAIProvider
    from ml_backend.judge.types import Question

    q = Question("verdict", "single", ("Pass", "Fail"))
    judge = Judge(JudgeSpec(resolve_template(None, "faithfulness"), "openai", "smollm2", questions=(q,)),
                  OpenAIProvider("smollm2", api_key=None, base_url=env, timeout=120, max_retries=2))
    v = judge.judge({"input": "What is 2+2?", "context": "2+2=4", "output": "It is 5."})
    a = v.answers["verdict"]
    assert a.value in ("Pass", "Fail") and a.confidence_method == "renormalized"
    assert math.isclose(sum(a.distribution.values()), 1.0, abs_tol=1e-4)
    assert a.confidence == pytest.approx(a.distribution[a.value], abs=1e-4)


def test_both_orders_of_a_pair_are_asked(env):
    from ml_backend.judge import Judge, JudgeSpec, resolve_template
    from ml_backend.judge.providers import OpenAIProvider
    from ml_backend.labelstudio.config import parse_label_config

    config = (Path(__file__).resolve().parents[1] / "label_configs" / "pairwise_preference.xml").read_text()
    schema = parse_label_config(config)
    name, a_key, b_key = schema.pair_fields()
    spec = JudgeSpec(resolve_template(None, "preference"), "openai", "smollm2",
                     questions=tuple(schema.questions((name,))), pair=(a_key, b_key), pair_question=name,
                     rationale=False)
    judge = Judge(spec, OpenAIProvider("smollm2", api_key=None, base_url=env, timeout=120, max_retries=2),
                  input_keys=schema.data_fields)
    data = {"messages": [{"role": "user", "content": "What is the capital of France?"}],
            "response_a": "Paris.", "response_b": "Berlin is the capital of France."}
    v = judge.judge(data)
    answer = v.answers[name]
    assert answer.position is not None and set(answer.position) == {"first", "second", "consistent"}
    assert v.usage.calls == 2  # both orders went to the server
    assert answer.value is not None or "position bias" in (answer.error or "")


def test_the_batch_api_is_refused_with_a_clear_message(env):
    from ml_backend.judge import Judge, JudgeSpec, resolve_template
    from ml_backend.judge.batch import run_batch
    from ml_backend.judge.providers import OpenAIProvider, ProviderError
    from ml_backend.judge.types import Question

    class Batches:
        def open_batch(self, scope):
            return None

        def save_batch(self, scope, batch_id, status):
            pass

    q = Question("verdict", "single", ("Pass", "Fail"))
    judge = Judge(JudgeSpec(resolve_template(None, "faithfulness"), "openai", "smollm2", questions=(q,)),
                  OpenAIProvider("smollm2", api_key=None, base_url=env, timeout=120, max_retries=0))
    with pytest.raises(ProviderError, match="no Batch API"):
        run_batch(judge, [(1, {"input": "q", "context": "c", "output": "o"})], lambda o: None, scope="s",
                  store=Batches(), poll_interval=0.01)
