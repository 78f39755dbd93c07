from pathlib import Path

import pytest

from ml_backend.judge.types import Answer, Verdict
from ml_backend.labelstudio.config import SchemaError, parse_label_config

CONFIGS = Path(__file__).resolve().parents[1] / "label_configs"

ALL = """<View>
<Text name="input" value="$input"/><Text name="output" value="$output"/>
<Choices name="verdict" toName="output"><Choice value="Pass"/><Choice value="Fail"/></Choices>
<Choices name="checks" toName="output" choice="multiple"><Choice value="Helpful"/><Choice value="Safe"/></Choices>
<Rating name="stars" toName="output" maxRating="4"/>
<Number name="small" toName="output" min="0" max="3"/>
<Number name="big" toName="output" min="0" max="1000"/>
<Taxonomy name="topic" toName="output"><Choice value="Billing"><Choice value="Refunds"/></Choice><Choice value="Tech"/></Taxonomy>
<TextArea name="why" toName="output"/>
</View>"""


def test_inputs_controls_and_options():
    s = parse_label_config(ALL)
    assert s.inputs == {"input": "input", "output": "output"}
    assert s.rationale_control == "why"
    kinds = {n: (c.question.kind, c.question.options) for n, c in s.controls.items()}
    assert kinds["verdict"] == ("single", ("Pass", "Fail"))
    assert kinds["checks"] == ("multiple", ("Helpful", "Safe"))
    assert kinds["stars"] == ("single", ("1", "2", "3", "4"))
    assert kinds["small"] == ("single", ("0", "1", "2", "3"))
    assert kinds["big"] == ("number", ())
    assert kinds["topic"] == ("single", ("Billing", "Billing / Refunds", "Tech"))


def test_result_for_every_control_type_is_valid():
    s = parse_label_config(ALL)
    v = Verdict(answers={
        "verdict": Answer("Fail", 0.8), "checks": Answer(["Safe"], 0.6), "stars": Answer("3", 0.5),
        "small": Answer("2", 0.7), "big": Answer(512.0, None), "topic": Answer("Billing / Refunds", 0.9),
    }, rationale="because")
    result = {r["from_name"]: r for r in s.build_result(v)}
    assert result["verdict"]["value"] == {"choices": ["Fail"]} and result["verdict"]["score"] == 0.8
    assert result["checks"]["value"] == {"choices": ["Safe"]}
    assert result["stars"]["value"] == {"rating": 3} and result["stars"]["type"] == "rating"
    assert result["small"]["value"] == {"number": 2.0}
    assert result["big"]["value"] == {"number": 512.0} and "score" not in result["big"]
    assert result["topic"]["value"] == {"taxonomy": [["Billing", "Refunds"]]}
    assert result["why"]["value"] == {"text": ["because"]}
    assert all(r["to_name"] == "output" for r in result.values())
    assert v.score == 0.5  # the weakest answer


def test_a_reviewer_accepting_the_prediction_inherits_no_judge_meta_or_reasoning():
    """Label Studio copies a prediction's regions (their meta included) into the annotation of whoever
    accepts it; a rationale left as the judge wrote it is marked origin "prediction"."""
    s = parse_label_config(ALL)
    result = s.build_result(Verdict(answers={"verdict": Answer("Fail", 0.8, confidence_method="renormalized")},
                                    rationale="the judge's words"))
    assert all("meta" not in r for r in result)
    accepted = [{**r, "origin": "prediction"} for r in result]
    assert s.answers_from_result(accepted) == ({"verdict": "Fail"}, None)
    edited = [{**r, "origin": "prediction-changed"} if r["from_name"] == "why" else r for r in accepted]
    edited[-1]["value"] = {"text": ["my own reason"]}
    assert s.answers_from_result(edited)[1] == "my own reason"


def test_two_tags_of_one_name_are_refused():
    with pytest.raises(SchemaError, match="names 1 tag.s. twice: 'verdict'"):
        parse_label_config(ALL.replace('name="checks"', 'name="verdict"'))


def test_pairwise():
    s = parse_label_config((CONFIGS / "pairwise.xml").read_text())
    q = s.controls["preference"].question
    assert q.shown() == ("A", "B")
    result = s.build_result(Verdict(answers={"preference": Answer("right", 0.7)}))
    assert result[0]["type"] == "pairwise" and result[0]["value"] == {"selected": "right"}


def test_abstention_builds_no_regions_and_no_orphan_rationale():
    s = parse_label_config(ALL)
    assert s.build_result(Verdict(answers={"verdict": Answer(error="bad")}, rationale="x")) == []


def test_a_label_not_in_the_config_is_never_returned():
    s = parse_label_config(ALL)
    with pytest.raises(Exception):
        s.build_result(Verdict(answers={"verdict": Answer("Maybe", 0.9)}))


def test_selected_controls():
    s = parse_label_config(ALL)
    assert [q.name for q in s.questions(["stars"])] == ["stars"]
    with pytest.raises(SchemaError, match="control 'nope' is not in the label config"):
        s.questions(["nope"])


@pytest.mark.parametrize("config,needle", [
    ("<View><Text name='a' value='$a'/>", "not valid XML"),
    ("", "empty"),
    ("<View><Text name='a' value='$a'/><Labels name='l' toName='a'><Label value='X'/></Labels></View>",
     "no control the judge can fill"),
    ("<View><Text name='a' value='$a'/><Choices name='c' toName='a'></Choices></View>", "no <Choice>"),
])
def test_bad_configs(config, needle):
    with pytest.raises(SchemaError, match=needle):
        parse_label_config(config)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.xml")), ids=lambda p: p.stem)
def test_shipped_configs_parse_and_demo_tasks_have_their_fields(path):
    import json
    s = parse_label_config(path.read_text())
    tasks = json.loads((CONFIGS / "demo" / f"{path.stem}.json").read_text())
    assert len(tasks) >= 5
    for task in tasks:
        assert set(s.data_fields) <= set(task["data"])
