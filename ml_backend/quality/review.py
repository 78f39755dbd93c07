"""Which tasks a person should review next, and how accurate the label set is.

Why a queue and not a sort by score: what a review buys is a judge mistake found. The judge's own
confidence finds some; a trained evaluator that disagrees with the judge finds others (it learned from
the humans). Both are combined into the probability the judge is wrong, near-duplicates are spread
out, and a small random share is kept in the queue: those random audits are the only reviews whose
outcome estimates the accuracy of the labels nobody reviewed without bias.

Plain data in and out (no Label Studio, no Flask): candidates are dicts, the queue is a list of dicts.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, Collection, Mapping, Sequence

from ..judge.types import is_judge_version
from .report import norm

Z95 = 1.959964


@dataclass(frozen=True)
class Candidate:
    """One unreviewed task the judge labeled. ``judge_confidence``: the judge's probability for its own
    label (None when the provider gave none); ``evaluator_agrees``: the evaluator's probability that
    the judge's label is right (None without a promoted evaluator); ``key``: text used to spread
    near-duplicates (tasks with the same key are one item's copies)."""

    task: int
    judge_label: Any
    judge_confidence: float | None = None
    evaluator_agrees: float | None = None
    key: str = ""


@dataclass
class QueueItem:
    task: int
    kind: str  # "ranked" (likely mistakes first) or "audit" (chosen at random: keeps estimates unbiased)
    p_wrong: float
    judge_label: Any
    why: str
    rank: int = 0


DOUBT = 0.25  # a signal below this doubt is not named as the reason a task is queued


def p_wrong(c: Candidate) -> tuple[float, str]:
    """The probability the judge's label is wrong, and which signal said so. With an evaluator, its
    disagreement is weighed equally with the judge's doubt; without one, the judge's doubt alone; with
    neither, 0.5 (nothing is known: such tasks are ordered by spread only)."""
    doubts = []
    if c.judge_confidence is not None:
        doubts.append(("judge unsure", 1.0 - min(1.0, max(0.0, c.judge_confidence))))
    if c.evaluator_agrees is not None:
        doubts.append(("evaluator disagrees", 1.0 - min(1.0, max(0.0, c.evaluator_agrees))))
    if not doubts:
        return 0.5, "no confidence signal"
    p = sum(d for _, d in doubts) / len(doubts)
    name, strongest = max(doubts, key=lambda d: d[1])
    # "judge unsure" beside P(wrong) 0.05 misleads: below DOUBT neither signal doubts the label much
    return p, name if strongest >= DOUBT else "no strong doubt"


def build_queue(candidates: Sequence[Candidate], n: int, *, audit_share: float = 0.1,
                seed: int = 0) -> list[QueueItem]:
    """The next ``n`` tasks to review: mostly the likeliest judge mistakes (at most one task per ``key``
    until every key had its turn), and ``audit_share`` of them drawn uniformly at random from all
    candidates (without replacement), at positions spread through the queue."""
    if not 0.0 <= audit_share <= 1.0:
        raise ValueError(f"audit_share must be in [0, 1], got {audit_share}")
    rng = random.Random(seed)
    pool = list(candidates)
    n = min(n, len(pool))
    if n <= 0:
        return []
    n_audit = min(n, max(1 if audit_share > 0 else 0, round(n * audit_share)))
    audits = rng.sample(pool, n_audit)
    audited = {c.task for c in audits}
    scored = sorted(((p_wrong(c), c) for c in pool if c.task not in audited), key=lambda t: (-t[0][0], t[1].task))
    ranked: list[tuple[tuple[float, str], Candidate]] = []
    seen_keys: set[str] = set()
    later: list[tuple[tuple[float, str], Candidate]] = []
    for item in scored:  # one per near-duplicate group first, the rest after
        key = item[1].key
        if key and key in seen_keys:
            later.append(item)
            continue
        seen_keys.add(key)
        ranked.append(item)
    ranked = (ranked + later)[: n - n_audit]
    out = [QueueItem(c.task, "ranked", round(p, 4), c.judge_label, why) for (p, why), c in ranked]
    step = max(1, len(out) // max(1, n_audit)) if out else 1
    for i, c in enumerate(audits):  # spread the audits through the queue, not all at its end
        p, _ = p_wrong(c)
        out.insert(min(len(out), i * (step + 1)), QueueItem(c.task, "audit", round(p, 4), c.judge_label,
                                                             "random audit (estimates the label set's accuracy)"))
    for rank, queued in enumerate(out, 1):
        queued.rank = rank
    return out


@dataclass
class SourceEstimate:
    """The estimated accuracy of the labels one source gave (judge, evaluator, cascade) on tasks no
    human reviewed, from the random audits of that source."""

    source: str
    n_labels: int  # labels of this source nobody reviewed
    n_audits: int
    accuracy: float | None
    ci: tuple[float, float] | None
    errors_expected: float | None
    errors_ci: tuple[float, float] | None
    audits_for_one_point: int | None  # more random audits for a 95% CI of at most +-1 point
    unbiased: bool = True  # False: estimated from reviews that were not random (biased)


@dataclass
class LabelSetEstimate:
    n_tasks: int
    n_human: int
    sources: list[SourceEstimate] = field(default_factory=list)
    accuracy: float | None = None  # the whole label set: human labels counted correct
    ci: tuple[float, float] | None = None

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def audits_needed(p: float, n: int, half_width: float = 0.01, z: float = Z95) -> int:
    """How many more random audits bring the normal-approximation CI's half width to ``half_width``."""
    p = min(max(p, 0.01), 0.99)  # a perfect score so far still needs audits to be believed
    return max(0, math.ceil(z * z * p * (1 - p) / (half_width * half_width)) - n)


def estimate_label_set(labels: Sequence[dict], audits: Sequence[dict],
                       pools: Mapping[int, Collection[int]] | None = None) -> LabelSetEstimate:
    """``labels``: one per task, ``{"task", "source"}`` where source is "human" or the machine source
    of the task's final label (None: unlabeled); a reviewed task's entry may carry ``reviewed_source`` and
    ``reviewed_correct`` (its machine label against the human's). ``audits``: random audits, ``{"task",
    "source", "correct", "round"}``; ``pools``: round -> the unreviewed tasks that round's audits were
    drawn from. Where a source has no random audit, ``reviewed_correct`` of non-random reviews is used,
    marked biased.

    Why rounds: once the queue has sent people to the judge's likeliest mistakes, the labels nobody
    reviewed are more accurate than the pool an earlier audit was drawn from. Per round, the errors in
    the pool it was drawn from are estimated from its audits (unbiased), and the errors people have found
    since in that pool are known exactly: their difference is the errors left (`_round_rate`). Rounds are
    combined by inverse variance (at a common error rate). Audits without a recorded pool count as drawn from today's labels."""
    n_human = sum(1 for x in labels if x.get("source") == "human")
    labeled = [x for x in labels if x.get("source")]
    out = LabelSetEstimate(n_tasks=len(labels), n_human=n_human)
    machine_sources = sorted({x["source"] for x in labeled if x["source"] != "human"})
    expected_correct, var = float(n_human), 0.0
    complete = True
    for source in machine_sources:
        unreviewed = {x["task"] for x in labeled if x["source"] == source}
        mine = [a for a in audits if a.get("source") == source]
        unbiased = bool(mine)
        if not mine:
            mine = [{"correct": x["reviewed_correct"]} for x in labels
                    if x.get("reviewed_source") == source and x.get("reviewed_correct") is not None]
        n = len(mine)
        if n == 0:
            out.sources.append(SourceEstimate(source, len(unreviewed), 0, None, None, None, None, None, unbiased=False))
            complete = False
            continue
        rate, rate_var = _error_rate(source, unreviewed, labels, mine, pools or {})
        m = len(unreviewed)
        acc, half = 1.0 - rate, Z95 * math.sqrt(rate_var)
        lo, hi = max(0.0, acc - half), min(1.0, acc + half)
        out.sources.append(SourceEstimate(
            source, m, n, round(acc, 4), (round(lo, 4), round(hi, 4)), round(rate * m, 1),
            # never more than there are to review: reviewing all of them gives the accuracy exactly
            (round((1 - hi) * m, 1), round((1 - lo) * m, 1)), min(audits_needed(acc, n), m), unbiased))
        expected_correct += acc * m
        var += m * m * rate_var
    if labeled and complete:
        total = len(labeled)
        acc = expected_correct / total
        half = Z95 * math.sqrt(var) / total
        out.accuracy = round(acc, 4)
        out.ci = (round(max(0.0, acc - half), 4), round(min(1.0, acc + half), 4))
    return out


def _error_rate(source: str, unreviewed: set[int], labels: Sequence[dict], audits: Sequence[dict],
                pools: Mapping[int, Collection[int]]) -> tuple[float, float]:
    """The error rate of ``source``'s unreviewed labels and its variance, from the audits round by round
    (inverse-variance weighted), clipped to [0, 1]."""
    wrong_reviewed = {x["task"] for x in labels if x.get("reviewed_source") == source and x.get("reviewed_correct") is False}
    reviewed = {x["task"] for x in labels if x.get("reviewed_source") == source}
    by_round: dict[int | None, list[dict]] = {}
    for a in audits:
        r = a.get("round")
        by_round.setdefault(r if r in pools else None, []).append(a)
    estimates = []
    for r, group in by_round.items():
        if r is None:  # drawn from the labels as they are now: the audits' own error rate
            estimates.append(_round_rate(group, len(unreviewed), len(unreviewed), None))
            continue
        pool = set(pools[r])
        estimates.append(_round_rate(group, len(pool & (unreviewed | reviewed)), len(pool & unreviewed),
                                     len(pool & wrong_reviewed)))
    kept = [e for e in estimates if e is not None]
    if not kept:  # every audited pool has been reviewed since: all audits' own error rate
        fallback = _round_rate(audits, 1, 1, None)
        assert fallback is not None  # the caller passes at least one audit
        kept = [fallback]
    total = sum(w for _, _, w in kept)
    rate = sum(e * w for e, _, w in kept) / total
    return min(1.0, max(0.0, rate)), sum(v * w * w for _, v, w in kept) / (total * total)


def _round_rate(audits: Sequence[dict], pool: int, left: int,
                found: int | None) -> tuple[float, float, float] | None:
    """One round: ``audits`` drawn at random from ``pool`` labels of which ``left`` are still unreviewed
    and ``found`` wrong ones were reviewed since (None: the audits' own errors). The estimated error rate
    of the ``left`` labels, its variance (Agresti-Coull: a perfect score so far still has a spread) and
    its weight (inverse variance at a common error rate: weights from the design, not from the outcome,
    so a round that happened to find no error does not pull the estimate down)."""
    n = len(audits)
    if n == 0 or left <= 0:
        return None
    errors = sum(1 for a in audits if not a["correct"])
    e = errors / n
    rate = e if found is None else (pool * e - found) / left
    shrunk = (errors + 2) / (n + 4)
    scale = 1.0 if found is None else pool / left
    return rate, scale * scale * shrunk * (1 - shrunk) / (n + 4), (n + 4) / (scale * scale)


def source_of(model_version: Any) -> str:
    """judge, evaluator or cascade, from a prediction's model version."""
    text = str(model_version or "")
    if "+" in text and is_judge_version(text.split("+", 1)[1]):
        return "cascade"
    if is_judge_version(text):
        return "judge"
    return "evaluator" if text.startswith("evaluator-") else (text.split("-", 1)[0] or "unknown")


def human_answer(task: dict, control: str) -> Any:
    """The task's human answer for ``control``: ground truth first, else the latest annotation."""
    anns = sorted(task["annotations"], key=lambda a: (not a["ground_truth"], -a["id"]))
    for a in anns:
        if a["answers"].get(control) is not None:
            return a["answers"][control]
    return None


def machine_prediction(task: dict, control: str) -> dict | None:
    """The task's latest prediction that answers ``control``."""
    for p in reversed(task["predictions"]):
        if p["answers"].get(control) is not None:
            return p
    return None


def label_set_accuracy(tasks: Sequence[dict], control: str, review_items: Sequence[dict],
                       pools: Mapping[int, Collection[int]] | None = None) -> dict:
    """How accurate a project's labels are now, per source and overall, with 95% CIs. ``tasks``: the
    report's records; ``review_items``: what the review queue recorded (its audits, with their round);
    ``pools``: round -> the unreviewed tasks that round drew its audits from."""
    audits_by_task = {r["task_id"]: r for r in review_items if r["kind"] == "audit"}
    labels, audits = [], []
    for t in tasks:
        human, machine = human_answer(t, control), machine_prediction(t, control)
        if human is not None:
            entry = {"task": t["id"], "source": "human"}
            audit = audits_by_task.get(t["id"])
            if audit is not None and audit.get("label") is not None:  # the machine label when it was drawn
                correct = norm(audit["label"]) == norm(human)
                audits.append({"task": t["id"], "source": audit["source"], "correct": correct, "round": audit.get("round")})
                entry.update(reviewed_source=audit["source"], reviewed_correct=correct)
            elif machine is not None:  # a non-random review: known errors; alone, a biased estimate
                entry.update(reviewed_source=source_of(machine["model_version"]),
                             reviewed_correct=norm(machine["answers"][control]) == norm(human))
            labels.append(entry)
        else:
            labels.append({"task": t["id"], "source": source_of(machine["model_version"]) if machine else None})
    return estimate_label_set(labels, audits, pools).as_dict()


OVERRIDE_SOURCE = "evaluator-override"


def policy_overrides(candidates: Sequence[Candidate], threshold: float | None,
                     options: Sequence[Any]) -> dict[int, Any]:
    """The relabel policy: where a promoted evaluator gives the judge's label at most ``1 - threshold``
    (so the other label at least ``threshold``), the evaluator's label replaces the judge's in the final
    labels. Off (``threshold`` None) by default; binary controls only (``options``: their two labels).
    Returns task -> the evaluator's label."""
    if threshold is None or len(options) != 2:
        return {}
    out = {}
    for c in candidates:
        if c.evaluator_agrees is None or c.evaluator_agrees > 1.0 - threshold:
            continue
        other = [o for o in options if norm(o) != norm(c.judge_label)]
        if len(other) == 1:
            out[c.task] = other[0]
    return out


def final_labels(tasks: Sequence[dict], control: str, estimate: dict,
                 overrides: dict[int, Any] | None = None) -> dict[int, dict]:
    """Each task's final label for ``control`` (the human's, else the relabel policy's, else the latest
    machine label), its source and that source's estimated accuracy (from ``estimate``, a
    label_set_accuracy result; None where unknown, and for human labels, which are the reference)."""
    accuracy = {s["source"]: s["accuracy"] for s in estimate.get("sources") or []}
    overrides = overrides or {}
    out = {}
    for t in tasks:
        human = human_answer(t, control)
        machine = machine_prediction(t, control)
        if human is not None:
            out[t["id"]] = {"label": norm(human), "label_source": "human", "label_estimated_accuracy": None}
        elif t["id"] in overrides:
            out[t["id"]] = {"label": norm(overrides[t["id"]]), "label_source": OVERRIDE_SOURCE,
                            "label_estimated_accuracy": accuracy.get(OVERRIDE_SOURCE)}
        elif machine is not None:
            source = source_of(machine["model_version"])
            out[t["id"]] = {"label": norm(machine["answers"][control]), "label_source": source,
                            "label_estimated_accuracy": accuracy.get(source)}
        else:
            out[t["id"]] = {"label": None, "label_source": None, "label_estimated_accuracy": None}
    return out
