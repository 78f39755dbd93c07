"""Property-based tests (hypothesis) for the structured inputs: prompt templates against task data,
label configs, webhook payloads, and result JSON built from verdicts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ml_backend.events import BadEvent, check_event
from ml_backend.judge.templates import TemplateError, render, template_fields
from ml_backend.judge.types import Answer, JudgeError, Verdict
from ml_backend.labelstudio.config import SchemaError, parse_label_config

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)
names = st.text(alphabet="abcdefghij_", min_size=1, max_size=6)


# -- templates ------------------------------------------------------------------------------------------
@FAST
@given(template=st.text(max_size=60), data=st.dictionaries(names, json_values, max_size=5))
def test_rendering_raises_only_its_own_errors(template, data):
    try:
        fields = template_fields(template)
    except TemplateError:
        return
    try:
        out = render(template, data, max_chars=50)
    except JudgeError as exc:
        assert "missing field" in str(exc)
        assert any(f not in data for f in fields)
        return
    out.text.encode("utf-8")  # always sendable


@FAST
@given(value=st.text(max_size=200))
def test_task_text_is_inserted_verbatim_never_interpreted(value):
    out = render("Q: {input} / {{literal}}", {"input": value}, max_chars=10_000)
    clean = "".join(c if not 0xD800 <= ord(c) <= 0xDFFF else "\ufffd" for c in value)
    assert out.text == f"Q: {clean} / {{literal}}"


# -- label configs --------------------------------------------------------------------------------------
@st.composite
def label_configs(draw):
    objects = draw(st.lists(names, min_size=1, max_size=3, unique=True))
    parts = [f'<Text name="{o}" value="${o}"/>' for o in objects]
    for i in range(draw(st.integers(0, 3))):
        target = draw(st.sampled_from(objects + ["ghost"]))
        kind = draw(st.sampled_from(["Choices", "Rating", "Number", "TextArea", "Taxonomy"]))
        if kind == "Choices":
            opts = draw(st.lists(st.text(alphabet="ABCxyz ", min_size=1, max_size=5), max_size=6))
            inner = "".join(f'<Choice value="{o}"/>' for o in opts)
            parts.append(f'<Choices name="c{i}" toName="{target}">{inner}</Choices>')
        elif kind == "Rating":
            top = draw(st.one_of(st.integers(-3, 400).map(str), st.text(max_size=3)))
            parts.append(f'<Rating name="r{i}" toName="{target}" maxRating="{top}"/>')
        elif kind == "Number":
            lo, hi = draw(st.integers(-5, 20)), draw(st.integers(-5, 20))
            parts.append(f'<Number name="n{i}" toName="{target}" min="{lo}" max="{hi}"/>')
        elif kind == "Taxonomy":
            opts = draw(st.lists(st.text(alphabet="abc", min_size=1, max_size=3), max_size=4))
            inner = "".join(f'<Choice value="{o}"/>' for o in opts)
            parts.append(f'<Taxonomy name="x{i}" toName="{target}">{inner}</Taxonomy>')
        else:
            parts.append(f'<TextArea name="why{i}" toName="{target}"/>')
    return "<View>" + "".join(parts) + "</View>"


@FAST
@given(config=label_configs())
def test_a_label_config_parses_or_says_why(config):
    try:
        schema = parse_label_config(config)
    except SchemaError as exc:
        assert str(exc)
        return
    for spec in schema.controls.values():
        assert set(spec.to_name) <= set(schema.inputs)  # every control reads a real object
        assert len(spec.question.options) <= 200


@FAST
@given(config=st.one_of(st.text(max_size=80), json_values))
def test_anything_as_a_label_config_is_a_schema_error(config):
    try:
        parse_label_config(config)
    except SchemaError:
        pass


# -- webhook ingestion ----------------------------------------------------------------------------------
def _annotation_events():
    region = st.fixed_dictionaries({"from_name": st.one_of(st.just("verdict"), names, json_values),
                                    "value": st.one_of(st.fixed_dictionaries({"choices": json_values}),
                                                       json_values)})
    return st.fixed_dictionaries({
        "action": st.sampled_from(["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED", "x"]),
        "project": st.one_of(st.fixed_dictionaries({"id": st.one_of(st.integers(-2, 5), json_values)}), json_values),
        "task": st.one_of(st.fixed_dictionaries({"id": st.integers(1, 5), "data": json_values}), json_values),
        "annotation": st.one_of(st.fixed_dictionaries({"id": st.one_of(st.integers(1, 50), json_values),
                                                       "task": st.one_of(st.integers(1, 5), json_values),
                                                       "result": st.one_of(st.lists(region, max_size=3), json_values)}),
                                json_values),
        "annotations": st.one_of(st.lists(st.fixed_dictionaries({"id": json_values}), max_size=3), json_values),
    })


@pytest.fixture(scope="module")
def backend(tmp_path_factory):
    from ml_backend.app import LabelJudgeBackend
    from ml_backend.settings import Settings

    tmp = tmp_path_factory.mktemp("props")
    b = LabelJudgeBackend(Settings.from_env({"MODEL_DIR": str(tmp), "PRELOAD_MODEL": "false", "TRAIN_EVERY": "0"}))
    config = (Path(__file__).resolve().parents[1] / "label_configs" / "pass_fail.xml").read_text()
    b.setup(1, config)
    yield b


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(payload=st.one_of(_annotation_events(), json_values))
def test_any_webhook_is_stored_or_quarantined_and_reads_keep_working(backend, payload):
    try:
        head = check_event(payload)
    except BadEvent:
        with pytest.raises(BadEvent):
            backend.record_event(payload)
        return
    event_id = backend.record_event(payload)
    event = [e for e in backend.store.pending_events(10_000) if e["id"] == event_id]
    if event:
        errors = backend.handle_events(event)
        backend.store.mark_events([event_id], errors)
    assert head.project_id is None or head.project_id.isdigit()
    for ann in backend.store.annotations("1"):
        assert all(isinstance(r, dict) and isinstance(r["value"], dict) for r in ann["result"])
    state = backend.state(1)  # the project still builds (few-shot pool from what was stored)
    assert state.version


# -- result building ------------------------------------------------------------------------------------
CONFIG_DIR = Path(__file__).resolve().parents[1] / "label_configs"


@FAST
@given(data=st.data(), name=st.sampled_from(["pass_fail", "rating", "rag_faithfulness", "checklist"]))
def test_a_verdict_becomes_valid_result_json_that_reads_back(data, name):
    schema = parse_label_config((CONFIG_DIR / f"{name}.xml").read_text())
    verdict = Verdict()
    for control, spec in schema.controls.items():
        q = spec.question
        if q.kind == "single":
            value = data.draw(st.sampled_from(q.options))
        elif q.kind == "multiple":
            value = data.draw(st.lists(st.sampled_from(q.options), unique=True, max_size=len(q.options)))
        else:
            continue
        verdict.answers[control] = Answer(value=value, confidence=data.draw(st.floats(0, 1)))
    verdict.rationale = data.draw(st.one_of(st.none(), st.text(max_size=40)))
    assume(verdict.answers)
    result = schema.build_result(verdict)
    assert not schema.interface.validate_prediction({"result": [r for r in result if r["type"] != "pairwise"]},
                                                    return_errors=True)
    answers, _ = schema.answers_from_result(json.loads(json.dumps(result)))
    for control, answer in verdict.answers.items():
        if isinstance(answer.value, list):
            assert sorted(answers.get(control, [])) == sorted(answer.value)
        else:
            assert answers[control] == answer.value


@FAST
@given(result=json_values)
def test_reading_any_result_never_raises(result):
    schema = parse_label_config((CONFIG_DIR / "rating.xml").read_text())
    answers, rationale = schema.answers_from_result(result)
    assert isinstance(answers, dict)
    assert isinstance(schema.problems(result), list)
