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

from ..judge.runner import Outcome, RateLimiter, ledger_row, run_judge
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
    would both see the same tasks as undone and both write them: the second raises Busy instead."""
    @functools.wraps(label)
    def guarded(services: Services, api: LabelStudioAPI, project: int, **kwargs: Any) -> LabelSummary:
        with services.store.lease(f"label:{project}", f"labeling project {project}"):
            return label(services, api, project, **kwargs)

    return guarded


@one_run_per_project
def label_project(services: Services, api: LabelStudioAPI, project: int, *,
                  overrides: dict | None = None, sample: int | None = None, concurrency: int = 8,
                  rpm: float | None = None, tpm: float | None = None, batch_size: int = 500,
                  max_wait: float = 2.0, batch_api: bool = False, poll_interval: float = 30.0,
                  use_async: bool | None = None,
                  batch_progress: Callable[[Any], None] | None = None,
                  progress: ProgressFn | None = None, stop: threading.Event | None = None,
                  max_cost: float | None = None, task_ids: Sequence[int] | None = None) -> LabelSummary:
    """``max_cost``: stop cleanly once the run has spent this many dollars (calls in flight finish and
    are written; a re-run continues with the tasks left)."""
    t0 = time.time()
    stop = stop if stop is not None else threading.Event()
    # one export: the few-shot pool (Label Studio's current annotations) and what is left to label
    label_config = api.label_config(project)
    listed = api.project_tasks(project, with_predictions=True)
    sync_annotations(services.store, project, parse_label_config(label_config), [t for t in listed if t["annotations"]])
    services.projects.labels_changed(str(project))
    state = resolve_state(services, api, project, overrides, label_config)
    version = state.judge.version  # bulk labeling is the judge's work, whatever /predict serves
    pid = str(project)
    tasks = {t["id"]: t["data"] for t in listed}
    done = {t["id"] for t in listed if any(p["model_version"] == version for p in t["predictions"])}
    chosen = list(tasks) if task_ids is None else [t for t in dict.fromkeys(task_ids) if t in tasks]
    if sample:
        from ..judge.embeddings import diverse_sample

        ids = sorted(tasks)
        texts = [state.judge.render(tasks[i])[0] if _renders(state, tasks[i]) else str(tasks[i]) for i in ids]
        chosen = [ids[i] for i in diverse_sample(texts, sample)]
    todo = [t for t in chosen if t not in done]
    summary = LabelSummary(project, version, total=len(chosen), skipped=len(chosen) - len(todo))
    model = state.config.model
    provider = state.judge.provider
    if todo and getattr(provider, "loaded", True) is False:  # the local model: a minute on 2 cores, said so
        summary.stage = f"loading the local judge model {model} (once per process)"
        if progress:
            progress(summary, len(todo))
        try:
            provider.load()  # type: ignore[attr-defined]  # the local provider: "loaded" is False above
        except Exception:  # its error reaches every task's verdict, as on any judge call
            pass
        summary.stage = None
    # One batch in flight: whatever gathered while the writer was busy goes as soon as it is free,
    # at most ``batch_size``, and nothing waits longer than ``max_wait``. Each import request costs
    # Label Studio a fixed part (with its defaults, a recount of every task of the project), so
    # batches grow by themselves when requests are slow and stay small when they are quick, and the
    # last one, written after the last verdict, is small.
    buffer: list[dict] = []
    oldest = [0.0]
    pending_ledger: dict[str, float] = {}
    lock = threading.Lock()

    writes: queue.Queue = queue.Queue(maxsize=4)
    write_errors: list[BaseException] = []

    idle = threading.Event()  # the writer waits for work

    def writer() -> None:
        """Writes batches to Label Studio while the judge keeps working (one batch in flight)."""
        while True:
            if writes.empty():
                idle.set()
            if (item := writes.get()) is None:
                break
            batch, ledger = item
            try:
                if batch:
                    api.import_predictions(project, batch)
                    for p in batch:
                        services.store.clear_failure(pid, p["task"], version)
                if ledger:  # one ledger write per batch, not per task
                    services.store.add_ledger(pid, version, model, **{k: (int(v) if k != "cost" else v)
                                                                     for k, v in ledger.items()})
            except BaseException as exc:  # surfaced after the run; the tasks stay unwritten -> next run
                write_errors.append(exc)

    writer_thread = threading.Thread(target=writer, name="labeljudge-writer", daemon=True)
    writer_thread.start()

    def flush() -> None:
        if buffer or pending_ledger:
            idle.clear()
            writes.put((list(buffer), dict(pending_ledger)))
            buffer.clear()
            pending_ledger.clear()

    def count(**kw: float) -> None:
        for k, v in kw.items():
            pending_ledger[k] = pending_ledger.get(k, 0) + v

    price = functools.partial(services.settings.cost, model)

    def on_outcome(o: Outcome) -> None:
        with lock:
            row = ledger_row([] if o.cached else [o.verdict], cache_hits=int(o.cached), price=price,
                             discount=BATCH_DISCOUNT if batch_api else 1.0)
            summary.tokens_in += row["tokens_in"]
            summary.tokens_out += row["tokens_out"]
            summary.cost += row["cost"]
            summary.cached += row["cache_hits"]
            count(**{k: v for k, v in row.items() if v})
            if o.verdict is not None:
                record_positions(services.store, state, o.key, o.verdict)
            prediction = prediction_for(state, o.verdict) if o.verdict is not None else []
            if isinstance(prediction, dict):  # [] is "no prediction"
                if not buffer:
                    oldest[0] = time.monotonic()
                buffer.append({"task": o.key, **prediction})
                summary.labeled += 1
                if len(buffer) >= batch_size or idle.is_set() or time.monotonic() - oldest[0] > max_wait:
                    flush()
            else:
                reason = o.error or "no usable answer"
                summary.failed += 1
                summary.failures.append({"task": o.key, "reason": reason})
                services.store.record_failure(pid, o.key, version, reason)
                count(failures=1)
            summary.judging_seconds = time.time() - t_run
            if max_cost is not None and summary.cost >= max_cost and not stop.is_set():
                summary.stopped = "budget"
                log.warning("project %s: budget of $%.4f reached ($%.4f spent); stopping, a re-run continues",
                            project, max_cost, summary.cost)
                stop.set()
            if progress is not None:
                progress(summary, len(todo))

    t_run = time.time()
    try:
        if batch_api:
            from ..judge.batch import run_batch

            run_batch(state.judge, ((t, tasks[t]) for t in todo), on_outcome, scope=f"{pid}:{version}",
                      store=services.store, cache=services.store, poll_interval=poll_interval,
                      progress=batch_progress, stop=stop)
        else:
            run_judge(state.judge, ((t, tasks[t]) for t in todo), on_outcome, concurrency=concurrency,
                      cache=services.store, limiter=RateLimiter(rpm, tpm), stop=stop, use_async=use_async)
    finally:
        with lock:
            flush()
        writes.put(None)
        writer_thread.join()
        summary.labeling_seconds = time.time() - t_run
        summary.seconds = time.time() - t0
    if stop.is_set() and summary.stopped is None:
        summary.stopped = "interrupted"
    if write_errors:
        raise RuntimeError(f"writing predictions to Label Studio failed: {write_errors[0]}") from write_errors[0]
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
