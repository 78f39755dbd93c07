"""OpenAI Batch API mode: the same judge, its requests sent as one batch (half price, up to 24 h).

The judge's logic (several questions, both orders of a pair, few-shot examples) stays in Judge: a
first pass runs it with a provider that only records the request bodies; they go to the Batch API as
one JSONL file; when the batch completes, a second pass runs the judge again with a provider that
answers from the batch's results. A request is keyed by the hash of its body, so both passes agree.

Resumable: the batch id is kept by the caller (``BatchStore``) before waiting, so a run stopped while
the batch is in flight picks the same batch up again instead of paying for a second one.
"""
from __future__ import annotations

import hashlib
import io
import json
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Protocol

import openai

from .judge import Judge
from .providers.base import Decoding, ProviderError
from .providers.openai_compat import OpenAIProvider
from .runner import Outcome, VerdictCache, looked_up
from .types import Answer, Question, verdict_to_dict

DONE = ("completed", "failed", "expired", "cancelled")


class BatchPending(RuntimeError):
    """Stopped (or timed out) while the batch is in flight; it stays recorded for the next run."""


class BatchStore(Protocol):
    def open_batch(self, scope: str) -> str | None: ...
    def save_batch(self, scope: str, batch_id: str, status: str) -> None: ...


def request_key(body: dict) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]


class _Recorder:
    """Pass 1: remembers each request body; every answer is an abstention until the batch is back."""

    def __init__(self, inner: OpenAIProvider) -> None:
        self.inner, self.name, self.model, self.as_json = inner, inner.name, inner.model, inner.as_json
        self.bodies: dict[str, dict] = {}

    def answer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        body = self.inner.request_body(messages, question, decoding)
        self.bodies[request_key(body)] = body
        return Answer(error="waiting for the batch")


class _Replayer:
    """Pass 2: answers each request from the batch's results (a missing or failed one abstains)."""

    def __init__(self, inner: OpenAIProvider, results: dict[str, dict]) -> None:
        self.inner, self.name, self.model, self.as_json = inner, inner.name, inner.model, inner.as_json
        self.results = results

    def answer(self, messages: list[dict[str, str]], question: Question, decoding: Decoding) -> Answer:
        line = self.results.get(request_key(self.inner.request_body(messages, question, decoding)))
        if line is None:
            return Answer(error="the batch has no result for this request")
        response = line.get("response") or {}
        if line.get("error") or response.get("status_code") != 200:
            detail = (line.get("error") or {}).get("message") or (response.get("body") or {}).get("error", {})
            return Answer(error=f"the batch request failed: {str(detail)[:200]}")
        return self.inner.to_answer(response.get("body") or {}, question)


@dataclass
class BatchStatus:
    batch_id: str
    status: str
    completed: int = 0
    failed: int = 0
    total: int = 0


def run_batch(judge: Judge, items: Iterable[tuple[Any, dict]], on_outcome: Callable[[Outcome], None], *,
              scope: str, store: BatchStore, cache: VerdictCache | None = None, poll_interval: float = 30.0,
              timeout: float | None = None, progress: Callable[[BatchStatus], None] | None = None,
              stop: threading.Event | None = None) -> BatchStatus | None:
    """Judge every item through one Batch API batch; report an Outcome per item like ``run_judge``.
    ``scope`` names the work (project x judge version) so a re-run resumes its batch. Returns the
    batch's final status (None when every item came from the cache)."""
    provider = judge.provider
    if not isinstance(provider, OpenAIProvider):
        raise ProviderError("batch mode needs the openai provider (an OpenAI-compatible server with /v1/batches)")
    version = judge.version
    todo: list[tuple[Any, dict, str]] = []
    for key, data, h, hit in looked_up(items, version, cache, chunk=500):
        if hit is not None:
            on_outcome(hit)
        else:
            todo.append((key, data, h))
    if not todo:
        return None
    recorder = _Recorder(provider)
    first = Judge(judge.spec, recorder, input_keys=judge.input_keys, max_field_chars=judge.max_field_chars)
    unrenderable = set()
    for i, (key, data, _) in enumerate(todo):
        verdict = first.judge(data)
        if not verdict.answers and verdict.error:  # the task itself cannot be rendered: no request
            on_outcome(Outcome(key, verdict, verdict.error))
            unrenderable.add(i)
    todo = [t for i, t in enumerate(todo) if i not in unrenderable]
    if not todo:
        return None
    client = provider.client
    batch_id = store.open_batch(scope)
    if batch_id is None:
        lines = "".join(json.dumps({"custom_id": k, "method": "POST", "url": "/v1/chat/completions", "body": b}) + "\n"
                        for k, b in recorder.bodies.items())
        try:
            upload = client.files.create(file=("requests.jsonl", io.BytesIO(lines.encode())), purpose="batch")
            batch = client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                          completion_window="24h", metadata={"labeljudge": scope[:500]})
        except openai.APIStatusError as exc:
            if exc.status_code in (404, 405, 501):  # vLLM, llama.cpp, Ollama: no Batch API
                raise ProviderError(f"{provider.model}: this server has no Batch API (/v1/files or /v1/batches "
                                    f"answered {exc.status_code}); label without batch mode") from None
            raise
        batch_id = batch.id
        store.save_batch(scope, batch_id, batch.status)
    status = _wait(client, batch_id, poll_interval, timeout, progress, stop)
    store.save_batch(scope, batch_id, status.status)
    results = _results(client, client.batches.retrieve(batch_id))
    second = Judge(judge.spec, _Replayer(provider, results), input_keys=judge.input_keys,
                   max_field_chars=judge.max_field_chars)
    usable = []
    for key, data, h in todo:
        verdict = second.judge(data)
        if verdict.usable:
            usable.append((h, verdict_to_dict(verdict)))
        on_outcome(Outcome(key, verdict, verdict.error, retryable=not verdict.usable))
    if cache is not None and usable:  # one commit; until "collected" below, a rerun re-reads the batch
        cache.put_verdicts(version, usable)
    store.save_batch(scope, batch_id, "collected")  # the next run submits a new batch for what is left
    return status


def _wait(client: Any, batch_id: str, poll_interval: float, timeout: float | None,
          progress: Callable[[BatchStatus], None] | None, stop: threading.Event | None) -> BatchStatus:
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        counts = batch.request_counts
        status = BatchStatus(batch_id, batch.status, getattr(counts, "completed", 0) or 0,
                             getattr(counts, "failed", 0) or 0, getattr(counts, "total", 0) or 0)
        if progress is not None:
            progress(status)
        if batch.status in DONE:
            return status
        if (deadline is not None and time.monotonic() > deadline) or (stop is not None and stop.is_set()):
            raise BatchPending(f"batch {batch_id} is still {batch.status}; run the same command again to "
                               "collect it (it will not be submitted twice)")
        if stop is not None:
            stop.wait(poll_interval)
        else:
            time.sleep(poll_interval)


def _results(client: Any, batch: Any) -> dict[str, dict]:
    """custom_id -> result line, from the output file and the error file."""
    out: dict[str, dict] = {}
    for file_id in (batch.output_file_id, batch.error_file_id):
        if file_id:
            for line in client.files.content(file_id).text.splitlines():
                if line.strip():
                    row = json.loads(line)
                    out[row["custom_id"]] = row
    return out
