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
import ssl
import threading
import weakref
from typing import Any

import openai
from openai import AsyncOpenAI, DefaultHttpxClient, OpenAI

from ..parsing import AnswerError, parse_reply, span_confidence
from ..prompting import answer_schema
from ..types import Answer, Question, Usage
from ...redact import redact, register
from .base import Decoding, ProviderError, scrub

log = logging.getLogger(__name__)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The verified TLS context the client would build, built once per process: building one loads
    the CA store (about 70 ms of blocking CPU here), which every new client did again, on the event
    loop at the start of each labeling run. An SSLContext is safe to share between connections."""
    try:
        import httpx2 as transport  # the HTTP library of openai 2.x and later
    except ImportError:
        import httpx as transport  # ...and of openai 1.x
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


class OpenAIProvider:
    name = "openai"
    as_json = True

    def __init__(self, model: str, *, api_key: str | None, base_url: str | None,
                 timeout: float = 60.0, max_retries: int = 4) -> None:
        self.model = model
        self._secret = api_key
        register(api_key)
        # Local servers (vLLM, Ollama, llama.cpp) need no key, but the client insists on one.
        self.client = OpenAI(api_key=api_key or "no-key", base_url=base_url, timeout=timeout,
                             max_retries=max_retries, http_client=DefaultHttpxClient(verify=tls_context()))
        self._base_url, self._timeout, self._max_retries = base_url, timeout, max_retries
        # one async client per event loop: its connections belong to the loop that opened them, and
        # projects on the same model share this provider, so two labeling runs can be in flight at once
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncOpenAI] = weakref.WeakKeyDictionary()
        self._structured = True
        self._logprobs = True
        self._lock = threading.Lock()

    def answer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        while True:
            structured, logprobs = self._structured, self._logprobs
            try:
                # The client's request path (timeouts, retries with backoff and jitter, Retry-After,
                # typed errors) with our already well-formed body and a plain-dict reply: its param
                # transform and response models cost 1.4 ms of CPU per call, which at 64 calls in
                # flight on 2 cores is the bottleneck (measured in scripts/bench_labeling.py).
                response = self.client.post("/chat/completions", body=self.request_body(messages, question, decoding),
                                            cast_to=dict)
                return self.to_answer(response, question)
            except openai.APIError as exc:
                self._retry_or_raise(exc, structured, logprobs)

    async def aanswer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        """``answer`` through the async client, for the asyncio runner (many calls in flight on one
        thread). Call ``aclose`` from the same event loop when done."""
        client = self._aclient()
        while True:
            structured, logprobs = self._structured, self._logprobs
            try:
                response = await client.post("/chat/completions",
                                             body=self.request_body(messages, question, decoding), cast_to=dict)
                return self.to_answer(response, question)
            except openai.APIError as exc:
                self._retry_or_raise(exc, structured, logprobs)

    def _aclient(self) -> AsyncOpenAI:
        """The running event loop's async client, made on its first call."""
        loop = asyncio.get_running_loop()
        client = self._aclients.get(loop)
        if client is None:
            client = AsyncOpenAI(api_key=self._secret or "no-key", base_url=self._base_url, timeout=self._timeout,
                                 max_retries=self._max_retries, http_client=aiohttp_client())
            with self._lock:
                self._aclients[loop] = client
        return client

    async def aclose(self) -> None:
        """Close the running event loop's async client; other loops' clients are left alone."""
        with self._lock:
            client = self._aclients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.close()

    def _retry_or_raise(self, exc: openai.APIError, structured: bool, logprobs: bool) -> None:
        """After the client's own retries: return to ask again without an optional feature the server
        rejected, else raise a ProviderError that carries no secret."""
        if isinstance(exc, openai.BadRequestError) and self._downgrade(str(exc), structured, logprobs):
            return
        if isinstance(exc, openai.BadRequestError):
            raise ProviderError(f"{self.model}: request rejected ({exc.status_code}): {self._message(exc)}") from None
        if isinstance(exc, openai.APITimeoutError):
            raise ProviderError(f"{self.model}: timed out after retries") from None
        if isinstance(exc, openai.APIConnectionError):
            raise ProviderError(f"{self.model}: could not connect to the provider") from None
        if isinstance(exc, openai.APIStatusError):
            raise ProviderError(f"{self.model}: provider answered {exc.status_code}: {self._message(exc)}") from None
        raise ProviderError(f"{self.model}: {scrub(str(exc), (self._secret,))[:200]}") from None

    def request_body(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> dict:
        """The chat-completions body for one question (also what a Batch API line carries)."""
        body: dict = {"model": self.model, "messages": messages,
                      "temperature": decoding.temperature, "max_tokens": decoding.max_tokens}
        if self._structured:
            body["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "verdict", "strict": True, "schema": answer_schema(question, rationale=decoding.rationale)}}
        if self._logprobs:
            body["logprobs"] = True
        return body

    def _downgrade(self, error: str, structured: bool, logprobs: bool) -> bool:
        """Drop an optional feature the server rejected; False if there is nothing left to drop."""
        with self._lock:
            text = error.lower()
            if logprobs and "logprob" in text:
                self._logprobs = False
            elif structured and ("response_format" in text or "json_schema" in text):
                self._structured = False
            elif logprobs:
                self._logprobs = False
            elif structured:
                self._structured = False
            else:
                return False
            log.warning("provider %s rejected an optional feature; now structured=%s logprobs=%s",
                        self.model, self._structured, self._logprobs)
            return True

    def to_answer(self, response: dict, question: Question) -> Answer:
        """A chat-completion reply (a dict) as an Answer; an unusable one carries its error."""
        usage = Usage(calls=1)
        if not isinstance(response, dict) or not all(isinstance(c, dict) for c in response.get("choices") or []):
            return Answer(error=f"the provider's reply is not a chat completion: {redact(str(response))[:120]!r}",
                          usage=usage)
        counts = response.get("usage") if isinstance(response.get("usage"), dict) else {}
        usage.tokens_in = _count(counts.get("prompt_tokens"))
        usage.tokens_out = _count(counts.get("completion_tokens"))
        if not response.get("choices"):
            return Answer(error="the provider returned no choices", usage=usage)
        choice = response["choices"][0]
        text = (choice.get("message") or {}).get("content")
        # a reply can quote the request back (its Authorization header included): nothing the provider
        # says reaches a verdict, a failure reason or a log line unredacted
        text = redact(text) if isinstance(text, str) else None
        try:
            parsed = parse_reply(question, text)
        except AnswerError as exc:
            if choice.get("finish_reason") == "length":
                return Answer(error=f"{exc} (reply cut at max_tokens)", usage=usage, raw=text)
            return Answer(error=str(exc), usage=usage, raw=text)
        confidence = None
        content_lp = (choice.get("logprobs") or {}).get("content")
        if content_lp and parsed.span:
            confidence = span_confidence(text, [(t["token"], t["logprob"]) for t in content_lp], parsed.span)
        return Answer(value=parsed.value, confidence=confidence, rationale=parsed.rationale,
                      usage=usage, raw=text)

    def _message(self, exc: openai.APIStatusError) -> str:
        body = exc.body if isinstance(exc.body, dict) else {}
        error = body.get("error")
        msg = error.get("message") if isinstance(error, dict) else body.get("message")
        return scrub(str(msg or exc.message or ""), (self._secret,))[:200]


def _count(value: Any) -> int:
    """A token count from a reply's usage: servers omit it or send odd types; never negative."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
