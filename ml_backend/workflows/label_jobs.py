"""Labeling jobs in the background of the server: POST /jobs/label, and the tasks /predict had no time
for. One job per project at a time; its progress is a store job (GET /jobs/<id>)."""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from ..projects import ProjectState
from ..redact import redact
from ..services import Services
from .labeling import label_project

log = logging.getLogger(__name__)


class LabelJobs:
    """Starts labeling jobs and knows which task ids a running job owns (so /predict leaves them)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._claims: dict[str, set[int]] = {}  # project -> task ids a running labeling job owns

    def claimed(self, pid: str) -> set[int]:
        with self._lock:
            return set(self._claims.get(pid, ()))

    def start(self, project: int, *, sample: int | None = None, concurrency: int = 8,
              overrides: dict | None = None, batch_api: bool = False, poll_interval: float = 30.0,
              max_cost: float | None = None, task_ids: Sequence[int] | None = None, reason: str | None = None,
              wait_for: Sequence[Any] = ()) -> dict:
        """Bulk-label a project in a background thread; status is readable at /jobs/<id>.
        One labeling job per project at a time: a second request returns the running one.
        ``task_ids``: only these tasks (what /predict had no time for); they are claimed, so /predict
        does not answer them too.
        ``batch_api``: through one OpenAI Batch API batch (its id and status show in the progress)."""
        api = self.services.require_labelstudio("labeling jobs")
        store, settings = self.services.store, self.services.settings
        pid = str(project)
        with self._lock:
            running = [j for j in store.jobs(pid, "label") if j["status"] in ("queued", "running")
                       and j["id"] in self._live]
            if running:
                return running[0]
            job_id = store.create_job(pid, "label")
            self._live.add(job_id)
            if task_ids is not None:
                self._claims[pid] = set(task_ids)
        if reason:
            store.update_job(job_id, progress={"reason": reason, "done": 0, "total": len(task_ids or ())})

        shown = {"at": 0.0, "batch": None}

        def progress(summary, todo: int) -> None:
            done = summary.labeled + summary.failed
            now = time.monotonic()
            if now - shown["at"] < 0.5 and done < todo:  # a sqlite write per task would cost more than the task
                return
            shown["at"] = now
            store.update_job(job_id, progress={"done": done, "total": todo, "failed": summary.failed,
                                               "cost": round(summary.cost, 6), "batch": shown["batch"],
                                               **({"reason": reason} if reason else {})})

        def batch_progress(status) -> None:
            shown["batch"] = {"id": status.batch_id, "status": status.status, "completed": status.completed,
                              "failed": status.failed, "total": status.total}
            store.update_job(job_id, progress={"done": 0, "batch": shown["batch"]})

        def run() -> None:
            for cached in wait_for:  # calls /predict left in flight: cached first, so the job does not pay again
                cached.wait(settings.request_timeout * (settings.max_retries + 1))
            store.update_job(job_id, status="running")
            try:
                summary = label_project(self.services, api, project, overrides=overrides, sample=sample,
                                        concurrency=concurrency, progress=progress, batch_api=batch_api,
                                        poll_interval=poll_interval, batch_progress=batch_progress,
                                        max_cost=max_cost, task_ids=task_ids)
                store.update_job(job_id, status="finished", result=summary.as_dict())
            except Exception as exc:
                log.exception("labeling job %s failed", job_id)
                store.update_job(job_id, status="failed", error=redact(str(exc))[:500])
            finally:
                with self._lock:
                    self._live.discard(job_id)
                    if task_ids is not None:
                        self._claims.pop(pid, None)

        threading.Thread(target=run, name=f"labeljudge-label-{job_id}", daemon=True).start()
        return store.job(job_id)

    def hand_over(self, state: ProjectState, task_ids: list[int], running: Sequence[Any] = ()) -> None:
        """The tasks /predict had no time for go to a background labeling job of their project, which
        writes their predictions through Label Studio's API (the runner, its lease and the cache)."""
        budget = self.services.settings.predict_budget
        if self.services.labelstudio() is None:
            log.warning("project %s: /predict ran out of its %.0f s budget with %d tasks left; without "
                        "LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY they cannot be labeled in the background, so "
                        "Label Studio will ask again", state.project_id, budget, len(task_ids))
            return
        job = self.start(int(state.project_id), task_ids=task_ids,
                         concurrency=self.services.settings.predict_concurrency, wait_for=running,
                         reason=f"Retrieve predictions: {len(task_ids)} tasks past the {budget:.0f} s budget")
        log.warning("project %s: /predict answered within its %.0f s budget; %d more tasks go to labeling job %s",
                    state.project_id, budget, len(task_ids), job["id"])
