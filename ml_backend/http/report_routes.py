"""The accuracy report over HTTP: HTML (self-contained, served under a strict CSP) or JSON."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request

from ..labelstudio import describe_error, is_access_error
from ..quality.html import render_html
from ..workflows.reporting import project_report

report = Blueprint("report", __name__)
# The report is self-contained (inline styles, plots as data: URIs): nothing else may load or run.
REPORT_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; " \
             "frame-ancestors 'self'"


@report.get("/report/<int:project>")
def project_report_page(project: int) -> Any:
    """The accuracy report as HTML (default) or JSON (?format=json); needs Label Studio's API."""
    backend = current_app.extensions["labeljudge"]
    ls_url = request.args.get("ls_url")
    if ls_url is not None and not _http_url(ls_url):
        return jsonify(error="'ls_url' must be an http:// or https:// URL of Label Studio"), 400
    if request.args.get("format") not in (None, "json", "html"):
        return jsonify(error="'format' must be json or html"), 400
    if project < 1:
        return jsonify(error="project must be a positive integer id"), 400
    api = backend.labelstudio()
    if api is None:
        return jsonify(error="the report needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"), 503
    try:
        rep = project_report(api, backend.store, project, public_url=ls_url,
                             evaluators_dir=backend.settings.evaluators_dir, services=backend)
    except Exception as exc:  # Label Studio's answer (no such project, no access) is the user's to see
        if is_access_error(exc):
            return jsonify(error=f"project {project}: {describe_error(exc)}"), 404
        raise
    if request.args.get("format") == "json":
        return jsonify(rep)
    resp = Response(render_html(rep, title=f"LabelJudge report: project {project}"), mimetype="text/html")
    resp.headers["Content-Security-Policy"] = REPORT_CSP
    return resp


@report.get("/review/<int:project>")
def review_next(project: int) -> Any:
    """The tasks to review next (what `labeljudge next` prints): ?n=20&audit_share=0.1&seed=S."""
    from ..workflows.review import next_for_review

    backend = current_app.extensions["labeljudge"]
    try:
        n = int(request.args.get("n", 20))
        share = float(request.args.get("audit_share", 0.1))
        seed = int(request.args["seed"]) if "seed" in request.args else None
    except ValueError:
        return jsonify(error="'n' and 'seed' must be integers, 'audit_share' a number"), 400
    if project < 1 or not 1 <= n <= 1000 or not 0.0 <= share <= 1.0 or (seed is not None and not 0 <= seed < 2**32):
        return jsonify(error="project must be a positive id, n 1..1000, audit_share 0..1, seed 0..2^32-1"), 400
    api = backend.labelstudio()
    if api is None:
        return jsonify(error="the review queue needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"), 503
    try:
        return jsonify(next_for_review(backend, api, project, n=n, audit_share=share, seed=seed))
    except Exception as exc:
        if is_access_error(exc):
            return jsonify(error=f"project {project}: {describe_error(exc)}"), 404
        raise


def _http_url(url: str) -> bool:
    """An absolute http(s) URL with a host: nothing that a browser would run (javascript:, data:)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.netloc) and len(url) <= 2000 \
        and not any(c in url for c in "\"'<>` \t\r\n")
