"""Label Studio calls the backend makes while answering /setup, in the background (/setup has 3 s):
the project's shown model version, and a webhook that carries our credentials when auth is on.

A ``SetupHooks`` per backend holds what it has done (versions shown, webhooks registered), so two
backends in one process (tests, benchmarks) never share that state."""
from __future__ import annotations

import base64
import logging
import threading
import time

from ..labelstudio import describe_error
from ..services import Services

log = logging.getLogger(__name__)


class SetupHooks:
    def __init__(self, services: Services) -> None:
        self.services = services
        self._shown: dict[str, str] = {}  # project -> the version Label Studio shows (or a person's choice kept)
        self._scheduled: dict[str, float] = {}  # project -> when its next check (not started yet) is due
        self._scheduling = threading.Lock()
        self._registered: set[tuple[str, str]] = set()
        self._registering = threading.Lock()

    def show_version(self, pid: str, version: str, *, after: float = 0.0) -> None:
        """In the background: the project's model version in Label Studio follows the one served, so
        the Data Manager's prediction score column and the review queue show its scores. Label Studio
        accepts a version only once a prediction carries it, so until then ("pending") every /setup
        and /predict asks again; ``after``: wait that long first (after /predict, Label Studio saves
        the predictions once it has the answer). Reads nothing that makes Label Studio re-run /setup
        (see ``LabelStudioAPI.connected_backends``)."""
        if self.services.labelstudio() is None or self._shown.get(pid) == version:
            return
        due = time.monotonic() + after
        with self._scheduling:
            if self._scheduled.get(pid, float("-inf")) >= due:  # a check at least as late is coming
                return
            self._scheduled[pid] = due

        def run() -> None:
            with self._scheduling:
                if self._scheduled.get(pid) == due:
                    del self._scheduled[pid]
            try:
                api = self.services.labelstudio()
                if api is not None and api.show_model_version(int(pid), version) != "pending":
                    self._shown[pid] = version
            except Exception as exc:
                log.warning("could not set project %s's model version in Label Studio: %s", pid, describe_error(exc))

        timer = threading.Timer(after, run)
        timer.daemon = True
        timer.start()

    def ensure_authenticated_webhook(self, pid: str) -> None:
        """With auth on, Label Studio's auto-registered webhook gets 401s: register one that carries
        our Basic credentials (in the background). Its URL comes from LABELJUDGE_URL only, never from
        the request (a Host header would decide where our credentials go), and it is registered once
        per project and URL (two would deliver every event twice)."""
        settings = self.services.settings
        if not (settings.basic_auth_user and settings.label_studio_url and settings.label_studio_api_key):
            return
        if not settings.backend_url:
            log.warning("auth is on but LABELJUDGE_URL is not set: not registering an authenticated webhook for "
                        "project %s (set LABELJUDGE_URL to the URL Label Studio reaches this backend at)", pid)
            return
        url = settings.backend_url.rstrip("/") + "/webhook"
        token = base64.b64encode(f"{settings.basic_auth_user}:{settings.basic_auth_pass}".encode()).decode()
        with self._registering:
            if (pid, url) in self._registered:
                return
            self._registered.add((pid, url))

        def run() -> None:
            try:
                with self._registering:  # one registration in flight per backend: two would both see none yet
                    api = self.services.labelstudio()
                    if api is not None:
                        api.ensure_webhook(int(pid), url, {"Authorization": f"Basic {token}"})
            except Exception as exc:
                with self._registering:
                    self._registered.discard((pid, url))  # try again on the next /setup
                log.warning("could not register the authenticated webhook for project %s: %s", pid,
                            describe_error(exc))

        threading.Thread(target=run, daemon=True).start()
