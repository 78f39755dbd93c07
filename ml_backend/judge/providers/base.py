"""The one interface every judge provider implements."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ...redact import redact, register
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


class AsyncProvider(Provider, Protocol):
    """A provider that also answers on an event loop (many calls in flight on one thread)."""

    async def aanswer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        ...


class ProviderError(RuntimeError):
    """The provider could not be reached or kept failing after retries; message carries no secrets."""


def scrub(text: str, secrets: tuple[str | None, ...] = ()) -> str:
    """Remove ``secrets`` (registered for good) and anything shaped like a credential from a message."""
    register(*secrets)
    return redact(text)
