"""Human annotations synced from Label Studio (the few-shot pool, the training trigger's count)."""
from __future__ import annotations

import json
import time
from typing import Any

from .base import StoreBase, _user_id


def source_time(value: Any) -> float | None:
    """Label Studio's ``updated_at`` ("2026-12-03T06:18:50.123456Z") as epoch seconds; None if absent or odd."""
    from datetime import datetime, timezone

    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class Annotations(StoreBase):
    # -- annotations ---------------------------------------------------------------------------
    def upsert_annotation(self, project_id: str, annotation: dict, task_data: dict | None,
                          correction: bool | None = None, *, authoritative: bool = False) -> bool:
        """Store an annotation as Label Studio sent it; False when it was not applied.

        Events can arrive out of order (retries, several Label Studio workers): an event never brings
        back an annotation deleted since (its tombstone), and never replaces a version with an older
        one (Label Studio's ``updated_at``). ``authoritative``: read from Label Studio's API just now
        (a sync), which wins over both."""
        ann_id = int(annotation["id"])
        stamp = source_time(annotation.get("updated_at"))
        with self._tx() as db:
            if authoritative:
                db.execute("DELETE FROM deleted_annotations WHERE id=?", (ann_id,))
            elif db.execute("SELECT 1 FROM deleted_annotations WHERE id=?", (ann_id,)).fetchone():
                return False
            cur = db.execute(
                "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "result=excluded.result, ground_truth=excluded.ground_truth, "
                "completed_by=excluded.completed_by, task_data=COALESCE(excluded.task_data, task_data), "
                "updated_at=excluded.updated_at, correction=COALESCE(excluded.correction, correction), "
                "source_updated_at=COALESCE(excluded.source_updated_at, source_updated_at) "
                "WHERE ? OR excluded.source_updated_at IS NULL OR annotations.source_updated_at IS NULL "
                "OR excluded.source_updated_at >= annotations.source_updated_at",
                (ann_id, project_id, int(annotation["task"]),
                 json.dumps(annotation.get("result") or []), int(bool(annotation.get("ground_truth"))),
                 _user_id(annotation.get("completed_by")),
                 json.dumps(task_data) if task_data is not None else None, time.time(),
                 None if correction is None else int(correction), stamp, int(authoritative)),
            )
            return cur.rowcount > 0

    def forget_annotations(self, ids: list[int]) -> int:
        """Annotations Label Studio deleted: removed, and remembered so a late event cannot bring them back."""
        if not ids:
            return 0
        now = time.time()
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO deleted_annotations (id, at) VALUES (?, ?)", [(i, now) for i in ids])
            cur = db.execute(f"DELETE FROM annotations WHERE id IN ({','.join('?' * len(ids))})", ids)
            return cur.rowcount

    def set_correction(self, annotation_id: int, correction: bool) -> None:
        with self._tx() as db:
            db.execute("UPDATE annotations SET correction=? WHERE id=?", (int(correction), annotation_id))

    def replace_annotations(self, project_id: str, keep_ids: set[int]) -> int:
        """Drop synced annotations that Label Studio no longer has (deleted while we were down)."""
        rows = self._conn().execute("SELECT id FROM annotations WHERE project_id=?", (project_id,)).fetchall()
        return self.delete_annotations([r["id"] for r in rows if r["id"] not in keep_ids])

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
