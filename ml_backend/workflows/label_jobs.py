"""Labeling jobs in the background: POST /jobs/label, and the tasks /predict had no time for. One job
per project at a time; its progress is a store job (GET /jobs/<id>).

In the server's process by default (a thread). With REDIS_URL, POST /jobs/label jobs are queued to RQ
and run by `labeljudge worker` processes sharing MODEL_DIR: a backend restart loses no running job,
and several workers label different projects at once (the project's lease keeps one run per project).
The tasks /predict hands over stay in the server's process: they wait on its judge calls in flight.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from ..projects import ProjectState
from ..redact import redact
from ..services import Services
from ..store import process_owner
from .labeling import label_project
from .training import job_error, log_job_failure

log = logging.getLogger(__name__)
RQ_LABEL = "ml_backend.rq_jobs.rq_label"  # by name: the worker imports it, this module does not


def run_label_job(services: Services, project: int, job_id: int, *, reason: str | None = None,
                  worker: str | None = None, wait_for: Sequence[Any] = (), **kwargs: Any) -> dict | None:
    """A labeling job's body, in a thread or an RQ worker: runs ``label_project`` and keeps the store
    job's status, progress (at most twice a second) and result. ``worker`` ("host:pid") marks the
    process, so a dead worker's job is reaped. Returns the summary, or None when it failed."""
    store, settings = services.store, services.settings
    api = services.require_labelstudio("labeling jobs")
    tag = {**({"reason": reason} if reason else {}), **({"worker": worker} if worker else {})}
    shown: dict[str, Any] = {"at": 0.0, "batch": None}

    def progress(summary, todo: int) -> None:
        done = summary.labeled + summary.failed
        now = time.monotonic()
        if now - shown["at"] < 0.5 and done < todo and not summary.stage:  # a write per task costs more than it
            return
        shown["at"] = now
        store.update_job(job_id, progress={"done": done, "total": todo, "failed": summary.failed,
                                           "cost": round(summary.cost, 6), "batch": shown["batch"], **tag,
                                           **({"stage": summary.stage} if summary.stage else {})})

    def batch_progress(status) -> None:
        shown["batch"] = {"id": status.batch_id, "status": status.status, "completed": status.completed,
                          "failed": status.failed, "total": status.total}
        store.update_job(job_id, progress={"done": 0, "batch": shown["batch"], **tag})

    if wait_for:  # calls /predict left in flight: cached first, so the job does not pay again
        limit = settings.request_timeout * (settings.max_retries + 1)
        store.update_job(job_id, progress={"done": 0, **tag, "waiting_for": f"{len(wait_for)} judge calls that "
                                           f"/predict left running (at most {limit:.0f} s)"})
        until = time.monotonic() + limit
        for cached in wait_for:
            cached.wait(max(0.0, until - time.monotonic()))
    after_saved = kwargs.pop("after_saved", None)
    if after_saved:
        store.update_job(job_id, progress={"done": 0, **tag, "waiting_for": "Label Studio to save what /predict "
                                           "answered (its Retrieve button returns then)"})
        wait_for_saved(api, *after_saved)
    if worker:
        store.own_job(job_id, worker)
    # until the first task's progress: what takes the time before it (the demo's bar sat at 0/12 for a minute)
    store.update_job(job_id, status="running", progress={"done": 0, **tag, "stage": "reading the project from "
                                                         "Label Studio and choosing the tasks"})
    def waiting(why: str) -> None:  # another process (a CLI run, a worker) labels the project: wait for it
        store.update_job(job_id, progress={"done": 0, **tag, "waiting_for": why[:200]})

    handed_over = kwargs.get("task_ids") is not None  # nobody would ask for these tasks again
    try:
        summary = label_project(services, api, project, progress=progress, batch_progress=batch_progress,
                                wait=waiting if handed_over else None, **kwargs)
    except Exception as exc:
        log_job_failure(f"labeling job {job_id}", exc)
        store.update_job(job_id, status="failed", error=job_error(exc))
        return None
    store.update_job(job_id, status="finished", result=summary.as_dict())
    return summary.as_dict()


def wait_for_saved(api: Any, task_id: int, version: str, limit: float = 120.0, every: float = 1.0) -> bool:
    """Wait until Label Studio has saved the prediction /predict answered for ``task_id`` (the answer's
    last: it saves them in order, one by one on sqlite, in one transaction on PostgreSQL). Until then it
    is writing the answer inside the Retrieve button's wait, and the job's own writes beside it (each
    recounting the project's tasks on a stock Label Studio) slowed that save 3x. True once saved; False
    after ``limit`` seconds or an error (the job goes on: a slow save must not stall the labeling)."""
    until = time.monotonic() + limit
    while time.monotonic() < until:
        try:
            if any(p["model_version"] == version for p in api.task_predictions(task_id)):
                return True
        except Exception as exc:  # noqa: BLE001 - Label Studio busy or gone: labeling goes on without the wait
            log.info("could not see whether Label Studio saved task %s's prediction: %s", task_id, exc)
            return False
        time.sleep(every)
    return False


class LabelJobs:
    """Starts labeling jobs and knows which task ids a running job owns (so /predict leaves them)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._claims: dict[str, set[int]] = {}  # project -> task ids a running labeling job owns
        # project -> the follow-up job (queued, visible at /jobs) for what /predict handed over while the
        # project's job ran: its id, task ids and the judge calls still in flight
        self._pending: dict[str, tuple[int, set[int], list[Any]]] = {}

    def claimed(self, pid: str) -> set[int]:
        with self._lock:
            return set(self._claims.get(pid, ()))

    def start(self, project: int, *, sample: int | None = None, concurrency: int = 8,
              overrides: dict | None = None, batch_api: bool = False, poll_interval: float = 30.0,
              max_cost: float | None = None, task_ids: Sequence[int] | None = None, reason: str | None = None,
              wait_for: Sequence[Any] = (), after_saved: tuple[int, str] | None = None) -> dict:
        """Bulk-label a project in the background; status is readable at /jobs/<id>.
        One labeling job per project at a time: a second request returns the running one.
        ``task_ids``: only these tasks (what /predict had no time for); they are claimed, so /predict
        does not answer them too.
        ``batch_api``: through one OpenAI Batch API batch (its id and status show in the progress)."""
        self.services.require_labelstudio("labeling jobs")
        store, settings = self.services.store, self.services.settings
        pid = str(project)
        queued = settings.redis_url is not None and task_ids is None
        with self._lock:
            running = [j for j in store.jobs(pid, "label") if j["status"] in ("queued", "running")
                       and (j["id"] in self._live or (queued and (j.get("progress") or {}).get("queue") == "rq"))]
            if running and task_ids is not None and running[0]["id"] in self._live:
                # handed over while this project's job runs: a follow-up job, queued now (so /jobs shows it
                # and why it waits), runs when that one ends; never dropped
                return self._follow_up(pid, running[0]["id"], task_ids, wait_for)
            if running:
                return running[0]
            job_id = store.create_job(pid, "label", owner=None if queued else process_owner())
            if not queued:
                self._live.add(job_id)
            if task_ids is not None:
                self._claims.setdefault(pid, set()).update(task_ids)
        if reason:
            store.update_job(job_id, progress={"reason": reason, "done": 0, "total": len(task_ids or ())})
        kwargs: dict[str, Any] = {"overrides": overrides, "sample": sample, "concurrency": concurrency, "batch_api": batch_api,
                  "poll_interval": poll_interval, "max_cost": max_cost, "task_ids": task_ids,
                  **({"after_saved": list(after_saved)} if after_saved else {})}
        if queued:
            store.update_job(job_id, progress={"queue": "rq", **({"reason": reason} if reason else {})})
            try:
                self._enqueue(int(project), job_id, kwargs, reason)
            except Exception as exc:  # Redis down or unreachable: no orphan "queued" job, and say so
                from redis.exceptions import RedisError

                if not isinstance(exc, RedisError):
                    raise
                why = f"could not queue the labeling job on Redis (REDIS_URL={settings.redis_url}): {exc}"
                store.update_job(job_id, status="failed", error=redact(why)[:500])
                raise RuntimeError(redact(why)[:300]) from None
            return store.job(job_id) or {}

        self._launch(project, job_id, kwargs, reason, wait_for)
        return store.job(job_id) or {}

    def _follow_up(self, pid: str, running: int, task_ids: Sequence[int], wait_for: Sequence[Any]) -> dict:
        """Called under the lock: the project's queued follow-up job, created or grown by these tasks."""
        store = self.services.store
        self._claims.setdefault(pid, set()).update(task_ids)
        if pid not in self._pending:
            self._pending[pid] = (store.create_job(pid, "label", owner=process_owner()), set(), [])
        job_id, ids, calls = self._pending[pid]
        ids.update(task_ids)
        calls.extend(wait_for)
        store.update_job(job_id, progress={
            "reason": f"Retrieve predictions: {len(ids)} tasks handed over while job {running} ran",
            "done": 0, "total": len(ids), "waiting_for": f"labeling job {running} of this project to end"})
        return store.job(job_id) or {}

    def _launch(self, project: int, job_id: int, kwargs: dict, reason: str | None, wait_for: Sequence[Any]) -> None:
        """Run the job on a thread; when it ends, its project's follow-up job (if any) starts."""
        pid, task_ids = str(project), kwargs.get("task_ids")

        def run() -> None:
            try:
                run_label_job(self.services, project, job_id, reason=reason, wait_for=wait_for, **kwargs)
            finally:
                with self._lock:
                    self._live.discard(job_id)
                    if task_ids is not None:
                        self._claims[pid] = self._claims.get(pid, set()) - set(task_ids)
                    later = self._pending.pop(pid, None)
                    if later:
                        self._live.add(later[0])
                if later:  # tasks handed over while this job ran
                    follow, ids, calls = later
                    why = f"Retrieve predictions: {len(ids)} tasks handed over while job {job_id} ran"
                    self._launch(project, follow, {**kwargs, "task_ids": sorted(ids), "sample": None, "after_saved": None,
                                                   "overrides": None, "max_cost": None, "batch_api": False},
                                 why, calls)

        threading.Thread(target=run, name=f"labeljudge-label-{job_id}", daemon=True).start()

    def _enqueue(self, project: int, job_id: int, kwargs: dict, reason: str | None) -> None:
        self.services.rq_queue().enqueue(RQ_LABEL, project, job_id, kwargs, reason, job_id=f"label-{project}-{job_id}",
                      job_timeout=24 * 3600, result_ttl=86400, failure_ttl=86400)

    def hand_over(self, state: ProjectState, task_ids: list[int], running: Sequence[Any] = (),
                  last_answered: int | None = None) -> None:
        """The tasks /predict had no time for go to a background labeling job of their project, which
        writes their predictions through Label Studio's API (the runner, its lease and the cache)."""
        budget = self.services.settings.predict_budget
        if self.services.labelstudio() is None:
            log.warning("project %s: /predict ran out of its %.0f s budget with %d tasks left; without "
                        "LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY they cannot be labeled in the background, so "
                        "Label Studio will ask again", state.project_id, budget, len(task_ids))
            return
        cap = self.services.settings.predict_max_answers
        job = self.start(int(state.project_id), task_ids=task_ids,
                         concurrency=self.services.settings.predict_concurrency, wait_for=running,
                         after_saved=(last_answered, state.version) if last_answered is not None else None,
                         reason=f"Retrieve predictions: {len(task_ids)} tasks left by /predict (its "
                                f"{budget:.0f} s budget, at most {cap} answers)")
        log.warning("project %s: /predict answered what was ready within its %.0f s budget and %d answers; %d "
                    "more tasks go to labeling job %s", state.project_id, budget, cap, len(task_ids), job["id"])

