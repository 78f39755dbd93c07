"""Background work in-process: one daemon thread drains the store's pending webhook events, a burst at
a time (the handler coalesces the work per project).

Events are written to sqlite before /webhook answers, so a crash between acknowledging and
processing loses nothing: the worker picks unprocessed events up again when the process restarts.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from ..store import Store

log = logging.getLogger(__name__)


class EventWorker:
    def __init__(self, store: Store, handle: Callable[[list[dict]], dict[int, str | None]]) -> None:
        self.store = store
        self.handle = handle
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="labeljudge-events", daemon=True)
            self._thread.start()
            self._wake.set()  # drain whatever a previous process left behind

    def kick(self) -> None:
        self._idle.clear()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and the CLI: block until every pending event has been handled."""
        return self._idle.wait(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            while not self._stop.is_set():
                batch = self.store.pending_events()
                if not batch:
                    break
                try:  # the burst is handled at once: one look per project, not one per event
                    errors = self.handle(batch)
                except Exception as exc:  # a bad burst must not stop the worker
                    log.exception("handling %s events failed", len(batch))
                    errors = {e["id"]: f"{type(exc).__name__}: {exc}" for e in batch}
                self.store.mark_events([e["id"] for e in batch], errors)
            if not self._wake.is_set():
                self._idle.set()
