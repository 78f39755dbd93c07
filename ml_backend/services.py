"""The parts every path shares, built once from the settings: the store, the provider pool, the
served evaluators, the project registry and the Label Studio gateway.

Workflows (labeling, training, learning, reporting) are functions of these, never of the HTTP app or
the CLI, so ``labeljudge report`` needs a store and a gateway, not a thread pool and an event worker.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .judges import ProviderPool
from .labelstudio import LabelStudioAPI
from .projects import Projects
from .redact import register, url_passwords
from .serving import EvaluatorPool
from .settings import Settings
from .store import Store


@dataclass
class Services:
    settings: Settings
    store: Store
    providers: ProviderPool
    evaluators: EvaluatorPool
    projects: Projects
    _gateway: LabelStudioAPI | None = field(default=None, repr=False)
    _gateway_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def build(cls, settings: Settings, store: Store | None = None) -> Services:
        register(settings.openai_api_key, settings.label_studio_api_key, settings.basic_auth_pass,
                 settings.webhook_secret,  # no log line, error or stored record can show them
                 *url_passwords(settings.openai_base_url, settings.label_studio_url))
        store = store or Store(settings.store_path)
        providers, evaluators = ProviderPool(settings), EvaluatorPool(settings)
        return cls(settings, store, providers, evaluators, Projects(settings, store, providers, evaluators))

    def labelstudio(self) -> LabelStudioAPI | None:
        """The Label Studio gateway when LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or --url/--api-key) are set."""
        s = self.settings
        if not (s.label_studio_url and s.label_studio_api_key):
            return None
        with self._gateway_lock:
            if self._gateway is None:
                self._gateway = LabelStudioAPI(s.label_studio_url, s.label_studio_api_key)
            return self._gateway

    def require_labelstudio(self, what: str) -> LabelStudioAPI:
        """The gateway, or RuntimeError saying ``what`` needs it."""
        api = self.labelstudio()
        if api is None:
            raise RuntimeError(f"{what}: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (or --url/--api-key) "
                               "to reach Label Studio")
        return api

    def rq_queue(self) -> Any:
        """The RQ queue on REDIS_URL, with short socket timeouts: a dead Redis is an error at once, not a hang."""
        from redis import Redis
        from rq import Queue

        if not self.settings.redis_url:
            raise RuntimeError("REDIS_URL is not set: there is no queue to put the job on")
        return Queue("labeljudge", connection=Redis.from_url(self.settings.redis_url,
                                                             socket_connect_timeout=2, socket_timeout=5))
