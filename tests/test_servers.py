"""The judge through every OpenAI-compatible server's documented quirks (tests/fake_openai.py MODES):
the capability ladder steps down once per refused feature, whatever the status, and is remembered;
labels are right; the score is renormalised over the labels where alternatives are returned, the
answer's own probability where only that is, and empty where there are no log-probabilities."""
from __future__ import annotations

import logging
import math

import pytest

from ml_backend.judge import Judge, JudgeSpec, resolve_template
from ml_backend.judge.batch import run_batch
from ml_backend.judge.providers import OpenAIProvider, ProviderError
from ml_backend.judge.providers.openai_compat import capabilities_for
from ml_backend.judge.types import Question

from .fake_openai import MODES, FakeOpenAI

PF = Question("verdict", "single", ("Pass", "Fail"))
STARS = Question("stars", "single", tuple(str(i) for i in range(1, 6)))

# mode -> (final response format, how the score is read)
EXPECTED = {
    "openai": ("json_schema", "renormalized"),
    "openai_reasoning": ("json_schema", None),
    "azure": ("json_object", "renormalized"),
    "vllm": ("json_schema", "renormalized"),
    "llama_cpp_python": ("json_object_schema", "renormalized"),
    "llama_server": ("json_schema", "renormalized"),
    "ollama": ("json_schema", None),
    "lmstudio": ("json_schema", None),
    "litellm": ("json_schema", None),
    "gateway": ("json_schema", "answer_tokens"),
}


def judge_for(fake: FakeOpenAI, questions=(PF,), retries: int = 2) -> Judge:
    provider = OpenAIProvider("model-x", api_key="sk-test-key-000000", base_url=fake.url, timeout=5,
                              max_retries=retries)
    return Judge(JudgeSpec(resolve_template(None, "faithfulness"), "openai", "model-x", questions=questions),
                 provider)


def task(i: int, label: str) -> dict:
    return {"input": f"q{i}", "context": "c", "output": f"a{i} EXPECT={label}"}


def test_every_mode_is_covered():
    assert set(EXPECTED) == set(MODES)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_the_judge_labels_through_each_server(mode, caplog):
    caplog.set_level(logging.WARNING)
    fmt, method = EXPECTED[mode]
    with FakeOpenAI(mode=mode, p_answer=0.8) as fake:
        judge = judge_for(fake)
        first = judge.judge(task(0, "Fail"))
        probes = len(fake.requests)
        assert probes <= 4  # the ladder: at most one refusal per feature
        verdicts = [judge.judge(task(i, "Pass" if i % 2 else "Fail")) for i in range(1, 7)]
        assert len(fake.requests) == probes + 6  # remembered: one request per task from then on
        for i, v in enumerate([first, *verdicts]):
            answer = v.answers["verdict"]
            assert answer.value == ("Pass" if i % 2 else "Fail"), (mode, v.error)
            assert answer.confidence_method == method
            if method == "renormalized":
                assert answer.confidence == pytest.approx(0.8, abs=1e-3)
                assert math.isclose(sum(answer.distribution.values()), 1.0, abs_tol=1e-4)
                assert set(answer.distribution) == {"Pass", "Fail"}
            elif method == "answer_tokens":
                assert answer.confidence == pytest.approx(0.8, abs=1e-3)
            else:
                assert answer.confidence is None
        caps = capabilities_for(fake.url, "model-x")
        assert caps.format == fmt
        assert caps.logprobs == (method is not None or mode == "ollama" or mode == "lmstudio")
        refusals = [r for r in caplog.records if "refused a feature" in r.getMessage()]
        assert len(refusals) == len(caps.notes) <= 3  # each step logged once, with what the server said
        if mode == "llama_cpp_python":
            assert "500" in caps.notes[0] and "json_object" in caps.notes[0]
        # a second provider object for the same server and model starts from what was learned
        again = judge_for(fake)
        before = len(fake.requests)
        assert again.judge(task(9, "Pass")).answers["verdict"].value == "Pass"
        assert len(fake.requests) == before + 1


def test_a_refusal_answered_500_steps_down_without_the_retry_backoff():
    """llama-cpp-python answers json_schema with a 500: stepping down must not wait for the retries."""
    with FakeOpenAI(mode="llama_cpp_python") as fake:
        judge = judge_for(fake, retries=4)
        assert judge.judge(task(0, "Fail")).answers["verdict"].value == "Fail"
        assert len(fake.requests) == 2  # one refusal, one answer: no retried 500s


def test_an_unconstrained_distribution_is_renormalised_over_the_labels():
    """The server's logprobs say "yes" is likelier than any label; the score must not be exp(logprob)."""
    with FakeOpenAI(mode="llama_cpp_python", p_answer=0.7) as fake:
        answer = judge_for(fake).judge(task(0, "Pass")).answers["verdict"]
        top = fake.requests[-1]["body"]["top_logprobs"]
        assert top >= 4
        assert answer.confidence == pytest.approx(0.7, abs=1e-3)  # exp(logprob) would say 0.07


def test_five_options_ask_for_enough_alternatives():
    with FakeOpenAI(mode="vllm", p_answer=0.6) as fake:
        answer = judge_for(fake, questions=(STARS,)).judge({**task(0, "4"), "output": "x EXPECT=4"}).answers["stars"]
        assert fake.requests[-1]["body"]["top_logprobs"] >= 5
        assert answer.value == "4" and answer.confidence == pytest.approx(0.6, abs=1e-3)
        assert len(answer.distribution) == 5


def test_a_cut_reply_and_a_missing_usage_are_handled(caplog):
    with FakeOpenAI(mode="gateway") as fake:
        judge = judge_for(fake)
        fake.faults.append("length")
        v = judge.judge(task(0, "Pass"))
        assert v.answers["verdict"].value is None and "max_tokens" in v.error
        v = judge.judge(task(1, "Pass"))
        assert v.answers["verdict"].value == "Pass" and v.usage.tokens_in == 0 and v.usage.calls == 1


@pytest.mark.parametrize("mode", [m for m, q in sorted(MODES.items()) if not q.batch])
def test_the_batch_api_is_refused_clearly_where_the_server_has_none(mode):
    class Batches:
        def open_batch(self, scope):
            return None

        def save_batch(self, scope, batch_id, status):
            pass

    with FakeOpenAI(mode=mode) as fake:
        with pytest.raises(ProviderError, match="no Batch API"):
            run_batch(judge_for(fake), [(1, task(1, "Pass"))], lambda o: None, scope="s", store=Batches(),
                      poll_interval=0.01)
