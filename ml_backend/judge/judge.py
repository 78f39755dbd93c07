"""The judge: a spec (what to ask, of which model, with which examples) applied to one task at a time.

A JudgeSpec is plain, hashable data; its ``version`` is the contract with Label Studio: it changes
exactly when what the judge would predict changes (template, model, decoding, few-shot ids, the
questions the label config asks).
"""
from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from .embeddings import embed
from .fewshot import FewShotSelector
from .prompting import build_messages
from .providers.base import Decoding, Provider, ProviderError
from .templates import render, template_fields
from .types import Answer, Example, JudgeError, Question, Verdict

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JudgeSpec:
    template: str
    provider: str
    model: str
    temperature: float = 0.0
    max_tokens: int = 256
    rationale: bool = True
    field_map: Mapping[str, str] = field(default_factory=dict)
    questions: tuple[Question, ...] = ()
    examples: tuple[Example, ...] = ()
    few_shot_k: int = 8

    def __post_init__(self) -> None:
        template_fields(self.template)  # raises TemplateError early, at /setup, not per task

    @property
    def version(self) -> str:
        payload = {
            "template": self.template, "provider": self.provider, "model": self.model,
            "temperature": self.temperature, "max_tokens": self.max_tokens, "rationale": self.rationale,
            "fields": dict(sorted(self.field_map.items())),
            "questions": [[q.name, q.kind, list(q.options), q.minimum, q.maximum, q.instruction]
                          for q in self.questions],
            "examples": sorted(e.id for e in self.examples),
        }
        if self.examples:
            payload["few_shot_k"] = self.few_shot_k
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        return f"judge-{digest}"


class Judge:
    """Applies a JudgeSpec through a Provider. Per-task problems become abstentions, never crashes."""

    def __init__(self, spec: JudgeSpec, provider: Provider, *, input_keys: Sequence[str] = (),
                 max_field_chars: int = 8000) -> None:
        self.spec = spec
        self.provider = provider
        self.input_keys = tuple(input_keys)
        self.max_field_chars = max_field_chars
        self.decoding = Decoding(spec.temperature, spec.max_tokens, spec.rationale)
        self._selector: FewShotSelector | None = None
        self._selector_lock = threading.Lock()

    def selector(self) -> FewShotSelector | None:
        """Built on first use (it embeds the example pool), then shared by every task."""
        if not self.spec.examples or self.spec.few_shot_k <= 0:
            return None
        with self._selector_lock:
            if self._selector is None:
                usable, texts = [], []
                for ex in self.spec.examples:
                    try:
                        texts.append(self.render(ex.data)[0])
                        usable.append(ex)
                    except JudgeError:
                        continue
                first = self.spec.questions[0].name if self.spec.questions else ""
                self._selector = FewShotSelector(usable, texts, self.spec.few_shot_k,
                                                 label_of=lambda e: str(e.answers.get(first)), embed=embed)
            return self._selector

    @property
    def version(self) -> str:
        return self.spec.version

    def render(self, data: Mapping[str, Any]) -> tuple[str, list[str]]:
        rendered = render(self.spec.template, data, field_map=self.spec.field_map,
                          input_keys=self.input_keys, max_chars=self.max_field_chars)
        return rendered.text, rendered.warnings

    def judge(self, data: Mapping[str, Any]) -> Verdict:
        """Answer every question for one task's data. ProviderError propagates (retry later);
        everything else the task or the model got wrong is recorded in the Verdict."""
        verdict = Verdict()
        try:
            criterion, verdict.warnings = self.render(data)
        except JudgeError as exc:
            verdict.error = str(exc)
            return verdict
        selector = self.selector()
        shots = selector.select(criterion) if selector is not None else []
        for index, question in enumerate(self.spec.questions):
            want_rationale = self.spec.rationale and index == 0
            answer = self._ask(criterion, question, want_rationale, shots)
            verdict.answers[question.name] = answer
            verdict.usage.add(answer.usage)
            if answer.rationale and verdict.rationale is None:
                verdict.rationale = answer.rationale
        if not verdict.usable:
            errors = [f"{name}: {a.error}" for name, a in verdict.answers.items() if a.error]
            verdict.error = "; ".join(errors) or "no usable answer"
        return verdict

    def _ask(self, criterion: str, question: Question, want_rationale: bool,
             shots: Sequence[Example] = ()) -> Answer:
        examples = []
        for ex in shots:
            if question.name not in ex.answers:
                continue
            try:
                text, _ = self.render(ex.data)
            except JudgeError:
                continue
            examples.append((text, ex.answers[question.name], ex.rationale))
        messages = build_messages(criterion, question, examples=examples,
                                  as_json=self.provider.as_json, rationale=want_rationale)
        decoding = Decoding(self.decoding.temperature, self.decoding.max_tokens, want_rationale)
        return self.provider.answer(messages, question, decoding)


__all__ = ["Judge", "JudgeSpec", "ProviderError"]
