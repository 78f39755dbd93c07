"""Received webhook events (stored before /webhook answers) and the quarantine of what could not be understood."""
from __future__ import annotations

import json
import time
from typing import Any

from ..redact import redact
from .base import StoreBase


class WebhookEvents(StoreBase):
    # -- events --------------------------------------------------------------------------------
    def add_event(self, project_id: str | None, action: str, payload: dict, *, handled: bool = False,
                  error: str | None = None) -> int:
        """Store an event; ``handled``: it was acted on already (kept for the record, never re-run)."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (project_id, action, payload, received_at, processed_at, error) VALUES (?, ?, ?, ?, ?, ?)",
                (project_id, action, json.dumps(payload), now, now if handled else None,
                 None if error is None else redact(error)[:500]),
            )
            return int(cur.lastrowid or 0)

    def pending_events(self, limit: int = 500) -> list[dict[str, Any]]:
        rows = self._conn().execute(
            "SELECT * FROM events WHERE processed_at IS NULL ORDER BY id LIMIT ?", (limit,)
        ).fetchall()
        return [{**dict(r), "payload": json.loads(r["payload"])} for r in rows]

    def mark_event(self, event_id: int, error: str | None = None) -> None:
        with self._tx() as db:
            db.execute("UPDATE events SET processed_at=?, error=? WHERE id=?",
                       (time.time(), None if error is None else redact(error)[:500], event_id))

    def mark_events(self, event_ids: list[int], errors: dict[int, str | None]) -> None:
        """A burst marked processed in one transaction, each with its error (if any)."""
        now = time.time()
        with self._tx() as db:
            db.executemany("UPDATE events SET processed_at=?, error=? WHERE id=?",
                           [(now, None if errors.get(i) is None else redact(errors[i])[:500], i) for i in event_ids])

    def events(self, project_id: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        sql = "SELECT id, project_id, action, received_at, processed_at, error FROM events"
        args: tuple = ()
        if project_id is not None:
            sql += " WHERE project_id=?"
            args = (project_id,)
        rows = self._conn().execute(sql + " ORDER BY id DESC LIMIT ?", args + (limit,)).fetchall()
        return [dict(r) for r in rows]

    # -- quarantine: records that could not be understood, kept with their reason ---------------
    def quarantine(self, project_id: str | None, source: str, reason: str, record: Any) -> int:
        """Keep a record that cannot be used (a malformed webhook, an annotation its config cannot
        read) out of every table that is read later, with why; only a redacted excerpt is stored."""
        excerpt = record if isinstance(record, str) else json.dumps(record, default=str)[:2000]
        with self._tx() as db:
            cur = db.execute("INSERT INTO quarantine (project_id, source, reason, excerpt, at) VALUES (?, ?, ?, ?, ?)",
                             (project_id, source, redact(reason)[:500], redact(excerpt[:2000]), time.time()))
            return int(cur.lastrowid or 0)

    def quarantined(self, limit: int = 20) -> dict[str, Any]:
        """Counts per project and source, and the latest records (for /metrics)."""
        db = self._conn()
        counts = db.execute("SELECT project_id, source, COUNT(*) AS n FROM quarantine GROUP BY project_id, source")
        latest = db.execute("SELECT id, project_id, source, reason, at FROM quarantine ORDER BY id DESC LIMIT ?",
                            (limit,))
        rows = [dict(r) for r in counts.fetchall()]
        return {"total": sum(r["n"] for r in rows), "by_project": rows, "latest": [dict(r) for r in latest.fetchall()]}
