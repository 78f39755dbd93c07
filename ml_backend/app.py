"""The composition root: ``build(settings)`` wires the shared services to the predict path, the learn
path (webhook events, training) and labeling jobs. No logic lives here: each method hands the call to
the object that owns it, so the HTTP layer and the tests have one handle with the shape of Label
Studio's own ML backend class (``setup`` / ``predict`` / ``fit``). Everything else is reached through
the part that owns it (``projects``, ``providers``, ``evaluators``, ``learner``, ``label_jobs``, ``align_jobs``, ``hooks``).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Sequence

from .events.worker import EventWorker
from .judge.providers import Provider
from .predict import ModelResponse, Predictor
from .projects import ProjectState
from .services import Services
from .settings import ProjectConfig, Settings
from .store import Store
from .warmup import resolve_transformers
from .workflows.align_jobs import AlignJobs
from .workflows.label_jobs import LabelJobs
from .workflows.learning import Learner, resync
from .workflows.setup_hooks import SetupHooks
from .workflows.training import TrainingScheduler, reap_dead_jobs

log = logging.getLogger(__name__)


class LabelJudgeBackend(Services):
    """Services plus the paths that run in a server process: the predictor, the event worker, the
    training scheduler and labeling jobs."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        built = Services.build(settings, store)
        super().__init__(built.settings, built.store, built.providers, built.evaluators, built.projects)
        self.started_at = time.time()
        self.trainer = TrainingScheduler(self)
        self.learner = Learner(self, self.trainer)
        self.label_jobs = LabelJobs(self)
        self.align_jobs = AlignJobs(self)
        self.predictor = Predictor(settings, self.store, self.projects, claimed=self.label_jobs.claimed,
                                   hand_over=self.label_jobs.hand_over)
        self.worker = EventWorker(self.store, self.learner.handle_events)
        self.hooks = SetupHooks(self)

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        for job in reap_dead_jobs(self.store):  # a previous process was killed mid-job
            log.warning("job %s was left queued/running by a process that is gone: marked failed", job)
        self.worker.start()
        provider = None
        if self.settings.preload_model and self.settings.judge_provider == "local":
            provider = self.providers.get(ProjectConfig.resolve(self.settings))
        threading.Thread(target=_preload, args=(provider,), name="labeljudge-preload", daemon=True).start()

    # -- projects --------------------------------------------------------------------------------
    def setup(self, project: Any, label_config: str, extra_params: Any = None, *,
              remember: bool = True) -> ProjectState:
        return self.projects.setup(project, label_config, extra_params, remember=remember)

    def state(self, project: Any, label_config: str | None = None) -> ProjectState:
        return self.projects.state(project, label_config)

    def versions(self) -> dict:
        live = self.projects.live_versions()
        return {"projects": [{**p, "model_version": live.get(p["project_id"], p["model_version"])}
                             for p in self.store.projects()]}

    # -- predict ---------------------------------------------------------------------------------
    def predict(self, tasks: Sequence[dict], *, project: Any, label_config: str | None = None,
                context: dict | None = None) -> ModelResponse:
        return self.predictor.predict(tasks, project=project, label_config=label_config, context=context)

    # -- learn (webhook events, run by the background worker) -------------------------------------
    def record_event(self, payload: Any) -> int:
        """Check and persist a webhook event and wake the worker: all /webhook does before answering."""
        event_id = self.learner.record(payload)
        self.worker.kick()
        return event_id

    def receive_event(self, payload: Any) -> dict:
        """/webhook's answer: the stored event (and the training job Start Training queued)."""
        answer = self.learner.receive(payload)
        self.worker.kick()
        return answer

    def fit(self, event: str, data: dict, **kwargs: Any) -> None:
        """One event, as Label Studio's ML backend class names it; raises what handling it raised."""
        error = self.handle_events([{"id": 0, "action": event, "payload": data}]).get(0)
        if error:
            raise RuntimeError(error)

    def handle_events(self, events: list[dict]) -> dict[int, str | None]:
        return self.learner.handle_events(events)

    def resync(self, project: int) -> dict:
        """Re-read a project's annotations from Label Studio into the store."""
        return resync(self, project)

    # -- bulk labeling ---------------------------------------------------------------------------
    def start_label_job(self, project: int, **kwargs: Any) -> dict:
        return self.label_jobs.start(project, **kwargs)


def build(settings: Settings, store: Store | None = None) -> LabelJudgeBackend:
    return LabelJudgeBackend(settings, store)


def _preload(provider: Provider | None) -> None:
    """In the background, so /health answers at once: transformers' imports, then the local model."""
    resolve_transformers()
    if provider is None:
        return
    try:
        provider.load()  # type: ignore[attr-defined]
        log.info("local model %s loaded", provider.model)
    except Exception:
        log.exception("preloading the local model failed; it will be retried on first use")
