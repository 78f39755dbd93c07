"""What an RQ worker runs (``labeljudge worker``): each job builds the services from the worker's own
environment (the same MODEL_DIR as the backend) and runs the workflow."""
from __future__ import annotations

from .services import Services
from .settings import Settings
from .workflows.training import run_train_job


def rq_train(project: int, reason: str, job: int | None = None) -> dict:
    return run_train_job(Services.build(Settings.from_env()), project, reason, job)
