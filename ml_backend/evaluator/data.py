"""Training data for the evaluator from a project's records: human labels as gold, judge labels weak.

The evaluator answers one binary question with a 0..1 score: "is the primary control's answer the
positive label?" (Pass, Faithful, ... or a rating at or above a threshold). Its input is a text pair:
``text_a`` (what is judged, e.g. the response) and ``text_b`` (what it is judged against, e.g. the
question and the context), which lets the encoder attend across them.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import pandas as pd
from sklearn.model_selection import train_test_split

from ..judge.types import is_judge_version, pair_side
from ..quality.report import norm, reference_labels

DEFAULT_TEXT_A = ("output",)  # what is judged
DEFAULT_TEXT_B = ("input", "context")  # what it is judged against
PAIR_TEXT_B = ("messages", "input", "context")  # a pairwise evaluator's prompt: the conversation


@dataclass(frozen=True)
class InputSpec:
    """Which task fields form the pair, and what counts as positive."""

    text_a: tuple[str, ...] = DEFAULT_TEXT_A
    text_b: tuple[str, ...] = DEFAULT_TEXT_B
    positive: tuple[str, ...] = ()  # empty: the control's first option
    judge_weight: float = 0.3  # 0 trains on human labels only
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None, *, pairwise: bool = False,
                    judge_weight: float = 0.3) -> InputSpec:
        """From a project's ``evaluator_input`` or a manifest's ``input``: what is unset takes the defaults."""
        params = params or {}
        return cls(text_a=tuple(params.get("text_a") or DEFAULT_TEXT_A),
                   text_b=tuple(params.get("text_b") or (PAIR_TEXT_B if pairwise else DEFAULT_TEXT_B)),
                   positive=tuple(params.get("positive") or ()), judge_weight=judge_weight)

    def pair(self, data: dict) -> tuple[str, str]:
        a, b = join_fields(data, self.text_a), join_fields(data, self.text_b)
        if not a:  # configs whose fields have other names: use every field
            a = "\n".join(f"{k}: {_text(v)}" for k, v in data.items())
        return a, b


def join_fields(data: dict, keys: Sequence[str]) -> str:
    """The text of the fields ``keys`` that the task has (a chat becomes "role: content" lines)."""
    return "\n".join(_text(data.get(k)) for k in keys if data.get(k) is not None)


def _text(v: Any) -> str:
    if isinstance(v, str) and v.startswith("[{"):  # a chat that came through CSV as JSON text
        try:
            v = json.loads(v)
        except ValueError:
            return v
    if isinstance(v, list) and v and all(isinstance(m, dict) and "content" in m for m in v):
        return "\n".join(f"{m.get('role', 'message')}: {m['content']}" for m in v)
    return str(v)


def positive_labels(control: dict, spec: InputSpec) -> set[str]:
    if spec.positive:
        return set(spec.positive)
    options = list(control.get("options") or [])
    if control.get("ordinal") and options:
        top = max(float(o) for o in options)
        return {o for o in options if float(o) >= top - 1}  # 4 and 5 of a 1-5 rating
    return {options[0]} if options else set()


def build_dataset(tasks: Sequence[dict], control: dict, spec: InputSpec) -> pd.DataFrame:
    """One row per task that has a human reference (gold) or, failing that, a judge label (weak).
    Columns: task_id, text_a, text_b, label (0/1), weight, source, ground_truth."""
    ref, _ = reference_labels(tasks, control["name"], per_task=True)
    positives = positive_labels(control, spec)
    rows = []
    for t in tasks:
        data = t.get("data") or {}
        a, b = spec.pair(data)
        if t["id"] in ref:
            gt = any(x.get("ground_truth") for x in t["annotations"])
            rows.append({"task_id": t["id"], "text_a": a, "text_b": b, "label": int(ref[t["id"]] in positives),
                         "weight": 1.0, "source": "human", "ground_truth": gt})
            continue
        judged = [p for p in t["predictions"] if is_judge_version(p["model_version"])]
        value = norm(judged[-1]["answers"].get(control["name"])) if judged else None
        if value is not None and spec.judge_weight > 0:
            rows.append({"task_id": t["id"], "text_a": a, "text_b": b, "label": int(value in positives),
                         "weight": spec.judge_weight, "source": "judge", "ground_truth": False})
    return pd.DataFrame(rows, columns=["task_id", "text_a", "text_b", "label", "weight", "source", "ground_truth"])


def unlabeled_inputs(tasks: Sequence[dict], data: pd.DataFrame, spec: InputSpec, *, limit: int,
                     seed: int = 0) -> pd.DataFrame:
    """The inputs (text_a, text_b) of up to ``limit`` tasks that no training row came from: the tasks a
    cascade will answer, which neither the measured nor the served model has seen (`carry_band`)."""
    seen = set(data.task_id)
    pairs = [spec.pair(t.get("data") or {}) for t in tasks if t["id"] not in seen]
    fresh = pd.DataFrame(pairs, columns=["text_a", "text_b"])
    return fresh.sample(n=limit, random_state=seed).reset_index(drop=True) if len(fresh) > limit else fresh


# a preference answer, as "response A is the better one" (1) or not (0); ties prefer nothing
A_PREFERRED = {"A": 1, "B": 0}
PAIR_COLUMNS = ["task_id", "prompt", "response_a", "response_b", "label", "weight", "source", "ground_truth"]


def build_pairs(tasks: Sequence[dict], control: str, a_key: str, b_key: str, spec: InputSpec) -> pd.DataFrame:
    """Preference pairs for the reward-model evaluator: one row per task whose preference is A or B
    (human gold, else the judge's as a weak label). ``label`` is 1 when A is preferred. The prompt is
    ``spec.text_b``'s fields (the conversation); model names never enter the text."""
    ref, _ = reference_labels(tasks, control, per_task=True)
    rows = []
    for t in tasks:
        data = t.get("data") or {}
        a, b = data.get(a_key), data.get(b_key)
        if a is None or b is None:
            continue
        prompt = join_fields(data, spec.text_b)
        if t["id"] in ref:
            side, weight, source = A_PREFERRED.get(pair_side(ref[t["id"]]) or ""), 1.0, "human"
            gt = any(x.get("ground_truth") for x in t["annotations"])
        else:
            judged = [p for p in t["predictions"] if is_judge_version(p["model_version"])]
            value = norm(judged[-1]["answers"].get(control)) if judged else None
            side, weight, source, gt = A_PREFERRED.get(pair_side(value) or ""), spec.judge_weight, "judge", False
            if weight <= 0:
                continue
        if side is not None:
            rows.append({"task_id": t["id"], "prompt": prompt, "response_a": _text(a), "response_b": _text(b),
                         "label": side, "weight": weight, "source": source, "ground_truth": gt})
    return pd.DataFrame(rows, columns=PAIR_COLUMNS)


MIN_TRAIN_ROWS = 20  # an evaluator never trains (so is never promoted) on fewer rows than this
MIN_GT_HOLDOUT = 10  # ground-truth annotations hold out only when at least this many, of both classes


def split(df: pd.DataFrame, *, test_size: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out rows are human labels only: Label Studio's ground-truth annotations when the project
    marks enough of them and enough rows remain to train on, else a stratified seeded split of the
    human rows (ground truth included). Judge rows only train. ``test.attrs["holdout"]`` says which
    was used and why; ValueError when fewer than MIN_TRAIN_ROWS rows would be left to train on."""
    human = df[df.source == "human"]
    gt = human[human.ground_truth]
    if len(gt) >= MIN_GT_HOLDOUT and gt.label.nunique() == 2 and len(df) - len(gt) >= MIN_TRAIN_ROWS:
        test, holdout = gt, f"the {len(gt)} ground-truth annotations"
    else:
        stratify = human.label if human.label.value_counts().min() >= 2 else None
        if len(human) < 5:
            raise ValueError(f"need at least 5 human labels to hold out a test set, have {len(human)}")
        _, test = train_test_split(human, test_size=test_size, random_state=seed, stratify=stratify)
        holdout = f"a stratified {test_size:.0%} of the {len(human)} human labels"
        if len(gt) >= MIN_GT_HOLDOUT:  # common: a team marks its whole gold set as ground truth
            holdout += (f" (the {len(gt)} ground-truth annotations would have left {len(df) - len(gt)} rows to "
                        f"train on, under the minimum of {MIN_TRAIN_ROWS}, so they were split too)")
    train = df.drop(index=test.index)
    if len(train) < MIN_TRAIN_ROWS:
        raise ValueError(f"only {len(train)} rows would be left to train on after holding out {len(test)}; the "
                         f"evaluator needs at least {MIN_TRAIN_ROWS} (label more tasks, or let the judge label them)")
    if train.label.nunique() < 2:
        raise ValueError("the rows left to train on hold a single class: the evaluator needs examples of both")
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    test.attrs["holdout"] = holdout
    return train, test
