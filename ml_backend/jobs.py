"""Background work in-process: one daemon thread drains the store's pending webhook events.

Events are written to sqlite before /webhook answers, so a crash between acknowledging and
processing loses nothing: the worker picks unprocessed events up again when the process restarts.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from .store import Store

log = logging.getLogger(__name__)


class EventWorker:
    def __init__(self, store: Store, handle: Callable[[str, dict], None]) -> None:
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
                for event in batch:
                    error = None
                    try:
                        self.handle(event["action"], event["payload"])
                    except Exception as exc:  # a bad event must not stop the worker
                        log.exception("event %s (%s) failed", event["id"], event["action"])
                        error = f"{type(exc).__name__}: {exc}"[:500]
                    self.store.mark_event(event["id"], error)
            if not self._wake.is_set():
                self._idle.set()
