"""Pairwise preference: import formats round trip, the two-order judge over real HTTP, position bias,
win rates, preference export."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from ml_backend.conversations import labelbox_to_tasks, preference_records, table_to_tasks, tasks_to_labelbox
from ml_backend.judge import Judge, JudgeSpec, resolve_template
from ml_backend.judge.providers import OpenAIProvider
from ml_backend.labelstudio.config import parse_label_config
from ml_backend.quality.pairwise import position_bias, win_rates

from .conftest import CONFIGS
from .fake_openai import FakeOpenAI

LABELBOX = {"globalKey": "conv-1",
            "messages": [{"user": {"type": "human"}, "content": "How do I reset my password?"},
                         {"user": {"type": "bot"}, "content": "Which account?"},
                         {"user": {"type": "human"}, "content": "My work account."}],
            "modelOutputs": [{"title": "Response 1", "content": "Use Settings > Security.", "modelConfigName": "m-small"},
                             {"title": "Response 2", "content": "I can't help.", "modelConfigName": "m-large"},
                             {"title": "Response 3", "content": "Call IT.", "modelConfigName": "m-rules"}]}


def test_labelbox_round_trip_and_all_pairs():
    tasks = labelbox_to_tasks([LABELBOX])
    assert len(tasks) == 3  # every pair of three responses
    d = tasks[0]["data"]
    assert d["messages"][0] == {"role": "human", "content": "How do I reset my password?"}
    assert (d["model_a"], d["model_b"]) == ("m-small", "m-large")
    again = labelbox_to_tasks(tasks_to_labelbox(tasks))
    assert [t["data"]["response_a"] for t in again] == [t["data"]["response_a"] for t in tasks]
    assert [t["data"]["messages"] for t in again] == [t["data"]["messages"] for t in tasks]


def test_messages_responses_table_round_trip(tmp_path):
    df = pd.DataFrame({"messages": [json.dumps([{"role": "user", "content": "hi"}])],
                       "responses": [json.dumps([{"content": "hello", "model": "x"}, {"content": "yo", "model": "y"}])]})
    df.to_csv(tmp_path / "conv.csv", index=False)
    tasks = table_to_tasks(pd.read_csv(tmp_path / "conv.csv"))
    assert tasks == [{"data": {"messages": [{"role": "user", "content": "hi"}], "response_a": "hello",
                               "response_b": "yo", "model_a": "x", "model_b": "y"}}]
    plain = table_to_tasks(pd.DataFrame({"messages": ['[{"role": "user", "content": "q"}]'],
                                         "responses": ['["r1", "r2"]']}))
    assert plain[0]["data"]["model_a"] == "response_1"


def spec_for(config_name: str):
    schema = parse_label_config((CONFIGS / f"{config_name}.xml").read_text())
    control, a, b = schema.pair_fields()
    return schema, JudgeSpec(resolve_template(None, "preference"), "openai", "fake", rationale=True,
                             questions=(schema.controls[control].question,), pair=(a, b), pair_question=control)


def first_position_judge(body, options):
    return options[0]  # always "A": pure position bias


def content_judge(body, options):
    text = body["messages"][-1]["content"]
    a = text.split("Response A:")[1].split("Response B:")[0]
    return "A" if "GOOD" in a else "B"


@pytest.mark.parametrize("config_name", ["pairwise_preference", "pairwise"])
def test_a_first_position_judge_is_fully_biased_and_yields_ties(config_name):
    schema, spec = spec_for(config_name)
    data = {"messages": [{"role": "user", "content": "q"}], "input": "q", "response_a": "one GOOD",
            "response_b": "two", "model_a": "SECRET-MODEL-A", "model_b": "SECRET-MODEL-B"}
    with FakeOpenAI(decide=first_position_judge) as fake:
        judge = Judge(spec, OpenAIProvider("fake", api_key="k", base_url=fake.url, max_retries=0),
                      input_keys=schema.data_fields)
        verdicts = [judge.judge(data) for _ in range(3)]
        sent = json.dumps([r["body"]["messages"] for r in fake.requests])
    answer = verdicts[0].answers[spec.pair_question]
    assert answer.position == {"first": answer.position["first"], "second": answer.position["second"],
                               "consistent": False}
    if config_name == "pairwise_preference":  # has a Tie option
        assert answer.value == "Tie" and answer.confidence <= 0.5
    else:  # Pairwise tag: no tie, so no prediction
        assert answer.value is None and "position bias" in answer.error
    rows = [{"first": v.answers[spec.pair_question].position["first"],
             "second": v.answers[spec.pair_question].position["second"], "consistent": False} for v in verdicts]
    bias = position_bias(rows)
    assert bias["flip_rate"] == 1.0 and bias["first_position_rate"] == 1.0
    assert "SECRET-MODEL" not in sent  # model names are never shown to the judge
    assert "one GOOD" in sent and "two" in sent


def test_a_content_judge_is_consistent_across_orders():
    schema, spec = spec_for("pairwise_preference")
    with FakeOpenAI(decide=content_judge) as fake:
        judge = Judge(spec, OpenAIProvider("fake", api_key="k", base_url=fake.url, max_retries=0),
                      input_keys=schema.data_fields)
        v = judge.judge({"messages": [{"role": "user", "content": "q"}], "response_a": "x", "response_b": "y GOOD"})
        prompts = [r["body"]["messages"][-1]["content"] for r in fake.requests]
    a = v.answers["preference"]
    assert a.value == "B" and a.position["consistent"] and a.confidence == pytest.approx(0.9, abs=1e-3)
    assert prompts[0].index("y GOOD") > prompts[0].index("Response B") and prompts[1].index("y GOOD") < prompts[1].index("Response B")


def test_win_rates_and_preference_export():
    pairs = [("m1", "m2", "A")] * 6 + [("m1", "m2", "B")] * 2 + [("m1", "m2", "Tie")] * 2
    rows = {r["model"]: r for r in win_rates(pairs)}
    assert rows["m1"]["win_rate"] == pytest.approx(0.7) and rows["m2"]["win_rate"] == pytest.approx(0.3)
    assert rows["m1"]["ci_low"] < 0.7 < rows["m1"]["ci_high"]
    tasks = [{"id": 1, "data": {"messages": [], "response_a": "a", "response_b": "b", "model_a": "x", "model_b": "y"},
              "annotations": [{"answers": {"preference": "B"}}], "predictions": []},
             {"id": 2, "data": {"messages": [], "response_a": "c", "response_b": "d", "model_a": "x", "model_b": "y"},
              "annotations": [], "predictions": [{"model_version": "judge-1", "answers": {"preference": "A"}}]},
             {"id": 3, "data": {"messages": [], "response_a": "e", "response_b": "f"},
              "annotations": [{"answers": {"preference": "Tie"}}], "predictions": []}]
    human = preference_records(tasks)
    assert human == [{"prompt": [], "chosen": "b", "rejected": "a", "chosen_model": "y", "rejected_model": "x",
                      "source": "human", "task_id": 1}]
    assert [r["chosen"] for r in preference_records(tasks, use_judge=True)] == ["b", "c"]
