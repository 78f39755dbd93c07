"""The backend object: ``setup`` / ``predict(tasks, context)`` / ``fit(event, data)``, the same shape as
Label Studio's official ML backend class, with per-project state kept apart.

Nothing is loaded per request: providers (and the local model) live for the process and are shared
between projects that use the same model; parsed configs and judges are cached per project and
rebuilt only when the label config or extra_params change.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Sequence

from .judge import Judge, JudgeSpec, resolve_template
from .judge.providers import LocalProvider, OpenAIProvider, Provider, ProviderError
from .judge.pricing import cost as price
from .judge.runner import looked_up
from .judge.types import Answer, Example, Verdict, verdict_to_dict
from .events import ANNOTATION_EVENTS, BadEvent, check_event, deleted_ids, int_id, project_id_of
from .jobs import EventWorker
from .redact import redact, register
from .schema import TaskSchema, is_correction, parse_label_config
from .settings import ProjectConfig, Settings, parse_extra_params
from .store import Store
from .warmup import resolve_transformers

log = logging.getLogger(__name__)

PER_TASK_LOOKUPS = 8  # a burst touching more tasks of a project resyncs it once instead


class UnknownProject(LookupError):
    """/predict for a project that never went through /setup (and has no stored config)."""


@dataclass
class Evaluator:
    """A promoted evaluator, loaded once: its version, scorer and what it was trained to answer."""

    version: str
    scorer: Any
    control: str
    positive: str
    negative: str
    text_a: tuple[str, ...]
    text_b: tuple[str, ...]
    mtime: int = 0
    kind: str = "binary"  # or "reward": text_a is then (response A's key, response B's key)


@dataclass
class ProjectState:
    project_id: str
    config: ProjectConfig
    schema: TaskSchema
    judge: Judge
    key: tuple
    params: dict = field(default_factory=dict)  # the extra_params it was built from
    evaluator: Evaluator | None = None

    @property
    def mode(self) -> str:
        """judge, evaluator or cascade; with no promoted evaluator it is always the judge."""
        if self.evaluator is None:
            return "judge"
        return self.config.mode or "cascade"

    @property
    def version(self) -> str:
        if self.mode == "evaluator":
            return self.evaluator.version
        if self.mode == "cascade":
            return f"{self.evaluator.version}+{self.judge.version}"
        return self.judge.version


MAX_HINT_CHARS = 2000


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


def _task_id(task: Any) -> int | None:
    """A task's Label Studio id, or None for anything else (a preview, a malformed task)."""
    tid = task.get("id") if isinstance(task, dict) else None
    return tid if isinstance(tid, int) and not isinstance(tid, bool) else None


def is_judge_version(model_version: Any) -> bool:
    """Whether a prediction's model_version is one of the judge's (not an evaluator's, not a human's)."""
    return str(model_version or "").startswith("judge-")


def project_key(project: Any) -> str:
    """Label Studio sends "<id>.<created_ts>"; the id alone names the project everywhere else.
    Anything but a positive integer id is refused (ValueError), so nothing else becomes a store key."""
    if project is None or project == "":
        raise ValueError("the request names no project")
    return project_id_of(project)


class LabelJudgeBackend:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store = store or Store(settings.model_dir / "labeljudge.sqlite3")
        self.started_at = time.time()
        self._projects: dict[str, ProjectState] = {}
        self._providers: dict[tuple, Provider] = {}
        self._lock = threading.RLock()
        # judge calls of /predict in flight at once (Label Studio sends a whole selection in one request)
        self._pool = ThreadPoolExecutor(max_workers=settings.predict_concurrency, thread_name_prefix="labeljudge-judge")
        register(settings.openai_api_key, settings.label_studio_api_key, settings.basic_auth_pass,
                 settings.webhook_secret)
        self.worker = EventWorker(self.store, self.handle_events)
        self._evaluators: dict[str, Evaluator | None] = {}
        self._train_timers: dict[str, threading.Timer] = {}
        from .training import TrainingScheduler

        self.trainer = TrainingScheduler(self)
        self._live_jobs: set[int] = set()
        self._claims: dict[str, set[int]] = {}  # project -> task ids a running labeling job owns
        self._pool_generation: dict[str, int] = {}  # bumped when a project's human labels change

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        self.worker.start()
        provider = None
        if self.settings.preload_model and self.settings.judge_provider == "local":
            provider = self.provider(ProjectConfig.resolve(self.settings))
        threading.Thread(target=self._preload, args=(provider,), name="labeljudge-preload", daemon=True).start()

    def _preload(self, provider: Provider | None) -> None:
        """In the background, so /health answers at once: transformers' imports, then the local model."""
        resolve_transformers()
        if provider is None:
            return
        try:
            provider.load()  # type: ignore[attr-defined]
            log.info("local model %s loaded", provider.model)
        except Exception:
            log.exception("preloading the local model failed; it will be retried on first use")

    def register_provider(self, provider_name: str, model: str, provider: Provider) -> None:
        """Use ``provider`` for (provider_name, model): a custom provider from Python, or a benchmark's."""
        with self._lock:
            self._providers[(provider_name, model, self.settings.openai_base_url)] = provider

    def provider(self, config: ProjectConfig) -> Provider:
        s = self.settings
        key = (config.provider, config.model, s.openai_base_url)
        with self._lock:
            if key not in self._providers:
                if config.provider == "local":
                    self._providers[key] = LocalProvider(config.model, cache_dir=s.model_dir / "cache")
                else:
                    self._providers[key] = OpenAIProvider(
                        config.model, api_key=s.openai_api_key, base_url=s.openai_base_url,
                        timeout=s.request_timeout, max_retries=s.max_retries)
            return self._providers[key]

    # -- setup -----------------------------------------------------------------------------------
    def setup(self, project: Any, label_config: str, extra_params: Any = None, *,
              remember: bool = True) -> ProjectState:
        """Parse and remember a project's configuration; raises ConfigError / SchemaError /
        TemplateError with a message for the user when something in it cannot work.
        ``remember=False``: a state for one run (a labeling job's overrides), neither stored nor
        served to /predict."""
        pid = project_key(project)
        params = parse_extra_params(extra_params)
        state = self._build(pid, label_config, params, remember=remember)
        if remember:
            self.store.save_project(pid, label_config, params, state.version)
        return state

    def _build(self, pid: str, label_config: str, params: dict, *, remember: bool = True) -> ProjectState:
        key = (label_config, repr(sorted(params.items())), self._pool_generation.get(pid, 0))
        with self._lock:
            cached = self._projects.get(pid)
            if cached is not None and cached.key == key:
                return cached
        config = ProjectConfig.resolve(self.settings, params)
        schema = parse_label_config(label_config)
        pair = schema.pair_fields()
        # a pairwise config: the judge fills the preference (both orders); checklists stay human
        questions = tuple(schema.questions(config.control or ((pair[0],) if pair else ())))
        metric = config.metric
        if pair and not config.prompt and not metric:
            metric = "preference" if "messages" in schema.data_fields else "preference_prompt"
        spec = JudgeSpec(
            template=resolve_template(config.prompt, metric), provider=config.provider,
            model=config.model, temperature=config.temperature, max_tokens=config.max_tokens,
            rationale=config.rationale and schema.rationale_control is not None,
            field_map=config.fields, questions=questions,
            examples=self.examples(pid, schema) if config.few_shot_k > 0 else (),
            few_shot_k=config.few_shot_k,
            pair=(pair[1], pair[2]) if pair else None, pair_question=pair[0] if pair else None,
        )
        judge = Judge(spec, self.provider(config), input_keys=schema.data_fields,
                      max_field_chars=self.settings.max_field_chars, max_prompt_chars=self.settings.max_prompt_chars)
        state = ProjectState(pid, config, schema, judge, key, dict(params), self.evaluator_for(pid, schema))
        self.store.save_version(pid, spec.version, {
            "template": spec.template, "metric": config.metric, "provider": spec.provider, "model": spec.model,
            "temperature": spec.temperature, "few_shot": [e.id for e in spec.examples], "k": spec.few_shot_k})
        if remember:
            with self._lock:
                self._projects[pid] = state
        return state

    def examples(self, pid: str, schema: TaskSchema) -> tuple[Example, ...]:
        """The few-shot pool: one reference annotation per task (ground truth first, then the latest),
        as answers to the config's questions."""
        chosen: dict[int, dict] = {}
        for ann in self.store.annotations(pid):
            if not ann["task_data"]:
                continue
            best = chosen.get(ann["task_id"])
            if best is None or (ann["ground_truth"], ann["updated_at"]) >= (best["ground_truth"], best["updated_at"]):
                chosen[ann["task_id"]] = ann
        out = []
        for ann in sorted(chosen.values(), key=lambda a: a["id"]):
            answers, rationale = schema.answers_from_result(ann["result"])
            if answers:
                out.append(Example(f"ann-{ann['id']}", ann["task_data"], answers, rationale,
                                   correction=bool(ann.get("correction"))))
        return tuple(out)

    def labels_changed(self, pid: str) -> None:
        """Human labels changed: the next state() rebuilds the judge with the new few-shot pool
        (a new version, so Label Studio re-predicts)."""
        with self._lock:
            self._pool_generation[pid] = self._pool_generation.get(pid, 0) + 1

    def state(self, project: Any, label_config: str | None = None) -> ProjectState:
        pid = project_key(project)
        with self._lock:
            state = self._projects.get(pid)
            generation = self._pool_generation.get(pid, 0)
        if state is not None and (label_config is None or state.schema.config == label_config) \
                and state.key[2] == generation:
            state.evaluator = self.evaluator_for(pid, state.schema)
            return state
        stored = self.store.project(pid)
        if stored is None and not label_config:
            raise UnknownProject(f"project {pid} is not set up: connect the backend in Label Studio first")
        params = stored["extra_params"] if stored is not None else (state.params if state is not None else {})
        return self._build(pid, label_config or stored["label_config"], params)

    # -- evaluator serving -----------------------------------------------------------------------
    def registry(self, pid: str):
        from .evaluator.registry import Registry

        return Registry(self.settings.model_dir / "evaluators", pid)

    def evaluator_for(self, pid: str, schema: TaskSchema) -> Evaluator | None:
        """The promoted evaluator, reloaded only when the registry's pointer changed (a stat per call).
        Its score picks one of two labels: Pass/Fail-like, or A/B for a pairwise evaluator."""
        directory = self.settings.model_dir / "evaluators" / pid / "current.json"
        try:
            mtime = directory.stat().st_mtime_ns
        except FileNotFoundError:
            return None
        cached = self._evaluators.get(pid)
        if cached is not None and cached.mtime == mtime:
            return cached
        registry = self.registry(pid)
        version = registry.current()
        if version is None:
            return None
        import json as _json

        path = registry.path(version)
        manifest = _json.loads((path / "manifest.json").read_text())
        ev = self._load_evaluator(pid, version, path, manifest, schema)
        if ev is None:
            return None
        ev.mtime = mtime
        with self._lock:
            self._evaluators[pid] = ev  # atomic swap: requests in flight keep the old object
        log.info("project %s now serves %s", pid, version)
        return ev

    def _load_evaluator(self, pid: str, version: str, path: Any, manifest: dict,
                        schema: TaskSchema) -> Evaluator | None:
        """The Evaluator for a registry version, or None (logged) when this config cannot take its
        answers: a binary evaluator needs a two-option control, a pairwise one the config's A/B pair."""
        from .evaluator.reward import RewardScorer
        from .evaluator.scorer import Scorer

        spec = schema.controls.get(manifest["control"])
        if manifest.get("kind") == "reward":
            pair = schema.pair_fields()
            if spec is None or pair is None or pair[0] != manifest["control"]:
                log.warning("pairwise evaluator %s of project %s answers %s, which this config does not compare; "
                            "serving the judge", version, pid, manifest["control"])
                return None
            side = {o.lower(): o for o in spec.question.options}
            positive, negative = side.get("a") or side.get("left"), side.get("b") or side.get("right")
            return Evaluator(version, RewardScorer(path), manifest["control"], positive, negative,
                             (manifest["input"]["a"], manifest["input"]["b"]), tuple(manifest["input"]["text_b"]),
                             kind="reward")
        if spec is None or spec.question.kind != "single" or len(spec.question.options) != 2 \
                or manifest["positive"][0] not in spec.question.options:
            log.warning("evaluator %s of project %s answers %s, which this config cannot take as two labels; "
                        "serving the judge", version, pid, manifest["control"])
            return None
        positive = manifest["positive"][0]
        negative = [o for o in spec.question.options if o != positive][0]
        return Evaluator(version, Scorer(path), manifest["control"], positive, negative,
                         tuple(manifest["input"]["text_a"]), tuple(manifest["input"]["text_b"]))

    def evaluator_changed(self, pid: str) -> None:
        with self._lock:
            self._evaluators.pop(pid, None)

    def score_tasks(self, state: ProjectState, tasks: Sequence[dict]) -> list[float]:
        from .evaluator.data import InputSpec

        ev = state.evaluator
        if ev.kind == "reward":  # P(response A is better than B)
            p = ev.scorer.prefer_rows([t.get("data") or {} for t in tasks], ev.text_a[0], ev.text_a[1], ev.text_b)
            return [float(x) for x in p]
        spec = InputSpec(text_a=ev.text_a, text_b=ev.text_b)
        pairs = [spec.pair(t.get("data") or {}) for t in tasks]
        return [float(p) for p in ev.scorer.score([a for a, _ in pairs], [b for _, b in pairs])]

    def _evaluator_verdict(self, state: ProjectState, p: float) -> Verdict:
        ev = state.evaluator
        label, conf = (ev.positive, p) if p >= 0.5 else (ev.negative, 1 - p)
        return Verdict(answers={ev.control: Answer(value=label, confidence=conf)})

    def maybe_train(self, pid: str) -> None:
        """Called per annotation event: decide once the burst is over (TRAIN_DEBOUNCE seconds of quiet),
        so 200 webhooks in a row produce one training run, not one per threshold crossing."""
        with self._lock:
            timer = self._train_timers.pop(pid, None)
            if timer is not None:
                timer.cancel()
            timer = threading.Timer(self.settings.train_debounce, self._check_training, args=(pid,))
            timer.daemon = True
            self._train_timers[pid] = timer
        timer.start()

    def _check_training(self, pid: str) -> None:
        """Enough new human labels since the last training: start one (coalesced) in the background."""
        with self._lock:
            self._train_timers.pop(pid, None)
        try:
            every = self.state(pid).config.train_every
        except Exception:
            every = self.settings.train_every
        if every <= 0 or self.api() is None:
            return
        labeled = self.store.count_labeled_tasks(pid)
        if labeled - self.store.trained_labels(pid) >= every:
            self.trainer.request(pid, f"{labeled - self.store.trained_labels(pid)} new labels")

    # -- predict ---------------------------------------------------------------------------------
    def predict(self, tasks: Sequence[dict], *, project: Any, label_config: str | None = None,
                context: dict | None = None) -> list[dict | list]:
        """One entry per task, in order. A task the judge cannot label gets an empty list (an
        abstention) with the reason logged; it never fails the batch.

        Answers within PREDICT_BUDGET seconds (Label Studio gives up on /predict after 100 s): what is
        ready then (cached verdicts, the evaluator's answers, the calls finished in time) is returned,
        and the rest is handed to a background labeling job of the project that writes their
        predictions through the API as they come. Tasks such a job owns are never answered here too,
        so no task gets two predictions and a second press starts no second job."""
        state = self.state(project, label_config)
        version = state.version
        hint = interactive_hint(context)
        if hint:  # an annotator's note (interactive pre-annotation): the judge, told it, for this task only
            state, version = self._hinted(state, hint, context), f"{state.judge.version}+hint"
        deadline = time.monotonic() + self.settings.predict_budget
        owned = self._claimed(state.project_id)
        free = [i for i, t in enumerate(tasks) if _task_id(t) not in owned]
        verdicts: list[Verdict] = [Verdict(error="being labeled by a background job") for _ in tasks]
        if state.mode == "judge":
            answered, judged, late, running = self._judge_tasks(state, [tasks[i] for i in free], deadline)
            hits = len(free) - len(judged) - len(late)
            for i, v in zip(free, answered):
                verdicts[i] = v
            late = [free[i] for i in late]
        else:
            scores = self.score_tasks(state, [tasks[i] for i in free])
            low, high = state.config.cascade_band
            for i, p in zip(free, scores):
                verdicts[i] = self._evaluator_verdict(state, p)
            unsure = [i for i, p in zip(free, scores) if low < p < high] if state.mode == "cascade" else []
            answered, judged, late, running = self._judge_tasks(state, [tasks[i] for i in unsure], deadline)
            hits = len(unsure) - len(judged) - len(late)
            for i, v in zip(unsure, answered):
                verdicts[i] = v
            late = [unsure[i] for i in late]
            self.store.add_ledger(state.project_id, version, state.config.model,
                                  evaluator_answered=len(free) - len(unsure))
        calls = sum(v.usage.calls for v in judged)
        if calls or hits:
            t_in, t_out = sum(v.usage.tokens_in for v in judged), sum(v.usage.tokens_out for v in judged)
            self.store.add_ledger(state.project_id, version, state.config.model, calls=calls, tokens_in=t_in,
                                  tokens_out=t_out, cost=price(state.config.model, t_in, t_out), cache_hits=hits,
                                  failures=sum(1 for v in judged if not v.usable))
        if late:
            self._hand_over(state, [tasks[i] for i in late], running)
        return [self.prediction_for(state, v, version) for v in verdicts]

    def _hinted(self, state: ProjectState, hint: str, context: Any = None) -> ProjectState:
        """The project's judge with the annotator's note added to its prompt: its own version (cached
        apart), answered by the judge even where an evaluator serves. Predictions never become few-shot
        examples (only human annotations do), so a note cannot leak into other tasks."""
        from dataclasses import replace

        note = hint.replace("{", "{{").replace("}", "}}")
        spec = replace(state.judge.spec, template=f"{state.judge.spec.template}\n\nA note from the annotator "
                                                  f"for this item (take it into account): {note}")
        judge = Judge(spec, state.judge.provider, input_keys=state.judge.input_keys,
                      max_field_chars=state.judge.max_field_chars, max_prompt_chars=state.judge.max_prompt_chars)
        # the judge's reason must not overwrite the TextArea the note was typed in
        schema = replace(state.schema, rationale_control=None, _regions={}) \
            if state.schema.rationale_control in hint_controls(context) else state.schema
        return replace(state, judge=judge, evaluator=None, schema=schema)

    def _claimed(self, pid: str) -> set:
        with self._lock:
            return set(self._claims.get(pid, ()))

    def _hand_over(self, state: ProjectState, tasks: Sequence[dict], running: Sequence[Any] = ()) -> None:
        """The tasks /predict had no time for go to a background labeling job of their project, which
        writes their predictions through Label Studio's API (the runner, its lease and the cache)."""
        ids = [t for t in (_task_id(t) for t in tasks) if isinstance(t, int)]
        if not ids:
            return
        if self.api() is None:
            log.warning("project %s: /predict ran out of its %.0f s budget with %d tasks left; without "
                        "LABEL_STUDIO_URL/LABEL_STUDIO_API_KEY they cannot be labeled in the background, so "
                        "Label Studio will ask again", state.project_id, self.settings.predict_budget, len(ids))
            return
        job = self.start_label_job(int(state.project_id), task_ids=ids, concurrency=self.settings.predict_concurrency,
                                   wait_for=running,
                                   reason=f"Retrieve predictions: {len(ids)} tasks past the {self.settings.predict_budget:.0f} s budget")
        log.warning("project %s: /predict answered within its %.0f s budget; %d more tasks go to labeling job %s",
                    state.project_id, self.settings.predict_budget, len(ids), job["id"])

    def _judge_tasks(self, state: ProjectState, tasks: Sequence[dict],
                     deadline: float | None = None) -> tuple[list[Verdict], list[Verdict], list[int], list[Any]]:
        """The judge's verdicts for ``tasks``, in order, the ones that were paid for now, and the
        indices not judged by ``deadline`` (their verdicts are abstentions). A verdict already paid for
        (the same judge version and task content, from an earlier /predict or a labeling run) comes
        from the cache, so opening a task again or retrieving predictions after ``labeljudge label``
        costs nothing; new usable ones are cached, late ones too once they finish."""
        version = state.judge.version
        items = [(i, t["data"]) for i, t in enumerate(tasks) if isinstance(t, dict) and isinstance(t.get("data"), dict)]
        verdicts: list[Verdict | None] = [None] * len(tasks)
        hashes: dict[int, str] = {}
        for i, _, h, hit in looked_up(items, version, self.store, chunk=max(1, len(items))):
            hashes[i], verdicts[i] = h, hit.verdict if hit is not None else None
        todo = [i for i, v in enumerate(verdicts) if v is None]
        futures = {i: self._pool.submit(self._judge_one, state, tasks[i]) for i in todo}
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        wait(list(futures.values()), timeout=remaining)
        late = [i for i in todo if not futures[i].done()]
        running = []
        for i in late:
            future = futures[i]
            if not future.cancel():  # already running: let it finish and cache, so nothing is paid twice
                cached = threading.Event()
                future.add_done_callback(functools.partial(self._cache_late, version, hashes.get(i), cached))
                running.append(cached)
            verdicts[i] = Verdict(error="not judged within the /predict budget")
        late_set = set(late)
        finished = [i for i in todo if i not in late_set]  # done when the budget was checked
        for i in finished:
            verdicts[i] = futures[i].result()
        judged = [verdicts[i] for i in finished]
        fresh = [(hashes[i], verdict_to_dict(verdicts[i])) for i in finished if i in hashes and verdicts[i].usable]
        if fresh:
            self.store.put_verdicts(version, fresh)
        return verdicts, judged, late, running  # type: ignore[return-value]  # every None was filled

    def _cache_late(self, version: str, content_hash: str | None, cached: threading.Event, future: Any) -> None:
        try:
            verdict = future.result()
            if content_hash and verdict.usable:
                self.store.put_verdicts(version, [(content_hash, verdict_to_dict(verdict))])
        except Exception:
            log.exception("caching a verdict that finished after the /predict budget failed")
        finally:
            cached.set()

    def _judge_one(self, state: ProjectState, task: dict) -> Verdict:
        data = task.get("data") if isinstance(task, dict) else None
        if not isinstance(data, dict):
            return Verdict(error="task has no data object")
        try:
            verdict = state.judge.judge(data)
        except ProviderError as exc:
            verdict = Verdict(error=redact(str(exc)))
        except Exception as exc:  # one task's surprise is its own abstention, never the batch's failure
            log.exception("project %s task %s: judging failed", state.project_id, task.get("id"))
            verdict = Verdict(error=redact(f"could not judge this task: {type(exc).__name__}: {exc}"))
        self.record_positions(state, task.get("id"), verdict)
        for warning in verdict.warnings:
            log.warning("project %s task %s: %s", state.project_id, task.get("id"), warning)
        if verdict.error:
            log.warning("project %s task %s: abstained: %s", state.project_id, task.get("id"), verdict.error)
        return verdict

    def record_positions(self, state: ProjectState, task_id: Any, verdict: Verdict) -> None:
        """Pairwise: keep both orders' answers, so the report can measure position bias."""
        if isinstance(task_id, bool) or not isinstance(task_id, (int, str)) or not (str(task_id).isascii() and str(task_id).isdigit()):
            return  # a task without a Label Studio id (a preview, a hand-made request): nothing to key it by
        for answer in verdict.answers.values():
            if answer.position is not None:
                self.store.add_pair_judgment(state.project_id, int(task_id), state.judge.version, answer.position)

    def prediction_for(self, state: ProjectState, verdict: Verdict, version: str | None = None) -> dict | list:
        if not verdict.usable:
            # An empty list is "no prediction for this task": Label Studio keeps the batch aligned,
            # stores nothing, and asks again next time (right for a provider outage).
            return []
        out: dict[str, Any] = {"result": state.schema.build_result(verdict),
                               "model_version": version or state.judge.version}
        if verdict.score is not None:
            out["score"] = round(verdict.score, 4)
        return out

    def _secrets(self) -> tuple[str | None, ...]:
        s = self.settings
        return (s.openai_api_key, s.label_studio_api_key, s.basic_auth_pass, s.webhook_secret)

    # -- fit (webhook events, run by the background worker) ---------------------------------------
    def record_event(self, payload: Any) -> int:
        """Check and persist a webhook event and wake the worker; this is all /webhook does before
        answering. A payload that cannot be understood is quarantined (stored apart with its reason,
        logged, counted in /metrics) and BadEvent raised, so it never reaches the events it would break."""
        try:
            head = check_event(payload)
        except BadEvent as exc:
            project = payload.get("project") if isinstance(payload, dict) else None
            raw = project.get("id") if isinstance(project, dict) else None
            pid = str(raw)[:20] if isinstance(raw, (int, str)) and str(raw).isascii() and str(raw).isdigit() else None
            qid = self.store.quarantine(pid, "webhook", str(exc), payload)
            log.warning("webhook quarantined as #%s (project %s): %s", qid, pid, exc)
            raise
        event_id = self.store.add_event(head.project_id, head.action, payload)
        self.worker.kick()
        return event_id

    def fit(self, event: str, data: dict, **kwargs: Any) -> None:
        """One event, as Label Studio's ML backend class names it; raises what handling it raised."""
        error = self.handle_events([{"id": 0, "action": event, "payload": data}]).get(0)
        if error:
            raise RuntimeError(error)

    def handle_events(self, events: list[dict]) -> dict[int, str | None]:
        """A burst of stored events, coalesced: annotations are stored as they come, then each project
        touched is looked at once (corrections against the judge, the few-shot pool, the training
        trigger), not once per event. Returns the error of each event that failed, by event id."""
        errors: dict[int, str | None] = {}
        touched: dict[str, dict] = {}  # project -> {"tasks": {task ids}, "config": label_config or None}
        for event in events:
            try:
                self._apply_event(event["action"], event["payload"], touched)
            except Exception as exc:  # a bad event must not stop the burst
                log.warning("event %s (%s) failed: %s", event["id"], event["action"], exc)
                errors[event["id"]] = f"{type(exc).__name__}: {exc}"
        for pid, seen in touched.items():
            try:
                if seen["tasks"]:
                    self._mark_corrections(pid, seen["tasks"], seen["config"])
            except Exception as exc:  # the correction flag is a hint; the labels are stored already
                from .labelstudio import describe_error

                log.warning("project %s: could not compare new annotations with the judge: %s", pid,
                            describe_error(exc))
            self.labels_changed(pid)
            if seen["annotated"]:
                self.maybe_train(pid)
        return errors

    def _apply_event(self, event: str, data: dict, touched: dict[str, dict]) -> None:
        head = check_event(data)  # events stored before checks existed are checked here too
        pid = head.project_id
        project = data.get("project") or {}
        if event in ANNOTATION_EVENTS and pid:
            annotation = data["annotation"]
            seen = touched.setdefault(pid, {"tasks": set(), "config": None, "annotated": False})
            seen["config"] = project.get("label_config") or seen["config"]
            if annotation.get("was_cancelled"):
                self.store.delete_annotations([int(annotation["id"])])
                return
            problems = self._problems(pid, annotation, project.get("label_config"))
            if problems:
                qid = self.store.quarantine(pid, "annotation", "; ".join(problems)[:500], data)
                log.warning("annotation %s of project %s quarantined as #%s: %s", annotation["id"], pid, qid,
                            problems[0])
                return
            task_id = int_id(annotation["task"], "annotation.task")
            self.store.upsert_annotation(pid, {**annotation, "task": task_id}, (data.get("task") or {}).get("data"))
            seen["tasks"].add(task_id)
            seen["annotated"] = True
        elif event == "ANNOTATIONS_DELETED":
            self.store.delete_annotations(deleted_ids(data))
            if pid:
                touched.setdefault(pid, {"tasks": set(), "config": None, "annotated": False})
        elif event == "START_TRAINING" and pid:
            if self.api() is None:
                raise RuntimeError("Start Training needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend")
            self.resync(int(pid))
            self.trainer.request(pid, "Start Training")
        # every other project event is acknowledged and ignored

    def _problems(self, pid: str, annotation: dict, label_config: str | None) -> list[str]:
        """Why this annotation cannot be read against its project's config (empty when it can, or when
        the config is not known here: reads skip what they cannot use)."""
        try:
            schema = self.state(pid, label_config).schema
        except Exception:
            return []
        return schema.problems(annotation.get("result"))

    def _mark_corrections(self, pid: str, task_ids: set[int], label_config: str | None) -> None:
        """Did the humans change the judge's answers? Needs Label Studio's API (the webhook payload
        carries no predictions): a few tasks are looked up one by one, a bigger burst resyncs the
        project once (one export) instead of one request per event."""
        api = self.api()
        if api is None:
            return
        try:
            schema = self.state(pid, label_config).schema
        except UnknownProject:  # not set up here and the payload has no config: the resync reads it
            schema = None
        if len(task_ids) > PER_TASK_LOOKUPS or schema is None:
            self.resync(int(pid))
            return
        by_id = {a["id"]: a for a in self.store.annotations(pid) if a["task_id"] in task_ids}
        for task_id in task_ids:
            preds = [p for p in api.task_predictions(task_id) if is_judge_version(p["model_version"])]
            if not preds:
                continue
            for ann in by_id.values():
                if ann["task_id"] == task_id:
                    self.store.set_correction(ann["id"], is_correction(schema, ann["result"], preds[-1]["result"]))

    def api(self):
        """A Label Studio API client when LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are set."""
        s = self.settings
        if not (s.label_studio_url and s.label_studio_api_key):
            return None
        if getattr(self, "_api", None) is None:
            from .labelstudio import LabelStudioAPI

            self._api = LabelStudioAPI(s.label_studio_url, s.label_studio_api_key)
        return self._api

    def resync(self, project: int) -> dict:
        """Re-read every annotation of a project from Label Studio (START_TRAINING, CLI, recovery)."""
        api = self.api()
        if api is None:
            raise RuntimeError("resync needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        from .sync import resync_project

        out = resync_project(api, self.store, project, self)
        self.labels_changed(str(project))
        return out

    def start_label_job(self, project: int, *, sample: int | None = None, concurrency: int = 8,
                        overrides: dict | None = None, batch_api: bool = False,
                        poll_interval: float = 30.0, max_cost: float | None = None,
                        task_ids: Sequence[int] | None = None, reason: str | None = None,
                        wait_for: Sequence[Any] = ()) -> dict:
        """Bulk-label a project in a background thread; status is readable at /jobs/<id>.
        One labeling job per project at a time: a second request returns the running one (tasks it was
        handed on top are added to it if it has not listed the project yet, else left for the next press).
        ``task_ids``: only these tasks (what /predict had no time for); they are claimed, so /predict
        does not answer them too.
        ``batch_api``: through one OpenAI Batch API batch (its id and status show in the progress)."""
        api = self.api()
        if api is None:
            raise RuntimeError("labeling jobs need LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY on the backend")
        pid = str(project)
        with self._lock:
            running = [j for j in self.store.jobs(pid, "label") if j["status"] in ("queued", "running")
                       and j["id"] in self._live_jobs]
            if running:
                return running[0]
            job_id = self.store.create_job(pid, "label")
            self._live_jobs.add(job_id)
            if task_ids is not None:
                self._claims[pid] = set(task_ids)
        if reason:
            self.store.update_job(job_id, progress={"reason": reason, "done": 0, "total": len(task_ids or ())})

        shown = {"at": 0.0, "batch": None}

        def progress(summary, todo: int) -> None:
            done = summary.labeled + summary.failed
            now = time.monotonic()
            if now - shown["at"] < 0.5 and done < todo:  # a sqlite write per task would cost more than the task
                return
            shown["at"] = now
            self.store.update_job(job_id, progress={"done": done, "total": todo, "failed": summary.failed,
                                                    "cost": round(summary.cost, 6), "batch": shown["batch"],
                                                    **({"reason": reason} if reason else {})})

        def batch_progress(status) -> None:
            shown["batch"] = {"id": status.batch_id, "status": status.status, "completed": status.completed,
                              "failed": status.failed, "total": status.total}
            self.store.update_job(job_id, progress={"done": 0, "batch": shown["batch"]})

        def run() -> None:
            from .labeling import label_project

            for cached in wait_for:  # calls /predict left in flight: cached first, so the job does not pay again
                cached.wait(self.settings.request_timeout * (self.settings.max_retries + 1))
            self.store.update_job(job_id, status="running")
            try:
                summary = label_project(self, api, project, overrides=overrides, sample=sample,
                                        concurrency=concurrency, progress=progress, batch_api=batch_api,
                                        poll_interval=poll_interval, batch_progress=batch_progress,
                                        max_cost=max_cost, task_ids=task_ids)
                self.store.update_job(job_id, status="finished", result=summary.as_dict())
            except Exception as exc:
                log.exception("labeling job %s failed", job_id)
                self.store.update_job(job_id, status="failed", error=redact(str(exc))[:500])
            finally:
                with self._lock:
                    self._live_jobs.discard(job_id)
                    if task_ids is not None:
                        self._claims.pop(pid, None)

        threading.Thread(target=run, name=f"labeljudge-label-{job_id}", daemon=True).start()
        return self.store.job(job_id)

    # -- info ------------------------------------------------------------------------------------
    def versions(self) -> dict:
        with self._lock:
            live = {pid: s.version for pid, s in self._projects.items()}
        return {"projects": [{**p, "model_version": live.get(p["project_id"], p["model_version"])}
                             for p in self.store.projects()]}
