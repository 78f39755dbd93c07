"""Where the cascade lets the evaluator answer alone, chosen from held-out human labels.

A score outside the band (low, high) is the evaluator's answer; inside it, the judge is asked. The
band is the widest one whose confident side is, on held-out human labels, accurate enough that the
cascade as a whole stays within TOLERANCE of the judge's measured accuracy (or of a ``cascade_target``):
the confident side may trail the target by at most TOLERANCE / coverage. Held-out sets are small (80
rows at 400 labels), and the widest band that passes on them passes partly by luck, so the side's
accuracy is taken at the lower end of its Wilson interval, one standard error down. Choosing on
the point estimate kept 0.95 on 80 held-out HaluEval dialogue labels and then gave 0.90 on fresh tasks.

The band is measured on the model trained without the held-out labels, but the model served is that one
trained one more pass over every label, and score thresholds do not carry over between two models: at
1,000 dialogue labels the measured band answered 40% of held-out rows at 0.95, and the same thresholds on
the served model answered 74% of fresh tasks at 0.82. So the band carries the *share* over
(`carry_band`): the served model's band answers as many of the project's unlabeled tasks (which neither
model trained on) as the measured band does. Without enough of them, as many held-out inputs; the served
model trained on those, so it is surer there than on fresh tasks, which errs toward asking the judge.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..judge.types import is_judge_version
from ..quality.report import norm, reference_labels

DEFAULT_BAND = (0.2, 0.8)  # until a training run chose one (evaluators trained before bands existed)
DEFAULT_TARGET = 0.9  # the accuracy asked of the evaluator alone when the judge was never measured
MIN_JUDGED = 10  # held-out labels the judge must have answered for its accuracy to set the target
MIN_CONFIDENT = 10  # held-out labels on the confident side for a band to be trusted
MIN_FRESH = 50  # unlabeled tasks needed to carry the band over on them rather than on the held-out inputs
CARRY_LIMIT = 500  # at most this many of them are scored by both models
TOLERANCE = 0.01  # the accuracy the cascade may lose against the target, over all tasks
CONFIDENCE = 0.6827  # two-sided level of the Wilson interval whose lower end is used: one standard error (Z = 1)


def judge_asked(scores: Sequence[float] | np.ndarray, band: Sequence[float]) -> np.ndarray:
    """Which scores the cascade sends to the judge: those inside the band (low, high). An end at 0 or 1
    takes that end in too, so [0, 1] sends every score (a saturated 0.0 or 1.0 included) to the judge.
    The one predicate serving and band choice share."""
    p, (low, high) = np.asarray(scores, dtype=float), band
    return ((p > low) | (low <= 0.0)) & ((p < high) | (high >= 1.0))


# the innermost ends a chosen band may have: [0, 1] means "the judge answers everything", so a band that
# answers saturated scores (exactly 0.0 or 1.0, common in float32) ends just inside them
LOWEST, HIGHEST = float(np.nextafter(0.0, 1.0)), float(np.nextafter(1.0, 0.0))


def _band(margin: float) -> tuple[float, float]:
    """The symmetric band (0.5 - margin, 0.5 + margin), ends kept inside (0, 1)."""
    return max(LOWEST, 0.5 - margin), min(HIGHEST, 0.5 + margin)


def judge_accuracy(tasks: Sequence[dict], control: str, task_ids: Sequence[int]) -> tuple[float | None, int]:
    """The judge's accuracy (its latest prediction) against the human reference on ``task_ids``."""
    ref, _ = reference_labels(tasks, control, per_task=True)
    wanted = set(task_ids)
    hits = []
    for t in tasks:
        if t["id"] not in wanted or t["id"] not in ref:
            continue
        judged = [p for p in t["predictions"] if is_judge_version(p["model_version"])]
        value = norm(judged[-1]["answers"].get(control)) if judged else None
        if value is not None:
            hits.append(value == ref[t["id"]])
    return (float(np.mean(hits)) if len(hits) >= MIN_JUDGED else None), len(hits)


def accuracy_lower_bound(correct: int, n: int) -> float:
    """The lower end of the Wilson interval (one standard error) of ``correct`` out of ``n``."""
    from scipy.stats import binomtest

    return float(binomtest(int(correct), int(n)).proportion_ci(CONFIDENCE, method="wilson").low)


def choose_band(scores: np.ndarray, labels: np.ndarray, target: float) -> dict:
    """The widest band: the smallest margin m around 0.5 such that the rows scored at least m away from
    0.5 (at least MIN_CONFIDENT of them) are answered with an accuracy whose lower bound is at least
    ``target - TOLERANCE / coverage``. With none, the band is [0, 1]: the judge answers everything."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    correct = ((scores >= 0.5).astype(int) == labels)
    for m in np.unique(np.abs(scores - 0.5)):  # ascending: the first that holds answers the most rows
        low, high = _band(float(m))
        confident = ~judge_asked(scores, (low, high))  # exactly what serving answers without the judge
        n_conf = int(confident.sum())
        if n_conf < MIN_CONFIDENT:
            break
        coverage = n_conf / len(scores)
        needed = target - TOLERANCE / coverage
        lower = accuracy_lower_bound(correct[confident].sum(), n_conf)
        if lower >= needed:
            return {"band": [low, high], "coverage": coverage, "accuracy": float(correct[confident].mean()),
                    "accuracy_lower": round(lower, 4), "needed": round(needed, 4), "n": len(scores),
                    "n_confident": n_conf, "target": target, "tolerance": TOLERANCE}
    return {"band": [0.0, 1.0], "coverage": 0.0, "accuracy": None, "n": len(scores), "target": target,
            "tolerance": TOLERANCE}


def carry_band(chosen: dict, served_scores: Sequence[float], measured_scores: Sequence[float] | None = None,
               on: str = "held-out inputs") -> dict:
    """``chosen`` (a `choose_band` result on the measured model) moved to the served model: the symmetric
    band around 0.5 that answers as many of some inputs as the measured band does (more only on tied
    scores). The inputs are, best, tasks neither model trained on (``measured_scores`` and
    ``served_scores`` both on them), else the held-out ones (``served_scores`` alone, on the rows the
    band was chosen on; the served model trained on those, so it errs toward the judge). The measured
    band is kept as ``measured_band``; ``carried_on`` says which inputs and how many answered."""
    if not chosen.get("coverage"):
        return chosen
    scores = np.asarray(served_scores, dtype=float)
    if measured_scores is None:
        if len(scores) != chosen["n"]:
            raise ValueError(f"served scores for {len(scores)} held-out rows, the band was chosen on {chosen['n']}")
        k = chosen["n_confident"]
    else:
        reference = np.asarray(measured_scores, dtype=float)
        if len(reference) != len(scores) or not len(scores):
            raise ValueError(f"{len(reference)} measured and {len(scores)} served scores: they must score the same inputs")
        k = int((~judge_asked(reference, chosen["band"])).sum())
    carried = {**chosen, "measured_band": chosen["band"], "carried_on": f"{k} of {len(scores)} {on} answered"}
    if k == 0:
        return {**carried, "band": [0.0, 1.0]}
    top = scores[np.argsort(-np.abs(scores - 0.5), kind="stable")[:k]]
    m = float(np.abs(top - 0.5).min())
    # 0.5 -/+ m, or the margin row's own score where 0.5 - |s - 0.5| does not round back to s
    low = max([LOWEST, 0.5 - m] + [float(s) for s in top if s < 0.5])
    high = min([HIGHEST, 0.5 + m] + [float(s) for s in top if s >= 0.5])
    return {**carried, "band": [low, high]}
