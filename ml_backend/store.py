"""The backend's own sqlite: project configs, received webhook events, synced annotations.

Why sqlite: the embedded default needs no server, it survives restarts (a project's config is known
before Label Studio's next /setup), and WAL mode lets the web workers and the job thread share it.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY,
    label_config TEXT NOT NULL,
    extra_params TEXT NOT NULL,
    model_version TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    processed_at REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    result TEXT NOT NULL,
    ground_truth INTEGER NOT NULL DEFAULT 0,
    completed_by INTEGER,
    task_data TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS annotations_project ON annotations(project_id);
"""


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write = threading.Lock()
        with self._tx() as db:
            db.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write:
            with conn:
                yield conn

    # -- projects ------------------------------------------------------------------------------
    def save_project(self, project_id: str, label_config: str, extra_params: dict, version: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO projects VALUES (?, ?, ?, ?, ?) ON CONFLICT(project_id) DO UPDATE SET "
                "label_config=excluded.label_config, extra_params=excluded.extra_params, "
                "model_version=excluded.model_version, updated_at=excluded.updated_at",
                (project_id, label_config, json.dumps(extra_params), version, time.time()),
            )

    def project(self, project_id: str) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM projects WHERE project_id=?", (project_id,)).fetchone()
        if row is None:
            return None
        return {**dict(row), "extra_params": json.loads(row["extra_params"])}

    def projects(self) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT project_id, model_version, updated_at FROM projects").fetchall()
        return [dict(r) for r in rows]

    # -- events --------------------------------------------------------------------------------
    def add_event(self, project_id: str | None, action: str, payload: dict) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (project_id, action, payload, received_at) VALUES (?, ?, ?, ?)",
                (project_id, action, json.dumps(payload), time.time()),
            )
            return int(cur.lastrowid)

    def pending_events(self, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM events WHERE processed_at IS NULL ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    def mark_event(self, event_id: int, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE events SET processed_at=?, error=? WHERE id=?", (time.time(), error, event_id))

    def events(self, project_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "SELECT id, project_id, action, received_at, processed_at, error FROM events"
        args: tuple = ()
        if project_id is not None:
            sql += " WHERE project_id=?"
            args = (project_id,)
        rows = self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", args + (limit,)).fetchall()
        return [dict(r) for r in rows]

    # -- annotations ---------------------------------------------------------------------------
    def upsert_annotation(self, project_id: str, annotation: dict, task_data: dict | None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "result=excluded.result, ground_truth=excluded.ground_truth, "
                "completed_by=excluded.completed_by, task_data=COALESCE(excluded.task_data, task_data), "
                "updated_at=excluded.updated_at",
                (int(annotation["id"]), project_id, int(annotation["task"]),
                 json.dumps(annotation.get("result") or []), int(bool(annotation.get("ground_truth"))),
                 _user_id(annotation.get("completed_by")),
                 json.dumps(task_data) if task_data is not None else None, time.time()),
            )

    def delete_annotations(self, ids: list[int]) -> int:
        if not ids:
            return 0
        with self._tx() as db:
            cur = db.execute(f"DELETE FROM annotations WHERE id IN ({','.join('?' * len(ids))})", ids)
            return cur.rowcount

    def annotations(self, project_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM annotations WHERE project_id=? ORDER BY id", (project_id,)
        ).fetchall()
        return [{**dict(r), "result": json.loads(r["result"]),
                 "task_data": json.loads(r["task_data"]) if r["task_data"] else None} for r in rows]


def _user_id(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
