"""Flask app factory: configuration and blueprints, nothing else (the routes live in ``ml_routes``,
``jobs_routes`` and ``report_routes``; auth, bodies and errors in ``guards``)."""
from __future__ import annotations

from flask import Flask

from ..app import LabelJudgeBackend, build
from ..settings import Settings
from . import guards
from .jobs_routes import jobs
from .ml_routes import ml
from .report_routes import report


def create_app(settings: Settings | None = None, backend: LabelJudgeBackend | None = None,
               *, start: bool = True) -> Flask:
    settings = settings or Settings.from_env()
    backend = backend or build(settings)
    app = Flask("labeljudge")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    stats = guards.Stats(backend.store)
    app.extensions["labeljudge"] = backend
    app.extensions["labeljudge.stats"] = stats
    guards.install(app, settings, stats)
    for blueprint in (ml, jobs, report):
        app.register_blueprint(blueprint)
    if start:
        backend.start()
    return app
