"""What every request goes through: authentication, the JSON body, JSON errors, and the numbers
/metrics shows. Every error is ``{"error": "..."}``: a 4xx for the caller's mistakes, a 5xx only for ours."""
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

from ..redact import redact
from ..settings import Settings
from ..store import Store

log = logging.getLogger(__name__)
OPEN_PATHS = {"/health", "/openapi.json"}  # "/" answers like /health but, like the docs say (Security), only with auth


def install(app: Flask, settings: Settings, stats: Stats) -> None:
    """Authentication (HTTP Basic, or the webhook secret on /webhook), body limits, timing and JSON errors."""

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


def _same(given: str, expected: str) -> bool:
    """Constant-time comparison that also takes non-ASCII input (hmac's str form refuses it)."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _basic_ok(header: str | None, settings: Settings) -> bool:
    if not header or not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    return _same(user, settings.basic_auth_user or "") & _same(password, settings.basic_auth_pass or "")


class Stats:
    """Latency samples and counters for /metrics (kept in memory, last 1,000 per route)."""

    def __init__(self, store: Store) -> None:
        self._store = store
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
        out["quarantine"] = self._store.quarantined()
        return out
