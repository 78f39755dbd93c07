"""The judge: a spec (what to ask, of which model, with which examples) applied to one task at a time.

A JudgeSpec is plain, hashable data; its ``version`` is the contract with Label Studio: it changes
exactly when what the judge would predict changes (template, model, decoding, few-shot ids, the
questions the label config asks).
"""
from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from typing import Any, Generator, Mapping, NamedTuple, Sequence, cast

from .embeddings import embed
from .fewshot import FewShotSelector
from .prompting import build_messages
from .providers.base import AsyncProvider, Decoding, Provider, ProviderError
from .templates import render, template_fields
from .types import JUDGE_VERSION_PREFIX, Answer, Example, JudgeError, Question, Usage, Verdict

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
    pair: tuple[str, str] | None = None  # data keys of responses A and B: judge both orders
    pair_question: str | None = None

    def __post_init__(self) -> None:
        template_fields(self.template)  # raises TemplateError early, at /setup, not per task

    @functools.cached_property  # the spec is frozen; hashing it per call cost 2% of a labeling run
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
        if self.pair:
            payload["pair"] = [list(self.pair), self.pair_question]
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:10]
        return f"{JUDGE_VERSION_PREFIX}{digest}"


class Judge:
    """Applies a JudgeSpec through a Provider. Per-task problems become abstentions, never crashes."""

    def __init__(self, spec: JudgeSpec, provider: Provider, *, input_keys: Sequence[str] = (),
                 max_field_chars: int = 8000, max_prompt_chars: int = 60_000) -> None:
        self.spec = spec
        self.provider = provider
        self.input_keys = tuple(input_keys)
        self.max_field_chars = max_field_chars
        self.max_prompt_chars = max_prompt_chars
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
        if len(rendered.text) > self.max_prompt_chars:  # many fields, each under MAX_FIELD_CHARS, add up
            raise JudgeError(f"the task's prompt is {len(rendered.text):,} characters; MAX_PROMPT_CHARS allows "
                             f"{self.max_prompt_chars:,} (the task is skipped, not sent)")
        return rendered.text, rendered.warnings

    def judge(self, data: Mapping[str, Any]) -> Verdict:
        """Answer every question for one task's data. ProviderError propagates (retry later);
        everything else the task or the model got wrong is recorded in the Verdict."""
        steps = self.plan(data)
        try:
            asks = next(steps)
            while True:
                asks = steps.send([self.provider.answer(*ask) for ask in asks])
        except StopIteration as done:
            return done.value

    async def ajudge(self, data: Mapping[str, Any]) -> Verdict:
        """``judge`` for an async provider (``aanswer``): the same plan, the asks of one step in flight
        together (both orders of a pair)."""
        import asyncio

        provider = cast(AsyncProvider, self.provider)
        steps = self.plan(data)
        try:
            asks = next(steps)
            while True:
                if len(asks) == 1:  # the usual case: no task to create and schedule for one call
                    asks = steps.send([await provider.aanswer(*asks[0])])
                else:
                    asks = steps.send(list(await asyncio.gather(*(provider.aanswer(*ask) for ask in asks))))
        except StopIteration as done:
            return done.value

    def plan(self, data: Mapping[str, Any]) -> Generator[list[Ask], list[Answer], Verdict]:
        """The judge's logic with the provider left out: yields the asks of each step (one, or the two
        orders of a pair), receives their Answers, returns the Verdict. ``judge``/``ajudge`` drive it
        with a blocking or an async provider; the Batch API mode with recorded results."""
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
            first = self._ask(criterion, question, want_rationale, shots)
            if self.spec.pair and question.name == self.spec.pair_question:
                a, b = self.spec.pair
                swapped_text, _ = self.render({**data, a: data.get(b), b: data.get(a)})
                answers = yield [first, self._ask(swapped_text, question, False, shots)]
                answer = _both_orders(question, answers[0], answers[1])
            else:
                answer = (yield [first])[0]
            verdict.answers[question.name] = answer
            verdict.usage.add(answer.usage)
            if answer.rationale and verdict.rationale is None:
                verdict.rationale = answer.rationale
        if not verdict.usable:
            errors = [f"{name}: {a.error}" for name, a in verdict.answers.items() if a.error]
            verdict.error = "; ".join(errors) or "no usable answer"
        return verdict

    def _ask(self, criterion: str, question: Question, want_rationale: bool,
             shots: Sequence[Example] = ()) -> Ask:
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
        return Ask(messages, question, Decoding(self.decoding.temperature, self.decoding.max_tokens, want_rationale))


class Ask(NamedTuple):
    """One question to a provider: ``provider.answer(*ask)``."""

    messages: list[dict[str, str]]
    question: Question
    decoding: Decoding


def _both_orders(question: Question, first: Answer, second: Answer) -> Answer:
    """A pair asked in both orders. Agreement keeps the answer (confidence: geometric mean);
    disagreement is position bias, so the answer is a tie (or none) with low confidence."""
    usage = Usage()
    usage.add(first.usage)
    usage.add(second.usage)
    if first.value is None or second.value is None:
        return Answer(error=first.error or second.error, usage=usage)
    back = _swap_side(question, second.value)
    position = {"first": first.value, "second": back, "consistent": first.value == back}
    if first.value == back:
        conf = math.sqrt(first.confidence * second.confidence) \
            if first.confidence is not None and second.confidence is not None else None
        return Answer(value=first.value, confidence=conf, rationale=first.rationale, usage=usage,
                      position=position)
    tie = next((o for o in question.options if o.lower() == "tie"), None)
    low = 0.5 * min(first.confidence or 1.0, second.confidence or 1.0)
    if tie is None:
        return Answer(error="the verdict flipped with the order of the responses (position bias)",
                      usage=usage, position=position)
    return Answer(value=tie, confidence=low, usage=usage, position=position,
                  rationale=f"Inconsistent across orders ({first.value} first, {back} swapped): "
                            f"counted as a tie. {first.rationale or ''}".strip())


def _swap_side(question: Question, value: Any) -> Any:
    """The answer given with the responses swapped, expressed in the original order."""
    pairs = {"a": "b", "b": "a", "left": "right", "right": "left"}
    for option in question.options:
        if option.lower() == pairs.get(str(value).lower()):
            return option
    return value


__all__ = ["Judge", "JudgeSpec", "ProviderError"]
