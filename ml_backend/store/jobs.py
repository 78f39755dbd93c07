"""Labeling and training jobs, with their status, progress and result (read over HTTP)."""
from __future__ import annotations

import json
import time
from typing import Any

from ..redact import redact, redact_obj
from .base import StoreBase


class Jobs(StoreBase):
    # -- jobs (status over HTTP) ---------------------------------------------------------------
    def create_job(self, project_id: str, kind: str, owner: str | None = None) -> int:
        """A queued job. ``owner`` ("host:pid"): the process that will run it (None while it waits in
        a queue such as RQ's), so a job whose process was killed can be told from one still running."""
        now = time.time()
        with self._tx() as db:
            cur = db.execute("INSERT INTO jobs (project_id, kind, status, created_at, updated_at, owner) "
                             "VALUES (?, ?, 'queued', ?, ?, ?)", (project_id, kind, now, now, owner))
            return int(cur.lastrowid or 0)

    def own_job(self, job_id: int, owner: str) -> None:
        """The process that now runs a job (an RQ worker that picked it up)."""
        with self._tx() as db:
            db.execute("UPDATE jobs SET owner=? WHERE id=?", (owner, job_id))

    def update_job(self, job_id: int, *, status: str | None = None, progress: dict | None = None,
                   result: dict | None = None, error: str | None = None) -> None:
        sets, args = ["updated_at=?"], [time.time()]  # type: list[str], list[Any]
        for col, val in (("status", status), ("progress", progress), ("result", result), ("error", error)):
            if val is not None:  # what a job shows over HTTP is redacted here, whoever wrote it
                sets.append(f"{col}=?")
                args.append(json.dumps(redact_obj(val)) if isinstance(val, dict) else redact(val))
        with self._tx() as db:
            db.execute(f"UPDATE jobs SET {', '.join(sets)} WHERE id=?", (*args, job_id))

    def job(self, job_id: int) -> dict[str, Any] | None:
        row = self._conn().execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        if row is None:
            return None
        out = dict(row)
        out["progress"] = json.loads(out["progress"] or "{}")
        out["result"] = json.loads(out["result"]) if out["result"] else None
        return out

    def unfinished_jobs(self) -> list[dict[str, Any]]:
        """Every job still shown as queued or running, oldest first (for reaping after a crash)."""
        ids = [r["id"] for r in self._conn().execute(
            "SELECT id FROM jobs WHERE status IN ('queued', 'running') ORDER BY id").fetchall()]
        return [j for j in (self.job(i) for i in ids) if j is not None]

    def jobs(self, project_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT id FROM jobs WHERE 1=1", []
        if project_id is not None:
            sql += " AND project_id=?"
            args.append(project_id)
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        ids = [r["id"] for r in self._conn().execute(sql + " ORDER BY id DESC LIMIT 100", args).fetchall()]
        return [job for i in ids if (job := self.job(i)) is not None]

