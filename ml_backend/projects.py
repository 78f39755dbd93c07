"""Per-project state: each project's parsed config, judge and served evaluator, built once per
(label config, extra_params, few-shot pool) and kept for the process.

Nothing is loaded per request: the judge is rebuilt only when the label config or extra_params
change, or when human labels change the few-shot pool (a new version, so Label Studio re-predicts).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from .events.checks import project_id_of
from .judge import Judge
from .judge.types import Example
from .judges import ProviderPool, build_judge, judge_spec
from .labelstudio.config import TaskSchema, parse_label_config
from .serving import EvaluatorPool, ServedEvaluator
from .settings import ProjectConfig, Settings, parse_extra_params
from .store import Store


class UnknownProject(LookupError):
    """/predict for a project that never went through /setup (and has no stored config)."""


def project_key(project: Any) -> str:
    """Label Studio sends "<id>.<created_ts>"; the id alone names the project everywhere else.
    Anything but a positive integer id is refused (ValueError), so nothing else becomes a store key."""
    if project is None or project == "":
        raise ValueError("the request names no project")
    return project_id_of(project)


def pool_size(labels: int, k: int, step: int) -> int:
    """How many of ``labels`` reference annotations (oldest first) the few-shot pool holds: all while
    there are at most ``k`` (each one teaches), then a multiple of ``step``, never fewer than ``k``."""
    if labels <= k or step <= 1:
        return labels
    return max(k, step * (labels // step))


@dataclass
class ProjectState:
    project_id: str
    config: ProjectConfig
    schema: TaskSchema
    judge: Judge
    key: tuple
    params: dict = field(default_factory=dict)  # the extra_params it was built from
    evaluator: ServedEvaluator | None = None

    @property
    def mode(self) -> str:
        """judge, evaluator or cascade; with no promoted evaluator it is always the judge."""
        if self.evaluator is None:
            return "judge"
        return self.config.mode or "cascade"

    @property
    def version(self) -> str:
        if self.mode == "evaluator" and self.evaluator is not None:
            return self.evaluator.version
        if self.mode == "cascade" and self.evaluator is not None:
            return f"{self.evaluator.version}+{self.judge.version}"
        return self.judge.version


class Projects:
    """The registry of project states: ``setup`` (Label Studio's /setup, a labeling run's overrides)
    and ``state`` (every request), with the stored config as the fallback after a restart."""

    def __init__(self, settings: Settings, store: Store, providers: ProviderPool, evaluators: EvaluatorPool) -> None:
        self.settings = settings
        self.store = store
        self.providers = providers
        self.evaluators = evaluators
        self._states: dict[str, ProjectState] = {}
        self._generation: dict[str, int] = {}  # bumped when a project's human labels change
        self._lock = threading.RLock()
        # one per project, held from reading its stored config to installing the state built from it,
        # so a rebuild that read the config before a /setup cannot install its stale state after it
        self._building: dict[str, threading.RLock] = {}

    def _build_lock(self, pid: str) -> threading.RLock:
        with self._lock:
            return self._building.setdefault(pid, threading.RLock())

    def setup(self, project: Any, label_config: str, extra_params: Any = None, *,
              remember: bool = True) -> ProjectState:
        """Parse and remember a project's configuration; raises ConfigError / SchemaError /
        TemplateError with a message for the user when something in it cannot work.
        ``remember=False``: a state for one run (a labeling job's overrides), neither stored nor
        served to /predict."""
        pid = project_key(project)
        params = parse_extra_params(extra_params)
        if not remember:
            return self._build(pid, label_config, params, remember=False)
        with self._build_lock(pid):
            state = self._build(pid, label_config, params)
            self.store.save_project(pid, label_config, params, state.version)
        return state

    def state(self, project: Any, label_config: str | None = None) -> ProjectState:
        pid = project_key(project)
        state = self._current(pid, label_config)
        if state is not None:
            return state
        with self._build_lock(pid):
            state = self._current(pid, label_config)  # built by another thread while this one waited
            if state is not None:
                return state
            with self._lock:
                last = self._states.get(pid)
            stored = self.store.project(pid)
            if stored is None and not label_config:
                raise UnknownProject(f"project {pid} is not set up: connect the backend in Label Studio first")
            params = stored["extra_params"] if stored is not None else (last.params if last is not None else {})
            return self._build(pid, label_config or (stored or {})["label_config"], params)

    def _current(self, pid: str, label_config: str | None) -> ProjectState | None:
        """The state already built for this config and few-shot pool, its evaluator refreshed; else None."""
        with self._lock:
            state = self._states.get(pid)
            generation = self._generation.get(pid, 0)
        if state is None or (label_config is not None and state.schema.config != label_config) \
                or state.key[2] != generation:
            return None
        state.evaluator = self.evaluators.for_project(pid, state.schema)
        return state

    def labels_changed(self, pid: str) -> None:
        """Human labels changed: the next state() rebuilds the judge with the new few-shot pool
        (a new version, so Label Studio re-predicts)."""
        with self._lock:
            self._generation[pid] = self._generation.get(pid, 0) + 1

    def live_versions(self) -> dict[str, str]:
        with self._lock:
            return {pid: s.version for pid, s in self._states.items()}

    def examples(self, pid: str, schema: TaskSchema, k: int | None = None) -> tuple[Example, ...]:
        """The few-shot pool: one reference annotation per task (ground truth first, then the latest),
        as answers to the config's questions, oldest first. The pool is in the judge's version, so past
        ``k`` examples it grows in steps of FEW_SHOT_REFRESH labels (``pool_size``): seven corrections
        made one version each, which a user reads as seven prompts. A changed or deleted example counts
        at once. A function of the store alone, so a CLI run and the server agree on the version."""
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
        k = self.settings.few_shot_k if k is None else k
        return tuple(out[:pool_size(len(out), k, self.settings.few_shot_refresh)])

    def _build(self, pid: str, label_config: str, params: dict, *, remember: bool = True) -> ProjectState:
        key = (label_config, repr(sorted(params.items())), self._generation.get(pid, 0))
        with self._lock:
            cached = self._states.get(pid)
            if cached is not None and cached.key == key:
                return cached
        config = ProjectConfig.resolve(self.settings, params)
        schema = parse_label_config(label_config)
        pair = schema.pair_fields()
        # a pairwise config: the judge fills the preference (both orders); checklists stay human
        questions = schema.questions(config.control or ((pair[0],) if pair else ()))
        metric = config.metric
        if pair and not config.prompt and not metric:
            metric = "preference" if "messages" in schema.data_fields else "preference_prompt"
        spec = judge_spec(config, questions, metric=metric,
                          rationale=config.rationale and schema.rationale_control is not None,
                          examples=self.examples(pid, schema, config.few_shot_k) if config.few_shot_k > 0 else (),
                          pair=(pair[1], pair[2]) if pair else None, pair_question=pair[0] if pair else None)
        judge = build_judge(spec, self.providers.get(config), schema.data_fields, self.settings)
        state = ProjectState(pid, config, schema, judge, key, dict(params), self.evaluators.for_project(pid, schema))
        self.store.save_version(pid, spec.version, {
            "template": spec.template, "metric": config.metric, "provider": spec.provider, "model": spec.model,
            "temperature": spec.temperature, "few_shot": [e.id for e in spec.examples], "k": spec.few_shot_k})
        if remember:
            with self._lock:
                self._states[pid] = state
        return state
