"""Every project command honours --url / --api-key with nothing in the environment (no LABEL_STUDIO_*,
no running demo): training included, which used to ask for a Label Studio client built from the
environment and fail. Against a real Label Studio, in fresh interpreters."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_e2e_labelstudio import PASS_FAIL, _tasks

pytestmark = pytest.mark.e2e


@pytest.fixture
def flagged(tmp_path, fake_llm, label_studio, ls_api):
    project = ls_api.create_project("e2e flags only", PASS_FAIL)
    ls_api.import_tasks(project, _tasks(30))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABEL_STUDIO_", "LABELJUDGE_"))}
    env.update(MODEL_DIR=str(tmp_path / "store"), JUDGE_PROVIDER="openai", OPENAI_BASE_URL=fake_llm.url,
               OPENAI_API_KEY="sk-test-secret-key-123456", JUDGE_MODEL="fake-judge", PRELOAD_MODEL="false",
               TRAIN_EPOCHS="1", TRAIN_MAX_LENGTH="64", LABELJUDGE_HOME=str(tmp_path / "no-demo-here"))
    flags = ["--project", str(project), "--url", label_studio.url, "--api-key", label_studio.token]

    def run(*args: str) -> subprocess.CompletedProcess:
        out = subprocess.run([sys.executable, "-m", "ml_backend.cli", *args], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
        assert "LABEL_STUDIO_URL" not in out.stderr, (args, out.stderr[-2000:])
        assert label_studio.token not in out.stdout + out.stderr
        return out

    return {"run": run, "flags": flags, "project": project, "tmp": tmp_path}


def test_every_project_command_works_with_flags_and_no_environment(flagged, ls_api):
    run, flags, project = flagged["run"], flagged["flags"], flagged["project"]
    label = run("label", *flags, "--json")
    assert label.returncode == 0, label.stderr[-2000:]
    assert json.loads(label.stdout)["labeled"] == 30
    from ml_backend.store import Store  # the run is a store job, so the report's "Labeling jobs" lists it

    (job,) = Store(flagged["tmp"] / "store" / "labeljudge.sqlite3").jobs(str(project), "label")
    assert job["status"] == "finished" and job["result"]["labeled"] == 30 and "command line" in job["progress"]["reason"]
    # humans label 27 tasks (as the fake judge did), so training has enough rows
    preds = {p.task: p for p in ls_api.predictions(project)}
    for task_id in sorted(preds)[:27]:
        ls_api.client.annotations.create(id=task_id, result=preds[task_id].result, ground_truth=False)
    sync = run("sync", *flags)
    assert sync.returncode == 0 and json.loads(sync.stdout)["annotations"] == 27, sync.stderr[-2000:]
    report = run("report", *flags, "--json")
    assert report.returncode == 0 and json.loads(report.stdout)["n_reference"] == 27, report.stderr[-2000:]
    assert run("prompt", "show", *flags).returncode == 2  # no connected backend: a clear one-line refusal
    prompts = run("prompts", *flags, "--json")
    assert prompts.returncode == 0 and json.loads(prompts.stdout), prompts.stderr[-2000:]
    out = flagged["tmp"] / "export.csv"
    export = run("export", *flags, "--out", str(out), "--json")
    assert export.returncode == 0 and json.loads(export.stdout)["rows"] == 30, export.stderr[-2000:]
    assert run("review-queue", *flags).returncode == 0
    train = run("train", *flags)  # as a person runs it: our lines only, no library's warnings
    assert train.returncode == 0, train.stderr[-3000:]
    assert train.stdout.startswith("evaluator-") and " train / " in train.stdout, train.stdout
    chatter = [line for line in train.stderr.splitlines() if "warn" in line.lower() or "onnx" in line.lower()]
    assert not chatter, chatter[:5]
    evaluators = run("evaluators", *flags, "--json")
    assert evaluators.returncode == 0 and json.loads(evaluators.stdout)["versions"], evaluators.stderr[-2000:]
    version = json.loads(evaluators.stdout)["versions"][0]
    assert version["n_train"] + version["n_test"] >= 20 and version["version"].startswith("evaluator-")
    # a wrong token says so (401) instead of asking to set LABEL_STUDIO_URL, here and for evaluators
    for command in (["report"], ["evaluators"]):
        wrong = run(*command, "--project", str(flagged["project"]), "--url", flags[3], "--api-key", "0" * 40)
        assert wrong.returncode == 2 and "refused the API key from --api-key (401)" in wrong.stderr, wrong.stderr
