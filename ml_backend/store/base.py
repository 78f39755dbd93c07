"""The backend's own sqlite: project configs, received webhook events, synced annotations.

Why sqlite: the embedded default needs no server, it survives restarts (a project's config is known
before Label Studio's next /setup), and WAL mode lets the web workers and the job thread share it.
"""
from __future__ import annotations

import logging
import os
import socket
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

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


def process_owner() -> str:
    """This process as the owner of a job: "host:pid:started", its start time telling it apart from a
    later process that got the same pid (a restarted container's server is often pid 1 again)."""
    import psutil

    return f"{socket.gethostname()}:{os.getpid()}:{int(psutil.Process().create_time())}"


def owner_gone(owner: str) -> bool:
    """Whether the process named by a job's owner ("host:pid[:started]") is known to be gone: a process
    of this host that no longer runs, or whose pid now belongs to a process started at another time."""
    import psutil

    host, _, rest = owner.partition(":")
    pid, _, started = rest.partition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False  # another host's process: its own host reaps it
    if not process_alive(int(pid)):
        return True
    if started.isdigit():
        try:
            return abs(int(psutil.Process(int(pid)).create_time()) - int(started)) > 1
        except psutil.Error:
            return True
    return False


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
CREATE TABLE IF NOT EXISTS review_queue (
    project_id TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rank INTEGER NOT NULL,
    p_wrong REAL,
    source TEXT,
    label TEXT,
    queued_at REAL NOT NULL,
    round INTEGER,
    PRIMARY KEY (project_id, task_id)
);
CREATE TABLE IF NOT EXISTS review_rounds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    queued_at REAL NOT NULL,
    pool BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deleted_annotations (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL
);
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
CREATE TABLE IF NOT EXISTS judge_promotions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    project_id TEXT NOT NULL,
    job_id INTEGER,
    at REAL NOT NULL,
    previous_params TEXT NOT NULL,
    params TEXT NOT NULL,
    previous_version TEXT NOT NULL,
    version TEXT NOT NULL,
    rolled_back_at REAL
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


class StoreBase:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._write = threading.Lock()
        with self._tx() as db:
            db.executescript(SCHEMA)
            columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)").fetchall()}
            if "owner" not in columns:  # a store from before jobs named the process running them
                db.execute("ALTER TABLE jobs ADD COLUMN owner TEXT")
            columns = {r[1] for r in db.execute("PRAGMA table_info(annotations)").fetchall()}
            if "source_updated_at" not in columns:  # Label Studio's own time of the stored version
                db.execute("ALTER TABLE annotations ADD COLUMN source_updated_at REAL")
            columns = {r[1] for r in db.execute("PRAGMA table_info(review_queue)").fetchall()}
            if "round" not in columns:  # a store from before audits named the pool they were drawn from
                db.execute("ALTER TABLE review_queue ADD COLUMN round INTEGER")

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

def _user_id(value: Any) -> int | None:
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None
