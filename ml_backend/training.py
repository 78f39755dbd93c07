"""When and where the evaluator trains: one run at a time per project, bursts coalesced.

In process by default (a background thread, so no annotation save waits); with REDIS_URL the run is
queued to RQ and `labeljudge worker` (on a GPU machine, say) picks it up, sharing MODEL_DIR.
"""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from .evaluator.data import InputSpec
from .evaluator.pipeline import run_reward_training, run_training
from .evaluator.registry import Registry
from .evaluator.train import TrainConfig
from .judge.providers import scrub

log = logging.getLogger(__name__)


def train_project(backend: Any, project: int, *, progress: Callable[[dict], None] | None = None) -> dict:
    """Sync the project's labels from Label Studio, train, gate and (maybe) promote. Blocking."""
    from .reporting import project_records

    api = backend.api()
    if api is None:
        raise RuntimeError("training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    pid = str(project)
    state = backend.state(pid) if backend.store.project(pid) else None
    schema = state.schema if state is not None else None
    if schema is None:
        from .reporting import project_schema

        schema = project_schema(api, project)
    tasks, controls = project_records(api, project, schema)
    if state is not None:
        config = state.config
    else:
        from .settings import ProjectConfig

        config = ProjectConfig.resolve(backend.settings)
    spec_in = dict(config.evaluator_input)
    st = backend.settings
    cfg = TrainConfig(epochs=st.train_epochs, max_length=st.train_max_length, base_model=st.evaluator_base_model,
                      layers=st.evaluator_layers or None, precision=st.train_precision)
    registry = Registry(backend.settings.model_dir / "evaluators", pid)
    pair = schema.pair_fields()
    if pair:  # a preference config: the pairwise (reward-model) evaluator
        spec = InputSpec(text_b=tuple(spec_in.get("text_b") or ("messages", "input", "context")),
                         judge_weight=config.judge_weight)
        result = run_reward_training(tasks, pair[0], (pair[1], pair[2]), registry, spec=spec, cfg=cfg,
                                     progress=progress)
    else:
        spec = InputSpec(text_a=tuple(spec_in.get("text_a") or ("output",)),
                         text_b=tuple(spec_in.get("text_b") or ("input", "context")),
                         positive=tuple(spec_in.get("positive") or ()), judge_weight=config.judge_weight)
        result = run_training(tasks, controls[0], registry, spec=spec, cfg=cfg, progress=progress)
    human = sum(1 for t in tasks if t["annotations"])
    backend.store.set_trained_labels(pid, human)
    backend.evaluator_changed(pid)
    return result


class TrainingScheduler:
    """``request(pid)`` starts a run, or, while one runs, asks for exactly one more afterwards."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._again: set[str] = set()
        self._jobs: dict[str, int] = {}  # project -> its latest training job
        self.runs = 0  # how many runs actually started (tests check coalescing with it)

    def request(self, pid: str, reason: str) -> dict:
        """Start a run (its job is created now, so the caller can point at it), or, while one runs,
        ask for exactly one more afterwards. Returns what a person needs: the job and its status."""
        store = self.backend.store
        with self._lock:
            if pid in self._running:
                self._again.add(pid)
                return {"job": self._jobs.get(pid), "status": "running",
                        "message": f"training of project {pid} is already running (job {self._jobs.get(pid)}); "
                                   f"one more run with the newest labels follows it"}
            self._running.add(pid)
            job = store.create_job(pid, "train")
            self._jobs[pid] = job
        store.update_job(job, progress={"reason": reason})
        if self.backend.settings.redis_url:
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
                    job = self.backend.store.create_job(pid, "train")
                    self._jobs[pid] = job
                    continue
                self._running.discard(pid)
                return

    def _run_once(self, pid: str, reason: str, job: int) -> None:
        store = self.backend.store
        self.runs += 1
        store.update_job(job, status="running", progress={"reason": reason})
        try:
            result = train_project(self.backend, int(pid),
                                   progress=lambda row: store.update_job(job, progress={"reason": reason, **row}))
            store.update_job(job, status="finished", result=result)
        except Exception as exc:
            log.exception("training project %s failed", pid)
            store.update_job(job, status="failed", error=scrub(str(exc), self.backend._secrets())[:500])

    def _enqueue_rq(self, pid: str, reason: str, job: int, attempt: int = 0) -> None:
        """Queue the run on RQ. While Redis is down the request is kept (the store job stays queued,
        saying so) and retried every few seconds, so training is queued once Redis is back."""
        from redis.exceptions import RedisError

        try:
            self._enqueue_rq_once(pid, reason, job)
        except RedisError as exc:
            delay = min(60.0, 2.0 * (attempt + 1))
            log.warning("could not queue training of project %s on Redis (%s); retrying in %.0f s", pid, exc, delay)
            self.backend.store.update_job(job, progress={"reason": reason, "waiting_for": f"Redis: {exc}"[:200]})
            timer = threading.Timer(delay, self._enqueue_rq, args=(pid, reason, job, attempt + 1))
            timer.daemon = True
            timer.start()

    def _enqueue_rq_once(self, pid: str, reason: str, job: int) -> None:
        from redis import Redis
        from rq import Queue

        queue = Queue("labeljudge", connection=Redis.from_url(self.backend.settings.redis_url,
                                                              socket_connect_timeout=2, socket_timeout=5))
        # one queued run per project: RQ drops a job id that is already queued
        queue.enqueue("ml_backend.training.rq_train", int(pid), reason, job, job_id=f"train-{pid}",
                      job_timeout=3600, result_ttl=86400, failure_ttl=86400)


def rq_train(project: int, reason: str, job: int | None = None) -> dict:
    """The RQ job: a worker process builds its own backend from its environment (same MODEL_DIR) and
    reports on the job the backend created."""
    from .backend import LabelJudgeBackend
    from .settings import Settings

    import os
    import socket

    backend = LabelJudgeBackend(Settings.from_env())
    store = backend.store
    if job is None:
        return train_project(backend, project)
    # who runs it: if this worker is killed, the next one to start marks the job failed (reap_dead_jobs)
    me = {"reason": reason, "worker": f"{socket.gethostname()}:{os.getpid()}"}
    store.update_job(job, status="running", progress=me)
    try:
        result = train_project(backend, project, progress=lambda row: store.update_job(job, progress={**me, **row}))
    except Exception as exc:
        store.update_job(job, status="failed", error=scrub(str(exc), backend._secrets())[:500])
        raise
    store.update_job(job, status="finished", result=result)
    return result


def reap_dead_jobs(store: Any) -> list[int]:
    """Training jobs shown as running by a worker of this host that no longer exists (killed mid-run):
    marked failed with that reason, so nobody waits on them. The registry and the served version were
    never touched (a run commits and promotes only at its end). Returns the job ids."""
    import socket

    from .store import process_alive

    reaped = []
    for job in store.jobs(kind="train"):
        worker = (job.get("progress") or {}).get("worker")
        if job["status"] != "running" or not worker:
            continue
        host, _, pid = worker.partition(":")
        if host != socket.gethostname() or not pid.isdigit():
            continue
        if process_alive(int(pid)):
            continue
        store.update_job(job["id"], status="failed",
                         error=f"the worker running it (pid {pid} on {host}) died before it finished; nothing was "
                               "promoted. Start Training again to retry")
        reaped.append(job["id"])
    return reaped
