"""Where the cascade lets the evaluator answer alone, chosen from held-out human labels.

A score outside the band (low, high) is the evaluator's answer; inside it, the judge is asked. The
band is the widest one whose confident side is, on held-out human labels, at least as accurate as the
judge measured on those same labels (or a ``cascade_target``): so the cascade saves LLM calls without
costing accuracy, instead of a fixed [0.2, 0.8] that trusts a weak evaluator too far.
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


def choose_band(scores: np.ndarray, labels: np.ndarray, target: float) -> dict:
    """The widest band: the smallest margin m around 0.5 such that the rows scored at least m away from
    0.5 are answered with accuracy >= ``target`` (and there are at least MIN_CONFIDENT of them). With
    none, the band is [0, 1]: the judge answers everything."""
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels, dtype=int)
    correct = ((scores >= 0.5).astype(int) == labels)
    for m in np.unique(np.abs(scores - 0.5)):  # ascending: the first that holds answers the most rows
        low, high = max(0.0, 0.5 - float(m)), min(1.0, 0.5 + float(m))
        confident = ~((scores > low) & (scores < high))  # exactly what serving answers without the judge
        if confident.sum() < MIN_CONFIDENT:
            break
        accuracy = float(correct[confident].mean())
        if accuracy >= target:
            return {"band": [low, high], "coverage": float(confident.mean()), "accuracy": accuracy,
                    "n": len(scores), "n_confident": int(confident.sum()), "target": target}
    return {"band": [0.0, 1.0], "coverage": 0.0, "accuracy": None, "n": len(scores), "target": target}
