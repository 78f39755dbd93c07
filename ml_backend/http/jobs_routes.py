"""Jobs over HTTP: start a labeling job (POST /jobs/label) or an alignment job (POST /jobs/align), read
any job's status and progress, cancel an alignment job."""
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


@jobs.post("/jobs/align")
def start_align_job() -> Any:
    backend, data = current_app.extensions["labeljudge"], body()
    try:
        project, kwargs = _align_job_args(data)
    except ValueError as exc:
        return jsonify(error=redact(str(exc))), 400
    try:
        job, new = backend.align_jobs.start(project, **kwargs)
    except RuntimeError as exc:
        return jsonify(error=redact(str(exc))), 503
    return jsonify(job), 202 if new else 200


@jobs.post("/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int) -> Any:
    backend = current_app.extensions["labeljudge"]
    job = backend.store.job(job_id) if 0 < job_id < 2**63 else None
    if job is None:
        return jsonify(error=f"no job {job_id}"), 404
    if job["kind"] != "align":
        return jsonify(error=f"job {job_id} is a {job['kind']} job: only alignment jobs can be cancelled"), 400
    if not backend.align_jobs.cancel(job_id):
        return jsonify(error=f"job {job_id} is not running in this process ({job['status']})"), 409
    return jsonify(job={**job, "cancel_requested": True}), 202


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
    if kind not in (None, "label", "train", "align"):
        return jsonify(error="'kind' must be label, train or align"), 400
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


def _number(data: dict, key: str, default: float | None, low: float, high: float, *, integer: bool = False) -> Any:
    value = data.get(key, default)
    if value is None and default is None:  # optional: null is "no limit"
        return None
    kinds = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kinds) or not low <= value <= high or value != value:
        raise ValueError(f"'{key}' must be {'an integer' if integer else 'a number'} from {low:g} to {high:g}")
    return value


def _align_job_args(data: dict) -> tuple[int, dict]:
    """POST /jobs/align's body as align_project's arguments; ValueError naming the bad field."""
    project = data.get("project")
    if isinstance(project, bool) or not isinstance(project, int) or not 0 < project < 2**63:
        raise ValueError("'project' (a positive integer Label Studio project id) is required")
    unknown = set(data) - {"project", "holdout_share", "seed", "max_calls", "max_cost", "min_gain", "target_gain",
                           "promote", "dry_run", "concurrency", "rpm"}
    if unknown:
        raise ValueError(f"unknown field {sorted(unknown)[0][:60]!r} in the alignment job request")
    for flag in ("promote", "dry_run"):
        if not isinstance(data.get(flag, flag == "promote"), bool):
            raise ValueError(f"'{flag}' must be true or false")
    share = _number(data, "holdout_share", 0.5, 0.05, 0.95)
    return project, {
        "holdout_share": float(share), "seed": _number(data, "seed", 0, 0, 2**31, integer=True),
        "max_calls": _number(data, "max_calls", None, 1, 10**9, integer=True),
        "max_cost": _number(data, "max_cost", None, 1e-9, 1e9),
        "min_gain": float(_number(data, "min_gain", 0.0, 0.0, 0.99)),
        "target_gain": float(_number(data, "target_gain", 0.05, 0.005, 0.99)),
        "promote": data.get("promote", True), "dry_run": data.get("dry_run", False),
        "concurrency": _number(data, "concurrency", 8, 1, MAX_LABEL_JOB_CONCURRENCY, integer=True),
        "rpm": _number(data, "rpm", None, 1e-3, 1e9)}
