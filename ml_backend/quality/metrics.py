"""How good is a labeler against the reference? Plain lists in, plain dicts out (scikit-learn inside).

Accuracy and F1 are computed on the tasks the labeler answered; ``coverage`` says how many that was.
Confidence intervals are percentile bootstraps over tasks. Calibration compares the score (the
labeler's probability for its own answer) with how often that answer is right.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score, precision_recall_fscore_support

MIN_N_FOR_CI = 2


def label_metrics(y_true: Sequence[str], y_pred: Sequence[str | None], scores: Sequence[float | None] | None = None,
                  *, labels: Sequence[str], ordinal: bool = False, n_boot: int = 1000, seed: int = 0) -> dict:
    """All metrics for one labeler (e.g. one judge version) on one control."""
    n_all = len(y_true)
    idx = [i for i, p in enumerate(y_pred) if p is not None]
    t = [y_true[i] for i in idx]
    p = [x for i in idx if (x := y_pred[i]) is not None]
    out: dict = {"n": len(idx), "n_reference": n_all, "coverage": (len(idx) / n_all) if n_all else 0.0}
    if not idx:
        return {**out, "accuracy": None, "macro_f1": None, "kappa": None, "ci_low": None, "ci_high": None,
                "ece": None, "per_label": {}, "confusion": [], "labels": list(labels), "reliability": []}
    labels = list(labels)
    extra = sorted({*t, *p} - set(labels))
    all_labels = labels + extra
    correct = np.array([a == b for a, b in zip(t, p)], dtype=float)
    out["accuracy"] = float(accuracy_score(t, p))
    out["macro_f1"] = float(f1_score(t, p, labels=[lab for lab in all_labels if lab in t or lab in p],
                                     average="macro", zero_division=0))
    out["kappa"] = _kappa(t, p, all_labels, ordinal)
    prec, rec, f1, support = precision_recall_fscore_support(t, p, labels=all_labels, zero_division=0)
    out["per_label"] = {lab: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]),
                              "support": int(support[i])} for i, lab in enumerate(all_labels)}
    out["labels"] = all_labels
    out["confusion"] = confusion_matrix(t, p, labels=all_labels).tolist()
    out["ci_low"], out["ci_high"] = bootstrap_ci(correct, n_boot=n_boot, seed=seed)
    s = [scores[i] for i in idx] if scores is not None else []
    if s and all(v is not None for v in s):
        out["ece"], out["reliability"] = calibration(np.array(s, dtype=float), correct)
    else:
        out["ece"], out["reliability"] = None, []
    return out


def _kappa(t: list, p: list, labels: list, ordinal: bool) -> float | None:
    if len(set(t) | set(p)) < 2:
        return None  # undefined with a single class
    if ordinal:
        try:
            order = sorted(labels, key=float)
            return float(cohen_kappa_score([order.index(v) for v in t], [order.index(v) for v in p],
                                           weights="quadratic", labels=list(range(len(order)))))
        except ValueError:
            pass
    return float(cohen_kappa_score(t, p, labels=labels))


def bootstrap_ci(correct: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> tuple:
    """Percentile bootstrap CI of the mean of a 0/1 vector."""
    n = len(correct)
    if n < MIN_N_FOR_CI:
        return None, None
    rng = np.random.default_rng(seed)
    means = correct[rng.integers(0, n, size=(n_boot, n))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi)


def calibration(scores: np.ndarray, correct: np.ndarray, bins: int = 10) -> tuple[float, list[dict]]:
    """Expected calibration error and the reliability curve (equal-width bins over [0, 1])."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(scores, edges[1:-1]), 0, bins - 1)
    ece, curve = 0.0, []
    for b in range(bins):
        mask = which == b
        if not mask.any():
            continue
        conf, acc = float(scores[mask].mean()), float(correct[mask].mean())
        ece += mask.mean() * abs(conf - acc)
        curve.append({"bin": b, "confidence": conf, "accuracy": acc, "count": int(mask.sum())})
    return float(ece), curve


def paired_difference(a_correct: Sequence[float], b_correct: Sequence[float], *, n_boot: int = 2000,
                      seed: int = 0) -> dict:
    """Accuracy of A minus B on the same tasks, with a bootstrap CI: can the sample tell them apart?"""
    a, b = np.asarray(a_correct, float), np.asarray(b_correct, float)
    n = len(a)
    if n < MIN_N_FOR_CI:
        return {"n": n, "diff": None, "ci_low": None, "ci_high": None, "distinguishable": False}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, n, size=(n_boot, n))
    diffs = (a[picks] - b[picks]).mean(axis=1)
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    return {"n": n, "diff": float((a - b).mean()), "ci_low": float(lo), "ci_high": float(hi),
            "distinguishable": bool(lo > 0 or hi < 0)}


def agreement(a: Sequence[str], b: Sequence[str], *, labels: Sequence[str], ordinal: bool = False) -> dict:
    """Raw agreement and Cohen's kappa between two labelers on the same tasks."""
    if not a:
        return {"n": 0, "agreement": None, "kappa": None}
    return {"n": len(a), "agreement": float(np.mean([x == y for x, y in zip(a, b)])),
            "kappa": _kappa(list(a), list(b), list(labels) + sorted({*a, *b} - set(labels)), ordinal)}
