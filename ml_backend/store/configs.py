"""Project configs, the judge versions each one produced, and the training trigger's bookkeeping."""
from __future__ import annotations

import json
import time
from typing import Any

from .base import StoreBase


class ProjectConfigs(StoreBase):
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

    # -- training trigger bookkeeping ----------------------------------------------------------
    def set_trained_labels(self, project_id: str, n: int) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO train_state VALUES (?, ?)", (project_id, n))

    def trained_labels(self, project_id: str) -> int:
        row = self._conn().execute("SELECT labels_at_last_train FROM train_state WHERE project_id=?",
                                   (project_id,)).fetchone()
        return int(row[0]) if row else 0

    def count_labeled_tasks(self, project_id: str) -> int:
        row = self._conn().execute("SELECT COUNT(DISTINCT task_id) FROM annotations WHERE project_id=?",
                                   (project_id,)).fetchone()
        return int(row[0])

    # -- judge versions: what each version asked (for `labeljudge prompts`) ----------------------
    def save_version(self, project_id: str, version: str, spec: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR IGNORE INTO versions VALUES (?, ?, ?, ?)",
                       (project_id, version, json.dumps(spec), time.time()))

    def versions(self, project_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM versions WHERE project_id=? ORDER BY created_at",
                                    (project_id,)).fetchall()
        return [{**dict(r), "spec": json.loads(r["spec"])} for r in rows]
