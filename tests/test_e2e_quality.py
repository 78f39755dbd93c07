"""Issues 3 and 5 end to end: bulk labeling into a real Label Studio, failures and resume, the
report's numbers against a simulated judge of known accuracy, few-shot versions, the report page in
a real browser."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest
from sklearn.metrics import cohen_kappa_score

from ml_backend.app import LabelJudgeBackend
from ml_backend.store import Store
from ml_backend.workflows.labeling import label_project
from ml_backend.workflows.reporting import project_report

from .conftest import CONFIGS, ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI

pytestmark = pytest.mark.e2e
PASS_FAIL = (CONFIGS / "pass_fail.xml").read_text()
ARTIFACTS = ROOT / "tests" / "artifacts"


def truth_tasks(n: int) -> list[dict]:
    return [{"data": {"input": f"question number {i} about topic {i % 7}", "context": f"facts {i}",
                      "output": f"answer {i} TRUTH={'Pass' if i % 2 else 'Fail'}"}} for i in range(n)]


def simulated(p_correct: float):
    """The true label (from TRUTH= in the prompt) with probability p_correct, decided by a hash of
    the task, so the run is deterministic and the judge's true accuracy is known."""
    def decide(body: dict, options: list[str]) -> str | None:
        text = body["messages"][-1]["content"]
        if "TRUTH=" not in text or not options:
            return None
        truth = text.split("TRUTH=")[1][:4]
        key = text.split("TRUTH=")[0][-40:]
        u = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        return truth if u < p_correct else [o for o in options if o != truth][0]
    return decide


def make_backend(tmp_path, fake, label_studio, **env):
    settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url,
                              LABEL_STUDIO_API_KEY=label_studio.token, **env)
    return LabelJudgeBackend(settings, Store(settings.model_dir / "labeljudge.sqlite3"))


def versions_per_task(ls_api, project, version):
    counts: dict[int, int] = {}
    for p in ls_api.predictions(project):
        if p.model_version == version:
            counts[int(p.task)] = counts.get(int(p.task), 0) + 1
    return counts


def test_report_numbers_match_a_simulated_judge_of_known_accuracy(tmp_path, ls_api, label_studio):
    with FakeOpenAI(decide=simulated(0.85)) as fake:
        backend = make_backend(tmp_path, fake, label_studio)
        project = ls_api.create_project("e2e simulated 85%", PASS_FAIL)
        ids = ls_api.import_tasks(project, truth_tasks(200))
        summary = label_project(backend, ls_api, project, concurrency=8)
        assert (summary.labeled, summary.failed, summary.skipped) == (200, 0, 0)
        version = summary.model_version
        # humans mark ground truth on every task
        for task in ls_api.tasks(project):
            truth = task.data["output"].split("TRUTH=")[1]
            ls_api.client.annotations.create(id=task.id, ground_truth=True, result=[
                {"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": [truth]}}])
        rep = project_report(ls_api, backend.store, project)
        (v,) = [x for x in rep["versions"] if x["model_version"] == version]
        assert v["n"] == 200 and v["coverage"] == 1.0
        assert v["ci_low"] <= 0.85 <= v["ci_high"], v
        assert abs(v["accuracy"] - 0.85) < 0.07
        assert v["ece"] is not None and v["tokens_in"] > 0
        # kappa must equal scikit-learn's on the same pairs
        truths, preds = [], []
        for task in ls_api.tasks(project):
            truths.append(task.data["output"].split("TRUTH=")[1])
            p = [p for p in task.predictions if p.model_version == version][0]
            preds.append(p.result[0]["value"]["choices"][0])
        assert v["kappa"] == pytest.approx(cohen_kappa_score(truths, preds))
        assert v["accuracy"] == pytest.approx(sum(a == b for a, b in zip(truths, preds)) / 200)
        assert rep["disagreements"] and rep["disagreements"][0]["url"].endswith(f"task={rep['disagreements'][0]['task']}")

        # the annotations become few-shot examples: a new judge version
        backend.resync(project)
        new = backend.state(project).version
        assert new != version
        assert len(backend.state(project).judge.spec.examples) == 200
        # and a sample labeled with the new version uses them (k most similar, never the task itself)
        s2 = label_project(backend, ls_api, project, sample=16)
        assert s2.model_version == new and s2.labeled == 16 and s2.total == 16
        msgs = fake.requests[-1]["body"]["messages"]
        assert [m["role"] for m in msgs].count("assistant") == 8  # FEW_SHOT_K default
        assert msgs[-1]["content"] not in [m["content"] for m in msgs[:-1]]
        assert len(set(ids)) == 200


def test_failures_are_recorded_and_labeled_on_the_next_run_without_duplicates(tmp_path, ls_api, label_studio):
    with FakeOpenAI() as fake:
        backend = make_backend(tmp_path, fake, label_studio, JUDGE_MAX_RETRIES="0", JUDGE_TIMEOUT="0.5")
        fake.timeout_sleep = 1.0
        project = ls_api.create_project("e2e failures", PASS_FAIL)
        ls_api.import_tasks(project, truth_tasks(50))
        # 20% of calls fail: 429, 500, timeouts, unusable answers
        fake.faults.extend(["429", "500", "timeout", "invalid_label", "malformed_json"] * 2)
        first = label_project(backend, ls_api, project, concurrency=4, batch_size=7)
        assert first.labeled + first.failed == 50 and first.failed == 10
        version = first.model_version
        counts = versions_per_task(ls_api, project, version)
        assert len(counts) == 40 and set(counts.values()) == {1}
        failed = {f["task_id"] for f in backend.store.failures(str(project), version)}
        assert len(failed) == 10 and not failed & set(counts)
        assert all(f["reason"] for f in backend.store.failures(str(project), version))

        second = label_project(backend, ls_api, project, concurrency=4)
        assert (second.labeled, second.failed, second.skipped) == (10, 0, 40)
        counts = versions_per_task(ls_api, project, version)
        assert len(counts) == 50 and set(counts.values()) == {1}
        assert backend.store.failures(str(project), version) == []
        ledger = backend.store.ledger(str(project))[0]
        assert ledger["failures"] == 10 and ledger["calls"] >= 50


def test_a_second_run_on_the_same_project_is_refused_while_the_first_holds_it(tmp_path, ls_api, label_studio):
    """A CLI run beside a backend job (two processes, one MODEL_DIR) must not both write the tasks
    that both see as undone: the second is refused, naming the first; once it ends, a run goes."""
    import os
    import socket

    from ml_backend.store import Busy

    with FakeOpenAI() as fake:
        backend = make_backend(tmp_path, fake, label_studio)
        project = ls_api.create_project("e2e one run at a time", PASS_FAIL)
        ls_api.import_tasks(project, truth_tasks(6))
        other = f"{socket.gethostname()}:{os.getppid()}:cli"  # a live process of this host holds it
        assert backend.store.take_lease(f"label:{project}", other, ttl=60) is None
        with pytest.raises(Busy, match=f"labeling project {project} is already running .*pid {os.getppid()}"):
            label_project(backend, ls_api, project)
        assert fake.requests == [] and list(ls_api.predictions(project)) == []
        backend.store.drop_lease(f"label:{project}", other)
        assert label_project(backend, ls_api, project).labeled == 6


def test_sigkill_half_way_then_rerun_equals_an_uninterrupted_run(tmp_path, ls_api, label_studio):
    with FakeOpenAI(latency=0.1) as fake:
        project = ls_api.create_project("e2e sigkill", PASS_FAIL)
        ls_api.import_tasks(project, truth_tasks(60))
        env = dict(os.environ, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                   JUDGE_PROVIDER="openai", OPENAI_BASE_URL=fake.url, OPENAI_API_KEY="sk-x",
                   JUDGE_MODEL="fake-judge", MODEL_DIR=str(tmp_path / "m"), PRELOAD_MODEL="false")
        cmd = [sys.executable, "-m", "ml_backend.cli", "label", "--project", str(project), "--concurrency", "2",
               "--batch-size", "5", "--json"]
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while len(ls_api.predictions(project)) < 20 and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        written = len(ls_api.predictions(project))
        assert 0 < written < 60
        calls_before = len(fake.requests)
        out = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
        summary = json.loads(out.stdout.strip().splitlines()[-1])
        assert summary["skipped"] == written and summary["labeled"] == 60 - written and summary["failed"] == 0
        preds = ls_api.predictions(project)
        per_task = {}
        for p in preds:
            per_task[int(p.task)] = per_task.get(int(p.task), 0) + 1
        assert len(per_task) == 60 and set(per_task.values()) == {1}
        # verdicts paid for before the kill but not yet written came from the cache
        assert summary["cached"] + (len(fake.requests) - calls_before) == 60 - written
        assert set(summary) >= {"labeled", "skipped", "failed", "cached", "tokens_in", "tokens_out", "cost", "seconds"}


def test_labeling_job_over_http_and_report_page_in_a_real_browser(tmp_path, ls_api, label_studio):
    with FakeOpenAI(decide=simulated(0.8)) as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url,
                                  LABEL_STUDIO_API_KEY=label_studio.token)
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e job + report", PASS_FAIL)
            ls_api.import_tasks(project, truth_tasks(30))
            ls_api.connect_backend(project, srv.url)
            job = httpx.post(f"{srv.url}/jobs/label", json={"project": project}).json()
            deadline = time.time() + 60
            while job["status"] not in ("finished", "failed") and time.time() < deadline:
                time.sleep(0.3)
                job = httpx.get(f"{srv.url}/jobs/{job['id']}").json()
            assert job["status"] == "finished", job
            assert job["result"]["labeled"] == 30 and job["progress"]["done"] == 30
            # Label Studio asking for a labeled task again (an annotator opening it): from the cache
            asked, task = len(fake.requests), next(iter(ls_api.tasks(project)))
            again = httpx.post(f"{srv.url}/predict", json={"tasks": [{"id": task.id, "data": task.data}],
                                                           "project": f"{project}.1", "label_config": PASS_FAIL})
            assert again.json()["results"][0]["model_version"] == srv.backend.state(project).judge.version
            assert len(fake.requests) == asked
            for task in list(ls_api.tasks(project))[:20]:
                truth = task.data["output"].split("TRUTH=")[1]
                ls_api.client.annotations.create(id=task.id, result=[
                    {"from_name": "verdict", "to_name": "output", "type": "choices", "value": {"choices": [truth]}}])
            data = httpx.get(f"{srv.url}/report/{project}?format=json", timeout=60).json()
            assert data["n_reference"] == 20 and data["versions"][0]["n"] == 20
            assert data["reference"] == "all human annotations"

            from playwright.sync_api import sync_playwright

            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=[
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync"])
                try:
                    page = browser.new_page(viewport={"width": 1300, "height": 1000})
                    page.goto(f"{srv.url}/report/{project}", timeout=60_000)
                    assert page.locator("#versions tr").count() >= 2
                    widths = page.eval_on_selector_all("img.plot", "els => els.map(e => e.naturalWidth)")
                    assert len(widths) >= 2 and all(w > 100 for w in widths)
                    assert "Most confident disagreements" in page.content()
                    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
                finally:
                    browser.close()
