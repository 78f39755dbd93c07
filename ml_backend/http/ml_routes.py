"""The ML-backend contract Label Studio 1.23 speaks: /health, /setup, /predict, /webhook, its legacy
/train and /job_status, plus /versions, /metrics and /openapi.json.

/health and /setup answer from memory (Label Studio waits 1 s and 3 s); /webhook stores the event and
answers at once (Label Studio calls it inside the annotator's save request).
"""
from __future__ import annotations

import time
from typing import Any

from flask import Blueprint, current_app, jsonify

from .. import __version__
from ..events import BadEvent
from ..judge.templates import TemplateError
from ..labelstudio.config import SchemaError
from ..projects import UnknownProject, project_key
from ..redact import redact
from ..settings import ConfigError
from .guards import body
from .openapi import openapi_document

ml = Blueprint("ml", __name__)
USER_ERRORS = (ConfigError, SchemaError, TemplateError, ValueError)  # a 400 with the message


def backend():
    return current_app.extensions["labeljudge"]


def stats():
    return current_app.extensions["labeljudge.stats"]


@ml.get("/")
@ml.get("/health")
def health() -> Any:
    b = backend()
    return jsonify(status="UP", model_class="LabelJudge", version=__version__,
                   judge_provider=b.settings.judge_provider, uptime_s=round(time.time() - b.started_at, 1))


@ml.post("/setup")
def setup() -> Any:
    b, data = backend(), body()
    stats().count("setup_calls", 1)  # Label Studio re-runs /setup on many of its own calls: a storm shows here
    config = data.get("schema") if data.get("schema") is not None else data.get("label_config")
    try:
        state = b.setup(data.get("project"), config if config is not None else "", data.get("extra_params"))
    except USER_ERRORS as exc:
        return jsonify(error=redact(str(exc))), 400
    b.hooks.ensure_authenticated_webhook(state.project_id)
    b.hooks.show_version(state.project_id, state.version)
    return jsonify(model_version=state.version)


@ml.post("/predict")
def predict() -> Any:
    b, data = backend(), body()
    tasks = data.get("tasks")
    if not isinstance(tasks, list) or not tasks:
        return jsonify(error="'tasks' must be a non-empty list"), 400
    params = data.get("params") or {}
    label_config = data.get("label_config")
    if label_config is not None and not isinstance(label_config, str):
        return jsonify(error="'label_config' must be the project's XML label config (a string)"), 400
    project = data.get("project") or _project_of(tasks)
    try:
        response = b.predict(tasks, project=project, label_config=label_config,
                             context=params.get("context") if isinstance(params, dict) else None)
    except UnknownProject as exc:
        return jsonify(error=str(exc)), 409
    except USER_ERRORS as exc:
        return jsonify(error=redact(str(exc))), 400
    stats().count("tasks_predicted", len(tasks))
    stats().count("abstentions", sum(1 for p in response.predictions if p is None))
    state = b.state(project)
    b.hooks.show_version(state.project_id, state.version, after=5.0)  # once Label Studio has saved these
    return jsonify(response.as_json())


@ml.post("/webhook")
def webhook() -> Any:
    data = body()
    try:
        answer = backend().receive_event(data)
    except BadEvent as exc:
        stats().count("webhooks_quarantined", 1)
        return jsonify(error=f"webhook not understood (quarantined): {exc}", status="quarantined"), 422
    if answer.pop("not_found", False):  # Start Training for a project Label Studio does not have
        return jsonify(status="error", **answer), 404
    if answer.get("error"):  # Start Training that cannot run here: Label Studio shows the error on the model
        return jsonify(status="error", **answer), 503
    return jsonify(status="ok", **answer), 201


@ml.post("/train")
def train() -> Any:
    """Label Studio's legacy training call (1.23.2 sends START_TRAINING to /webhook instead, handled
    the same way): queue a run and say where to watch it. Label Studio keeps the ``job`` key."""
    b, data = backend(), body()
    project = data.get("project")
    project = project.get("id") if isinstance(project, dict) else project
    try:
        pid = project_key(project)
    except ValueError as exc:
        return jsonify(error=str(exc)), 400
    if b.labelstudio() is None:
        return jsonify(error="training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"), 503
    missing = b.learner.missing_project(pid)
    if missing:
        return jsonify(error=missing), 404
    answer = b.trainer.request(pid, "Start Training")
    return jsonify(**answer, watch=f"/jobs/{answer['job']}", report=f"/report/{pid}"), 201


@ml.post("/job_status")
def job_status_legacy() -> Any:
    """Label Studio polls a training job it was told about: ``{"job": id}``."""
    job_id = body().get("job")
    job = backend().store.job(job_id) if isinstance(job_id, int) and not isinstance(job_id, bool) \
        and 0 < job_id < 2**63 else None
    if job is None:
        return jsonify(error=f"no job {str(job_id)[:40]}"), 404
    # Label Studio's train-job statuses: it counts a job as training while it is queued or started
    status = {"running": "started"}.get(job["status"], job["status"])
    return jsonify(job=job["id"], status=status, labeljudge_status=job["status"], error=job.get("error"),
                   result=job.get("result"))


@ml.get("/openapi.json")
def openapi() -> Any:
    return jsonify(openapi_document(__version__))


@ml.get("/versions")
def versions() -> Any:
    return jsonify(model_class="LabelJudge", version=__version__, **backend().versions())


@ml.get("/metrics")
def metrics() -> Any:
    return jsonify(stats().snapshot())


def _project_of(tasks: list) -> Any:
    first = tasks[0] if tasks and isinstance(tasks[0], dict) else {}
    return first.get("project")
