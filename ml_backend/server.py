"""Flask app factory: the ML-backend HTTP contract Label Studio 1.23 speaks, auth and JSON errors.

/health and /setup answer from memory (Label Studio waits 1 s and 3 s); /webhook stores the event and
answers at once (Label Studio calls it inside the annotator's save request); every error is a JSON body
``{"error": "..."}`` with a 4xx for the caller's mistakes and a 5xx only for ours.
"""
from __future__ import annotations

import base64
import hmac
import json
import logging
import statistics
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException

from . import __version__
from .backend import LabelJudgeBackend, UnknownProject, project_key
from .events import BadEvent
from .judge.templates import TemplateError
from .openapi import openapi_document
from .redact import redact
from .schema import SchemaError
from .settings import ConfigError, ProjectConfig, Settings

log = logging.getLogger(__name__)
OPEN_PATHS = {"/health", "/", "/openapi.json"}
# The report is self-contained (inline styles, plots as data: URIs): nothing else may load or run.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; " \
             "frame-ancestors 'self'"
MAX_LABEL_JOB_CONCURRENCY = 256


def create_app(settings: Settings | None = None, backend: LabelJudgeBackend | None = None,
               *, start: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    backend = backend or LabelJudgeBackend(settings)
    app = Flask("labeljudge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    app.extensions["labeljudge"] = backend
    stats = _Stats(backend)
    if start:
        backend.start()

    @app.before_request
    def _auth() -> Any:
        g.t0 = time.perf_counter()
        if request.path == "/webhook":  # webhooks are small; a 50 MB one is refused before it is read
            request.max_content_length = settings.max_webhook_bytes
        if not settings.basic_auth_user or request.path in OPEN_PATHS:
            return None
        if _basic_ok(request.headers.get("Authorization"), settings):
            return None
        if request.path == "/webhook" and settings.webhook_secret and _same(
                request.headers.get("X-Webhook-Secret", ""), settings.webhook_secret):
            return None
        resp = jsonify(error="authentication required (HTTP Basic, as set on the ML connection)")
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Basic realm="labeljudge"'
        return resp

    @app.after_request
    def _timing(resp: Response) -> Response:
        if request.path in ("/predict", "/webhook") and hasattr(g, "t0"):
            stats.add(request.path, time.perf_counter() - g.t0)
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if exc.code == 413:
            limit = settings.max_webhook_bytes if request.path == "/webhook" else settings.max_request_bytes
            return jsonify(error=f"request body too large: {request.path} accepts at most {limit:,} bytes"), 413
        resp = jsonify(error=redact(exc.description or exc.name))
        resp.status_code = exc.code or 500
        for name, value in exc.get_headers():  # e.g. a 405's Allow: what the client may do instead
            if name.lower() != "content-type":
                resp.headers[name] = value
        return resp

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        log.exception("unhandled error on %s", request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}: {redact(str(exc))[:300]}"), 500

    def body() -> dict:
        """The request's JSON object; a 400 naming the problem for anything else (bad JSON, nesting
        deeper than the parser takes, bytes that are not UTF-8, a list where an object belongs)."""
        raw = request.get_data(cache=True)
        try:
            data = json.loads(raw) if raw else None
        except RecursionError:
            raise BadRequest("request body is nested too deeply to parse") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise BadRequest(f"request body is not valid JSON: {str(exc)[:120]}") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        return data

    @app.get("/")
    @app.get("/health")
    def health() -> Any:
        return jsonify(status="UP", model_class="LabelJudge", version=__version__,
                       judge_provider=settings.judge_provider,
                       uptime_s=round(time.time() - backend.started_at, 1))

    @app.post("/setup")
    def setup() -> Any:
        data = body()
        config = data.get("schema") if data.get("schema") is not None else data.get("label_config")
        try:
            state = backend.setup(data.get("project"), config if config is not None else "",
                                  data.get("extra_params"))
        except (ConfigError, SchemaError, TemplateError, ValueError) as exc:
            return jsonify(error=redact(str(exc))), 400
        _ensure_authenticated_webhook(backend, settings, state.project_id)
        _show_version(backend, state.project_id, state.version)
        return jsonify(model_version=state.version)

    @app.post("/predict")
    def predict() -> Any:
        data = body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            return jsonify(error="'tasks' must be a non-empty list"), 400
        params = data.get("params") or {}
        label_config = data.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            return jsonify(error="'label_config' must be the project's XML label config (a string)"), 400
        try:
            results = backend.predict(tasks, project=data.get("project") or _project_of(tasks),
                                      label_config=label_config,
                                      context=params.get("context") if isinstance(params, dict) else None)
        except UnknownProject as exc:
            return jsonify(error=str(exc)), 409
        except (ConfigError, SchemaError, TemplateError, ValueError) as exc:
            return jsonify(error=redact(str(exc))), 400
        stats.count("tasks_predicted", len(tasks))
        stats.count("abstentions", sum(1 for r in results if not r))
        version = backend.state(data.get("project") or _project_of(tasks)).version
        return jsonify(results=results, model_version=version)

    @app.post("/webhook")
    def webhook() -> Any:
        data = body()
        try:
            event_id = backend.record_event(data)
        except BadEvent as exc:
            stats.count("webhooks_quarantined", 1)
            return jsonify(error=f"webhook not understood (quarantined): {exc}", status="quarantined"), 422
        return jsonify(status="ok", event_id=event_id), 201

    @app.get("/report/<int:project>")
    def report(project: int) -> Any:
        """The accuracy report as HTML (default) or JSON (?format=json); needs Label Studio's API."""
        ls_url = request.args.get("ls_url")
        if ls_url is not None and not _http_url(ls_url):
            return jsonify(error="'ls_url' must be an http:// or https:// URL of Label Studio"), 400
        if request.args.get("format") not in (None, "json", "html"):
            return jsonify(error="'format' must be json or html"), 400
        if project < 1:
            return jsonify(error="project must be a positive integer id"), 400
        api = backend.api()
        if api is None:
            return jsonify(error="the report needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"), 503
        from .labelstudio import describe_error
        from .quality.html import render_html
        from .reporting import project_report

        try:
            rep = project_report(api, backend.store, project, public_url=ls_url)
        except Exception as exc:  # Label Studio's answer (no such project, no access) is the user's to see
            from label_studio_sdk.core.api_error import ApiError

            if isinstance(exc, ApiError) and exc.status_code in (401, 403, 404):
                return jsonify(error=f"project {project}: {describe_error(exc)}"), 404
            raise
        if request.args.get("format") == "json":
            return jsonify(rep)
        resp = Response(render_html(rep, title=f"LabelJudge report: project {project}"), mimetype="text/html")
        resp.headers["Content-Security-Policy"] = REPORT_CSP
        return resp

    @app.post("/jobs/label")
    def start_label_job() -> Any:
        data = body()
        try:
            job_args = _label_job_args(data)
            ProjectConfig.resolve(settings, job_args["overrides"])  # refuse a bad override now, not in the job
        except (ValueError, ConfigError) as exc:
            return jsonify(error=redact(str(exc))), 400
        try:
            job = backend.start_label_job(data["project"], **job_args)
        except RuntimeError as exc:
            return jsonify(error=redact(str(exc))), 503
        return jsonify(job), 202

    @app.post("/train")
    def train() -> Any:
        """Label Studio's legacy training call (1.23.2 sends START_TRAINING to /webhook instead, handled
        the same way): queue a run and say where to watch it. Label Studio keeps the ``job`` key."""
        data = body()
        project = data.get("project")
        project = project.get("id") if isinstance(project, dict) else project
        try:
            pid = project_key(project)
        except ValueError as exc:
            return jsonify(error=str(exc)), 400
        if backend.api() is None:
            return jsonify(error="training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"), 503
        answer = backend.trainer.request(pid, "Start Training")
        return jsonify(**answer, watch=f"/jobs/{answer['job']}", report=f"/report/{pid}"), 201

    @app.post("/job_status")
    def job_status_legacy() -> Any:
        """Label Studio polls a training job it was told about: ``{"job": id}``."""
        job_id = body().get("job")
        job = backend.store.job(job_id) if isinstance(job_id, int) and not isinstance(job_id, bool) \
            and 0 < job_id < 2**63 else None
        if job is None:
            return jsonify(error=f"no job {str(job_id)[:40]}"), 404
        return jsonify(job=job["id"], status=job["status"], error=job.get("error"), result=job.get("result"))

    @app.get("/jobs/<int:job_id>")
    def job_status(job_id: int) -> Any:
        job = backend.store.job(job_id) if 0 < job_id < 2**63 else None
        return (jsonify(job), 200) if job else (jsonify(error=f"no job {job_id}"), 404)

    @app.get("/jobs")
    def jobs() -> Any:
        project, kind = request.args.get("project"), request.args.get("kind")
        if len(request.args.getlist("project")) > 1 or len(request.args.getlist("kind")) > 1:
            return jsonify(error="give 'project' and 'kind' at most once each"), 400
        if project is not None and not (project.isascii() and project.isdigit() and 0 < int(project) < 2**63):
            return jsonify(error=f"'project' must be a positive integer id, got {project[:40]!r}"), 400
        if kind not in (None, "label", "train"):
            return jsonify(error="'kind' must be label or train"), 400
        return jsonify(jobs=backend.store.jobs(project, kind))

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_document(__version__))

    @app.get("/versions")
    def versions() -> Any:
        return jsonify(model_class="LabelJudge", version=__version__, **backend.versions())

    @app.get("/metrics")
    def metrics() -> Any:
        return jsonify(stats.snapshot())

    return app


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


def _http_url(url: str) -> bool:
    """An absolute http(s) URL with a host: nothing that a browser would run (javascript:, data:)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and len(url) <= 2000 \
        and not any(c in url for c in "\"'<>` \t\r\n")


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (hmac's str form refuses it)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _project_of(tasks: list) -> Any:
    first = tasks[0] if tasks and isinstance(tasks[0], dict) else {}
    return first.get("project")


def _basic_ok(header: str | None, settings: Settings) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return _same(user, settings.basic_auth_user or "") & _same(password, settings.basic_auth_pass or "")


_shown: dict[str, str] = {}


def _show_version(backend: LabelJudgeBackend, pid: str, version: str) -> None:
    """In the background (/setup has 3 s): the project's model version in Label Studio follows the one
    served, so the Data Manager's prediction score column and the review queue show its scores."""
    if backend.api() is None or _shown.get(pid) == version:
        return
    _shown[pid] = version

    def run() -> None:
        from .labelstudio import describe_error

        try:
            backend.api().show_model_version(int(pid), version)
        except Exception as exc:
            _shown.pop(pid, None)
            log.warning("could not set project %s's model version in Label Studio: %s", pid, describe_error(exc))

    threading.Thread(target=run, daemon=True).start()


_registered: set[tuple[str, str]] = set()
_registering = threading.Lock()


def _ensure_authenticated_webhook(backend: LabelJudgeBackend, settings: Settings, pid: str) -> None:
    """With auth on, Label Studio's auto-registered webhook gets 401s: register one that carries our
    Basic credentials (in the background: /setup must answer within 3 s). Its URL comes from
    LABELJUDGE_URL only, never from the request (a Host header would decide where our credentials
    go), and it is registered once per project and URL (two would deliver every event twice)."""
    if not (settings.basic_auth_user and settings.label_studio_url and settings.label_studio_api_key):
        return
    if not settings.backend_url:
        log.warning("auth is on but LABELJUDGE_URL is not set: not registering an authenticated webhook for "
                    "project %s (set LABELJUDGE_URL to the URL Label Studio reaches this backend at)", pid)
        return
    url = settings.backend_url.rstrip("/") + "/webhook"
    token = base64.b64encode(f"{settings.basic_auth_user}:{settings.basic_auth_pass}".encode()).decode()
    with _registering:
        if (pid, url) in _registered:
            return
        _registered.add((pid, url))

    def run() -> None:
        from .labelstudio import describe_error

        try:
            with _registering:  # one registration in flight per process: two would both see none yet
                backend.api().ensure_webhook(int(pid), url, {"Authorization": f"Basic {token}"})
        except Exception as exc:
            with _registering:
                _registered.discard((pid, url))  # try again on the next /setup
            log.warning("could not register the authenticated webhook for project %s: %s", pid, describe_error(exc))

    threading.Thread(target=run, daemon=True).start()


class _Stats:
    """Latency samples and counters for /metrics (kept in memory, last 1,000 per route)."""

    def __init__(self, backend: LabelJudgeBackend) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._lat: dict[str, deque] = {}
        self._counts: dict[str, int] = {}

    def add(self, route: str, seconds: float) -> None:
        with self._lock:
            self._lat.setdefault(route, deque(maxlen=1000)).append(seconds)
            self._counts[f"requests{route.replace('/', '_')}"] = self._counts.get(
                f"requests{route.replace('/', '_')}", 0) + 1

    def count(self, name: str, n: int) -> None:
        with self._lock:
            self._counts[name] = self._counts.get(name, 0) + n

    def snapshot(self) -> dict:
        with self._lock:
            lat = {route: {"p50_ms": round(statistics.median(v) * 1000, 2), "n": len(v)}
                   for route, v in self._lat.items() if v}
            out = {"counters": dict(self._counts), "latency": lat}
        out["quarantine"] = self._backend.store.quarantined()
        return out
