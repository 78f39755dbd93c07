"""Checks `labeljudge serve` makes before it starts a server, so a bad MODEL_DIR or a busy port is one
line naming the cause, not a gunicorn boot traceback or five "Connection in use" lines."""
from __future__ import annotations

import errno
import socket
import sqlite3
import tempfile
from pathlib import Path

from ..settings import Settings


class PreflightError(RuntimeError):
    """Why the server cannot start, in one line a person can act on."""


def check_model_dir(settings: Settings) -> None:
    """MODEL_DIR is a writable folder (made if missing) and its store is a readable sqlite database."""
    model_dir = Path(settings.model_dir)
    where = f"MODEL_DIR={model_dir}"
    if model_dir.exists() and not model_dir.is_dir():
        raise PreflightError(f"{where} is a file, not a folder: point MODEL_DIR at a folder")
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=model_dir, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise PreflightError(f"{where} is not writable ({exc.strerror or exc}): the backend keeps its store, "
                             "verdict cache and evaluators there; give it a writable folder") from None
    store = Path(settings.store_path)
    if not store.exists():
        return
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            verdict = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.DatabaseError as exc:
        raise PreflightError(f"{where}: the store {store.name} is not a readable database ({exc}); move it "
                             "away to start with an empty store (labels live in Label Studio)") from None
    if not verdict or verdict[0] != "ok":
        raise PreflightError(f"{where}: the store {store.name} is corrupt ({verdict[0] if verdict else 'no answer'}); "
                             "move it away to start with an empty store (labels live in Label Studio)")


def check_port(host: str, port: int) -> None:
    """The port is free to listen on; if not, which process holds it and what to do."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise PreflightError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            raise PreflightError(f"port {port} on {host} is in use{holder(port)}: stop it, or start on "
                                 f"another port with --port {port + 1}") from None


def holder(port: int) -> str:
    """' by pid N (command)' for the process listening on ``port``, when this user may see it."""
    try:
        import psutil

        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f" by pid {conn.pid} ({short_command(proc.cmdline()) or proc.name()})"
    except Exception:  # psutil may be refused the connection table: the port is still named
        pass
    return ""


def short_command(argv: list[str], limit: int = 100) -> str:
    """A command line shortened at a word, never mid-word: the program's name, then whole arguments
    while they fit, then "..."."""
    words = [argv[0].rsplit("/", 1)[-1], *argv[1:]] if argv else []
    out = ""
    for i, word in enumerate(words):
        nxt = f"{out} {word}".strip()
        if len(nxt) > limit and i > 0:
            return out + " ..."
        out = nxt
    return out
