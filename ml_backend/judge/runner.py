"""The one judge engine: judge tasks with bounded concurrency, a persistent verdict cache, and either
a stream (``run_judge``: labeling jobs, rate limits, stop at any moment) or a deadline
(``judge_within``: /predict answers what is ready and keeps paying calls cached). Both make each call
through ``judge_safely`` (one task's failure is its own abstention) and account cost with
``ledger_row``.

Plain data in and out (no Label Studio here): the caller hands ``(key, data)`` items and receives an
Outcome per item, so it can write results in batches and stop at any moment without losing what was
paid for (every verdict is cached before it is reported).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
import queue
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Executor, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from ..redact import redact
from .judge import Judge
from .providers.base import ProviderError
from .types import Verdict, verdict_from_dict, verdict_to_dict

log = logging.getLogger(__name__)


class VerdictCache(Protocol):
    def get_verdicts(self, version: str, content_hashes: Sequence[str]) -> dict[str, dict]: ...
    def put_verdicts(self, version: str, rows: list[tuple[str, dict]]) -> None: ...


class _GroupCommit:
    """Caches verdicts from one thread, committing whatever has queued up in one transaction (group
    commit): one sqlite commit per task cost ~0.9 ms of CPU at 64 calls in flight. A verdict waits
    only while the previous group commits (milliseconds) and every queued one is committed before
    ``close`` returns, so a run that ends, fails or is stopped keeps all it paid for."""

    def __init__(self, cache: VerdictCache, version: str) -> None:
        self.cache, self.version = cache, version
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="labeljudge-cache", daemon=True)
        self._thread.start()

    def put(self, content_hash: str, verdict: dict) -> None:
        self._queue.put((content_hash, verdict))

    def _loop(self) -> None:
        done = False
        while not done:
            rows = [self._queue.get()]
            while not self._queue.empty():
                rows.append(self._queue.get())
            if rows[-1] is None:
                rows.pop()
                done = True
            if rows:
                try:
                    self.cache.put_verdicts(self.version, rows)
                except Exception as exc:  # the cache saves money; losing it must not stop the run
                    log.warning("could not cache %d verdicts: %s", len(rows), exc)

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join()


@dataclass
class Outcome:
    key: Any
    verdict: Verdict | None
    error: str | None = None
    cached: bool = False
    retryable: bool = False  # a provider failure: try again on the next run


def _failed(key: Any, exc: Exception) -> Outcome:
    if isinstance(exc, ProviderError):
        return Outcome(key, None, redact(str(exc)), retryable=True)
    log.warning("judging %r failed: %s: %s", key, type(exc).__name__, redact(str(exc)))
    return Outcome(key, None, redact(f"could not judge this task: {type(exc).__name__}: {exc}"), retryable=True)


def judge_safely(judge: Judge, key: Any, data: Any) -> Outcome:
    """One judge call whose failure (the provider's, or a surprise) is this task's abstention, never
    the run's or the batch's."""
    if not isinstance(data, dict):
        return Outcome(key, None, "task has no data object")
    try:
        verdict = judge.judge(data)
    except Exception as exc:
        return _failed(key, exc)
    return Outcome(key, verdict, verdict.error, retryable=not verdict.usable)


async def ajudge_safely(judge: Judge, key: Any, data: dict) -> Outcome:
    """``judge_safely`` on an event loop (a provider with ``aanswer``)."""
    try:
        verdict = await judge.ajudge(data)
    except Exception as exc:
        return _failed(key, exc)
    return Outcome(key, verdict, verdict.error, retryable=not verdict.usable)


def verdict_of(outcome: Outcome) -> Verdict:
    """The outcome as a verdict: a failure becomes an abstention carrying its reason."""
    return outcome.verdict if outcome.verdict is not None else Verdict(error=outcome.error or "no verdict")


def ledger_row(paid: Iterable[Verdict | None], *, price: Callable[[int, int], float], cache_hits: int = 0,
               discount: float = 1.0) -> dict[str, Any]:
    """The cost ledger's numbers for verdicts paid for now (calls, tokens, dollars, unusable answers)
    and ``cache_hits`` answered free: the one place judge calls are accounted, /predict and jobs alike."""
    made = [v for v in paid if v is not None]
    t_in, t_out = sum(v.usage.tokens_in for v in made), sum(v.usage.tokens_out for v in made)
    return {"calls": sum(v.usage.calls for v in made), "tokens_in": t_in, "tokens_out": t_out,
            "cost": price(t_in, t_out) * discount, "cache_hits": cache_hits,
            "failures": sum(1 for v in made if not v.usable)}


@dataclass
class Judged:
    """What ``judge_within`` got by its deadline: a verdict per item (in order; late ones abstain),
    the verdicts paid for now, the cache hits, the late items' indices, and one Event per late call
    still running (set once it has finished and been cached)."""

    verdicts: list[Verdict]
    paid: list[Verdict]
    cache_hits: int
    late: list[int]
    running: list[threading.Event]


def judge_within(judge: Judge, items: Sequence[tuple[Any, Any]], *, pool: Executor, cache: VerdictCache | None,
                 deadline: float | None, after: Callable[[Any, Verdict], None] | None = None) -> Judged:
    """Judge ``items`` on ``pool`` until ``deadline`` (time.monotonic; None: until done). A verdict
    already paid for (same judge version and content) comes from the cache; new usable ones are
    cached, and calls still running at the deadline are cached when they finish, so nothing is paid
    twice. ``after(key, verdict)`` runs on the pool's thread for each call made."""
    version = judge.version
    verdicts: list[Verdict | None] = [None] * len(items)
    hashes: dict[int, str] = {}
    judgeable = [(i, data) for i, (_, data) in enumerate(items) if isinstance(data, dict)]
    for i, _, h, hit in looked_up(judgeable, version, cache, chunk=max(1, len(judgeable))):
        hashes[i] = h
        verdicts[i] = hit.verdict if hit is not None else None
    todo = [i for i, v in enumerate(verdicts) if v is None]
    hits = len(items) - len(todo)

    def call(key: Any, data: Any) -> Verdict:
        verdict = verdict_of(judge_safely(judge, key, data))
        if after is not None:
            after(key, verdict)
        return verdict

    futures = {i: pool.submit(call, *items[i]) for i in todo}
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    wait(list(futures.values()), timeout=remaining)
    late = [i for i in todo if not futures[i].done()]
    running = []
    for i in late:
        if not futures[i].cancel():  # already running: let it finish and cache, so nothing is paid twice
            cached = threading.Event()
            futures[i].add_done_callback(functools.partial(_cache_late, cache, version, hashes.get(i), cached))
            running.append(cached)
        verdicts[i] = Verdict(error="not judged within the /predict budget")
    late_set = set(late)
    paid: list[Verdict] = []
    for i in todo:
        if i not in late_set:
            verdict = futures[i].result()
            verdicts[i] = verdict
            paid.append(verdict)
    fresh = [(hashes[i], verdict_to_dict(v)) for i in todo
             if i not in late_set and i in hashes and (v := verdicts[i]) is not None and v.usable]
    if fresh and cache is not None:
        cache.put_verdicts(version, fresh)
    return Judged([v if v is not None else Verdict(error="no verdict") for v in verdicts],
                  paid, hits, late, running)


def _cache_late(cache: VerdictCache | None, version: str, content_hash: str | None, cached: threading.Event,
                future: Future) -> None:
    try:
        verdict = future.result()
        if cache is not None and content_hash and verdict.usable:
            cache.put_verdicts(version, [(content_hash, verdict_to_dict(verdict))])
    except Exception:
        log.exception("caching a verdict that finished after the deadline failed")
    finally:
        cached.set()


def content_hash(data: dict) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:24]


class RateLimiter:
    """Token buckets for requests and (estimated) tokens per minute; ``acquire`` blocks until both allow."""

    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm, self.tpm = rpm, tpm
        self._lock = threading.Lock()
        now = time.monotonic()
        self._req, self._tok, self._t = float(rpm or 0), float(tpm or 0), now

    def acquire(self, tokens: int = 0) -> None:
        while (wait_s := self._take(tokens)) > 0:
            time.sleep(wait_s)

    async def aacquire(self, tokens: int = 0) -> None:
        import asyncio

        while (wait_s := self._take(tokens)) > 0:
            await asyncio.sleep(wait_s)

    def _take(self, tokens: int) -> float:
        """Take one request and ``tokens`` from the buckets (0.0), or say how long to wait first."""
        if not self.rpm and not self.tpm:
            return 0.0
        with self._lock:
            now = time.monotonic()
            dt, self._t = now - self._t, now
            if self.rpm:
                self._req = min(self.rpm, self._req + dt * self.rpm / 60)
            if self.tpm:
                self._tok = min(self.tpm, self._tok + dt * self.tpm / 60)
            ok_req = not self.rpm or self._req >= 1
            ok_tok = not self.tpm or self._tok >= min(tokens, self.tpm)
            if ok_req and ok_tok:
                if self.rpm:
                    self._req -= 1
                if self.tpm:
                    self._tok -= min(tokens, self.tpm)
                return 0.0
            need = []
            if not ok_req and self.rpm:
                need.append((1 - self._req) * 60 / self.rpm)
            if not ok_tok and self.tpm:
                need.append((min(tokens, self.tpm) - self._tok) * 60 / self.tpm)
            return min(max(max(need), 1e-3), 1.0)


def run_judge(judge: Judge, items: Iterable[tuple[Any, dict]], on_outcome: Callable[[Outcome], None], *,
              concurrency: int = 8, cache: VerdictCache | None = None, limiter: RateLimiter | None = None,
              stop: threading.Event | None = None, use_async: bool | None = None) -> None:
    """Judge every item; at most ``concurrency`` calls in flight. ``stop`` ends it early (in-flight
    calls finish and are reported). A provider with ``aanswer`` runs on one asyncio event loop (no
    thread per call in flight); others (the local model) on a thread pool. ``use_async`` forces either."""
    limiter = limiter or RateLimiter()
    writer = _GroupCommit(cache, judge.version) if cache is not None else None
    if use_async is None:
        use_async = hasattr(judge.provider, "aanswer")
    try:
        if use_async:
            import asyncio

            asyncio.run(_run_async(judge, items, on_outcome, concurrency, cache, writer, limiter, stop))
        else:
            _run_threads(judge, items, on_outcome, concurrency, cache, writer, limiter, stop)
    finally:
        if writer is not None:
            writer.close()


def looked_up(items: Iterable[tuple[Any, dict]], version: str, cache: VerdictCache | None,
              chunk: int = 64) -> Iterator[tuple[Any, dict, str, Outcome | None]]:
    """``(key, data, content_hash, cached Outcome or None)`` per item, the cache asked once per
    ``chunk`` items. Lazy, so a stopped run has not read (or hashed) the rest."""
    source = iter(items)
    while part := [(key, data, content_hash(data)) for key, data in itertools.islice(source, chunk)]:
        hits = cache.get_verdicts(version, [h for _, _, h in part]) if cache is not None else {}
        for key, data, h in part:
            hit = hits.get(h)
            yield key, data, h, (Outcome(key, verdict_from_dict(hit), hit.get("error"), cached=True)
                                 if hit is not None else None)


def _cached(outcome: Outcome, h: str, writer: _GroupCommit | None) -> Outcome:
    if writer is not None and outcome.verdict is not None and outcome.verdict.usable:
        writer.put(h, verdict_to_dict(outcome.verdict))  # unusable answers are retried next run, not cached
    return outcome


def _run_threads(judge: Judge, items: Iterable[tuple[Any, dict]], on_outcome: Callable[[Outcome], None],
                 concurrency: int, cache: VerdictCache | None, writer: _GroupCommit | None,
                 limiter: RateLimiter, stop: threading.Event | None) -> None:
    def one(key: Any, data: dict, h: str) -> Outcome:
        limiter.acquire(_estimate_tokens(data))
        return _cached(judge_safely(judge, key, data), h, writer)

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="labeljudge-run") as pool:
        pending: set[Future] = set()
        for key, data, h, hit in looked_up(items, judge.version, cache):
            if stop is not None and stop.is_set():
                break
            if hit is not None:
                on_outcome(hit)
                continue
            pending.add(pool.submit(one, key, data, h))
            if len(pending) >= concurrency * 2:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    on_outcome(f.result())
        for f in pending:
            on_outcome(f.result())


async def _run_async(judge: Judge, items: Iterable[tuple[Any, dict]], on_outcome: Callable[[Outcome], None],
                     concurrency: int, cache: VerdictCache | None, writer: _GroupCommit | None,
                     limiter: RateLimiter, stop: threading.Event | None) -> None:
    """``concurrency`` workers on one event loop, pulling from the same iterator."""
    source = looked_up(items, judge.version, cache)

    async def worker() -> None:
        for key, data, h, hit in source:
            if stop is not None and stop.is_set():
                return
            if hit is None:
                await limiter.aacquire(_estimate_tokens(data))
                hit = _cached(await ajudge_safely(judge, key, data), h, writer)
            on_outcome(hit)

    import asyncio

    try:
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    finally:
        if hasattr(judge.provider, "aclose"):
            await judge.provider.aclose()


def _estimate_tokens(data: dict) -> int:
    return sum(len(str(v)) for v in data.values()) // 4 + 200
