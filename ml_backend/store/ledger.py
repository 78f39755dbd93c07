"""What each judge version cost, bulk-labeling failures (retried next run), and pairwise position records."""
from __future__ import annotations

import time
from typing import Any

from ..redact import redact
from .base import StoreBase


class Ledger(StoreBase):
    # -- ledger: what each judge version cost --------------------------------------------------
    def add_ledger(self, project_id: str, version: str, model: str, *, calls: int = 0, tokens_in: int = 0,
                   tokens_out: int = 0, cost: float = 0.0, cache_hits: int = 0, failures: int = 0,
                   evaluator_answered: int = 0) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO ledger VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project_id, version) DO UPDATE "
                "SET calls=calls+excluded.calls, tokens_in=tokens_in+excluded.tokens_in, "
                "tokens_out=tokens_out+excluded.tokens_out, cost=cost+excluded.cost, "
                "cache_hits=cache_hits+excluded.cache_hits, failures=failures+excluded.failures, "
                "evaluator_answered=evaluator_answered+excluded.evaluator_answered",
                (project_id, version, model, calls, tokens_in, tokens_out, cost, cache_hits, failures,
                 evaluator_answered))

    def ledger(self, project_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM ledger", ()  # type: tuple[str, tuple[Any, ...]]
        if project_id is not None:
            sql, args = sql + " WHERE project_id=?", (project_id,)
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY version", args).fetchall()]

    # -- failures of bulk labeling (retried on the next run) -----------------------------------
    def record_failure(self, project_id: str, task_id: int, version: str, reason: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO label_failures VALUES (?, ?, ?, ?, ?)",
                       (project_id, task_id, version, redact(reason)[:500], time.time()))

    def clear_failure(self, project_id: str, task_id: int, version: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM label_failures WHERE project_id=? AND task_id=? AND version=?",
                       (project_id, task_id, version))

    def failures(self, project_id: str, version: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM label_failures WHERE project_id=?", (project_id,)  # type: tuple[str, tuple[Any, ...]]
        if version is not None:
            sql, args = sql + " AND version=?", args + (version,)
        return [dict(r) for r in self._conn().execute(sql + " ORDER BY task_id", args).fetchall()]

    # -- pairwise: both orders' answers (position bias) -------------------------------------------
    def add_pair_judgment(self, project_id: str, task_id: int, version: str, position: dict) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO pair_judgments VALUES (?, ?, ?, ?, ?, ?)",
                       (project_id, task_id, version, str(position["first"]), str(position["second"]),
                        int(bool(position["consistent"]))))

    def pair_judgments(self, project_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM pair_judgments WHERE project_id=?", (project_id,)).fetchall()
        return [dict(r) for r in rows]
