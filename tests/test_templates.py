import pytest

from ml_backend.judge.metrics import METRICS, resolve_template
from ml_backend.judge.templates import TemplateError, render, template_fields
from ml_backend.judge.types import JudgeError


def test_fields_are_filled_and_braces_in_data_stay_text():
    out = render("Q: {input}\nA: {output}", {"input": "x {output} {0} {__class__}", "output": "y}{"})
    assert out.text == "Q: x {output} {0} {__class__}\nA: y}{"
    assert out.warnings == []


def test_literal_braces_in_template():
    assert render('Reply as {{"a": 1}} for {input}', {"input": "z"}).text == 'Reply as {"a": 1} for z'


def test_missing_field_is_a_clear_error():
    with pytest.raises(JudgeError, match="missing field 'context'.*task has: input, output"):
        render("{context}", {"input": 1, "output": 2})


def test_field_map_and_nested_keys():
    data = {"question": "why", "meta": {"lang": "en"}}
    out = render("{input} in {meta.lang}", data, field_map={"input": "question"})
    assert out.text == "why in en"


def test_task_placeholder_renders_the_configs_inputs():
    out = render("{task}", {"input": "q", "output": "a", "secret_col": "s"}, input_keys=["input", "output"])
    assert out.text == "input:\nq\n\noutput:\na"


def test_non_string_values_render_as_json_or_chat():
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    assert render("{m}", {"m": chat}).text == "user: hi\nassistant: hello"
    assert '"k": 1' in render("{d}", {"d": {"k": 1}}).text


def test_oversized_field_is_truncated_with_a_warning():
    out = render("{output}", {"output": "x" * 10_000}, max_chars=100)
    assert len(out.text) < 200 and "truncated 9900" in out.text
    assert out.warnings and "truncated" in out.warnings[0]


@pytest.mark.parametrize("bad", ["{input", "input}", "{input!r}", "{input:>10}", "{}"])
def test_malformed_templates_are_rejected(bad):
    with pytest.raises(TemplateError):
        template_fields(bad)


def test_builtin_metrics_parse_and_resolve():
    needed = {"faithfulness", "answer_relevance", "context_relevance", "correctness", "toxicity",
              "conciseness", "tone"}
    assert needed <= set(METRICS)
    for metric in METRICS.values():
        template_fields(metric.template)
    assert "{ground_truth}" in resolve_template(None, "correctness")
    assert resolve_template("mine {output}", "toxicity") == "mine {output}"
    with pytest.raises(TemplateError, match="unknown metric"):
        resolve_template(None, "vibes")
