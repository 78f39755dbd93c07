"""Turn a rendered criterion, a question and few-shot examples into chat messages (one place)."""
from __future__ import annotations

import json
from typing import Any, Sequence

from .types import Question

SYSTEM = (
    "You are a careful, impartial evaluator. Read the item, apply the criterion exactly as written, "
    "and answer only with one of the allowed options."
)


def instruction(question: Question, *, as_json: bool, rationale: bool) -> str:
    """How to answer ``question``: the allowed options, and the JSON shape when asked for JSON."""
    opts = ", ".join(question.shown())
    if question.kind == "single":
        what = f"Answer with exactly one of: {opts}."
    elif question.kind == "multiple":
        what = f"List every option that applies (possibly none) from: {opts}."
    else:
        bounds = []
        if question.minimum is not None:
            bounds.append(f"at least {question.minimum:g}")
        if question.maximum is not None:
            bounds.append(f"at most {question.maximum:g}")
        what = "Answer with a number" + (f" ({' and '.join(bounds)})" if bounds else "") + "."
    head = f"[{question.name}] {question.instruction}".strip() + "\n" if question.instruction else ""
    if not as_json:
        return f"{head}{what}"
    shape = '{"rationale": "<one or two sentences>", "answer": <answer>}' if rationale else '{"answer": <answer>}'
    return f"{head}{what}\nReply with a JSON object only: {shape}"


def json_answer(question: Question, value: Any, rationale: str | None, *, with_rationale: bool) -> str:
    """The assistant turn of a few-shot example, in the same shape we ask the model for."""
    shown = _shown(question, value)
    body: dict[str, Any] = {}
    if with_rationale:
        body["rationale"] = rationale or ""
    body["answer"] = shown
    return json.dumps(body, ensure_ascii=False)


def plain_answer(question: Question, value: Any) -> str:
    shown = _shown(question, value)
    return ", ".join(shown) if isinstance(shown, list) else str(shown)


def _shown(question: Question, value: Any) -> Any:
    if question.kind == "multiple":
        return [question.shown()[question.options.index(v)] for v in value]
    if question.kind == "single":
        return question.shown()[question.options.index(value)]
    return value


def build_messages(
    criterion: str,
    question: Question,
    *,
    examples: Sequence[tuple[str, Any, str | None]] = (),
    as_json: bool,
    rationale: bool,
) -> list[dict[str, str]]:
    """System prompt, then each example as a user/assistant pair, then the task itself.

    ``examples`` holds (rendered criterion, label value, rationale) triples already rendered.
    """
    how = instruction(question, as_json=as_json, rationale=rationale)
    messages = [{"role": "system", "content": SYSTEM}]
    for text, value, why in examples:
        messages.append({"role": "user", "content": f"{text}\n\n{how}"})
        answer = json_answer(question, value, why, with_rationale=rationale) if as_json \
            else plain_answer(question, value)
        messages.append({"role": "assistant", "content": answer})
    messages.append({"role": "user", "content": f"{criterion}\n\n{how}"})
    return messages


def answer_schema(question: Question, *, rationale: bool) -> dict[str, Any]:
    """JSON schema for structured output: the answer can only be an allowed option."""
    if question.kind == "single":
        answer: dict[str, Any] = {"type": "string", "enum": list(question.shown())}
    elif question.kind == "multiple":
        answer = {"type": "array", "items": {"type": "string", "enum": list(question.shown())}}
    else:
        answer = {"type": "number"}
    props: dict[str, Any] = {}
    if rationale:
        props["rationale"] = {"type": "string"}
    props["answer"] = answer
    return {
        "type": "object",
        "properties": props,
        "required": list(props),
        "additionalProperties": False,
    }
