"""The judge against a real HTTP server speaking the chat-completions protocol (no client patching)."""
from __future__ import annotations

import pytest

from ml_backend.judge import Judge, JudgeSpec, resolve_template
from ml_backend.judge.providers import OpenAIProvider, ProviderError
from ml_backend.judge.types import Example, Question

PF = Question("verdict", "single", ("Pass", "Fail"))
RATING = Question("stars", "single", ("1", "2", "3", "4", "5"))
CHECKS = Question("checks", "multiple", ("Helpful", "Safe"))
KEY = "sk-test-secret-key-123456"


def make_judge(fake, questions=(PF,), *, retries=2, timeout=1.0, examples=(), rationale=True):
    provider = OpenAIProvider("fake-judge", api_key=KEY, base_url=fake.url, timeout=timeout, max_retries=retries)
    spec = JudgeSpec(resolve_template(None, "faithfulness"), "openai", "fake-judge", rationale=rationale,
                     questions=tuple(questions), examples=tuple(examples))
    return Judge(spec, provider)


TASK = {"input": "q", "context": "c", "output": "the answer EXPECT=Fail"}


def test_structured_output_label_confidence_and_rationale(fake_llm):
    v = make_judge(fake_llm).judge(TASK)
    a = v.answers["verdict"]
    assert (a.value, v.rationale) == ("Fail", "Judged Fail.")
    assert a.confidence == pytest.approx(0.9, abs=1e-3)
    body = fake_llm.requests[-1]["body"]
    schema = body["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["answer"]["enum"] == ["Pass", "Fail"] and body["logprobs"] is True
    assert v.usage.calls == 1 and v.usage.tokens_in > 0


def test_confidence_follows_the_models_probability(fake_llm):
    fake_llm.p_answer = 0.6
    assert make_judge(fake_llm).judge(TASK).score == pytest.approx(0.6, abs=1e-3)


@pytest.mark.parametrize("fault", ["429", "500"])
def test_transient_errors_are_retried(fake_llm, fault):
    fake_llm.faults.extend([fault, fault])
    v = make_judge(fake_llm, retries=2).judge(TASK)
    assert v.answers["verdict"].value == "Fail"
    assert len(fake_llm.requests) == 3


def test_retry_budget_exhausted_raises_without_secrets(fake_llm):
    fake_llm.faults.extend(["500"] * 5)
    with pytest.raises(ProviderError) as err:
        make_judge(fake_llm, retries=1).judge(TASK)
    assert "500" in str(err.value) and KEY not in str(err.value)


def test_timeout_is_a_provider_error(fake_llm):
    fake_llm.faults.extend(["timeout"] * 3)
    fake_llm.timeout_sleep = 1.5
    with pytest.raises(ProviderError, match="timed out"):
        make_judge(fake_llm, retries=0, timeout=0.5).judge(TASK)


@pytest.mark.parametrize("fault,needle", [("invalid_label", "'Maybe' is not one of Pass, Fail"),
                                          ("malformed_json", "malformed JSON"),
                                          ("html", "not a chat completion")])
def test_unusable_answers_abstain(fake_llm, fault, needle):
    fake_llm.faults.append(fault)
    v = make_judge(fake_llm).judge(TASK)
    assert v.usable == {} and needle in v.error


def test_no_logprobs_means_no_score_not_a_constant(fake_llm):
    fake_llm.faults.append("no_logprobs")
    v = make_judge(fake_llm).judge(TASK)
    assert v.answers["verdict"].value == "Fail" and v.score is None


def test_server_without_structured_output_is_downgraded_once(fake_llm):
    fake_llm.reject_format = True
    judge = make_judge(fake_llm)
    assert judge.judge(TASK).answers["verdict"].value == "Fail"
    assert judge.judge(TASK).answers["verdict"].value == "Fail"
    formats = [bool(r["body"].get("response_format")) for r in fake_llm.requests]
    assert formats.count(True) <= 2 and formats[-1] is False


def test_every_question_of_the_config_is_asked(fake_llm):
    v = make_judge(fake_llm, (PF, RATING, CHECKS)).judge({**TASK, "output": "x EXPECT=Fail"})
    assert set(v.answers) == {"verdict", "stars", "checks"}
    assert v.answers["stars"].value == "1"  # not "EXPECT"ed: the fake picks the first option
    # rationale asked only once, on the first question
    assert sum("rationale" in str(r["body"]["response_format"]) for r in fake_llm.requests) == 1


def test_few_shot_examples_are_sent_and_change_the_version(fake_llm):
    ex = Example("ann-7", {"input": "q0", "context": "c0", "output": "o0"}, {"verdict": "Pass"}, "good")
    plain, shot = make_judge(fake_llm), make_judge(fake_llm, examples=[ex])
    assert plain.version != shot.version
    shot.judge(TASK)
    messages = fake_llm.requests[-1]["body"]["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert '"answer": "Pass"' in messages[2]["content"]


def test_version_depends_on_what_changes_predictions():
    base = JudgeSpec("t {output}", "openai", "m", questions=(PF,))
    same = JudgeSpec("t {output}", "openai", "m", questions=(PF,))
    assert base.version == same.version
    for other in (JudgeSpec("u {output}", "openai", "m", questions=(PF,)),
                  JudgeSpec("t {output}", "openai", "m2", questions=(PF,)),
                  JudgeSpec("t {output}", "openai", "m", temperature=0.7, questions=(PF,)),
                  JudgeSpec("t {output}", "openai", "m", questions=(RATING,))):
        assert other.version != base.version
