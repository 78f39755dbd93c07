"""The backend's own sqlite: project configs, received webhook events, synced annotations.

Why sqlite: the embedded default needs no server, it survives restarts (a project's config is known
before Label Studio's next /setup), and WAL mode lets the web workers and the job thread share it.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Sequence

from .redact import redact, redact_obj

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """The work is already running in another process sharing this store."""


def process_alive(pid: int) -> bool:
    """Whether a process of this host runs: it exists and is not a zombie (a killed child that nobody
    reaped still answers signal 0, as in containers whose first process does not reap orphans)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _owner_alive(owner: str) -> bool:
    """Whether a lease owner ("host:pid:token") may still run: False only for a process of this host
    that is gone; a process of another host is trusted until its lease expires."""
    host, pid = owner.split(":")[:2]
    if host != socket.gethostname():
        return True
    return process_alive(int(pid))


SCHEMA = """
CREATE TABLE IF NOT EXISTS projects (
    project_id TEXT PRIMARY KEY,
    label_config TEXT NOT NULL,
    extra_params TEXT NOT NULL,
    model_version TEXT NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT,
    action TEXT NOT NULL,
    payload TEXT NOT NULL,
    received_at REAL NOT NULL,
    processed_at REAL,
    error TEXT
);
CREATE TABLE IF NOT EXISTS annotations (
    id INTEGER PRIMARY KEY,
    project_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    result TEXT NOT NULL,
    ground_truth INTEGER NOT NULL DEFAULT 0,
    completed_by INTEGER,
    task_data TEXT,
    updated_at REAL NOT NULL,
    correction INTEGER
);
CREATE INDEX IF NOT EXISTS annotations_project ON annotations(project_id);
CREATE TABLE IF NOT EXISTS verdict_cache (
    version TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    verdict TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (version, content_hash)
);
CREATE TABLE IF NOT EXISTS ledger (
    project_id TEXT NOT NULL,
    version TEXT NOT NULL,
    model TEXT NOT NULL,
    calls INTEGER NOT NULL DEFAULT 0,
    tokens_in INTEGER NOT NULL DEFAULT 0,
    tokens_out INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    cache_hits INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    evaluator_answered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (project_id, version)
);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS pair_judgments (
    project_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    first TEXT NOT NULL,
    second TEXT NOT NULL,
    consistent INTEGER NOT NULL,
    PRIMARY KEY (project_id, task_id, version)
);
CREATE TABLE IF NOT EXISTS train_state (
    project_id TEXT PRIMARY KEY,
    labels_at_last_train INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS label_failures (
    project_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    version TEXT NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (project_id, task_id, version)
);
CREATE TABLE IF NOT EXISTS versions (
    project_id TEXT NOT NULL,
    version TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (project_id, version)
);
CREATE TABLE IF NOT EXISTS provider_batches (
    scope TEXT NOT NULL,
    batch_id TEXT NOT NULL,
    status TEXT NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (scope, batch_id)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL,
    excerpt TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    progress TEXT NOT NULL DEFAULT '{}',
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
"""


class Store:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write = threading.Lock()
        with self._tx() as db:
            db.executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write:
            with conn:
                yield conn

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

    # -- events --------------------------------------------------------------------------------
    def add_event(self, project_id: str | None, action: str, payload: dict) -> int:
        with self._tx() as db:
            cur = db.execute(
                "INSERT INTO events (project_id, action, payload, received_at) VALUES (?, ?, ?, ?)",
                (project_id, action, json.dumps(payload), time.time()),
            )
            return int(cur.lastrowid)

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
            return int(cur.lastrowid)

    def quarantined(self, limit: int = 20) -> dict[str, Any]:
        """Counts per project and source, and the latest records (for /metrics)."""
        db = self._conn()
        counts = db.execute("SELECT project_id, source, COUNT(*) AS n FROM quarantine GROUP BY project_id, source")
        latest = db.execute("SELECT id, project_id, source, reason, at FROM quarantine ORDER BY id DESC LIMIT ?",
                            (limit,))
        rows = [dict(r) for r in counts.fetchall()]
        return {"total": sum(r["n"] for r in rows), "by_project": rows, "latest": [dict(r) for r in latest.fetchall()]}

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

    # -- leases: one holder at a time across the processes that share this store -----------------
    def take_lease(self, name: str, owner: str, ttl: float) -> str | None:
        """Take or renew ``name`` for ``owner`` until ``ttl`` seconds from now. Returns None when
        ``owner`` holds it, else the holder. A lease past its expiry, or held by a process of this host
        that no longer exists (killed), is taken over."""
        now = time.time()
        with self._tx() as db:  # one statement: atomic between processes
            db.execute("INSERT INTO leases VALUES (?, ?, ?) ON CONFLICT(name) DO UPDATE SET owner=excluded.owner, "
                       "expires=excluded.expires WHERE leases.owner=excluded.owner OR leases.expires<?",
                       (name, owner, now + ttl, now))
        holder = self._conn().execute("SELECT owner FROM leases WHERE name=?", (name,)).fetchone()["owner"]
        if holder == owner:
            return None
        if not _owner_alive(holder):
            with self._tx() as db:  # take it from the dead holder only if nobody else did meanwhile
                db.execute("UPDATE leases SET owner=?, expires=? WHERE name=? AND owner=?",
                           (owner, now + ttl, name, holder))
            return self.take_lease(name, owner, ttl)
        return holder

    def drop_lease(self, name: str, owner: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM leases WHERE name=? AND owner=?", (name, owner))

    @contextmanager
    def lease(self, name: str, what: str, ttl: float = 60.0) -> Iterator[None]:
        """Hold ``name`` for the block, renewed in the background every ``ttl``/3 seconds; raises
        Busy, naming the holder, when another live process holds it."""
        owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        holder = self.take_lease(name, owner, ttl)
        if holder is not None:
            host, pid = holder.split(":")[:2]
            raise Busy(f"{what} is already running in another process (pid {pid} on {host}); it holds the "
                       f"lock until it ends, or {ttl:.0f} s after it was killed on another host")
        done = threading.Event()

        def renew() -> None:
            while not done.wait(ttl / 3):
                if self.take_lease(name, owner, ttl) is not None:
                    log.error("lost the lock on %s to another process", what)
                    return

        keeper = threading.Thread(target=renew, name=f"labeljudge-lease-{name}", daemon=True)
        keeper.start()
        try:
            yield
        finally:
            done.set()
            keeper.join()
            self.drop_lease(name, owner)

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
        sql, args = "SELECT * FROM ledger", ()
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
        sql, args = "SELECT * FROM label_failures WHERE project_id=?", (project_id,)
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

    # -- jobs (status over HTTP) ---------------------------------------------------------------
    def create_job(self, project_id: str, kind: str) -> int:
        now = time.time()
        with self._tx() as db:
            cur = db.execute("INSERT INTO jobs (project_id, kind, status, created_at, updated_at) "
                             "VALUES (?, ?, 'queued', ?, ?)", (project_id, kind, now, now))
            return int(cur.lastrowid)

    def update_job(self, job_id: int, *, status: str | None = None, progress: dict | None = None,
                   result: dict | None = None, error: str | None = None) -> None:
        sets, args = ["updated_at=?"], [time.time()]
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

    def jobs(self, project_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT id FROM jobs WHERE 1=1", []
        if project_id is not None:
            sql += " AND project_id=?"
            args.append(project_id)
        if kind is not None:
            sql += " AND kind=?"
            args.append(kind)
        ids = [r["id"] for r in self._conn().execute(sql + " ORDER BY id DESC LIMIT 100", args).fetchall()]
        return [self.job(i) for i in ids]


def _user_id(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
