"""Label Studio calls the backend makes while answering /setup, in the background (/setup has 3 s):
the project's shown model version, and a webhook that carries our credentials when auth is on."""
from __future__ import annotations

import base64
import logging
import threading

from ..labelstudio import describe_error
from ..services import Services
from ..settings import Settings

log = logging.getLogger(__name__)

_shown: dict[str, str] = {}


def show_version(backend: Services, pid: str, version: str) -> None:
    """In the background (/setup has 3 s): the project's model version in Label Studio follows the one
    served, so the Data Manager's prediction score column and the review queue show its scores."""
    if backend.labelstudio() is None or _shown.get(pid) == version:
        return
    _shown[pid] = version

    def run() -> None:
        try:
            backend.labelstudio().show_model_version(int(pid), version)
        except Exception as exc:
            _shown.pop(pid, None)
            log.warning("could not set project %s's model version in Label Studio: %s", pid, describe_error(exc))

    threading.Thread(target=run, daemon=True).start()


_registered: set[tuple[str, str]] = set()
_registering = threading.Lock()


def ensure_authenticated_webhook(backend: Services, settings: Settings, pid: str) -> None:
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
        try:
            with _registering:  # one registration in flight per process: two would both see none yet
                backend.labelstudio().ensure_webhook(int(pid), url, {"Authorization": f"Basic {token}"})
        except Exception as exc:
            with _registering:
                _registered.discard((pid, url))  # try again on the next /setup
            log.warning("could not register the authenticated webhook for project %s: %s", pid, describe_error(exc))

    threading.Thread(target=run, daemon=True).start()
