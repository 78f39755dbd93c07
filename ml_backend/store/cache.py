"""What was paid for once is not paid again: verdicts by judge version x task content, and Batch API batches."""
from __future__ import annotations

import json
import time
from typing import Sequence

from .base import StoreBase


class VerdictCache(StoreBase):
    # -- verdict cache (judge version x task content) --------------------------------------------
    def get_verdicts(self, version: str, content_hashes: Sequence[str]) -> dict[str, dict]:
        """The cached verdicts among ``content_hashes``, in one query (one per task cost 5% of the
        event loop's time in a labeling run)."""
        found: dict[str, dict] = {}
        hashes = list(dict.fromkeys(content_hashes))
        for i in range(0, len(hashes), 500):
            part = hashes[i:i + 500]
            rows = self._conn().execute(
                f"SELECT content_hash, verdict FROM verdict_cache WHERE version=? AND content_hash IN "
                f"({','.join('?' * len(part))})", (version, *part)).fetchall()
            found.update((row["content_hash"], json.loads(row["verdict"])) for row in rows)
        return found

    def put_verdicts(self, version: str, rows: list[tuple[str, dict]]) -> None:
        """Many (content_hash, verdict) in one transaction: one commit for a group of verdicts."""
        now = time.time()
        with self._tx() as db:
            db.executemany("INSERT OR REPLACE INTO verdict_cache VALUES (?, ?, ?, ?)",
                           [(version, h, json.dumps(v), now) for h, v in rows])

    # -- Batch API batches: submitted once, collected once -----------------------------------------
    def open_batch(self, scope: str) -> str | None:
        """The batch of ``scope`` that was submitted but not yet collected (resume it, don't pay twice)."""
        row = self._conn().execute("SELECT batch_id FROM provider_batches WHERE scope=? AND status != 'collected' "
                                   "ORDER BY updated_at DESC LIMIT 1", (scope,)).fetchone()
        return row["batch_id"] if row else None

    def save_batch(self, scope: str, batch_id: str, status: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO provider_batches VALUES (?, ?, ?, ?)",
                       (scope, batch_id, status, time.time()))
