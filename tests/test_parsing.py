import math

import pytest

from ml_backend.judge.parsing import AnswerError, match_value, parse_reply, span_confidence
from ml_backend.judge.types import Question

PF = Question("verdict", "single", ("Pass", "Fail"))
PAIR = Question("pref", "single", ("left", "right"), display=("A", "B"))
MULTI = Question("checks", "multiple", ("Helpful", "Safe", "Concise"))
NUM = Question("score", "number", minimum=0, maximum=10)


def test_json_answer_and_rationale():
    p = parse_reply(PF, '{"rationale": "fine", "answer": "Pass"}')
    assert (p.value, p.rationale) == ("Pass", "fine")


def test_fenced_json_and_case_are_tolerated():
    assert parse_reply(PF, '```json\n{"answer": "fail"}\n```').value == "Fail"


def test_bare_option_is_accepted():
    assert parse_reply(PF, " Pass. ").value == "Pass"


@pytest.mark.parametrize("reply", ["Maybe", '{"answer": "Passable"}', '{"answer": "Pass or Fail"}'])
def test_invalid_labels_abstain_no_fuzzy_match(reply):
    with pytest.raises(AnswerError, match="not one of Pass, Fail"):
        parse_reply(PF, reply)


@pytest.mark.parametrize("reply", ['{"answer": "Pass", ', "", '{"rationale": "x"}'])
def test_malformed_or_incomplete_json(reply):
    with pytest.raises(AnswerError):
        parse_reply(PF, reply)


def test_display_maps_back_to_stored_label():
    assert parse_reply(PAIR, '{"answer": "B"}').value == "right"


def test_multiple_and_number():
    assert match_value(MULTI, ["Safe", "Helpful", "Safe"]) == ["Safe", "Helpful"]
    assert match_value(MULTI, []) == []
    assert match_value(NUM, "7.5") == 7.5
    with pytest.raises(AnswerError, match="outside"):
        match_value(NUM, 11)
    with pytest.raises(AnswerError):
        match_value(MULTI, ["Safe", "Rude"])


def test_rating_number_answers_match_string_options():
    rating = Question("q", "single", ("1", "2", "3", "4", "5"))
    assert match_value(rating, 4) == "4"


def test_span_confidence_sums_the_answer_tokens():
    text = '{"answer": "Pass"}'
    tokens = [('{"', -0.0), ("answer", -0.0), ('": "', -0.0), ("Pa", math.log(0.8)), ("ss", math.log(0.5)),
              ('"}', -0.0)]
    span = parse_reply(PF, text).span
    assert text[span[0]:span[1]] == "Pass"
    assert span_confidence(text, tokens, span) == pytest.approx(0.4)
    assert span_confidence(text, [("x", 0.0)], span) is None  # tokens don't spell the text
