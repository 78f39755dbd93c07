"""Jobs over HTTP: start a labeling job (POST /jobs/label), and read any job's status and progress."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from ..redact import redact
from ..settings import ConfigError, ProjectConfig
from .guards import body

jobs = Blueprint("jobs", __name__)
MAX_LABEL_JOB_CONCURRENCY = 256


@jobs.post("/jobs/label")
def start_label_job() -> Any:
    backend, data = current_app.extensions["labeljudge"], body()
    try:
        job_args = _label_job_args(data)
        ProjectConfig.resolve(backend.settings, job_args["overrides"])  # refuse a bad override now, not in the job
    except (ValueError, ConfigError) as exc:
        return jsonify(error=redact(str(exc))), 400
    try:
        job = backend.start_label_job(data["project"], **job_args)
    except RuntimeError as exc:
        return jsonify(error=redact(str(exc))), 503
    return jsonify(job), 202


@jobs.get("/jobs/<int:job_id>")
def job_status(job_id: int) -> Any:
    job = current_app.extensions["labeljudge"].store.job(job_id) if 0 < job_id < 2**63 else None
    return (jsonify(job), 200) if job else (jsonify(error=f"no job {job_id}"), 404)


@jobs.get("/jobs")
def list_jobs() -> Any:
    project, kind = request.args.get("project"), request.args.get("kind")
    if len(request.args.getlist("project")) > 1 or len(request.args.getlist("kind")) > 1:
        return jsonify(error="give 'project' and 'kind' at most once each"), 400
    if project is not None and not (project.isascii() and project.isdigit() and 0 < int(project) < 2**63):
        return jsonify(error=f"'project' must be a positive integer id, got {project[:40]!r}"), 400
    if kind not in (None, "label", "train"):
        return jsonify(error="'kind' must be label or train"), 400
    return jsonify(jobs=current_app.extensions["labeljudge"].store.jobs(project, kind))


def _label_job_args(data: dict) -> dict:
    """POST /jobs/label's body as start_label_job's arguments; ValueError naming the bad field."""
    project = data.get("project")
    if isinstance(project, bool) or not isinstance(project, int) or project < 1:
        raise ValueError("'project' (a positive integer Label Studio project id) is required")
    poll = data.get("poll_interval", 30.0)
    if not isinstance(data.get("batch_api", False), bool) or isinstance(poll, bool) \
            or not isinstance(poll, (int, float)) or not 0 < poll <= 86_400:
        raise ValueError("'batch_api' must be true or false and 'poll_interval' a number of seconds in (0, 86400]")
    concurrency = data.get("concurrency", 8)
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) \
            or not 1 <= concurrency <= MAX_LABEL_JOB_CONCURRENCY:
        raise ValueError(f"'concurrency' must be an integer from 1 to {MAX_LABEL_JOB_CONCURRENCY}")
    sample = data.get("sample")
    if sample is not None and (isinstance(sample, bool) or not isinstance(sample, int) or sample < 1):
        raise ValueError("'sample' must be a positive integer (or absent for every task)")
    max_cost = data.get("max_cost")
    if max_cost is not None and (isinstance(max_cost, bool) or not isinstance(max_cost, (int, float))
                                 or not 0 < max_cost < 1e9):
        raise ValueError("'max_cost' must be a positive number of dollars")
    unknown = set(data) - {"project", "poll_interval", "batch_api", "concurrency", "sample", "max_cost",
                           "prompt", "metric", "model"}
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0][:60]!r} in the labeling job request")
    overrides = {k: data.get(k) for k in ("prompt", "metric", "model") if data.get(k) is not None}
    return {"sample": sample, "concurrency": concurrency, "overrides": overrides,
            "batch_api": data.get("batch_api", False), "poll_interval": float(poll),
            "max_cost": float(max_cost) if max_cost is not None else None}
