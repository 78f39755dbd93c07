"""The review queue's record: which tasks were put in front of reviewers, and which were random audits."""
from __future__ import annotations

import json
import time
from typing import Any

from .base import StoreBase


class ReviewQueue(StoreBase):
    """The tasks last put in front of reviewers, and which of them were random audits: a human label
    on an audit is an unbiased sample of the machine labels' accuracy, a ranked review is not."""

    def queue_for_review(self, project_id: str, items: list[dict]) -> None:
        """Record queued tasks; a task once drawn as an audit stays an audit (and keeps the label the
        machine had when it was drawn)."""
        now = time.time()
        with self._tx() as db:
            db.executemany(
                "INSERT INTO review_queue (project_id, task_id, kind, rank, p_wrong, source, label, queued_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project_id, task_id) DO UPDATE SET "
                "rank=excluded.rank, p_wrong=excluded.p_wrong, queued_at=excluded.queued_at "
                "WHERE review_queue.kind != 'audit' OR excluded.kind = 'audit'",
                [(project_id, int(i["task"]), i["kind"], int(i["rank"]), i.get("p_wrong"), i.get("source"),
                  json.dumps(i.get("label")), now) for i in items])

    def review_items(self, project_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM review_queue WHERE project_id=? ORDER BY rank",
                                    (project_id,)).fetchall()
        return [{**dict(r), "label": json.loads(r["label"]) if r["label"] else None} for r in rows]
