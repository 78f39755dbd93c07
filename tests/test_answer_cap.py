"""PREDICT_MAX_ANSWERS: how many ready answers one /predict returns (Label Studio saves each before its
Retrieve button returns). The e2e half is in test_e2e_labelstudio.py."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ml_backend.judge.types import Answer, Verdict
from ml_backend.predict import past_the_cap
from ml_backend.settings import ConfigError, Settings


def _verdicts(flags: list[bool]) -> list[Verdict]:
    return [Verdict(answers={"verdict": Answer("Pass", 0.9)}) if ok else Verdict(error="no") for ok in flags]


@given(st.lists(st.booleans(), max_size=60), st.sets(st.integers(0, 59)), st.integers(0, 70))
def test_past_the_cap_keeps_the_first_cap_answers_and_nothing_else(flags, asked, cap):
    verdicts = _verdicts(flags)
    over = past_the_cap(verdicts, asked, cap)
    answers = [i for i, ok in enumerate(flags) if ok and i not in asked]
    assert over == answers[cap:]
    kept = [i for i in answers if i not in over]
    assert len(kept) == min(cap, len(answers)) and all(i not in asked and flags[i] for i in over)


@pytest.mark.parametrize("raw", ["0", "-5", "many", "1.5"])
def test_a_bad_max_answers_is_refused_with_its_name(raw):
    with pytest.raises(ConfigError, match="PREDICT_MAX_ANSWERS"):
        Settings.from_env({"PREDICT_MAX_ANSWERS": raw})


def test_the_default_keeps_label_studios_save_well_inside_its_wait():
    # about 53 ms a saved prediction on a stock 1.23.2 with 5,000 tasks: 500 answers are 27 s
    assert Settings.from_env({}).predict_max_answers == 500
