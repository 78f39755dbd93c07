"""The review queue's record: which tasks were put in front of reviewers, and which were random audits."""
from __future__ import annotations

import itertools
import json
import time
import zlib
from typing import Any, Iterable

from .base import StoreBase


class ReviewQueue(StoreBase):
    """The tasks last put in front of reviewers, and which of them were random audits: a human label
    on an audit is an unbiased sample of the machine labels' accuracy, a ranked review is not."""

    def queue_for_review(self, project_id: str, items: list[dict], pool: list[int] | None = None) -> int | None:
        """Record queued tasks, and ``pool`` (the unreviewed tasks they were chosen from) as a round when
        the queue holds audits; a task once drawn as an audit stays an audit (and keeps the label the
        machine had and the round it was drawn in). Returns the round's id (None without one)."""
        now = time.time()
        with self._tx() as db:
            round_id = None
            if pool is not None and any(i["kind"] == "audit" for i in items):  # only audits need their pool
                round_id = db.execute("INSERT INTO review_rounds (project_id, queued_at, pool) VALUES (?, ?, ?)",
                                      (project_id, now, _pack(pool))).lastrowid
            db.executemany(
                "INSERT INTO review_queue (project_id, task_id, kind, rank, p_wrong, source, label, queued_at, round) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(project_id, task_id) DO UPDATE SET "
                "rank=excluded.rank, p_wrong=excluded.p_wrong, queued_at=excluded.queued_at, round=excluded.round "
                "WHERE review_queue.kind != 'audit' OR excluded.kind = 'audit'",
                [(project_id, int(i["task"]), i["kind"], int(i["rank"]), i.get("p_wrong"), i.get("source"),
                  json.dumps(i.get("label")), now, round_id) for i in items])
        return round_id

    def review_pools(self, project_id: str, rounds: Iterable[int]) -> dict[int, list[int]]:
        """round -> the unreviewed tasks that round's queue was drawn from (only the rounds asked for)."""
        wanted = sorted({int(r) for r in rounds})
        out: dict[int, list[int]] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            rows = self._conn().execute(
                f"SELECT id, pool FROM review_rounds WHERE project_id=? AND id IN ({','.join('?' * len(chunk))})",
                (project_id, *chunk)).fetchall()
            out.update({int(r["id"]): _unpack(r["pool"]) for r in rows})
        return out

    def review_items(self, project_id: str) -> list[dict[str, Any]]:
        rows = self._conn().execute("SELECT * FROM review_queue WHERE project_id=? ORDER BY rank",
                                    (project_id,)).fetchall()
        return [{**dict(r), "label": json.loads(r["label"]) if r["label"] else None} for r in rows]


def _pack(ids: list[int]) -> bytes:
    """Sorted task ids as compressed gaps: a pool of 100,000 consecutive ids takes a few hundred bytes."""
    ordered = sorted({int(t) for t in ids})
    gaps = [b - a for a, b in zip([0, *ordered], ordered)]
    return zlib.compress(json.dumps(gaps).encode())


def _unpack(blob: bytes) -> list[int]:
    return list(itertools.accumulate(json.loads(zlib.decompress(blob))))
