"""Plain data passed between the judge's pieces: what is asked, what came back, what it cost."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

QuestionKind = Literal["single", "multiple", "number"]


@dataclass(frozen=True)
class Question:
    """One thing the judge must answer for a task: pick from ``options`` or give a number.

    ``single`` covers Choices (single), Rating, Taxonomy paths and Pairwise sides, since each is a
    closed set of options; ``multiple`` is a checklist; ``number`` is a bounded free number.
    ``display`` is how each option is shown to the LLM when that differs from the stored label
    (Pairwise shows "A"/"B" and stores "left"/"right").
    """

    name: str
    kind: QuestionKind
    options: tuple[str, ...] = ()
    display: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    instruction: str = ""

    def shown(self) -> tuple[str, ...]:
        return self.display or self.options

    def to_label(self, shown_option: str) -> str:
        """Map an option as the LLM saw it back to the stored label."""
        return self.options[self.shown().index(shown_option)]


@dataclass(frozen=True)
class Example:
    """A labeled task used as a few-shot example (issue: humans teaching the judge)."""

    id: str
    data: dict[str, Any]
    answers: dict[str, Any]  # question name -> label (str), labels (list) or number
    rationale: str | None = None
    correction: bool = False  # the human changed the judge's answer


@dataclass
class Usage:
    tokens_in: int = 0
    tokens_out: int = 0
    calls: int = 0

    def add(self, other: Usage) -> None:
        self.tokens_in += other.tokens_in
        self.tokens_out += other.tokens_out
        self.calls += other.calls


@dataclass
class Answer:
    """What a provider returned for one question, already restricted to the allowed options.

    ``value`` is None when the provider's answer could not be used (abstention); ``error`` says why.
    ``confidence`` comes from the model's own probabilities, or None when the provider gave none.
    """

    value: Any = None
    confidence: float | None = None
    rationale: str | None = None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None
    raw: str | None = None
    position: dict | None = None  # pairwise: both orders' answers and whether they agreed
    # how ``confidence`` was read: "renormalized" over the allowed labels (``distribution``),
    # "answer_tokens" (the answer's own token probability), "options" (a local model scoring each)
    confidence_method: str | None = None
    distribution: dict[str, float] | None = None


@dataclass
class Verdict:
    """The judge's answers for one task: one per question, or the reason it abstained on all."""

    answers: dict[str, Answer] = field(default_factory=dict)
    rationale: str | None = None
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)

    @property
    def usable(self) -> dict[str, Answer]:
        return {k: a for k, a in self.answers.items() if a.value is not None}

    @property
    def score(self) -> float | None:
        """Task-level score: the least confident usable answer (a chain is as sure as its weakest link)."""
        scores = [a.confidence for a in self.usable.values() if a.confidence is not None]
        return min(scores) if scores else None


class JudgeError(Exception):
    """A per-task problem the user must fix (e.g. a missing field); the task is skipped, not retried."""


def verdict_to_dict(v: Verdict) -> dict[str, Any]:
    """Plain JSON for the cache: everything needed to rebuild the prediction without paying again."""
    return {
        "answers": {k: {"value": a.value, "confidence": a.confidence, "rationale": a.rationale,
                        "error": a.error, "position": a.position, "confidence_method": a.confidence_method,
                        "distribution": a.distribution} for k, a in v.answers.items()},
        "rationale": v.rationale, "error": v.error, "warnings": v.warnings,
        "usage": {"tokens_in": v.usage.tokens_in, "tokens_out": v.usage.tokens_out, "calls": v.usage.calls},
    }


def verdict_from_dict(d: dict[str, Any]) -> Verdict:
    answers = {k: Answer(value=a["value"], confidence=a["confidence"], rationale=a["rationale"],
                         error=a["error"], position=a.get("position"), confidence_method=a.get("confidence_method"),
                         distribution=a.get("distribution")) for k, a in d["answers"].items()}
    return Verdict(answers=answers, rationale=d["rationale"], error=d["error"], warnings=list(d["warnings"]),
                   usage=Usage(**d["usage"]))


JUDGE_VERSION_PREFIX = "judge-"  # every judge version starts so (JudgeSpec.version); evaluators' and humans' do not
PAIR_SIDES = {"a": "A", "left": "A", "b": "B", "right": "B", "tie": "Tie"}  # a pairwise answer's spellings


def is_judge_version(model_version: Any) -> bool:
    """Whether a prediction's model_version is one of the judge's (not an evaluator's, not a human's)."""
    return str(model_version or "").startswith(JUDGE_VERSION_PREFIX)


def pair_side(value: Any) -> str | None:
    """"A", "B" or "Tie" for any spelling of a pairwise answer (A/left, B/right, tie); None otherwise."""
    return PAIR_SIDES.get(str(value).lower()) if value is not None else None
