"""When and where the evaluator trains: one run at a time per project, bursts coalesced.

In process by default (a background thread, so no annotation save waits); with REDIS_URL the run is
queued to RQ and `labeljudge worker` (on a GPU machine, say) picks it up, sharing MODEL_DIR.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from ..evaluator.data import InputSpec
from ..evaluator.pipeline import run_reward_training, run_training
from ..evaluator.results import TrainingResult
from ..evaluator.tracking import Tracking
from ..evaluator.train import TrainConfig
from ..labelstudio import describe_error, is_labelstudio_error
from ..labelstudio.sync import sync_annotations
from ..redact import redact
from ..services import Services
from ..settings import ProjectConfig
from ..store import Busy, Store, owner_gone, process_owner
from .records import project_schema, records_from_export

log = logging.getLogger(__name__)
RQ_TRAIN = "ml_backend.rq_jobs.rq_train"  # by name: the worker imports it, this module does not


def train_project(services: Services, project: int, *, progress: Callable[[dict], None] | None = None,
                  wait: Callable[[str], None] | None = None) -> dict:
    """One run per project at a time across every process sharing the store (backend threads, RQ
    workers, the CLI): ``wait(why)`` waits for another run to end (called while waiting); without it
    a run already going raises Busy. Then reads the project from Label Studio once (its annotations
    synced into the store from the same export), trains, gates and (maybe) promotes. Blocking."""
    what = f"training of project {project}"
    store = services.store
    lease = store.waiting_lease(f"train:{project}", what, on_wait=wait) if wait else store.lease(f"train:{project}", what)
    with lease:
        started = time.time()
        result = _train(services, project, progress)
    return {**result.as_dict(), "started_at": round(started, 3), "finished_at": round(time.time(), 3)}


def _train(services: Services, project: int, progress: Callable[[dict], None] | None) -> TrainingResult:
    api = services.require_labelstudio("training")
    pid = str(project)
    state = services.projects.state(pid) if services.store.project(pid) else None
    schema = state.schema if state is not None else project_schema(api, project)
    config = state.config if state is not None else ProjectConfig.resolve(services.settings)
    export = api.project_tasks(project, with_predictions=True)  # one export: synced, then trained on
    sync_annotations(services.store, project, schema, [t for t in export if t["annotations"]])
    tasks, controls = records_from_export(export, schema, api.user_emails())
    services.projects.labels_changed(pid)
    st = services.settings
    cfg = TrainConfig(epochs=st.train_epochs, max_length=st.train_max_length, base_model=st.evaluator_base_model,
                      layers=st.evaluator_layers or None, precision=st.train_precision, soup=st.train_soup)
    registry = services.evaluators.registry(pid)
    pair = schema.pair_fields()
    spec = InputSpec.from_params(config.evaluator_input, pairwise=pair is not None, judge_weight=config.judge_weight)
    tracking = Tracking(st.tracking) if st.tracking else None
    if pair:  # a preference config: the pairwise (reward-model) evaluator
        result = run_reward_training(tasks, pair[0], (pair[1], pair[2]), registry, spec=spec, cfg=cfg,
                                     progress=progress, tracking=tracking)
    else:
        result = run_training(tasks, controls[0], registry, spec=spec, cfg=cfg, progress=progress,
                              cascade_target=config.cascade_target, tracking=tracking)
    services.store.set_trained_labels(pid, services.store.count_labeled_tasks(pid))
    services.evaluators.changed(pid)
    return result


def log_job_failure(what: str, exc: BaseException) -> None:
    """An expected failure (Label Studio refused or could not be reached, a run already going) is one
    line; anything else keeps its stack trace for whoever fixes it."""
    if is_labelstudio_error(exc) or isinstance(exc, Busy):
        log.warning("%s failed: %s", what, job_error(exc))
    else:
        log.error("%s failed", what, exc_info=exc)


def job_error(exc: BaseException) -> str:
    """Why a job failed, in one line: a Label Studio error as its status and body (never the SDK's
    message, which carries every response header), anything else as its type and message."""
    if is_labelstudio_error(exc):
        return redact(describe_error(exc))[:500]
    return redact(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))[:500]


class TrainingScheduler:
    """``request(pid)`` starts a run, or, while one runs, asks for exactly one more afterwards."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._jobs: dict[str, int] = {}  # project -> its latest training job
        self.runs = 0  # how many runs actually started (tests check coalescing with it)

    def request(self, pid: str, reason: str) -> dict:
        """Start a run (its job is created now, so the caller can point at it), or, while one runs,
        ask for exactly one more afterwards. Returns what a person needs: the job and its status."""
        store = self.services.store
        with self._lock:
            if pid in self._running:
                self._again.add(pid)
                return {"job": self._jobs.get(pid), "status": "running",
                        "message": f"training of project {pid} is already running (job {self._jobs.get(pid)}); "
                                   f"one more run with the newest labels follows it"}
            self._running.add(pid)
            job = store.create_job(pid, "train", owner=None if self.services.settings.redis_url else process_owner())
            self._jobs[pid] = job
        store.update_job(job, progress={"reason": reason})
        if self.services.settings.redis_url:
            self._enqueue_rq(pid, reason, job)
            with self._lock:
                self._running.discard(pid)
        else:
            threading.Thread(target=self._loop, args=(pid, reason, job), name=f"labeljudge-train-{pid}",
                             daemon=True).start()
        return {"job": job, "status": "queued",
                "message": f"training of project {pid} queued as job {job}: watch GET /jobs/{job}; the outcome "
                           f"(promoted or not, and why) shows on /report/{pid}"}

    def busy(self, pid: str) -> bool:
        with self._lock:
            return pid in self._running

    def _loop(self, pid: str, reason: str, job: int) -> None:
        while True:
            self._run_once(pid, reason, job)
            with self._lock:
                if pid in self._again:
                    self._again.discard(pid)
                    reason = "labels arrived during the previous run"
                    job = self.services.store.create_job(pid, "train", owner=process_owner())
                    self._jobs[pid] = job
                    continue
                self._running.discard(pid)
                return

    def _run_once(self, pid: str, reason: str, job: int) -> None:
        store = self.services.store
        self.runs += 1
        store.update_job(job, status="running", progress={"reason": reason})
        try:
            result = train_project(self.services, int(pid),
                                   progress=lambda row: store.update_job(job, progress={"reason": reason, **row}),
                                   wait=lambda why: store.update_job(job, progress={"reason": reason, "waiting_for": why[:200]}))
            store.update_job(job, status="finished", result=result)
        except Exception as exc:
            log_job_failure(f"training of project {pid}", exc)
            store.update_job(job, status="failed", error=job_error(exc))

    def _enqueue_rq(self, pid: str, reason: str, job: int, attempt: int = 0) -> None:
        """Queue the run on RQ. While Redis is down the request is kept (the store job stays queued,
        saying so) and retried every few seconds, so training is queued once Redis is back."""
        from redis.exceptions import RedisError

        try:
            self._enqueue_rq_once(pid, reason, job)
        except RedisError as exc:
            delay = min(60.0, 2.0 * (attempt + 1))
            log.warning("could not queue training of project %s on Redis (%s); retrying in %.0f s", pid, exc, delay)
            self.services.store.update_job(job, progress={"reason": reason, "waiting_for": f"Redis: {exc}"[:200]})
            timer = threading.Timer(delay, self._enqueue_rq, args=(pid, reason, job, attempt + 1))
            timer.daemon = True
            timer.start()

    def _enqueue_rq_once(self, pid: str, reason: str, job: int) -> None:
        queue = self.services.rq_queue()
        # one RQ job per store job (a reused id would let RQ overwrite a running job's record); runs of one
        # project never overlap: each takes the project's training lease in the store, and waits for it
        queue.enqueue(RQ_TRAIN, int(pid), reason, job, job_id=f"train-{pid}-{job}",
                      job_timeout=3600, result_ttl=86400, failure_ttl=86400)


def run_train_job(services: Services, project: int, reason: str, job: int | None = None) -> dict:
    """A queued run, in a worker process: reports on the job the backend created, naming this process,
    so if it is killed the next worker to start marks the job failed (``reap_dead_jobs``)."""

    store = services.store
    if job is None:
        return train_project(services, project)
    me = {"reason": reason, "worker": process_owner()}
    store.own_job(job, me["worker"])
    store.update_job(job, status="running", progress=me)
    try:
        result = train_project(services, project, progress=lambda row: store.update_job(job, progress={**me, **row}),
                               wait=lambda why: store.update_job(job, progress={**me, "waiting_for": why[:200]}))
    except Exception as exc:
        store.update_job(job, status="failed", error=job_error(exc))
        raise
    store.update_job(job, status="finished", result=result)
    return result


def reap_dead_jobs(store: Store) -> list[int]:
    """Jobs shown as queued or running by a process of this host that no longer exists (SIGKILLed,
    OOM-killed, a crashed server or worker): marked failed with that reason, so nobody waits on them
    and the report tells the truth. A training run never touched the registry or the served version
    (it commits and promotes only at its end); a labeling run's written predictions stand and a re-run
    continues. A job waiting in RQ's queue has no owner yet and is left alone. Returns the job ids."""
    reaped = []
    for job in store.unfinished_jobs():
        owner = job.get("owner") or (job.get("progress") or {}).get("worker")
        if not owner or not owner_gone(owner):
            continue
        host, _, rest = owner.partition(":")
        pid = rest.partition(":")[0]
        after = "nothing was promoted. Start Training again to retry" if job["kind"] == "train" else \
            "the predictions it wrote stand; start the job again to label the rest"
        store.update_job(job["id"], status="failed",
                         error=f"the process running it (pid {pid} on {host}) died before it finished "
                               f"(killed or crashed) while it was {job['status']}; {after}")
        reaped.append(job["id"])
    return reaped
