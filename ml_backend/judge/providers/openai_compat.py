"""Any OpenAI-compatible chat-completions endpoint: OpenAI, vLLM, Ollama, llama.cpp's server, LM Studio.

The ``openai`` client does the timeouts and the retries (exponential backoff with jitter on
408/409/429/5xx and connection errors, honouring Retry-After). We ask for structured output (a JSON
schema whose answer is an enum of the allowed options) and for log-probabilities; servers that reject
either are remembered and asked without them from then on.
"""
from __future__ import annotations

import asyncio
import functools
import logging
import re
import ssl
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any

import openai
from openai import AsyncOpenAI, DefaultAsyncHttpxClient, DefaultHttpxClient, OpenAI

from ...redact import redact, register
from ..parsing import AnswerError, parse_reply, renormalized_confidence, span_confidence
from ..prompting import answer_schema
from ..types import Answer, Question, Usage
from .base import Decoding, ProviderError, scrub
from .bounded import MAX_REPLY_BYTES, ReplyTooLarge, ReplyTooSlow, bound_client

MAX_RATIONALE_CHARS = 4000  # what a verdict keeps of a provider's explanation (shown in Label Studio)

log = logging.getLogger(__name__)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verified TLS context the client would build, built once per process: building one loads
    the CA store (about 70 ms of blocking CPU here), which every new client did again, on the event
    loop at the start of each labeling run. An SSLContext is safe to share between connections."""
    try:
        import httpx2 as transport  # the HTTP library of openai 2.x and later
    except ImportError:
        import httpx as transport  # type: ignore[no-redef]  # ...and of openai 1.x
    return transport.create_ssl_context()


def aiohttp_client() -> Any:
    """openai's aiohttp transport, its own advice for many calls in flight: the same request path
    (retries, typed errors) with about 1.3 ms less CPU per call than its httpx default, measured at
    64 calls in flight in scripts/bench_labeling.py. None (the httpx default) without aiohttp."""
    try:
        from openai import DefaultAioHttpClient

        return DefaultAioHttpClient(verify=tls_context())
    except (ImportError, RuntimeError):  # RuntimeError: an openai without its aiohttp extra
        return None


FORMATS = ("json_schema", "json_object_schema", "json_object", "text")
_FEATURE_WORDS = ("response_format", "json_schema", "json_object", "logprobs", "top_logprobs", "guided")


@dataclass
class Capabilities:
    """What one server does for one model, found by stepping down a ladder the first time a request
    is refused, and remembered for the process: structured output as a JSON schema, as a JSON object
    with a schema (llama-cpp-python, some vLLM versions), as any JSON object, or plain text parsed
    strictly; log-probabilities, and the alternatives at each token (``top_logprobs``)."""

    format: str = "json_schema"
    logprobs: bool = True
    top_logprobs: bool = True
    confirmed: bool = False  # a request went through: later errors are errors, not refusals
    notes: list[str] = field(default_factory=list)  # what each server said when a feature was refused


_capabilities: dict[tuple[str, str], Capabilities] = {}
_capabilities_lock = threading.Lock()


def capabilities_for(base_url: str | None, model: str) -> Capabilities:
    """The remembered capabilities of (server, model), shared by every provider object for them."""
    with _capabilities_lock:
        return _capabilities.setdefault(((base_url or "openai").rstrip("/"), model), Capabilities())


def _top_k(question: Question) -> int:
    """Alternatives to ask for per token: enough to see every label of a small option set."""
    return min(20, max(10, 2 * len(question.options) + 2))


class OpenAIProvider:
    name = "openai"
    as_json = True

    def __init__(self, model: str, *, api_key: str | None, base_url: str | None,
                 timeout: float = 60.0, max_retries: int = 4) -> None:
        self.model = model
        self._secret = api_key
        register(api_key)
        # Local servers (vLLM, Ollama, llama.cpp) need no key, but the client insists on one.
        # every attempt stops at MAX_REPLY_BYTES and at ``timeout`` seconds for the whole reply (the
        # client's own timeout is per read: a reply that drips a byte at a time would never end)
        self.client = OpenAI(api_key=api_key or "no-key", base_url=base_url, timeout=timeout,
                             max_retries=max_retries,
                             http_client=bound_client(DefaultHttpxClient(verify=tls_context()), deadline=timeout))
        # the first requests to a server probe its capabilities without retries: a refusal answered
        # as a 500 (llama-cpp-python) must step down the ladder at once, not after the backoff
        self._probe = self.client.with_options(max_retries=0)
        self._base_url, self._timeout, self._max_retries = base_url, timeout, max_retries
        # one async client per event loop: its connections belong to the loop that opened them, and
        # projects on the same model share this provider, so two labeling runs can be in flight at once
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncOpenAI] = weakref.WeakKeyDictionary()
        self.caps = capabilities_for(base_url, model)
        self._lock = threading.Lock()

    def answer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        probe = not self.caps.confirmed
        while True:
            asked = self._snapshot()
            try:
                # The client's request path (timeouts, retries with backoff and jitter, Retry-After,
                # typed errors) with our already well-formed body and a plain-dict reply: its param
                # transform and response models cost 1.4 ms of CPU per call, which at 64 calls in
                # flight on 2 cores is the bottleneck (measured in scripts/bench_labeling.py).
                client = self._probe if probe else self.client
                response = client.post("/chat/completions", body=self.request_body(messages, question, decoding),
                                       cast_to=dict)
                self.caps.confirmed = True
                return self.to_answer(response, question)
            except openai.APIError as exc:
                probe = self._after_error(exc, asked, probe)

    async def aanswer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        """``answer`` through the async client, for the asyncio runner (many calls in flight on one
        thread). Call ``aclose`` from the same event loop when done."""
        client = self._aclient()
        probe = not self.caps.confirmed
        while True:
            asked = self._snapshot()
            try:
                use = client.with_options(max_retries=0) if probe else client
                response = await use.post("/chat/completions",
                                          body=self.request_body(messages, question, decoding), cast_to=dict)
                self.caps.confirmed = True
                return self.to_answer(response, question)
            except openai.APIError as exc:
                probe = self._after_error(exc, asked, probe)

    def write(self, messages: list[dict[str, str]], *, max_tokens: int = 1024, temperature: float = 0.0) -> tuple[str, Usage]:
        """Free text for ``messages`` (alignment's reflection model): the same client, retries, reply
        bounds and redaction as a verdict, no answer schema. Raises ProviderError as ``answer`` does."""
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
        try:
            response = self.client.post("/chat/completions", body=body, cast_to=dict)
        except openai.APIError as exc:
            self._raise(exc)
            raise  # pragma: no cover - _raise always raises
        usage = Usage(calls=1)
        if not isinstance(response, dict) or not response.get("choices") \
                or not isinstance(response["choices"][0], dict):
            return "", usage
        counts: dict = response["usage"] if isinstance(response.get("usage"), dict) else {}
        usage.tokens_in, usage.tokens_out = _count(counts.get("prompt_tokens")), _count(counts.get("completion_tokens"))
        text = _content_text((response["choices"][0].get("message") or {}).get("content"))
        return (redact(text) if isinstance(text, str) else ""), usage

    def _aclient(self) -> AsyncOpenAI:
        """The running event loop's async client, made on its first call."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            http = aiohttp_client() or DefaultAsyncHttpxClient(verify=tls_context())
            client = AsyncOpenAI(api_key=self._secret or "no-key", base_url=self._base_url, timeout=self._timeout,
                                 max_retries=self._max_retries, http_client=bound_client(http, deadline=self._timeout))
            with self._lock:
                self._aclients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the running event loop's async client; other loops' clients are left alone."""
        with self._lock:
            client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _snapshot(self) -> tuple[str, bool, bool]:
        return self.caps.format, self.caps.logprobs, self.caps.top_logprobs

    def _after_error(self, exc: openai.APIError, asked: tuple[str, bool, bool], probe: bool) -> bool:
        """After a failed request: step down the ladder when the server refused a feature we asked for
        (whatever the status: 400, 422 or 500), or retry a probe with the client's retries; returns
        whether the next try is still a probe. Raises a ProviderError that carries no secret otherwise."""
        if isinstance(exc, openai.APIStatusError) and self._step_down(exc, asked):
            return probe
        status = exc.status_code if isinstance(exc, openai.APIStatusError) else None
        retryable = isinstance(exc, openai.APIConnectionError) or status in (408, 409, 429) or (status or 0) >= 500
        if probe and retryable and self._max_retries > 0:
            return False  # not a refusal: ask again, this time with the client's backoff and retries
        self._raise(exc)
        return probe  # pragma: no cover - _raise always raises

    def _raise(self, exc: openai.APIError) -> None:
        cause = exc.__cause__
        if isinstance(cause, ReplyTooLarge):
            raise ProviderError(f"{self.model}: the provider's reply passed {MAX_REPLY_BYTES} bytes "
                                f"(not a verdict); nothing past that was read") from None
        if isinstance(cause, ReplyTooSlow):
            raise ProviderError(f"{self.model}: the provider's reply did not arrive in full within "
                                f"{self._timeout:.0f} s (JUDGE_TIMEOUT, per call) after retries") from None
        if isinstance(exc, openai.BadRequestError):
            raise ProviderError(f"{self.model}: request rejected ({exc.status_code}): {self._message(exc)}") from None
        if isinstance(exc, openai.APITimeoutError):
            raise ProviderError(f"{self.model}: timed out after retries") from None
        if isinstance(exc, openai.APIConnectionError):
            if cause is not None and "Connect" not in type(cause).__name__:  # it connected, then the reply broke
                raise ProviderError(f"{self.model}: the provider's connection broke off mid-reply "
                                    f"({type(cause).__name__})") from None
            raise ProviderError(f"{self.model}: could not connect to the provider") from None
        if isinstance(exc, openai.APIStatusError):
            raise ProviderError(f"{self.model}: provider answered {exc.status_code}: {self._message(exc)}") from None
        raise ProviderError(f"{self.model}: {scrub(str(exc), (self._secret,))[:200]}") from None

    def request_body(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> dict:
        """The chat-completions body for one question (also what a Batch API line carries), asking for
        what this server is known (or not yet known not) to do."""
        body: dict = {"model": self.model, "messages": messages,
                      "temperature": decoding.temperature, "max_tokens": decoding.max_tokens}
        caps = self.caps
        schema = answer_schema(question, rationale=decoding.rationale)
        if caps.format == "json_schema":
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "verdict", "strict": True, "schema": schema}}
        elif caps.format == "json_object_schema":
            body["response_format"] = {"type": "json_object", "schema": schema}
        elif caps.format == "json_object":
            body["response_format"] = {"type": "json_object"}
        if caps.logprobs:
            body["logprobs"] = True
            if caps.top_logprobs and question.kind == "single":
                body["top_logprobs"] = _top_k(question)
        return body

    def _step_down(self, exc: openai.APIStatusError, asked: tuple[str, bool, bool]) -> bool:
        """Drop what the server refused, one rung at a time; False if the error refuses nothing we
        asked for. An error naming a feature counts whatever its status; one naming none counts only
        as a 400/422 to a server not yet confirmed (the old one-time downgrade)."""
        said = self._message(exc)
        text = f"{said} {exc}".lower()
        named = [w for w in _FEATURE_WORDS if w in text]
        if not named and (exc.status_code not in (400, 422) or self.caps.confirmed):
            return False
        fmt, logprobs, top = asked
        with self._lock:
            caps = self.caps
            if (fmt, logprobs, top) != (caps.format, caps.logprobs, caps.top_logprobs):
                return True  # another request stepped down meanwhile: just ask again
            if re.search(r"(?<![a-z_])logprobs", text) and logprobs:  # logprobs itself, not only top_logprobs
                caps.logprobs = caps.top_logprobs = False
            elif "top_logprobs" in named and top:
                caps.top_logprobs = False
            elif any(w in named for w in ("response_format", "json_schema", "json_object", "guided")) \
                    and fmt != "text":
                named_type = any(w in named for w in ("json_schema", "json_object")) or "schema" in text
                # "response_format is not supported" with no type named: no JSON mode at all
                caps.format = FORMATS[FORMATS.index(fmt) + 1] if named_type else "text"
            elif not named and top and logprobs:
                caps.top_logprobs = False
            elif not named and logprobs:
                caps.logprobs = caps.top_logprobs = False
            elif not named and fmt != "text":
                caps.format = FORMATS[FORMATS.index(fmt) + 1]
            else:
                return False
            note = f"{exc.status_code}: {said[:160]}"
            caps.notes.append(note)
            log.warning("provider %s at %s refused a feature (%s); now asking for format=%s logprobs=%s "
                        "top_logprobs=%s", self.model, self._base_url or "OpenAI", note, caps.format,
                        caps.logprobs, caps.top_logprobs)
            return True

    def to_answer(self, response: dict, question: Question) -> Answer:
        """A chat-completion reply (a dict) as an Answer; an unusable one carries its error."""
        usage = Usage(calls=1)
        if not isinstance(response, dict) or not all(isinstance(c, dict) for c in response.get("choices") or []):
            return Answer(error=f"the provider's reply is not a chat completion: {redact(str(response))[:120]!r}",
                          usage=usage)
        counts: dict = response.get("usage") if isinstance(response.get("usage"), dict) else {}  # type: ignore[assignment]
        usage.tokens_in = _count(counts.get("prompt_tokens"))
        usage.tokens_out = _count(counts.get("completion_tokens"))
        if not response.get("choices"):
            return Answer(error="the provider returned no choices", usage=usage)
        choice = response["choices"][0]
        text = _content_text((choice.get("message") or {}).get("content"))
        # a reply can quote the request back (its Authorization header included): nothing the provider
        # says reaches a verdict, a failure reason or a log line unredacted
        text = redact(text) if isinstance(text, str) else None
        try:
            parsed = parse_reply(question, text)
        except AnswerError as exc:
            if choice.get("finish_reason") == "length":
                return Answer(error=f"{exc} (reply cut at max_tokens)", usage=usage, raw=text)
            return Answer(error=str(exc), usage=usage, raw=text)
        confidence, method, distribution = None, None, None
        logprobs = choice.get("logprobs") if isinstance(choice.get("logprobs"), dict) else {}
        content_lp = [t for t in logprobs.get("content") or [] if isinstance(t, dict)]
        if content_lp and parsed.span and text is not None:  # a span implies text
            if question.kind == "single":
                shown = question.shown()[question.options.index(parsed.value)]
                dist = renormalized_confidence(text, content_lp, parsed.span, question.shown(), shown)
                if dist is not None:
                    confidence, method = dist[shown], "renormalized"
                    distribution = {question.to_label(o): round(p, 6) for o, p in dist.items()}
            if confidence is None:
                confidence = span_confidence(text, [(str(t.get("token", "")), float(t.get("logprob") or 0.0))
                                                    for t in content_lp], parsed.span)
                method = "answer_tokens" if confidence is not None else None
        rationale = parsed.rationale
        if isinstance(rationale, str) and len(rationale) > MAX_RATIONALE_CHARS:
            rationale = rationale[:MAX_RATIONALE_CHARS] + " [cut]"
        return Answer(value=parsed.value, confidence=confidence, rationale=rationale,
                      usage=usage, raw=text, confidence_method=method, distribution=distribution)

    def _message(self, exc: openai.APIStatusError) -> str:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        msg = error.get("message") if isinstance(error, dict) else body.get("message")
        return scrub(str(msg or exc.message or ""), (self._secret,))[:200]


def _count(value: Any) -> int:
    """A token count from a reply's usage: servers omit it or send odd types; never negative."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def _content_text(content: Any) -> str | None:
    """A message's content as text: a string, or a list of parts ({"type": "text", "text": ...}) as
    some servers and gateways send; reasoning (``reasoning_content``) is never part of the answer."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") in (None, "text", "output_text")]
        text = "".join(p for p in parts if isinstance(p, str))
        return text or None
    return None
