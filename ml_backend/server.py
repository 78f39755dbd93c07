"""Flask app factory: the ML-backend HTTP contract Label Studio 1.23 speaks, auth and JSON errors.

/health and /setup answer from memory (Label Studio waits 1 s and 3 s); /webhook stores the event and
answers at once (Label Studio calls it inside the annotator's save request); every error is a JSON body
``{"error": "..."}`` with a 4xx for the caller's mistakes and a 5xx only for ours.
"""
from __future__ import annotations

import base64
import hmac
import logging
import statistics
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, Response, g, jsonify, request
from werkzeug.exceptions import BadRequest, HTTPException

from . import __version__
from .backend import LabelJudgeBackend, UnknownProject
from .judge.providers import scrub
from .judge.templates import TemplateError
from .schema import SchemaError
from .settings import ConfigError, Settings

log = logging.getLogger(__name__)
OPEN_PATHS = {"/health", "/"}


def create_app(settings: Settings | None = None, backend: LabelJudgeBackend | None = None,
               *, start: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    backend = backend or LabelJudgeBackend(settings)
    app = Flask("labeljudge")
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024 * 1024
    app.extensions["labeljudge"] = backend
    stats = _Stats()
    secrets = (settings.openai_api_key, settings.label_studio_api_key, settings.basic_auth_pass,
               settings.webhook_secret)
    if start:
        backend.start()

    @app.before_request
    def _auth() -> Any:
        g.t0 = time.perf_counter()
        if not settings.basic_auth_user or request.path in OPEN_PATHS:
            return None
        if _basic_ok(request.headers.get("Authorization"), settings):
            return None
        if request.path == "/webhook" and settings.webhook_secret and hmac.compare_digest(
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
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        return jsonify(error=exc.description or exc.name), exc.code

    @app.errorhandler(Exception)
    def _crash(exc: Exception) -> Any:
        log.exception("unhandled error on %s", request.path)
        return jsonify(error=f"internal error: {type(exc).__name__}: {scrub(str(exc), secrets)[:300]}"), 500

    def body() -> dict:
        data = request.get_json(silent=True)
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
        try:
            state = backend.setup(data.get("project"), data.get("schema") or data.get("label_config") or "",
                                  data.get("extra_params"))
        except (ConfigError, SchemaError, TemplateError, ValueError) as exc:
            return jsonify(error=str(exc)), 400
        _ensure_authenticated_webhook(backend, settings, state.project_id, request.url_root)
        return jsonify(model_version=state.version)

    @app.post("/predict")
    def predict() -> Any:
        data = body()
        tasks = data.get("tasks")
        if not isinstance(tasks, list) or not tasks:
            return jsonify(error="'tasks' must be a non-empty list"), 400
        params = data.get("params") or {}
        try:
            results = backend.predict(tasks, project=data.get("project") or _project_of(tasks),
                                      label_config=data.get("label_config"),
                                      context=params.get("context") if isinstance(params, dict) else None)
        except UnknownProject as exc:
            return jsonify(error=str(exc)), 409
        except (ConfigError, SchemaError, TemplateError, ValueError) as exc:
            return jsonify(error=str(exc)), 400
        stats.count("tasks_predicted", len(tasks))
        stats.count("abstentions", sum(1 for r in results if not r))
        version = backend.state(data.get("project") or _project_of(tasks)).version
        return jsonify(results=results, model_version=version)

    @app.post("/webhook")
    def webhook() -> Any:
        data = body()
        event_id = backend.record_event(data)
        return jsonify(status="ok", event_id=event_id), 201

    @app.get("/report/<int:project>")
    def report(project: int) -> Any:
        """The accuracy report as HTML (default) or JSON (?format=json); needs Label Studio's API."""
        api = backend.api()
        if api is None:
            return jsonify(error="the report needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"), 503
        from .quality.html import render_html
        from .reporting import project_report

        rep = project_report(api, backend.store, project, public_url=request.args.get("ls_url"))
        if request.args.get("format") == "json":
            return jsonify(rep)
        return Response(render_html(rep, title=f"LabelJudge report: project {project}"), mimetype="text/html")

    @app.post("/jobs/label")
    def start_label_job() -> Any:
        data = body()
        if not isinstance(data.get("project"), int):
            return jsonify(error="'project' (an integer Label Studio project id) is required"), 400
        poll = data.get("poll_interval", 30.0)
        if not isinstance(data.get("batch_api", False), bool) or isinstance(poll, bool) \
                or not isinstance(poll, (int, float)) or poll <= 0:
            return jsonify(error="'batch_api' must be true or false and 'poll_interval' a positive number of seconds"), 400
        try:
            job = backend.start_label_job(data["project"], sample=data.get("sample"),
                                          concurrency=int(data.get("concurrency") or 8),
                                          overrides={k: data.get(k) for k in ("prompt", "metric", "model")},
                                          batch_api=data.get("batch_api", False), poll_interval=float(poll))
        except RuntimeError as exc:
            return jsonify(error=str(exc)), 503
        return jsonify(job), 202

    @app.get("/jobs/<int:job_id>")
    def job_status(job_id: int) -> Any:
        job = backend.store.job(job_id)
        return (jsonify(job), 200) if job else (jsonify(error=f"no job {job_id}"), 404)

    @app.get("/jobs")
    def jobs() -> Any:
        return jsonify(jobs=backend.store.jobs(request.args.get("project"), request.args.get("kind")))

    @app.get("/versions")
    def versions() -> Any:
        return jsonify(model_class="LabelJudge", version=__version__, **backend.versions())

    @app.get("/metrics")
    def metrics() -> Any:
        return jsonify(stats.snapshot())

    return app


def _project_of(tasks: list) -> Any:
    first = tasks[0] if tasks and isinstance(tasks[0], dict) else {}
    return first.get("project")


def _basic_ok(header: str | None, settings: Settings) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:]).decode().partition(":")
    except Exception:
        return False
    return hmac.compare_digest(user, settings.basic_auth_user or "") and \
        hmac.compare_digest(password, settings.basic_auth_pass or "")


def _ensure_authenticated_webhook(backend: LabelJudgeBackend, settings: Settings, pid: str, root: str) -> None:
    """With auth on, Label Studio's auto-registered webhook gets 401s: register one that carries our
    Basic credentials (in the background: /setup must answer within 3 s)."""
    if not (settings.basic_auth_user and settings.label_studio_url and settings.label_studio_api_key):
        return
    url = (settings.backend_url or root).rstrip("/") + "/webhook"
    token = base64.b64encode(f"{settings.basic_auth_user}:{settings.basic_auth_pass}".encode()).decode()

    def run() -> None:
        from .labelstudio import LabelStudioAPI

        try:
            api = LabelStudioAPI(settings.label_studio_url, settings.label_studio_api_key)
            api.ensure_webhook(int(pid), url, {"Authorization": f"Basic {token}"})
        except Exception as exc:
            log.warning("could not register the authenticated webhook for project %s: %s", pid,
                        scrub(str(exc), (settings.label_studio_api_key, settings.basic_auth_pass, token)))

    threading.Thread(target=run, daemon=True).start()


class _Stats:
    """Latency samples and counters for /metrics (kept in memory, last 1,000 per route)."""

    def __init__(self) -> None:
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
            return {"counters": dict(self._counts), "latency": lat}
