"""Strict parsing of an LLM's reply into an allowed answer, and confidence from log-probabilities.

No fuzzy matching: an answer is accepted only if it is an allowed option (ignoring case and
surrounding whitespace/punctuation). Anything else is an abstention with the reason, because a
wrong label silently written into Label Studio costs a reviewer more than no label.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from .types import Question

_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$", re.IGNORECASE)


class AnswerError(ValueError):
    """The reply cannot be used; the message is safe to show (it quotes at most 80 characters)."""


@dataclass
class Parsed:
    value: Any
    rationale: str | None
    span: tuple[int, int] | None  # where the answer sits in the raw text (for logprob confidence)


def parse_reply(question: Question, text: str | None) -> Parsed:
    """Parse a JSON reply ``{"answer": ..., "rationale": ...}``; fall back to a bare option."""
    if text is None or not text.strip():
        raise AnswerError("the model returned an empty answer")
    obj, offset = _json_object(text)
    if obj is None:
        return Parsed(match_value(question, text.strip()), None, (0, len(text)))
    if "answer" not in obj:
        raise AnswerError(f"the model's JSON has no 'answer' field: {_short(text)}")
    rationale = obj.get("rationale")
    rationale = rationale.strip() if isinstance(rationale, str) and rationale.strip() else None
    return Parsed(match_value(question, obj["answer"]), rationale, _answer_span(text, offset))


def match_value(question: Question, raw: Any) -> Any:
    """Map a raw answer to the stored label(s) or a number within bounds; raise AnswerError."""
    if question.kind == "number":
        try:
            number = float(raw)
        except (TypeError, ValueError):
            raise AnswerError(f"expected a number, got {_short(raw)}") from None
        if math.isnan(number) or (question.minimum is not None and number < question.minimum) or \
                (question.maximum is not None and number > question.maximum):
            raise AnswerError(f"number {number:g} is outside the allowed range")
        return number
    if question.kind == "multiple":
        items = raw if isinstance(raw, list) else [p for p in str(raw).split(",") if p.strip()]
        labels = [match_value_single(question, item) for item in items]
        return list(dict.fromkeys(labels))
    return match_value_single(question, raw)


def match_value_single(question: Question, raw: Any) -> str:
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = f"{raw:g}"
    if not isinstance(raw, str):
        raise AnswerError(f"expected one of {', '.join(question.shown())}, got {_short(raw)}")
    wanted = _norm(raw)
    for shown in question.shown():
        if _norm(shown) == wanted:
            return question.to_label(shown)
    raise AnswerError(f"answer {_short(raw)} is not one of {', '.join(question.shown())}")


def span_confidence(text: str, tokens: Sequence[tuple[str, float]], span: tuple[int, int]) -> float | None:
    """exp(sum of log-probabilities) of the tokens that overlap ``span`` in ``text``.

    This is the model's own probability of having written the answer it wrote, given what came
    before it. Returns None if the tokens do not spell out ``text`` (some servers re-tokenise).
    """
    if not tokens or "".join(t for t, _ in tokens) != text:
        return None
    start, end = span
    pos, total, hit = 0, 0.0, False
    for token, logprob in tokens:
        t_end = pos + len(token)
        if t_end > start and pos < end:
            total += logprob
            hit = True
        pos = t_end
    return math.exp(total) if hit else None


def renormalized_confidence(text: str, tokens: Sequence[dict], span: tuple[int, int], options: Sequence[str],
                            chosen: str) -> dict[str, float] | None:
    """The answer's probability renormalised over the allowed options, from ``top_logprobs`` at the
    answer's first token: {shown option: probability}, summing to 1, or None when it cannot be read.

    Why: a server that samples under a grammar (llama.cpp, vLLM's guided decoding) reports logprobs of
    the unconstrained distribution, where "yes" or a quote can outweigh every label; exp(logprob) of
    the answer is then no confidence. What the model thinks of the labels relative to each other is.
    Alternatives whose text could start several options (a "P" before "Pass" and "Partial") are
    ambiguous: if the chosen answer's own first token is, None is returned (the caller falls back).
    """
    if not tokens or "".join(str(t.get("token", "")) for t in tokens) != text:
        return None
    start = span[0]
    pos = 0
    for tok in tokens:
        token = str(tok.get("token", ""))
        if pos + len(token) > start:
            break
        pos += len(token)
    else:
        return None
    if not tok.get("top_logprobs"):
        return None  # no alternatives: nothing to renormalise over
    lead = text[pos:start]  # what the token carries before the answer (an opening quote)
    alternatives: dict[str, float] = {}
    for alt in [tok, *(tok.get("top_logprobs") or [])]:
        if isinstance(alt, dict) and isinstance(alt.get("logprob"), (int, float)):
            alternatives.setdefault(str(alt.get("token", "")), float(alt["logprob"]))
    folded = {o: o.casefold() for o in options}
    mass = {o: 0.0 for o in options}
    for token, logprob in alternatives.items():
        if not token.startswith(lead):
            continue
        rest = token[len(lead):].casefold().strip()
        if not rest:
            continue
        matches = [o for o, f in folded.items() if f.startswith(rest) or rest.startswith(f)]
        if len(matches) == 1:
            mass[matches[0]] += math.exp(logprob)
        elif chosen in matches and token == str(tok.get("token", "")):
            return None  # the answer's own first token does not tell the options apart
    total = sum(mass.values())
    if total <= 0 or mass.get(chosen, 0.0) <= 0:
        return None
    return {o: m / total for o, m in mass.items()}


def _json_object(text: str) -> tuple[dict | None, int]:
    stripped = _FENCE.sub("", text.strip())
    start = text.find("{")
    if start < 0:
        return None, 0
    try:
        obj, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError:
        if stripped.startswith("{"):
            raise AnswerError(f"the model returned malformed JSON: {_short(text)}") from None
        return None, 0
    return (obj, start) if isinstance(obj, dict) else (None, 0)


def _answer_span(text: str, offset: int) -> tuple[int, int] | None:
    m = re.compile(r'"answer"\s*:\s*').search(text, offset)
    if not m:
        return None
    try:
        _, end = json.JSONDecoder().raw_decode(text, m.end())
    except json.JSONDecodeError:
        return None
    start = m.end()
    if text[start] == '"':  # the option itself, not its quotes
        return start + 1, end - 1
    return start, end


def _norm(value: str) -> str:
    return value.strip().strip(".\"'`*").strip().casefold()


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return repr(text if len(text) <= 80 else text[:77] + "...")
