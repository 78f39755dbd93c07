"""The predict path: judge | evaluator | cascade -> one Label Studio prediction per task, within a budget.

/predict answers within PREDICT_BUDGET seconds (Label Studio gives up at 100 s): what is ready then
(cached verdicts, the evaluator's answers, the judge calls finished in time) is returned, and the rest
is handed over (``hand_over``, a background labeling job in the app) so no task is answered twice.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Sequence

from .evaluator.cascade import judge_asked
from .judge.runner import judge_within, ledger_row
from .judge.types import Verdict
from .judges import build_judge
from .projects import Projects, ProjectState
from .settings import Settings
from .store import Store

log = logging.getLogger(__name__)

MAX_HINT_CHARS = 2000

# (state, task ids, calls still running, the answer's last task: Label Studio saves the answer in order)
HandOver = Callable[[ProjectState, list[int], list[Any], Any], None]


def interactive_hint(context: Any) -> str | None:
    """The text an annotator typed for interactive pre-annotation: Label Studio sends it as
    ``params.context.result`` regions (a TextArea's ``value.text``, as in its llm_interactive example)."""
    if not isinstance(context, dict) or not isinstance(context.get("result"), list):
        return None
    texts = []
    for region in context["result"]:
        value = region.get("value") if isinstance(region, dict) else None
        text = value.get("text") if isinstance(value, dict) else None
        if isinstance(text, str):
            text = [text]
        if isinstance(text, list):
            texts += [t.strip() for t in text if isinstance(t, str) and t.strip()]
    hint = " ".join(texts)[:MAX_HINT_CHARS]
    return hint or None


def hint_controls(context: Any) -> set[str]:
    """The controls (TextAreas) an interactive note was typed in."""
    if not isinstance(context, dict) or not isinstance(context.get("result"), list):
        return set()
    return {r["from_name"] for r in context["result"] if isinstance(r, dict) and isinstance(r.get("from_name"), str)}


def task_id_of(task: Any) -> int | None:
    """A task's Label Studio id, or None for anything else (a preview, a malformed task)."""
    tid = task.get("id") if isinstance(task, dict) else None
    return tid if isinstance(tid, int) and not isinstance(tid, bool) else None


@dataclass(frozen=True)
class Prediction:
    """One task's prediction as Label Studio stores it (its PredictionValue): validated result
    regions, the model version, and the score (None: the provider gave no confidence)."""

    result: list[dict]
    model_version: str
    score: float | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result, "model_version": self.model_version}
        if self.score is not None:
            out["score"] = self.score
        return out


@dataclass(frozen=True)
class ModelResponse:
    """/predict's answer, as Label Studio's ModelResponse: one entry per task, in order (None: no
    prediction for that task), and the version the project serves."""

    predictions: list[Prediction | None]
    model_version: str

    def as_json(self) -> dict[str, Any]:
        # an empty list is "no prediction for this task": Label Studio keeps the batch aligned, stores
        # nothing, and asks again next time (right for a provider outage)
        return {"results": [p.as_json() if p is not None else [] for p in self.predictions],
                "model_version": self.model_version}


def prediction_for(state: ProjectState, verdict: Verdict, version: str | None = None) -> Prediction | None:
    """A verdict as Label Studio's prediction, or None when the verdict is an abstention."""
    if not verdict.usable:
        return None
    return Prediction(state.schema.build_result(verdict), version or state.judge.version,
                      round(verdict.score, 4) if verdict.score is not None else None)


def record_positions(store: Store, state: ProjectState, task_id: Any, verdict: Verdict) -> None:
    """Pairwise: keep both orders' answers, so the report can measure position bias."""
    if (isinstance(task_id, bool) or not isinstance(task_id, (int, str))
            or not (str(task_id).isascii() and str(task_id).isdigit())):
        return  # a task without a Label Studio id (a preview, a hand-made request): nothing to key it by
    for answer in verdict.answers.values():
        if answer.position is not None:
            store.add_pair_judgment(state.project_id, int(task_id), state.judge.version, answer.position)


def past_the_cap(verdicts: Sequence[Verdict], asked: set[int], cap: int) -> list[int]:
    """The positions of the answers (usable verdicts, not among ``asked``: those the judge is still to
    answer) past the first ``cap``, in order."""
    return [i for i, v in enumerate(verdicts) if v.usable and i not in asked][cap:]


class Admission:
    """How many /predict requests may wait on the judge at once: all together, ``threads - 2`` (two of
    the server's threads stay free for /health, /setup and /webhook, which Label Studio gives 1-3 s),
    and per project half of that (a project whose provider hangs cannot take every thread). A request
    past either bound is still answered, at once, with what needs no judge call."""

    def __init__(self, threads: int) -> None:
        self._lock = threading.Lock()
        self.total = max(1, threads - 2)
        self.per_project = max(1, self.total // 2)
        self._in: dict[str, int] = {}

    @contextmanager
    def enter(self, pid: str) -> Iterator[bool]:
        with self._lock:
            admitted = sum(self._in.values()) < self.total and self._in.get(pid, 0) < self.per_project
            if admitted:
                self._in[pid] = self._in.get(pid, 0) + 1
        try:
            yield admitted
        finally:
            if admitted:
                with self._lock:
                    self._in[pid] -= 1


class Predictor:
    """``predict(tasks, project=...)``: one entry per task, in order; a task that cannot be labeled gets
    an empty list (an abstention, reason logged) and never fails the batch."""

    def __init__(self, settings: Settings, store: Store, projects: Projects, *,
                 claimed: Callable[[str], set[int]], hand_over: HandOver) -> None:
        self.settings = settings
        self.store = store
        self.projects = projects
        self._claimed = claimed
        self._hand_over = hand_over
        # judge calls of /predict in flight at once, per project (Label Studio sends a whole selection in
        # one request): a project whose provider hangs fills its own pool, never another project's
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._pools_lock = threading.Lock()
        self._admission = Admission(settings.serve_threads)

    def predict(self, tasks: Sequence[dict], *, project: Any, label_config: str | None = None,
                context: dict | None = None) -> ModelResponse:
        state = self.projects.state(project, label_config)
        served = version = state.version
        hint = interactive_hint(context)
        if hint:  # an annotator's note (interactive pre-annotation): the judge, told it, for this task only
            state, version = self._hinted(state, hint, context), f"{state.judge.version}+hint"
        with self._admission.enter(state.project_id) as admitted:
            # past its share of the server's threads, a project's /predict does not wait for the judge:
            # it answers what is ready (cache, evaluator) at once and hands the rest to a background job
            budget = self.settings.predict_budget if admitted else 0.0
            return ModelResponse(self._predict(state, tasks, version, time.monotonic() + budget), served)

    def _predict(self, state: ProjectState, tasks: Sequence[dict], version: str, deadline: float) -> list[Prediction | None]:
        owned = self._claimed(state.project_id)
        free = [i for i, t in enumerate(tasks) if task_id_of(t) not in owned]
        verdicts: list[Verdict] = [Verdict(error="being labeled by a background job") for _ in tasks]
        if state.mode == "judge":
            asked = free
        else:
            evaluator = state.evaluator
            assert evaluator is not None  # the evaluator and cascade modes exist only with one
            scores = evaluator.score([tasks[i] for i in free])
            band = state.config.cascade_band or evaluator.band  # set by hand, else chosen in training
            for i, p in zip(free, scores):
                verdicts[i] = evaluator.verdict(p)
            asked = [i for i, ask in zip(free, judge_asked(scores, band)) if ask] if state.mode == "cascade" else []
            self.store.add_ledger(state.project_id, version, state.config.model,
                                  evaluator_answered=len(free) - len(asked))
        in_answer = set(asked)
        self._cap_evaluator(state, verdicts, in_answer)
        # Label Studio saves what /predict returns one by one before the button returns: the judge answers
        # at most PREDICT_MAX_ANSWERS of them here, and the background job takes the rest (no call made twice)
        room = max(0, self.settings.predict_max_answers
                   - sum(1 for i, v in enumerate(verdicts) if v.usable and i not in in_answer))
        asked, beyond = asked[:room], asked[room:]
        if self.store.lease_held(f"label:{state.project_id}"):
            # a labeling run (a job here, a CLI run, a worker) is writing this project's predictions: an answer
            # here too would give a task two. Its follow-up job labels what that run leaves undone.
            asked, beyond = [], asked + beyond
        for i in beyond:
            verdicts[i] = Verdict(error="left to the background labeling job")
        late_ids = [t for t in (task_id_of(tasks[i]) for i in beyond) if t is not None]
        running: list[Any] = []
        if asked:
            items = [(t.get("id") if isinstance(t, dict) else None, t.get("data") if isinstance(t, dict) else None)
                     for t in (tasks[i] for i in asked)]
            judged = judge_within(state.judge, items, pool=self._pool(state.project_id), cache=self.store,
                                  deadline=deadline, after=functools.partial(self._after_call, state))
            for i, v in zip(asked, judged.verdicts):
                verdicts[i] = v
            row = ledger_row(judged.paid, cache_hits=judged.cache_hits,
                             price=functools.partial(self.settings.cost, state.config.model))
            if row["calls"] or row["cache_hits"]:
                self.store.add_ledger(state.project_id, version, state.config.model, **row)
            late_ids = [t for t in (task_id_of(tasks[asked[i]]) for i in judged.late) if t is not None] + late_ids
            running = judged.running
        if late_ids:  # hand_over logs where they went
            answered = [task_id_of(tasks[i]) for i, v in enumerate(verdicts) if v.usable]
            self._hand_over(state, late_ids, running, answered[-1] if answered else None)
        return [prediction_for(state, v, version) for v in verdicts]

    def _cap_evaluator(self, state: ProjectState, verdicts: list[Verdict], asked: set[int]) -> None:
        """The evaluator's answers past PREDICT_MAX_ANSWERS are left for the next press (Label Studio asks
        again for tasks without a prediction of the served version): the background job is the judge's,
        and would pay for what the evaluator answers free."""
        cap = self.settings.predict_max_answers
        over = past_the_cap(verdicts, asked, cap)
        for i in over:
            verdicts[i] = Verdict(error=f"past PREDICT_MAX_ANSWERS ({cap}) in one /predict: press again")
        if over:
            log.warning("project %s: the evaluator answered %d tasks; /predict returns %d (PREDICT_MAX_ANSWERS: "
                        "Label Studio saves them before the button returns) and the other %d come on the next "
                        "press", state.project_id, cap + len(over), cap, len(over))

    def _hinted(self, state: ProjectState, hint: str, context: Any = None) -> ProjectState:
        """The project's judge with the annotator's note added to its prompt: its own version (cached
        apart), answered by the judge even where an evaluator serves. Predictions never become few-shot
        examples (only human annotations do), so a note cannot leak into other tasks."""
        note = hint.replace("{", "{{").replace("}", "}}")
        spec = replace(state.judge.spec, template=f"{state.judge.spec.template}\n\nA note from the annotator "
                                                  f"for this item (take it into account): {note}")
        judge = build_judge(spec, state.judge.provider, state.judge.input_keys, self.settings)
        # the judge's reason must not overwrite the TextArea the note was typed in
        schema = replace(state.schema, rationale_control=None, _regions={}) \
            if state.schema.rationale_control in hint_controls(context) else state.schema
        return replace(state, judge=judge, evaluator=None, schema=schema)

    def _pool(self, pid: str) -> ThreadPoolExecutor:
        with self._pools_lock:
            pool = self._pools.get(pid)
            if pool is None:
                pool = self._pools[pid] = ThreadPoolExecutor(max_workers=self.settings.predict_concurrency,
                                                             thread_name_prefix=f"labeljudge-judge-{pid}")
            return pool

    def _after_call(self, state: ProjectState, task_id: Any, verdict: Verdict) -> None:
        """What /predict does with each verdict it paid for: few-shot positions, and its warnings logged."""
        record_positions(self.store, state, task_id, verdict)
        for warning in verdict.warnings:
            log.warning("project %s task %s: %s", state.project_id, task_id, warning)
        if verdict.error:
            log.warning("project %s task %s: abstained: %s", state.project_id, task_id, verdict.error)
