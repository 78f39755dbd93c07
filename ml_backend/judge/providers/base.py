"""The one interface every judge provider implements."""
from __future__ import annotations

import re

from dataclasses import dataclass
from typing import Protocol

from ..types import Answer, Question


@dataclass(frozen=True)
class Decoding:
    temperature: float = 0.0
    max_tokens: int = 256
    rationale: bool = True


class Provider(Protocol):
    """Answers one question for one rendered conversation, restricted to the question's options."""

    name: str
    model: str
    as_json: bool  # whether prompts should ask for a JSON reply (chat APIs) or a bare option (local)

    def answer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        """Return an Answer; never raise for a bad model reply (set Answer.error), raise ProviderError
        only when the provider itself failed after its retries (the task can be retried later)."""
        ...


class ProviderError(RuntimeError):
    """The provider could not be reached or kept failing after retries; message carries no secrets."""


_KEYLIKE = re.compile(r"\b(sk|pk|rk|hf|gsk|key)[-_][A-Za-z0-9_\-*]{6,}")


def scrub(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Remove known secrets and anything shaped like an API key from a message before it is shown."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return _KEYLIKE.sub(lambda m: m.group(1) + "-***", text)
