"""The learn path: webhook events in; annotations stored, human corrections of the judge flagged, the
few-shot pool renewed and training triggered (debounced, so a burst of saves trains once).

``record`` is all /webhook does before answering (check and persist); ``handle_events`` runs in the
background on a burst of stored events and looks at each project touched once.
"""
from __future__ import annotations

import logging
import threading
from typing import Any

from ..events import ANNOTATION_EVENTS, BadEvent, check_event, deleted_ids, int_id
from ..judge.types import is_judge_version
from ..labelstudio import describe_error, is_access_error
from ..labelstudio.config import is_correction
from ..labelstudio.sync import resync_project
from ..projects import UnknownProject
from ..services import Services
from .training import TrainingScheduler

log = logging.getLogger(__name__)

PER_TASK_LOOKUPS = 8  # a burst touching more tasks of a project resyncs it once instead


def resync(services: Services, project: int) -> dict:
    """Re-read every annotation of a project from Label Studio (CLI, recovery, a big burst)."""
    out = resync_project(services.require_labelstudio("resync"), services.store, project)
    services.projects.labels_changed(str(project))
    return out


class Learner:
    def __init__(self, services: Services, trainer: TrainingScheduler) -> None:
        self.services = services
        self.trainer = trainer
        self._timers: dict[str, threading.Timer] = {}
        self._lock = threading.Lock()

    def record(self, payload: Any) -> int:
        """Check and persist a webhook event. A payload that cannot be understood is quarantined (stored
        apart with its reason, logged, counted in /metrics) and BadEvent raised, so it never reaches the
        events it would break."""
        store = self.services.store
        try:
            head = check_event(payload)
        except BadEvent as exc:
            project = payload.get("project") if isinstance(payload, dict) else None
            raw = project.get("id") if isinstance(project, dict) else None
            pid = str(raw)[:20] if isinstance(raw, (int, str)) and str(raw).isascii() and str(raw).isdigit() else None
            qid = store.quarantine(pid, "webhook", str(exc), payload)
            log.warning("webhook quarantined as #%s (project %s): %s", qid, pid, exc)
            raise
        return store.add_event(head.project_id, head.action, payload)

    def receive(self, payload: Any) -> dict:
        """What /webhook answers: the stored event's id, and for Start Training (Label Studio 1.23 sends
        START_TRAINING here, not to /train) the training job, queued now: Label Studio keeps a ``job``
        key from the answer as its training job and polls /job_status with it."""
        if not (isinstance(payload, dict) and payload.get("action") == "START_TRAINING"):
            return {"event_id": self.record(payload)}
        try:
            head = check_event(payload)
        except BadEvent:
            return {"event_id": self.record(payload)}  # quarantined there, with its reason
        if head.project_id is None:
            return {"event_id": self.record(payload)}
        store = self.services.store
        if self.services.labelstudio() is None:
            why = "training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend"
            return {"event_id": store.add_event(head.project_id, head.action, payload, handled=True, error=why),
                    "error": why}
        missing = self.missing_project(head.project_id)
        if missing:  # no job: one that fails a moment later would be reported here as "queued"
            return {"event_id": store.add_event(head.project_id, head.action, payload, handled=True, error=missing),
                    "error": missing, "not_found": True}
        answer = self.trainer.request(head.project_id, "Start Training")
        event_id = store.add_event(head.project_id, head.action, payload, handled=True)
        job = store.job(answer["job"]) if answer.get("job") else None
        status = job["status"] if job and job["status"] in ("finished", "failed") else answer["status"]
        return {"event_id": event_id, "job": answer["job"], "job_status": status, "message": answer["message"]}

    def missing_project(self, pid: str) -> str | None:
        """Why training cannot start for a project the backend has never served, when Label Studio says it
        has no such project (one GET; Start Training is rare); None where it exists or cannot be asked."""
        if self.services.store.project(pid) is not None:
            return None
        try:
            self.services.require_labelstudio("training").label_config(int(pid))
        except Exception as exc:
            if is_access_error(exc):
                return f"training of project {pid} did not start: {describe_error(exc)}"
        return None

    def handle_events(self, events: list[dict]) -> dict[int, str | None]:
        """A burst of stored events, coalesced: annotations are stored as they come, then each project
        touched is looked at once (corrections against the judge, the few-shot pool, the training
        trigger), not once per event. Returns the error of each event that failed, by event id."""
        errors: dict[int, str | None] = {}
        touched: dict[str, dict] = {}  # project -> {"tasks": {task ids}, "config": label_config or None}
        for event in events:
            try:
                self._apply(event["action"], event["payload"], touched)
            except Exception as exc:  # a bad event must not stop the burst
                log.warning("event %s (%s) failed: %s", event["id"], event["action"], exc)
                errors[event["id"]] = f"{type(exc).__name__}: {exc}"
        for pid, seen in touched.items():
            try:
                if seen["tasks"]:
                    self._mark_corrections(pid, seen["tasks"], seen["config"])
            except Exception as exc:  # the correction flag is a hint; the labels are stored already
                log.warning("project %s: could not compare new annotations with the judge: %s", pid,
                            describe_error(exc))
            self.services.projects.labels_changed(pid)
            if seen["annotated"]:
                self.maybe_train(pid)
        return errors

    def _apply(self, event: str, data: dict, touched: dict[str, dict]) -> None:
        store = self.services.store
        head = check_event(data)  # events stored before checks existed are checked here too
        pid = head.project_id
        project = data.get("project") or {}
        if event in ANNOTATION_EVENTS and pid:
            annotation = data["annotation"]
            seen = touched.setdefault(pid, {"tasks": set(), "config": None, "annotated": False})
            seen["config"] = project.get("label_config") or seen["config"]
            if annotation.get("was_cancelled"):
                store.delete_annotations([int(annotation["id"])])
                return
            problems = self._problems(pid, annotation, project.get("label_config"))
            if problems:
                qid = store.quarantine(pid, "annotation", "; ".join(problems)[:500], data)
                log.warning("annotation %s of project %s quarantined as #%s: %s", annotation["id"], pid, qid,
                            problems[0])
                return
            task_id = int_id(annotation["task"], "annotation.task")
            if not store.upsert_annotation(pid, {**annotation, "task": task_id}, (data.get("task") or {}).get("data")):
                log.info("annotation %s of project %s: an older or deleted version arrived late; kept the stored "
                         "state", annotation["id"], pid)
                return
            seen["tasks"].add(task_id)
            seen["annotated"] = True
        elif event == "ANNOTATIONS_DELETED":
            store.forget_annotations(deleted_ids(data))
            if pid:
                touched.setdefault(pid, {"tasks": set(), "config": None, "annotated": False})
        elif event == "START_TRAINING" and pid:
            # the run reads the project once from Label Studio and syncs the store from that export
            self.services.require_labelstudio("Start Training")
            self.trainer.request(pid, "Start Training")
        # every other project event is acknowledged and ignored

    def _problems(self, pid: str, annotation: dict, label_config: str | None) -> list[str]:
        """Why this annotation cannot be read against its project's config (empty when it can, or when
        the config is not known here: reads skip what they cannot use)."""
        try:
            schema = self.services.projects.state(pid, label_config).schema
        except Exception:
            return []
        return schema.problems(annotation.get("result"))

    def _mark_corrections(self, pid: str, task_ids: set[int], label_config: str | None) -> None:
        """Did the humans change the judge's answers? Needs Label Studio's API (the webhook payload
        carries no predictions): a few tasks are looked up one by one, a bigger burst resyncs the
        project once (one export) instead of one request per event."""
        api = self.services.labelstudio()
        if api is None:
            return
        try:
            schema = self.services.projects.state(pid, label_config).schema
        except UnknownProject:  # not set up here and the payload has no config: the resync reads it
            schema = None
        if len(task_ids) > PER_TASK_LOOKUPS or schema is None:
            self.resync_project(int(pid))
            return
        by_id = {a["id"]: a for a in self.services.store.annotations(pid) if a["task_id"] in task_ids}
        for task_id in task_ids:
            preds = [p for p in api.task_predictions(task_id) if is_judge_version(p["model_version"])]
            if not preds:
                continue
            for ann in by_id.values():
                if ann["task_id"] == task_id:
                    self.services.store.set_correction(ann["id"], is_correction(schema, ann["result"], preds[-1]["result"]))

    def resync_project(self, project: int) -> dict:
        """A burst too big for per-task lookups: the project re-read from Label Studio in one export."""
        return resync(self.services, project)

    def maybe_train(self, pid: str) -> None:
        """Called per burst that stored annotations: decide once the burst is over (TRAIN_DEBOUNCE
        seconds of quiet), so 200 webhooks in a row produce one training run, not one per threshold crossing."""
        with self._lock:
            timer = self._timers.pop(pid, None)
            if timer is not None:
                timer.cancel()
            timer = threading.Timer(self.services.settings.train_debounce, self._check_training, args=(pid,))
            timer.daemon = True
            self._timers[pid] = timer
        timer.start()

    def _check_training(self, pid: str) -> None:
        """Enough new human labels since the last training: start one (coalesced) in the background."""
        with self._lock:
            self._timers.pop(pid, None)
        try:
            every = self.services.projects.state(pid).config.train_every
        except Exception:
            every = self.services.settings.train_every
        if every <= 0 or self.services.labelstudio() is None:
            return
        store = self.services.store
        try:
            new = store.count_labeled_tasks(pid) - store.trained_labels(pid)
        except Exception as exc:  # a timer thread: the store went away (shutdown) or is locked; say so, once
            log.warning("project %s: could not check whether to train (%s); the next annotation checks again", pid, exc)
            return
        if new >= every:
            self.trainer.request(pid, f"{new} new labels")
