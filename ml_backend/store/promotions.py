"""Judge promotions by alignment: the extra_params a promotion replaced, so a rollback is one command."""
from __future__ import annotations

import json
import time
from typing import Any

from .base import StoreBase


class JudgePromotions(StoreBase):
    def record_promotion(self, project_id: str, job_id: int | None, previous_params: dict, params: dict,
                         previous_version: str, version: str) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO judge_promotions (project_id, job_id, at, previous_params, params, "
                             "previous_version, version) VALUES (?, ?, ?, ?, ?, ?, ?)",
                             (project_id, job_id, time.time(), json.dumps(previous_params), json.dumps(params),
                              previous_version, version))
            return int(cur.lastrowid or 0)

    def promotions(self, project_id: str) -> list[dict[str, Any]]:
        """Newest first."""
        rows = self._conn().execute("SELECT * FROM judge_promotions WHERE project_id=? ORDER BY id DESC",
                                    (project_id,)).fetchall()
        return [{**dict(r), "previous_params": json.loads(r["previous_params"]), "params": json.loads(r["params"])}
                for r in rows]

    def mark_rolled_back(self, promotion_id: int) -> None:
        with self._tx() as db:
            db.execute("UPDATE judge_promotions SET rolled_back_at=? WHERE id=?", (time.time(), promotion_id))
