"""Datasets in and out of Label Studio projects: CSV, JSONL and Parquet (plus converters by format).

Import: every row becomes a task whose data is the row's columns. Export: one row per task with its
data, the human label(s) (``human_<control>``, ground truth preferred), and per control the latest
judge label and score (``judge_<control>``, ``judge_<control>_score``, ``judge_version``).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from .judge.types import is_judge_version
from .quality.report import norm, reference_labels


class TableError(ValueError):
    """A dataset file that cannot be read as a table; the message names the file and the problem."""


def read_table(path: str | Path) -> pd.DataFrame:
    """A CSV/JSONL/JSON/Parquet file as a DataFrame of at least one row; TableError when it is missing,
    empty, ragged or not what its suffix says."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        raise TableError(f"{path}: unsupported file type {suffix or '(none)'!r}: use .csv, .jsonl, .json or .parquet")
    if not path.is_file():
        raise TableError(f"{path}: no such file")
    try:
        if suffix == ".csv":
            df = pd.read_csv(path)
        elif suffix in (".jsonl", ".ndjson"):
            df = pd.read_json(path, lines=True)
        elif suffix == ".json":
            data = json.loads(path.read_text())
            if not isinstance(data, list):
                raise TableError(f"{path}: expected a JSON list of rows (objects)")
            df = pd.DataFrame([d.get("data", d) if isinstance(d, dict) else d for d in data])
        else:
            df = pd.read_parquet(path)
    except TableError:
        raise
    except pd.errors.EmptyDataError:
        raise TableError(f"{path}: the file is empty") from None
    except (ValueError, UnicodeDecodeError, OSError, RecursionError) as exc:  # ParserError is a ValueError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TableError(f"{path}: not a valid {suffix[1:]} file: {first[:200]}") from None
    except Exception as exc:  # pyarrow's own errors for a file that is not Parquet
        raise TableError(f"{path}: not a valid {suffix[1:]} file: {type(exc).__name__}: {str(exc)[:200]}") from None
    if df.empty:
        raise TableError(f"{path}: the file has no rows")
    return df


def write_table(df: pd.DataFrame, path: str | Path) -> None:
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".csv":
        df.to_csv(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(path, orient="records", lines=True, force_ascii=False)
    elif suffix == ".parquet":
        df.to_parquet(path, index=False)
    else:
        raise ValueError(f"unsupported file type {suffix!r}: use .csv, .jsonl or .parquet")


def rows_to_tasks(df: pd.DataFrame) -> list[dict[str, Any]]:
    tasks = []
    for rec in df.to_dict("records"):
        data = {k: _plain(v) for k, v in rec.items() if not _na(v)}
        tasks.append({"data": data})
    return tasks


def records_to_frame(tasks: list[dict], task_data: dict[int, dict], controls: list[dict]) -> pd.DataFrame:
    """One row per task from report-style records (see reporting.project_records)."""
    rows = {t["id"]: {"task_id": t["id"], **task_data.get(t["id"], {})} for t in tasks}
    for c in controls:
        ref, _ = reference_labels(tasks, c["name"])
        for t in tasks:
            row = rows[t["id"]]
            row[f"human_{c['name']}"] = ref.get(t["id"])
            judge = [p for p in t["predictions"] if is_judge_version(p["model_version"])]
            if judge:
                last = judge[-1]
                row[f"judge_{c['name']}"] = norm(last["answers"].get(c["name"]))
                row[f"judge_{c['name']}_score"] = last.get("score")
                row["judge_version"] = last["model_version"]
    return pd.DataFrame(list(rows.values()))


def _na(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _plain(v: Any) -> Any:
    if hasattr(v, "tolist"):
        return v.tolist()
    if hasattr(v, "item"):
        return v.item()
    return v
