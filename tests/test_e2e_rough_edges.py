"""Off the happy path, against a real Label Studio: what a hostile review found (issue: rough edges).
A config with two tags of one name, Start Training for a project Label Studio lacks, Retrieve
predictions while a `labeljudge label` run in another process holds the project, and hand-overs while
the project's provider drips its replies."""
from __future__ import annotations

import logging
import os
import subprocess
import sys
import time

import httpx
import pytest

from .conftest import judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_e2e_labelstudio import PASS_FAIL, _tasks, _wait, predictions_per_task

pytestmark = pytest.mark.e2e

TWO_OF_A_NAME = """<View>
  <Text name="output" value="$output"/>
  <Choices name="verdict" toName="output"><Choice value="Pass"/><Choice value="Fail"/></Choices>
  <Choices name="verdict" toName="output"><Choice value="Good"/><Choice value="Bad"/></Choices>
</View>"""


def test_a_config_naming_two_controls_alike_is_refused_with_the_name(tmp_path, fake_llm, ls_api, label_studio):
    """The SDK kept the last control silently and the judge was offered both controls' options."""
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    with serve_backend(settings) as srv:
        setup = httpx.post(f"{srv.url}/setup", json={"project": "1.1", "schema": TWO_OF_A_NAME, "extra_params": "{}"})
        assert setup.status_code == 400 and "'verdict'" in setup.json()["error"] and "unique" in setup.json()["error"]
        try:  # Label Studio may refuse the config itself; if it takes it, connecting the backend fails on /setup
            project = ls_api.create_project("e2e two controls of one name", TWO_OF_A_NAME)
        except Exception as exc:
            assert "verdict" in str(exc) or "400" in str(exc)
            return
        ls_api.import_tasks(project, _tasks(2))
        with pytest.raises(Exception) as refused:
            ls_api.connect_backend(project, srv.url)
        assert "unique" in str(refused.value) or "400" in str(refused.value)
        assert httpx.get(f"{srv.url}/health").status_code == 200


def test_start_training_for_a_project_label_studio_lacks_makes_no_job(tmp_path, fake_llm, label_studio, caplog):
    """It used to answer job_status "queued" for a job that had already failed, and log a stack trace
    for an expected 404. Now: no job, the reason in the answer, and one line in the log."""
    caplog.set_level(logging.INFO)
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    with serve_backend(settings) as srv:
        answer = httpx.post(f"{srv.url}/webhook", json={"action": "START_TRAINING", "project": {"id": 99999}})
        assert answer.status_code == 404, answer.text
        body = answer.json()
        assert "job" not in body and "job_status" not in body, body
        assert body["error"].startswith("training of project 99999 did not start: Label Studio answered 404"), body
        assert "set-cookie" not in body["error"].lower() and len(body["error"]) < 300
        assert httpx.get(f"{srv.url}/jobs?project=99999").json()["jobs"] == []
        legacy = httpx.post(f"{srv.url}/train", json={"project": 99999})  # the older route, the same answer
        assert legacy.status_code == 404 and "Label Studio answered 404" in legacy.json()["error"], legacy.text
        assert httpx.get(f"{srv.url}/health").status_code == 200
    assert "Traceback" not in caplog.text


def test_a_job_that_fails_on_label_studio_logs_one_line_not_a_trace(tmp_path, fake_llm, label_studio, ls_api, caplog):
    """A project deleted after the backend served it: training fails with Label Studio's 404, logged
    as one line; the job's status says failed with the reason."""
    caplog.set_level(logging.INFO)
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token)
    with serve_backend(settings) as srv:
        project = ls_api.create_project("e2e deleted under training", PASS_FAIL)
        ls_api.import_tasks(project, _tasks(2))
        ls_api.connect_backend(project, srv.url)
        ls_api.client.projects.delete(id=project)
        answer = httpx.post(f"{srv.url}/webhook", json={"action": "START_TRAINING", "project": {"id": project}}).json()
        job = _wait(lambda: (j := httpx.get(f"{srv.url}/jobs/{answer['job']}").json())["status"] == "failed" and j,
                    timeout=60, what="the failed job")
        assert job["error"].startswith("Label Studio answered 404"), job
    assert "Traceback" not in caplog.text and f"training of project {project} failed: Label Studio answered 404" in caplog.text


def test_tasks_handed_over_while_a_cli_run_holds_the_project_are_all_written(tmp_path, ls_api, label_studio, ls_project):
    """`labeljudge label` in another process holds the project's lease; Retrieve predictions hands 10
    tasks over. The hand-over's job used to fail Busy (5 of 10 written); it waits for the run to end,
    says so, and then every task has exactly one prediction."""
    with FakeOpenAI(latency=0.3) as fake:
        made = ls_project("e2e hand-over beside a CLI run", PASS_FAIL, _tasks(40), fake=fake, PREDICT_BUDGET="1",
                          PREDICT_CONCURRENCY="2", FEW_SHOT_K="0")
        srv, project, ids, settings = made.srv, made.project, made.task_ids, made.backend.settings
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "LABELJUDGE_"))}
        env.update(MODEL_DIR=str(settings.model_dir), JUDGE_PROVIDER="openai", OPENAI_BASE_URL=fake.url,
                   OPENAI_API_KEY="sk-test-secret-key-123456", JUDGE_MODEL="fake-judge", PRELOAD_MODEL="false",
                   FEW_SHOT_K="0", LABELJUDGE_HOME=str(tmp_path / "no-demo-here"))
        cli = subprocess.Popen([sys.executable, "-m", "ml_backend.cli", "label", "--project", str(project),
                                "--url", label_studio.url, "--api-key", label_studio.token, "--concurrency", "1",
                                "--json"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        try:
            _wait(lambda: predictions_per_task(ls_api, project), timeout=60, what="the CLI run's first write")
            ls_api.retrieve_predictions(project, ids[-10:])  # the CLI run has not reached these yet
            jobs = _wait(lambda: httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"],
                         what="the hand-over's job")
            _wait(lambda: "another process" in str(httpx.get(f"{srv.url}/jobs/{jobs[0]['id']}").json()
                                                  .get("progress", {}).get("waiting_for", "")),
                  what="the job saying what it waits for")
            out, err = cli.communicate(timeout=120)
            assert cli.returncode == 0, err[-2000:]
        finally:
            cli.kill()
        job = _wait(lambda: (j := httpx.get(f"{srv.url}/jobs/{jobs[0]['id']}").json())["status"] == "finished" and j,
                    timeout=90, what="the hand-over's job to finish")
        assert job["result"]["failed"] == 0, job
        per_task = predictions_per_task(ls_api, project)
        assert len(per_task) == 40 and set(per_task.values()) == {1}, per_task


def test_hand_overs_while_the_provider_drips_show_as_a_queued_job_with_its_reason(ls_api, ls_project):
    """The provider drips its replies (a byte every 0.25 s). The second Retrieve's tasks, handed over
    while the first hand-over's job waits on the judge, used to sit in memory with no job and no
    reason. Now a queued job shows at once, says what it waits for, and both jobs end with every
    task's failure named (each reply is cut at JUDGE_TIMEOUT)."""
    with FakeOpenAI() as fake:
        fake.drip_models.add("fake-judge")
        made = ls_project("e2e hand-over under a drip", PASS_FAIL, _tasks(6), fake=fake, PREDICT_BUDGET="1",
                          PREDICT_CONCURRENCY="1", FEW_SHOT_K="0", JUDGE_TIMEOUT="2", JUDGE_MAX_RETRIES="0")
        srv, project, ids = made.srv, made.project, made.task_ids
        ls_api.retrieve_predictions(project, ids[:3])
        ls_api.retrieve_predictions(project, ids[3:])
        listed = httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"]
        assert len(listed) == 2, listed
        follow = [j for j in listed if j["status"] == "queued"]
        assert follow and "to end" in follow[0]["progress"]["waiting_for"], listed
        assert follow[0]["progress"]["total"] >= 1
        jobs = _wait(lambda: (js := httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"])
                     and all(j["status"] in ("finished", "failed") for j in js) and js, timeout=120, what="both jobs")
        failures = [f for j in jobs for f in (j.get("result") or {}).get("failures", [])]
        assert all(j["status"] == "finished" for j in jobs), jobs
        assert failures and all("within 2 s" in str(f) for f in failures), failures
        assert predictions_per_task(ls_api, project) == {}
        time.sleep(0.5)
        assert httpx.get(f"{srv.url}/health").status_code == 200
