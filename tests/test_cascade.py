"""The cascade band chosen from held-out labels: the evaluator answers alone only where, on those
labels, the lower bound of its accuracy keeps the cascade within TOLERANCE of the target, and as
often as that allows."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_backend.evaluator.cascade import (
    MIN_CONFIDENT,
    TOLERANCE,
    accuracy_lower_bound,
    carry_band,
    choose_band,
    judge_accuracy,
    judge_asked,
)


def _confident(scores, band):
    return ~judge_asked(scores, band)  # the serving predicate (pinned by the test below)


def test_the_band_sends_scores_strictly_inside_it_to_the_judge_and_0_or_1_ends_take_their_end():
    scores = np.array([0.0, 0.2, 0.5, 0.8, 1.0])
    assert judge_asked(scores, (0.2, 0.8)).tolist() == [False, False, True, False, False]
    # [0, 1] is "the judge answers everything": a saturated score of exactly 0.0 or 1.0 included
    assert judge_asked(scores, (0.0, 1.0)).all()
    assert judge_asked(scores, (0.0, 0.8)).tolist() == [True, True, True, False, False]
    assert judge_asked(scores, (0.2, 1.0)).tolist() == [False, False, True, True, True]
    assert not judge_asked(scores, (0.5, 0.5)).any()  # evaluator only


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=1, max_size=300), st.floats(0.5, 1.0))
def test_the_chosen_band_meets_the_target_and_no_wider_band_does(rows, target):
    scores = np.array([s for s, _ in rows])
    labels = np.array([int(y) for _, y in rows])
    out = choose_band(scores, labels, target)
    answered = _confident(scores, out["band"])
    correct = (scores >= 0.5).astype(int) == labels
    if out["coverage"] == 0.0:
        assert out["band"] == [0.0, 1.0] and out["accuracy"] is None
        return
    def holds(mask):
        return accuracy_lower_bound(correct[mask].sum(), mask.sum()) >= target - TOLERANCE / mask.mean() - 1e-12

    assert answered.sum() >= MIN_CONFIDENT and holds(answered)
    assert correct[answered].mean() >= out["accuracy_lower"] - 1e-4  # the bound is below the point estimate
    assert out["coverage"] == answered.mean() and out["n_confident"] == answered.sum()
    # every wider band (a smaller margin that answers more rows) misses the target or is too small
    for m in np.unique(np.abs(scores - 0.5)):
        wider = _confident(scores, (max(0.0, 0.5 - m), min(1.0, 0.5 + m)))
        if wider.sum() > answered.sum():
            assert wider.sum() < MIN_CONFIDENT or not holds(wider)


def test_a_weak_evaluator_leaves_everything_to_the_judge():
    rng = np.random.default_rng(0)
    scores = rng.random(200)
    labels = rng.integers(0, 2, 200)  # coin flips: no band is 95% accurate
    assert choose_band(scores, labels, 0.95)["band"] == [0.0, 1.0]


def test_a_sharp_evaluator_answers_its_confident_side():
    scores = np.r_[np.full(80, 0.97), np.full(80, 0.03), np.linspace(0.4, 0.6, 40)]
    labels = np.r_[np.ones(80), np.zeros(80), np.random.default_rng(1).integers(0, 2, 40)].astype(int)
    out = choose_band(scores, labels, 0.95)
    assert out["coverage"] >= 0.8 and out["accuracy"] >= 0.95
    low, high = out["band"]
    assert 0.03 < low < 0.5 < high < 0.97  # the middle goes to the judge, the sure sides do not


def test_a_lucky_small_confident_side_is_not_trusted():
    # 19 of 20 confident rows right looks like 0.95, but its lower bound (0.88) cannot carry a 0.95 target
    # at 25% coverage (0.95 - 0.01 / 0.25 = 0.91); 60 of 60 can
    middle = np.tile([0, 1], 30)  # the rest: scored 0.5, right half the time
    scores = np.r_[np.full(19, 0.99), [0.01], np.full(60, 0.5)]
    labels = np.r_[np.ones(20), middle].astype(int)
    assert choose_band(scores, labels, 0.95)["band"] == [0.0, 1.0]
    sure = np.r_[np.full(60, 0.99), np.full(20, 0.5)]
    out = choose_band(sure, np.r_[np.ones(60), np.tile([0, 1], 10)].astype(int), 0.95)
    assert out["coverage"] == 0.75 and out["accuracy_lower"] > 0.95


def test_the_judge_is_measured_on_the_held_out_tasks_only():
    def task(i, human, judged):
        return {"id": i, "annotations": [{"id": i, "answers": {"label": human}, "ground_truth": False}],
                "predictions": [{"model_version": "judge-x", "answers": {"label": judged}, "score": None}]}

    tasks = [task(i, "Pass", "Pass" if i % 4 else "Fail") for i in range(40)]
    acc, n = judge_accuracy(tasks, "label", list(range(20)))
    assert n == 20 and acc == 0.75
    assert judge_accuracy(tasks, "label", [1, 2, 3]) == (None, 3)  # too few to trust


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans(), st.floats(0, 1)), min_size=MIN_CONFIDENT, max_size=300,
                unique_by=lambda r: round(abs(r[2] - 0.5), 12)),
       st.floats(0.5, 1.0))
def test_the_served_band_answers_as_many_held_out_inputs_as_the_measured_band(rows, target):
    measured = np.array([s for s, _, _ in rows])
    labels = np.array([int(y) for _, y, _ in rows])
    served = np.array([s for _, _, s in rows])  # another model's scores on the same inputs
    chosen = choose_band(measured, labels, target)
    carried = carry_band(chosen, served)
    if chosen["coverage"] == 0.0:
        assert carried == chosen  # the judge answers everything, whichever model serves
        return
    assert carried["measured_band"] == chosen["band"]
    low, high = carried["band"]
    assert 0.0 <= low <= 0.5 <= high <= 1.0 and abs((0.5 - low) - (high - 0.5)) < 1e-9  # symmetric
    # with distinct margins, exactly the same number of held-out inputs goes without the judge
    assert _confident(served, carried["band"]).sum() == chosen["n_confident"]


def test_a_surer_served_model_gets_a_narrower_share_not_the_measured_thresholds():
    # the served model scores every input further from 0.5 than the measured one, so the measured
    # thresholds would answer more of it; its carried band answers the same number
    rng = np.random.default_rng(3)
    measured = np.r_[rng.uniform(0.85, 1.0, 20), rng.uniform(0.0, 0.15, 20), rng.uniform(0.3, 0.7, 60)]
    labels = np.r_[np.ones(20), np.zeros(20), rng.integers(0, 2, 60)].astype(int)
    served = np.where(measured >= 0.5, 1 - (1 - measured) / 4, measured / 4)
    chosen = choose_band(measured, labels, 0.9)
    k = chosen["n_confident"]
    assert 40 <= k < 100
    assert _confident(served, chosen["band"]).sum() > k  # the measured thresholds over-trust the served model
    assert _confident(served, carry_band(chosen, served)["band"]).sum() == k


def test_served_scores_for_other_rows_are_refused():
    chosen = choose_band(np.r_[np.full(20, 0.99), np.full(20, 0.01)], np.r_[np.ones(20), np.zeros(20)].astype(int), 0.9)
    with pytest.raises(ValueError, match="held-out rows"):
        carry_band(chosen, [0.9] * 39)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.booleans()), min_size=MIN_CONFIDENT, max_size=200),
       st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=200,
                unique_by=lambda r: round(abs(r[1] - 0.5), 12)),
       st.floats(0.5, 1.0))
def test_on_unlabeled_tasks_the_served_band_answers_as_many_as_the_measured_band(held_out, unlabeled, target):
    chosen = choose_band(np.array([s for s, _ in held_out]), np.array([int(y) for _, y in held_out]), target)
    measured = np.array([m for m, _ in unlabeled])  # both models' scores on tasks neither trained on
    served = np.array([s for _, s in unlabeled])
    carried = carry_band(chosen, served, measured, on="unlabeled tasks")
    if chosen["coverage"] == 0.0:
        assert carried == chosen
        return
    k = int(_confident(measured, chosen["band"]).sum())
    assert _confident(served, carried["band"]).sum() == k and carried["carried_on"].startswith(f"{k} of {len(served)}")
    if k == 0:  # the measured band would answer none of them: neither does the served one
        assert carried["band"] == [0.0, 1.0]


def test_scores_of_different_inputs_are_refused():
    chosen = choose_band(np.r_[np.full(20, 0.99), np.full(20, 0.01)], np.r_[np.ones(20), np.zeros(20)].astype(int), 0.9)
    with pytest.raises(ValueError, match="same inputs"):
        carry_band(chosen, [0.9] * 10, [0.9] * 11)
