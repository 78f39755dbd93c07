"""The cascade band chosen from held-out labels: the evaluator answers alone only where, on those
labels, the lower bound of its accuracy keeps the cascade within TOLERANCE of the target, and as
often as that allows."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from ml_backend.evaluator.cascade import MIN_CONFIDENT, TOLERANCE, accuracy_lower_bound, choose_band, judge_accuracy


def _confident(scores, band):
    low, high = band
    return ~((scores > low) & (scores < high))


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
        wider = ~((scores > 0.5 - m) & (scores < 0.5 + m))
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
