"""Batch API mode against a real HTTP server that speaks /files and /batches: one batch for all the
requests (both orders of a pair included), a stopped run resumes the same batch, failed lines are
retried in the next batch, cached verdicts are not sent again."""
from __future__ import annotations

import threading

import pytest

from ml_backend.judge import Judge, JudgeSpec, resolve_template
from ml_backend.judge.batch import BatchPending, run_batch
from ml_backend.judge.providers import OpenAIProvider, ProviderError
from ml_backend.judge.types import Question
from ml_backend.store import Store

from .fake_openai import FakeOpenAI
from .test_judge_openai import PF, make_judge

PREF = Question("preference", "single", ("A", "B", "Tie"))


def tasks(n: int) -> list[tuple[int, dict]]:
    return [(i, {"input": f"q{i}", "context": "c", "output": f"o{i} EXPECT={'Pass' if i % 3 else 'Fail'}"})
            for i in range(n)]


def posts(fake: FakeOpenAI, suffix: str) -> int:
    return sum(1 for r in fake.requests if r["path"].endswith(suffix))


def collect(judge, items, store, **kw):
    out = {}

    def once(o):
        assert o.key not in out, f"task {o.key} reported twice"
        out[o.key] = o

    status = run_batch(judge, items, once, scope="p:v", store=store, cache=store, poll_interval=0.01, **kw)
    return out, status


def test_one_batch_labels_everything_and_a_rerun_pays_nothing(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    with FakeOpenAI() as fake:
        judge = make_judge(fake)
        out, status = collect(judge, tasks(12), store)
        assert status.status == "completed" and status.total == 12
        assert posts(fake, "/batches") == 1 and posts(fake, "/chat/completions") == 0
        assert [out[i].verdict.answers["verdict"].value for i in range(12)] == \
            ["Fail" if i % 3 == 0 else "Pass" for i in range(12)]
        assert all(o.verdict.answers["verdict"].confidence == pytest.approx(0.9, abs=0.02) for o in out.values())
        assert all(o.verdict.rationale for o in out.values())  # what a live call gives, from the batch

        broken = [(99, {"input": "q", "context": "c"})]  # no output: reported once, never sent
        again, status = collect(judge, tasks(12) + broken, store)
        assert "output" in again.pop(99).error
        assert status is None and all(o.cached for o in again.values()) and posts(fake, "/batches") == 1


def test_a_stopped_run_resumes_the_same_batch(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    with FakeOpenAI() as fake:
        fake.batch_polls = 10 ** 6  # never done while we wait
        stop = threading.Event()
        stop.set()
        with pytest.raises(BatchPending, match="run the same command again"):
            collect(make_judge(fake), tasks(5), store, stop=stop)
        assert store.open_batch("p:v") == "batch-1"
        fake.batch_polls = 0
        out, status = collect(make_judge(fake), tasks(5), store)
        assert status.batch_id == "batch-1" and posts(fake, "/batches") == 1 and len(out) == 5
        assert all(o.verdict.usable for o in out.values()) and store.open_batch("p:v") is None


def test_failed_lines_abstain_and_go_in_the_next_batch(tmp_path):
    store = Store(tmp_path / "s.sqlite3")
    with FakeOpenAI() as fake:
        fake.batch_faults.extend(["500", "invalid_label"])
        out, _ = collect(make_judge(fake), tasks(6), store)
        bad = {k for k, o in out.items() if not o.verdict.usable}
        assert len(bad) == 2 and all(out[k].retryable for k in bad)
        assert any("batch request failed" in out[k].error for k in bad)
        assert any("'Maybe' is not one of" in out[k].error for k in bad)
        out, status = collect(make_judge(fake), tasks(6), store)
        assert status.total == 2 and sum(not o.cached for o in out.values()) == 2
        assert all(o.verdict.usable for o in out.values())


def test_pairs_send_both_orders_in_the_batch(tmp_path):
    store = Store(tmp_path / "s.sqlite3")

    def first_position(body, options):  # a judge that always picks the first response shown
        return "A"

    with FakeOpenAI(decide=first_position) as fake:
        provider = OpenAIProvider("fake-judge", api_key="k", base_url=fake.url)
        spec = JudgeSpec(resolve_template(None, "preference_prompt"), "openai", "fake-judge",
                         questions=(PREF,), pair=("response_a", "response_b"), pair_question="preference")
        judge = Judge(spec, provider, input_keys=("input", "response_a", "response_b"))
        items = [(i, {"input": f"q{i}", "response_a": f"a{i}", "response_b": f"b{i}"}) for i in range(4)]
        out, status = collect(judge, items, store)
        assert status.total == 8  # both orders of each pair, in one batch
        for o in out.values():
            answer = o.verdict.answers["preference"]
            assert answer.value == "Tie" and answer.position == {"first": "A", "second": "B", "consistent": False}


def test_batch_mode_needs_the_openai_provider(tmp_path):
    class Other:
        name, model, as_json = "local", "m", False

    judge = Judge(JudgeSpec(resolve_template(None, "faithfulness"), "local", "m", questions=(PF,)), Other())
    with pytest.raises(ProviderError, match="batch mode needs the openai provider"):
        collect(judge, tasks(1), Store(tmp_path / "s.sqlite3"))


@pytest.mark.e2e
def test_cli_label_batch_api_writes_every_prediction_once_at_half_price(tmp_path, ls_api, label_studio):
    import json
    import os
    import subprocess
    import sys

    from .conftest import ROOT
    from .test_e2e_quality import PASS_FAIL, truth_tasks, versions_per_task

    with FakeOpenAI() as fake:
        project = ls_api.create_project("e2e batch api", PASS_FAIL)
        ls_api.import_tasks(project, truth_tasks(30))
        env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                   JUDGE_PROVIDER="openai", OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="sk-x",
                   JUDGE_MODEL="gpt-4o-mini", MODEL_DIR=str(tmp_path / "m"), PRELOAD_MODEL="false", FEW_SHOT_K="0")
        cmd = [sys.executable, "-m", "ml_backend.cli", "label", "--project", str(project), "--json"]
        run = subprocess.run(cmd + ["--batch-api", "--poll-interval", "0.05"], env=env, cwd=ROOT,
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
        batch = json.loads(run.stdout.strip().splitlines()[-1])
        assert batch["labeled"] == 30 and batch["failed"] == 0
        assert posts(fake, "/batches") == 1 and posts(fake, "/chat/completions") == 0
        counts = versions_per_task(ls_api, project, batch["model_version"])
        assert len(counts) == 30 and set(counts.values()) == {1}

        # the same tasks live, in a second project: the batch cost half as much
        live_project = ls_api.create_project("e2e live", PASS_FAIL)
        ls_api.import_tasks(live_project, truth_tasks(30))
        run = subprocess.run([*cmd[:5], str(live_project), "--json"], env={**env, "MODEL_DIR": str(tmp_path / "live")},
                             cwd=ROOT, capture_output=True, text=True, timeout=300)  # own cache: pay live
        assert run.returncode == 0, run.stderr
        live = json.loads(run.stdout.strip().splitlines()[-1])
        assert live["tokens_in"] == batch["tokens_in"] and live["cost"] > 0
        assert batch["cost"] == pytest.approx(live["cost"] / 2, abs=2e-6)  # costs are rounded to 1e-6


@pytest.mark.e2e
def test_labeling_job_over_http_in_batch_mode_shows_the_batch_and_writes_once(tmp_path, ls_api, label_studio):
    import time

    import httpx

    from .conftest import judge_settings, serve_backend
    from .test_e2e_quality import PASS_FAIL, truth_tasks, versions_per_task

    with FakeOpenAI() as fake:
        fake.batch_polls = 3
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url,
                                  LABEL_STUDIO_API_KEY=label_studio.token, FEW_SHOT_K="0", JUDGE_MODEL="gpt-4o-mini")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e batch job", PASS_FAIL)
            ls_api.import_tasks(project, truth_tasks(25))
            bad = httpx.post(f"{srv.url}/jobs/label", json={"project": project, "batch_api": "yes"})
            assert bad.status_code == 400 and "batch_api" in bad.json()["error"]
            job = httpx.post(f"{srv.url}/jobs/label", json={"project": project, "batch_api": True,
                                                            "poll_interval": 0.2}).json()
            seen = set()
            deadline = time.time() + 120
            while job["status"] not in ("finished", "failed") and time.time() < deadline:
                time.sleep(0.1)
                job = httpx.get(f"{srv.url}/jobs/{job['id']}").json()
                batch = (job.get("progress") or {}).get("batch")
                if batch:
                    seen.add(batch["status"])
            assert job["status"] == "finished", job
            assert job["result"]["labeled"] == 25 and job["result"]["failed"] == 0
            assert job["progress"]["batch"]["id"].startswith("batch") and "completed" in seen
            assert posts(fake, "/batches") == 1 and posts(fake, "/chat/completions") == 0
            counts = versions_per_task(ls_api, project, job["result"]["model_version"])
            assert len(counts) == 25 and set(counts.values()) == {1}
