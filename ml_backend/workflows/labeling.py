"""Bulk labeling of a whole Label Studio project (or a diverse sample of it), outside /predict.

Label Studio's own "Retrieve predictions" goes through /predict with a 100 s limit; this writes
predictions through the API in batches instead, with progress, a cost ledger and resumability:

- Label Studio's predictions are the record of what is done: a task that already has a prediction of
  the current judge version is skipped, so a re-run after Ctrl-C, a crash or SIGKILL continues and
  never writes a task twice.
- every usable verdict is cached (sqlite, keyed by judge version x task content) before it is
  written, so nothing paid for is paid again;
- a task the judge could not label is recorded as failed with its reason and retried next run.
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

from ..judge.runner import Outcome, RateLimiter, ledger_row, run_judge, verdict_of
from ..labelstudio import LabelStudioAPI, describe_error
from ..labelstudio.config import parse_label_config
from ..labelstudio.sync import sync_annotations
from ..predict import prediction_for, record_positions
from ..projects import ProjectState
from ..services import Services
from ..settings import parse_extra_params

log = logging.getLogger(__name__)
BATCH_DISCOUNT = 0.5  # OpenAI's Batch API bills half the live price


@dataclass
class LabelSummary:
    project: int
    model_version: str
    total: int = 0
    labeled: int = 0
    skipped: int = 0
    failed: int = 0
    cached: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    cost: float = 0.0
    seconds: float = 0.0
    stopped: str | None = None  # "budget" when max_cost was reached, "interrupted" on a stop request
    labeling_seconds: float = 0.0  # the judge calls and the writes, without listing the project
    judging_seconds: float = 0.0  # until the last verdict: the judge calls without the final write
    failures: list[dict] = field(default_factory=list)
    stage: str | None = None  # what the run does before its first verdict (loading the local model)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cost"] = round(self.cost, 6)
        out["seconds"] = round(self.seconds, 2)
        out["labeling_seconds"] = round(self.labeling_seconds, 2)
        out["judging_seconds"] = round(self.judging_seconds, 2)
        return out


ProgressFn = Callable[[LabelSummary, int], None]  # (summary so far, tasks to do)


def resolve_state(services: Services, api: LabelStudioAPI, project: int,
                  overrides: dict | None = None, label_config: str | None = None) -> ProjectState:
    """The same configuration Label Studio's own calls use: the project's label config and the
    connected backend's extra_params (plus CLI overrides), so both agree on the version."""
    label_config = label_config if label_config is not None else api.label_config(project)
    params: dict = {}
    for ml in api.connected_backends(project):
        raw = ml.get("extra_params")
        if raw:
            params = parse_extra_params(raw)
            break
    run_only = {k: v for k, v in (overrides or {}).items() if v is not None}
    params.update(run_only)
    # overrides are for this run: the project's stored config (what /predict serves) stays as it is
    return services.projects.setup(project, label_config, params, remember=not run_only)


def one_run_per_project(label: Callable[..., LabelSummary]) -> Callable[..., LabelSummary]:
    """Two runs on one project at once (a CLI run beside a job of the backend, sharing MODEL_DIR)
    would both see the same tasks as undone and both write them: the second raises Busy instead, or,
    given ``wait=on_wait(why)`` (the tasks /predict handed over: nobody is there to run them again),
    waits for the other run to end and then labels what it left."""
    @functools.wraps(label)
    def guarded(services: Services, api: LabelStudioAPI, project: int, *,
                wait: Callable[[str], None] | None = None, **kwargs: Any) -> LabelSummary:
        name, what = f"label:{project}", f"labeling project {project}"
        lease = services.store.waiting_lease(name, what, on_wait=wait) if wait else services.store.lease(name, what)
        with lease:
            return label(services, api, project, **kwargs)

    return guarded


class PredictionWriter:
    """Writes predictions to Label Studio on its own thread while the judge keeps working, one batch in
    flight: whatever gathered while it was busy goes as soon as it is free, at most ``batch_size``, and
    nothing waits longer than ``max_wait``. Each import request costs Label Studio a fixed part (with
    its defaults, a recount of every task of the project), so batches grow by themselves when requests
    are slow and stay small when they are quick, and the last one is small. The ledger goes with each
    batch (one write per batch, not per task). Not thread-safe by itself: callers hold their lock."""

    def __init__(self, services: Services, api: LabelStudioAPI, project: int, version: str, model: str, *,
                 batch_size: int, max_wait: float) -> None:
        self.services, self.api, self.project, self.version, self.model = services, api, project, version, model
        self.batch_size, self.max_wait = batch_size, max_wait
        self.errors: list[BaseException] = []  # surfaced after the run; their tasks stay unwritten -> next run
        self._buffer: list[dict] = []
        self._ledger: dict[str, float] = {}
        self._oldest = 0.0
        self._writes: queue.Queue = queue.Queue(maxsize=4)
        self._idle = threading.Event()  # the writer waits for work
        self._thread = threading.Thread(target=self._write_loop, name="labeljudge-writer", daemon=True)
        self._thread.start()

    def add(self, row: dict) -> None:
        """One task's prediction (``{"task": id, "result": ..., ...}``), written with the next batch."""
        if not self._buffer:
            self._oldest = time.monotonic()
        self._buffer.append(row)
        if len(self._buffer) >= self.batch_size or self._idle.is_set() or \
                time.monotonic() - self._oldest > self.max_wait:
            self.flush()

    def count(self, **numbers: float) -> None:
        """Ledger numbers (calls, tokens, cost, cache hits, failures), written with the next batch."""
        for k, v in numbers.items():
            self._ledger[k] = self._ledger.get(k, 0) + v

    def flush(self) -> None:
        if self._buffer or self._ledger:
            self._idle.clear()
            self._writes.put((list(self._buffer), dict(self._ledger)))
            self._buffer.clear()
            self._ledger.clear()

    def close(self) -> None:
        """Write what is left and wait for the writer to finish."""
        self.flush()
        self._writes.put(None)
        self._thread.join()

    def _write_loop(self) -> None:
        pid = str(self.project)
        while True:
            if self._writes.empty():
                self._idle.set()
            if (item := self._writes.get()) is None:
                break
            batch, ledger = item
            try:
                if batch:
                    self.api.import_predictions(self.project, batch)
                    for p in batch:
                        self.services.store.clear_failure(pid, p["task"], self.version)
                if ledger:
                    self.services.store.add_ledger(pid, self.version, self.model,
                                                   **{k: (int(v) if k != "cost" else v) for k, v in ledger.items()})
            except BaseException as exc:
                self.errors.append(exc)


@dataclass
class _Recorder:
    """What a run does with each judge outcome, in completion order: account its cost, write its
    prediction (or record its failure), stop at the budget, report progress."""

    services: Services
    state: ProjectState
    summary: LabelSummary
    writer: PredictionWriter
    stop: threading.Event
    todo: int
    discount: float = 1.0
    max_cost: float | None = None
    progress: ProgressFn | None = None
    started: float = field(default_factory=time.time)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, o: Outcome) -> None:
        summary, pid = self.summary, str(self.summary.project)
        with self.lock:
            # a provider error counts as a call that failed (verdict_of), as on /predict
            row = ledger_row([] if o.cached else [verdict_of(o)], cache_hits=int(o.cached), discount=self.discount,
                             price=functools.partial(self.services.settings.cost, self.state.config.model))
            summary.tokens_in += row["tokens_in"]
            summary.tokens_out += row["tokens_out"]
            summary.cost += row["cost"]
            summary.cached += row["cache_hits"]
            self.writer.count(**{k: v for k, v in row.items() if v})
            if o.verdict is not None:
                record_positions(self.services.store, self.state, o.key, o.verdict)
            prediction = prediction_for(self.state, o.verdict) if o.verdict is not None else None
            if prediction is not None:
                self.writer.add({"task": o.key, **prediction.as_json()})
                summary.labeled += 1
            else:
                reason = o.error or "no usable answer"
                summary.failed += 1
                summary.failures.append({"task": o.key, "reason": reason})
                self.services.store.record_failure(pid, o.key, summary.model_version, reason)
            summary.judging_seconds = time.time() - self.started
            if self.max_cost is not None and summary.cost >= self.max_cost and not self.stop.is_set():
                summary.stopped = "budget"
                log.warning("project %s: budget of $%.4f reached ($%.4f spent); stopping, a re-run continues",
                            pid, self.max_cost, summary.cost)
                self.stop.set()
            if self.progress is not None:
                self.progress(summary, self.todo)


def _choose(state: ProjectState, tasks: dict[int, dict], task_ids: Sequence[int] | None,
            sample: int | None) -> list[int]:
    """The tasks a run is about: ``task_ids`` (those the project has), or a diverse ``sample``, or all."""
    chosen = list(tasks) if task_ids is None else [t for t in dict.fromkeys(task_ids) if t in tasks]
    if sample:
        from ..judge.embeddings import diverse_sample

        ids = sorted(tasks)
        texts = [state.judge.render(tasks[i])[0] if _renders(state, tasks[i]) else str(tasks[i]) for i in ids]
        chosen = [ids[i] for i in diverse_sample(texts, sample)]
    return chosen


def _load_model(state: ProjectState, summary: LabelSummary, todo: int, progress: ProgressFn | None) -> None:
    """The local model takes a minute to load on 2 cores: load it before the first task, and say so."""
    provider = state.judge.provider
    if not todo or getattr(provider, "loaded", True) is not False:
        return
    summary.stage = f"loading the local judge model {state.config.model} (once per process)"
    if progress:
        progress(summary, todo)
    try:
        provider.load()  # type: ignore[attr-defined]  # the local provider: "loaded" is False above
    except Exception:  # its error reaches every task's verdict, as on any judge call
        pass
    summary.stage = None


@one_run_per_project
def label_project(services: Services, api: LabelStudioAPI, project: int, *,
                  overrides: dict | None = None, sample: int | None = None, concurrency: int = 8,
                  rpm: float | None = None, tpm: float | None = None, batch_size: int = 500,
                  max_wait: float = 2.0, batch_api: bool = False, poll_interval: float = 30.0,
                  use_async: bool | None = None,
                  batch_progress: Callable[[Any], None] | None = None,
                  progress: ProgressFn | None = None, stop: threading.Event | None = None,
                  max_cost: float | None = None, task_ids: Sequence[int] | None = None) -> LabelSummary:
    """Label the project's tasks that have no prediction of the current judge version (or ``task_ids``,
    or a diverse ``sample``). ``max_cost``: stop cleanly once the run has spent this many dollars
    (calls in flight finish and are written; a re-run continues with the tasks left)."""
    t0 = time.time()
    stop = stop if stop is not None else threading.Event()
    # one export: the few-shot pool (Label Studio's current annotations) and what is left to label
    label_config = api.label_config(project)
    listed = api.project_tasks(project, with_predictions=True)
    sync_annotations(services.store, project, parse_label_config(label_config), [t for t in listed if t["annotations"]])
    services.projects.labels_changed(str(project))
    state = resolve_state(services, api, project, overrides, label_config)
    version = state.judge.version  # bulk labeling is the judge's work, whatever /predict serves
    tasks = {t["id"]: t["data"] for t in listed}
    done = {t["id"] for t in listed if any(p["model_version"] == version for p in t["predictions"])}
    chosen = _choose(state, tasks, task_ids, sample)
    todo = [t for t in chosen if t not in done]
    summary = LabelSummary(project, version, total=len(chosen), skipped=len(chosen) - len(todo))
    _load_model(state, summary, len(todo), progress)
    writer = PredictionWriter(services, api, project, version, state.config.model, batch_size=batch_size,
                              max_wait=max_wait)
    record = _Recorder(services, state, summary, writer, stop, len(todo), max_cost=max_cost, progress=progress,
                       discount=BATCH_DISCOUNT if batch_api else 1.0)
    try:
        if batch_api:
            from ..judge.batch import run_batch

            run_batch(state.judge, ((t, tasks[t]) for t in todo), record, scope=f"{project}:{version}",
                      store=services.store, cache=services.store, poll_interval=poll_interval,
                      progress=batch_progress, stop=stop)
        else:
            run_judge(state.judge, ((t, tasks[t]) for t in todo), record, concurrency=concurrency,
                      cache=services.store, limiter=RateLimiter(rpm, tpm), stop=stop, use_async=use_async)
    finally:
        with record.lock:
            writer.flush()
        writer.close()
        summary.labeling_seconds = time.time() - record.started
        summary.seconds = time.time() - t0
    if stop.is_set() and summary.stopped is None:
        summary.stopped = "interrupted"
    if writer.errors:
        raise RuntimeError(f"writing predictions to Label Studio failed: {writer.errors[0]}") from writer.errors[0]
    if summary.labeled:
        _show_served_version(services, api, project)
    return summary


def _show_served_version(services: Services, api: LabelStudioAPI, project: int) -> None:
    """Once the run's predictions are written, the Data Manager's score column follows the served
    version: set while the run was writing, Label Studio's own saves of the project put it back."""
    try:
        api.show_model_version(project, services.projects.state(str(project)).version)
    except Exception as exc:
        log.warning("could not set project %s's model version in Label Studio: %s", project, describe_error(exc))


def _renders(state: ProjectState, data: dict) -> bool:
    try:
        state.judge.render(data)
        return True
    except Exception:
        return False
