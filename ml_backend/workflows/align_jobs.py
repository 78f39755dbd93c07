"""Alignment jobs in the background (POST /jobs/align): one per project at a time, in the server's
process, with status, stage, progress and cancel over HTTP (GET /jobs/<id>, POST /jobs/<id>/cancel).

A killed server's running job is reaped as failed at the next start; posting the same job again
resumes it: every judge verdict it paid for is in the verdict cache, and GEPA's state in
MODEL_DIR/align/<project>/ (keyed by the current judge, the seed and the split)."""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..services import Services
from ..store import Busy, process_owner
from .alignment import AlignmentRefused, align_project
from .training import job_error

log = logging.getLogger(__name__)


def run_align_job(services: Services, project: int, job_id: int, stop: threading.Event, **kwargs: Any) -> dict | None:
    """An alignment job's body: ``align_project`` with the store job's status, progress and result."""
    store = services.store
    api = services.require_labelstudio("alignment jobs")
    progress: dict[str, Any] = {}

    def on_progress(update: dict) -> None:
        progress.update(update)
        store.update_job(job_id, progress=dict(progress))

    store.update_job(job_id, status="running", progress={"stage": "starting"})
    try:
        result = align_project(services, api, project, job_id=job_id, progress=on_progress, stop=stop, **kwargs)
    except (AlignmentRefused, Busy) as exc:
        store.update_job(job_id, status="failed", error=str(exc)[:500])
        return None
    except Exception as exc:
        log.exception("alignment job %s failed", job_id)
        store.update_job(job_id, status="failed", error=job_error(exc))
        return None
    store.update_job(job_id, status="cancelled" if result.get("status") == "cancelled" else "finished", result=result)
    return result


class AlignJobs:
    """Starts alignment jobs in threads and cancels them."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._stops: dict[int, threading.Event] = {}

    def start(self, project: int, **kwargs: Any) -> tuple[dict, bool]:
        """The new job (and True), or the project's running one (and False)."""
        self.services.require_labelstudio("alignment jobs")
        store, pid = self.services.store, str(project)
        with self._lock:
            running = [j for j in store.jobs(pid, "align") if j["status"] in ("queued", "running")
                       and j["id"] in self._stops]
            if running:
                return running[0], False
            job_id = store.create_job(pid, "align", owner=process_owner())
            stop = self._stops[job_id] = threading.Event()

        def run() -> None:
            try:
                run_align_job(self.services, project, job_id, stop, **kwargs)
            finally:
                with self._lock:
                    self._stops.pop(job_id, None)

        threading.Thread(target=run, name=f"labeljudge-align-{job_id}", daemon=True).start()
        return store.job(job_id) or {}, True

    def cancel(self, job_id: int) -> bool:
        """Ask a running alignment job to stop (it keeps what it scored); False if none runs here."""
        with self._lock:
            stop = self._stops.get(job_id)
        if stop is None:
            return False
        stop.set()
        return True
