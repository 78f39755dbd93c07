"""Paired comparison of two judges on the same held-out labels: the split that keeps those labels
away from the optimiser, the exact test of the gain, and how many labels a gain needs.

Why exact and conditional: two judges answering the same tasks differ only on the discordant ones
(one right, the other wrong). Under "no gain" each discordant task is a fair coin (McNemar), so the
gain's confidence bounds are the Clopper-Pearson bounds of that coin, rescaled by the discordant share.
The gate uses the one-sided 95% lower bound (the lower end of the two-sided 90% interval, which the
report shows): a lower bound above zero is the exact one-sided McNemar test at 5%, so the gate's false
promotion rate is at most 5% whatever the sample size, which a normal approximation does not promise
at 20 discordant tasks.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

from scipy.stats import beta, binomtest, norm


@dataclass(frozen=True)
class Split:
    """Which labeled tasks the optimiser may see (``train``) and which only measure (``held_out``)."""

    train: tuple[Any, ...]
    held_out: tuple[Any, ...]
    seed: int
    holdout_share: float

    def as_dict(self) -> dict[str, Any]:
        return {"seed": self.seed, "holdout_share": self.holdout_share, "n_train": len(self.train),
                "n_held_out": len(self.held_out)}


def stratified_split(labels: Mapping[Any, Any], *, holdout_share: float, seed: int) -> Split:
    """Split labeled tasks by label, each label's tasks shuffled with ``seed`` and ``holdout_share``
    of them (rounded, at least one where a label has two or more) held out. Sorted ids first, so the
    same labels and seed give the same split on every host."""
    if not 0.0 < holdout_share < 1.0:
        raise ValueError(f"holdout_share must be between 0 and 1, got {holdout_share}")
    by_label: dict[str, list[Any]] = defaultdict(list)
    for task, label in sorted(labels.items(), key=lambda kv: str(kv[0])):
        by_label[repr(label)].append(task)
    rng = random.Random(seed)
    train: list[Any] = []
    held: list[Any] = []
    for key in sorted(by_label):
        ids = by_label[key]
        rng.shuffle(ids)
        k = round(len(ids) * holdout_share)
        if len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)
        held.extend(ids[:k])
        train.extend(ids[k:])
    return Split(tuple(train), tuple(held), seed, holdout_share)


@dataclass(frozen=True)
class PairedGain:
    """``candidate`` minus ``baseline`` accuracy on the same tasks, with its exact interval (``ci_low``:
    by default the one-sided 95% lower bound)."""

    n: int
    baseline_accuracy: float
    candidate_accuracy: float
    gain: float
    ci_low: float
    ci_high: float
    only_candidate_right: int  # discordant: the candidate fixed the baseline's mistake
    only_baseline_right: int  # discordant: the candidate broke what the baseline had right
    p_value: float  # exact McNemar, two-sided

    def as_dict(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


GATE_CONFIDENCE = 0.90  # two-sided: its lower end is the one-sided 95% bound the promotion gate uses


def paired_gain(baseline: Sequence[bool], candidate: Sequence[bool], *, confidence: float = GATE_CONFIDENCE) -> PairedGain:
    """The candidate's gain over the baseline on paired outcomes (True: right), an abstention
    counting as wrong for whoever abstained, with its two-sided ``confidence`` interval (by default
    90%: its lower end is the one-sided 95% lower bound)."""
    if len(baseline) != len(candidate):
        raise ValueError("paired outcomes must have the same length")
    n = len(baseline)
    if n == 0:
        raise ValueError("no paired outcomes to compare")
    b = sum(1 for x, y in zip(baseline, candidate) if y and not x)
    c = sum(1 for x, y in zip(baseline, candidate) if x and not y)
    acc_base, acc_cand = sum(map(bool, baseline)) / n, sum(map(bool, candidate)) / n
    m = b + c
    if m == 0:
        return PairedGain(n, acc_base, acc_cand, 0.0, 0.0, 0.0, 0, 0, 1.0)
    alpha = 1.0 - confidence
    # Clopper-Pearson for P(candidate is the right one | discordant), then gain = (2p - 1) * m / n
    p_lo = beta.ppf(alpha / 2, b, m - b + 1) if b > 0 else 0.0
    p_hi = beta.ppf(1 - alpha / 2, b + 1, m - b) if b < m else 1.0
    scale = m / n
    return PairedGain(n, acc_base, acc_cand, (b - c) / n, float((2 * p_lo - 1) * scale),
                      float((2 * p_hi - 1) * scale), b, c, float(binomtest(b, m, 0.5).pvalue))


def labels_needed(gain: float, *, discordance: float | None = None, confidence: float = GATE_CONFIDENCE,
                  power: float = 0.8) -> int:
    """Held-out labels for the gate to pass a true ``gain`` with probability ``power`` (Connor's
    sample size for McNemar's test, one-sided at (1 - ``confidence``) / 2). ``discordance``: the
    share of tasks on which the two judges disagree in correctness; unknown, it is taken as 2 x gain
    (a rewrite that fixes three mistakes for each one it makes), at least the gain itself."""
    if not 0.0 < gain < 1.0:
        raise ValueError(f"gain must be between 0 and 1, got {gain}")
    d = max(gain, min(1.0, discordance if discordance is not None else 2 * gain))
    z_a, z_b = norm.ppf(1 - (1 - confidence) / 2), norm.ppf(power)
    n = (z_a * math.sqrt(d) + z_b * math.sqrt(max(d - gain * gain, 0.0))) ** 2 / (gain * gain)
    return int(math.ceil(n))


def accuracy_ci(right: int, n: int, *, confidence: float = 0.95) -> tuple[float, float]:
    """Clopper-Pearson interval of an accuracy (exact; used for each candidate's held-out accuracy)."""
    if n == 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    lo = beta.ppf(alpha / 2, right, n - right + 1) if right > 0 else 0.0
    hi = beta.ppf(1 - alpha / 2, right + 1, n - right) if right < n else 1.0
    return float(lo), float(hi)
