"""The bulk runner over real HTTP: the asyncio runner (openai's async client) and the thread pool
give the same outcomes, report every item exactly once through faults, stop cleanly, and the rate
limiter's buckets hold."""
from __future__ import annotations

import asyncio
import threading

import pytest

from ml_backend.judge import Judge, JudgeSpec, resolve_template
from ml_backend.judge.providers import OpenAIProvider
from ml_backend.judge.runner import RateLimiter, run_judge
from ml_backend.judge.types import Question

from .fake_openai import FakeOpenAI
from .test_pairwise import content_judge, spec_for

PF = Question("verdict", "single", ("Pass", "Fail"))


class DictCache:
    """The runner's cache protocol over a dict (the backend uses its sqlite store)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}

    def get_verdicts(self, version: str, content_hashes) -> dict[str, dict]:
        return {h: self.rows[version, h] for h in content_hashes if (version, h) in self.rows}

    def put_verdicts(self, version: str, rows: list[tuple[str, dict]]) -> None:
        self.rows.update({(version, h): v for h, v in rows})


def judge_for(fake: FakeOpenAI) -> Judge:
    provider = OpenAIProvider("fake-judge", api_key="sk-test-secret-key-123456", base_url=fake.url, timeout=1.0,
                              max_retries=0)
    return Judge(JudgeSpec(resolve_template(None, "faithfulness"), "openai", "fake-judge", questions=(PF,)), provider)


def items(n: int) -> list[tuple[int, dict]]:
    return [(i, {"input": f"q{i}", "context": "c", "output": f"a{i} EXPECT={'Pass' if i % 3 else 'Fail'}"})
            for i in range(n)]


@pytest.mark.parametrize("use_async", [True, False], ids=["asyncio", "threads"])
def test_every_item_is_reported_once_through_faults_and_a_rerun_pays_only_for_failures(use_async):
    with FakeOpenAI() as fake:
        fake.timeout_sleep = 1.5
        fake.faults.extend(["429", "500", "timeout", "invalid_label", "malformed_json", "html"] * 2)
        cache, first = DictCache(), []
        run_judge(judge_for(fake), items(40), first.append, concurrency=8, cache=cache, use_async=use_async)
        assert sorted(o.key for o in first) == list(range(40))
        failed = {o.key for o in first if o.error}
        assert len(failed) == 12 and all(o.retryable for o in first if o.error)
        for o in first:
            if not o.error:
                assert o.verdict.answers["verdict"].value == ("Pass" if o.key % 3 else "Fail")
        calls = len(fake.requests)
        again = []
        run_judge(judge_for(fake), items(40), again.append, concurrency=8, cache=cache, use_async=use_async)
        assert sorted(o.key for o in again) == list(range(40)) and not any(o.error for o in again)
        assert {o.key for o in again if not o.cached} == failed
        assert len(fake.requests) - calls == len(failed)  # nothing paid for was asked again


def test_async_pairs_send_both_orders_and_agree_with_the_blocking_judge():
    schema, spec = spec_for("pairwise_preference")
    data = [(i, {"messages": [{"role": "user", "content": "q"}], "response_a": "x GOOD" if i % 2 else "x",
                 "response_b": "y" if i % 2 else "y GOOD"}) for i in range(10)]
    with FakeOpenAI(decide=content_judge) as fake:
        judge = Judge(spec, OpenAIProvider("fake", api_key="k", base_url=fake.url, max_retries=0),
                      input_keys=schema.data_fields)
        out = []
        run_judge(judge, data, out.append, concurrency=4, use_async=True)
        assert len(fake.requests) == 20
        blocking = {k: judge.judge(d).answers["preference"].value for k, d in data}
    answers = {o.key: o.verdict.answers["preference"] for o in out}
    assert {k: a.value for k, a in answers.items()} == blocking == {i: "A" if i % 2 else "B" for i in range(10)}
    assert all(a.position["consistent"] and a.usage.calls == 2 for a in answers.values())


@pytest.mark.parametrize("use_async", [True, False], ids=["asyncio", "threads"])
def test_stop_ends_the_run_and_reports_what_was_in_flight(use_async):
    stop = threading.Event()
    out = []

    def on_outcome(o):
        out.append(o)
        if len(out) == 5:
            stop.set()

    with FakeOpenAI(latency=0.02) as fake:
        run_judge(judge_for(fake), items(200), on_outcome, concurrency=4, stop=stop, use_async=use_async)
        asked = len(fake.requests)
    keys = [o.key for o in out]
    assert len(keys) == len(set(keys)) and 5 <= len(keys) < 20
    assert asked == len(keys)  # every call made was reported


def test_rate_limiter_buckets_block_and_refill():
    limiter = RateLimiter(rpm=60, tpm=1000)
    assert all(limiter._take(10) == 0.0 for _ in range(60))
    assert limiter._take(10) == pytest.approx(1.0, abs=0.05)  # 61st request: one second of refill
    tokens = RateLimiter(tpm=600)
    assert tokens._take(600) == 0.0 and tokens._take(5) == pytest.approx(0.5, abs=0.05)  # 10 tokens/s
    assert RateLimiter()._take(10 ** 9) == 0.0  # no limits: never waits
    asyncio.run(RateLimiter(rpm=6000).aacquire(0))


def test_the_async_client_drops_an_optional_feature_the_server_rejects_like_the_blocking_one():
    with FakeOpenAI() as fake:
        fake.reject_format = True
        out = []
        run_judge(judge_for(fake), items(6), out.append, concurrency=3, use_async=True)
        bodies = [r["body"] for r in fake.requests]
    assert len(out) == 6 and not any(o.error for o in out)
    # only the calls in flight before the first rejection carried it (the server logs requests in the
    # order its threads get them, not the order they were sent); every item was answered without it
    with_format = [b for b in bodies if "response_format" in b]
    assert 1 <= len(with_format) <= 3 and len(bodies) - len(with_format) == 6


def test_the_sqlite_cache_answers_many_hashes_in_one_call_per_version(tmp_path):
    """The runner asks the cache once per chunk of items; past sqlite's 500-a-query chunks, with
    repeated hashes, and never across judge versions."""
    from ml_backend.store import Store

    store = Store(tmp_path / "s.sqlite3")
    store.put_verdicts("judge-a", [(f"h{i}", {"answers": {}, "n": i}) for i in range(0, 1200, 2)])
    store.put_verdicts("judge-b", [("h1", {"answers": {}, "n": -1})])
    asked = [f"h{i}" for i in range(1200)] + ["h0", "h2"]
    found = store.get_verdicts("judge-a", asked)
    assert sorted(found) == sorted(f"h{i}" for i in range(0, 1200, 2))
    assert found["h998"]["n"] == 998 and "h1" not in found
    assert store.get_verdicts("judge-b", asked) == {"h1": {"answers": {}, "n": -1}}
    assert store.get_verdicts("judge-a", []) == {}


def test_two_asyncio_runs_at_once_share_one_provider():
    """Projects on the same model share a provider (the backend's pool), so two labeling jobs can run
    on two event loops at once: each needs its own async client, and one run ending must not close
    the other's."""
    with FakeOpenAI(latency=0.05) as fake:
        judge = judge_for(fake)
        results: dict[str, list] = {"a": [], "b": []}

        def run(name: str, n: int) -> None:
            run_judge(judge, items(n), results[name].append, concurrency=4, use_async=True)

        threads = [threading.Thread(target=run, args=("a", 12)), threading.Thread(target=run, args=("b", 40))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o.key for o in results["a"]) == list(range(12))
        assert sorted(o.key for o in results["b"]) == list(range(40))
        assert not [o.error for o in results["a"] + results["b"] if o.error]
