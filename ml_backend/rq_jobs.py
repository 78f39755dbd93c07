"""What an RQ worker runs (``labeljudge worker``): each job builds the services from the worker's own
environment (the same MODEL_DIR as the backend) and runs the workflow."""
from __future__ import annotations

from .services import Services
from .settings import Settings
from .store import process_owner
from .workflows.label_jobs import run_label_job
from .workflows.training import run_train_job


def rq_train(project: int, reason: str, job: int | None = None) -> dict:
    return run_train_job(Services.build(Settings.from_env()), project, reason, job)


def rq_label(project: int, job: int, kwargs: dict, reason: str | None = None) -> dict:
    """A labeling job; a failure is on the store job (its error), and raised so RQ records it too."""
    services = Services.build(Settings.from_env())
    result = run_label_job(services, project, job, reason=reason, worker=process_owner(), **kwargs)
    if result is None:
        raise RuntimeError(f"labeling job {job} failed: {(services.store.job(job) or {}).get('error')}")
    return result
