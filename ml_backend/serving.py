"""Evaluator serving: each project's promoted evaluator, loaded once and swapped atomically when the
registry's pointer moves (a stat per call), and its score turned into a verdict on the config's labels.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Sequence

from .evaluator.cascade import DEFAULT_BAND
from .evaluator.loading import LoadedEvaluator, load_evaluator
from .evaluator.registry import Registry
from .judge.types import Answer, Verdict, pair_side
from .labelstudio.config import TaskSchema
from .settings import Settings

log = logging.getLogger(__name__)


@dataclass
class ServedEvaluator:
    """A promoted evaluator as a project serves it: its version, the model, and the two labels its
    score picks between (Pass/Fail-like, or A/B for a pairwise evaluator)."""

    version: str
    model: LoadedEvaluator
    control: str
    positive: str
    negative: str
    mtime: int = 0
    band: tuple[float, float] = DEFAULT_BAND  # the cascade band its training chose (or the default)

    @property
    def kind(self) -> str:
        return self.model.kind

    def score(self, tasks: Sequence[dict]) -> list[float]:
        """P(positive) per task, or P(response A is better than B) for a pairwise evaluator."""
        return [float(p) for p in self.model.score([t.get("data") or {} for t in tasks])]

    def verdict(self, p: float) -> Verdict:
        label, conf = (self.positive, p) if p >= 0.5 else (self.negative, 1 - p)
        return Verdict(answers={self.control: Answer(value=label, confidence=conf)})


class EvaluatorPool:
    """The promoted evaluator of every project, reloaded only when its registry pointer changed."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._served: dict[str, ServedEvaluator] = {}
        self._lock = threading.Lock()

    def registry(self, pid: str) -> Registry:
        return Registry(self.settings.evaluators_dir, pid)

    def for_project(self, pid: str, schema: TaskSchema) -> ServedEvaluator | None:
        try:  # a stat, not a Registry (which creates its directory)
            mtime = (self.settings.evaluators_dir / pid / "current.json").stat().st_mtime_ns
        except FileNotFoundError:
            return None
        registry = self.registry(pid)
        cached = self._served.get(pid)
        if cached is not None and cached.mtime == mtime:
            return cached
        version = registry.current()
        if version is None:
            return None
        model = load_evaluator(registry.path(version))
        served = self._load(pid, version, model, schema)
        if served is None:
            return None
        _ = model.scorer  # loaded now, before it serves, not inside the first request that uses it
        chosen = (registry.metrics(version).get("cascade") or {}).get("band")
        served.band = tuple(chosen) if chosen else DEFAULT_BAND
        served.mtime = mtime
        with self._lock:
            self._served[pid] = served  # atomic swap: requests in flight keep the old object
        log.info("project %s now serves %s", pid, version)
        return served

    def changed(self, pid: str) -> None:
        with self._lock:
            self._served.pop(pid, None)

    @staticmethod
    def _load(pid: str, version: str, model: LoadedEvaluator, schema: TaskSchema) -> ServedEvaluator | None:
        """The served evaluator for a registry version, or None (logged) when this config cannot take
        its answers: a binary evaluator needs a two-option control, a pairwise one the config's A/B pair."""
        manifest = model.manifest
        spec = schema.controls.get(manifest["control"])
        if model.kind == "reward":
            pair = schema.pair_fields()
            if spec is None or pair is None or pair[0] != manifest["control"]:
                log.warning("pairwise evaluator %s of project %s answers %s, which this config does not compare; "
                            "serving the judge", version, pid, manifest["control"])
                return None
            side = {pair_side(o): o for o in spec.question.options}
            if "A" not in side or "B" not in side:
                log.warning("pairwise evaluator %s of project %s: %s has no A/B options; serving the judge",
                            version, pid, manifest["control"])
                return None
            return ServedEvaluator(version, model, manifest["control"], side["A"], side["B"])
        if spec is None or spec.question.kind != "single" or len(spec.question.options) != 2 \
                or manifest["positive"][0] not in spec.question.options:
            log.warning("evaluator %s of project %s answers %s, which this config cannot take as two labels; "
                        "serving the judge", version, pid, manifest["control"])
            return None
        positive = manifest["positive"][0]
        negative = [o for o in spec.question.options if o != positive][0]
        return ServedEvaluator(version, model, manifest["control"], positive, negative)

