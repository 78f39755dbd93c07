"""Human annotations synced from Label Studio (the few-shot pool, the training trigger's count)."""
from __future__ import annotations

import json
import time
from typing import Any

from .base import StoreBase, _user_id


class Annotations(StoreBase):
    # -- annotations ---------------------------------------------------------------------------
    def upsert_annotation(self, project_id: str, annotation: dict, task_data: dict | None,
                          correction: bool | None = None) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO annotations VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                "result=excluded.result, ground_truth=excluded.ground_truth, "
                "completed_by=excluded.completed_by, task_data=COALESCE(excluded.task_data, task_data), "
                "updated_at=excluded.updated_at, correction=COALESCE(excluded.correction, correction)",
                (int(annotation["id"]), project_id, int(annotation["task"]),
                 json.dumps(annotation.get("result") or []), int(bool(annotation.get("ground_truth"))),
                 _user_id(annotation.get("completed_by")),
                 json.dumps(task_data) if task_data is not None else None, time.time(),
                 None if correction is None else int(correction)),
            )

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
