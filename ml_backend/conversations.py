"""Conversations with candidate responses: import converters and preference export.

A pairwise task's data is ``{"messages": [{"role", "content"}...], "response_a", "response_b",
"model_a", "model_b"}``. Model names travel with the task for the win-rate report but are never
rendered into the judge's prompt.
"""
from __future__ import annotations

import itertools
import json
from typing import Any, Iterable

import pandas as pd

from .judge.types import pair_side
from .quality.report import norm


def _messages(raw: Any) -> list[dict]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return [{"role": "user", "content": raw}]
    out = []
    for m in raw or []:
        if isinstance(m.get("user"), dict):  # Labelbox: {"user": {"type": "human"}, "content": ...}
            role = m["user"].get("type") or m["user"].get("role") or "user"
        else:
            role = m.get("role") or "user"
        out.append({"role": str(role), "content": str(m.get("content", ""))})
    return out


def pair_tasks(messages: list[dict], responses: list[dict], meta: dict | None = None) -> list[dict]:
    """Every pair of candidate responses (``{"content", "model"}``) as one task."""
    tasks = []
    for a, b in itertools.combinations(responses, 2):
        tasks.append({"data": {"messages": messages, "response_a": a["content"], "response_b": b["content"],
                               "model_a": a.get("model") or "", "model_b": b.get("model") or "", **(meta or {})}})
    return tasks


def labelbox_to_tasks(rows: Any) -> list[dict]:
    """Labelbox's conversational format: ``{"messages": [{"user": {...}, "content"}], "modelOutputs":
    [{"title", "content", "modelConfigName"}]}`` (one object, a list, or NDJSON rows)."""
    if isinstance(rows, dict):
        rows = [rows]
    tasks = []
    for row in rows:
        row = row.get("row_data", row) if isinstance(row, dict) else row
        messages = _messages(row.get("messages"))
        outputs = [{"content": o.get("content", ""), "model": o.get("modelConfigName") or o.get("title") or ""}
                   for o in row.get("modelOutputs") or []]
        tasks.extend(pair_tasks(messages, outputs, {"source_id": row.get("globalKey") or row.get("id") or ""}))
    return tasks


def table_to_tasks(df: pd.DataFrame) -> list[dict]:
    """CSV/JSONL rows with ``messages`` (JSON list) and ``responses`` (JSON list of strings or of
    {"content", "model"})."""
    tasks = []
    for rec in df.to_dict("records"):
        responses = rec["responses"]
        if isinstance(responses, str):
            responses = json.loads(responses)
        responses = [r if isinstance(r, dict) else {"content": str(r), "model": f"response_{i + 1}"}
                     for i, r in enumerate(responses)]
        tasks.extend(pair_tasks(_messages(rec["messages"]), responses))
    return tasks


def tasks_to_labelbox(tasks: Iterable[dict]) -> list[dict]:
    """The inverse of labelbox_to_tasks for pairs (round trip of the conversational format)."""
    out = []
    for t in tasks:
        d = t["data"]
        out.append({"messages": [{"user": {"type": m["role"]}, "content": m["content"]} for m in d["messages"]],
                    "modelOutputs": [{"title": "A", "content": d["response_a"], "modelConfigName": d["model_a"]},
                                     {"title": "B", "content": d["response_b"], "modelConfigName": d["model_b"]}]})
    return out


def preference_records(tasks: list[dict], control: str = "preference", *, use_judge: bool = False) -> list[dict]:
    """chosen/rejected rows for RLHF/DPO training from report-style records (human labels first;
    judge labels only with ``use_judge``). Ties are left out: they prefer nothing."""
    rows = []
    for t in tasks:
        data = t["data"]
        humans = [norm(a["answers"].get(control)) for a in t["annotations"] if a["answers"].get(control)]
        judged = [norm(p["answers"].get(control)) for p in t["predictions"] if p["answers"].get(control)]
        pick, source = (humans[-1], "human") if humans else ((judged[-1], "judge") if judged and use_judge else (None, None))
        side = pair_side(pick) if pick else None
        if side not in ("A", "B"):
            continue
        chosen, rejected = ("response_a", "response_b") if side == "A" else ("response_b", "response_a")
        rows.append({"prompt": data["messages"], "chosen": data[chosen], "rejected": data[rejected],
                     "chosen_model": data.get("model_" + chosen[-1]), "rejected_model": data.get("model_" + rejected[-1]),
                     "source": source, "task_id": t["id"]})
    return rows
