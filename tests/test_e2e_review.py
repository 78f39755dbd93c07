"""The review loop against a real Label Studio: `labeljudge next` ranks unreviewed tasks (annotated
ones never come back), records its random audits, and the report estimates the label set's accuracy
from them, with a CI that holds the simulated judge's known accuracy."""
from __future__ import annotations

import json

import pytest

from ml_backend.cli import main
from ml_backend.workflows.labeling import label_project
from ml_backend.workflows.reporting import project_report
from ml_backend.workflows.review import next_for_review

from .fake_openai import FakeOpenAI
from .test_e2e_quality import PASS_FAIL, make_backend, simulated, truth_tasks

pytestmark = pytest.mark.e2e


def test_next_ranks_unreviewed_tasks_records_audits_and_the_report_estimates_accuracy(tmp_path, ls_api, label_studio,
                                                                                       capfd, monkeypatch):
    with FakeOpenAI(decide=simulated(0.8)) as fake:
        backend = make_backend(tmp_path, fake, label_studio, FEW_SHOT_K="0")
        project = ls_api.create_project("e2e review loop", PASS_FAIL)
        ls_api.import_tasks(project, truth_tasks(120))
        assert label_project(backend, ls_api, project, concurrency=8).labeled == 120
        truth = {t.id: t.data["output"].split("TRUTH=")[1] for t in ls_api.tasks(project)}
        reviewed: set[int] = set()
        for round_ in range(3):  # three rounds of 20 reviews, as annotators would do them
            out = next_for_review(backend, ls_api, project, n=20, audit_share=0.5, seed=round_)
            queue = out["queue"]
            assert len(queue) == 20 and not {q["task"] for q in queue} & reviewed
            assert sum(q["kind"] == "audit" for q in queue) == 10
            assert all(q["source"] == "judge" and q["url"].endswith(f"task={q['task']}") for q in queue)
            tab = int(out["tab"].rsplit("tab=", 1)[1])  # the same queue as a Data Manager tab in Label Studio
            assert sorted(ls_api.view_task_ids(project, tab)) == sorted(q["task"] for q in queue)
            for q in queue:
                ls_api.client.annotations.create(id=q["task"], result=[
                    {"from_name": "verdict", "to_name": "output", "type": "choices",
                     "value": {"choices": [truth[q["task"]]]}}])
                reviewed.add(q["task"])
        rep = project_report(ls_api, backend.store, project)
        (judge,) = rep["label_set"]["sources"]
        assert judge["source"] == "judge" and judge["n_labels"] == 60 and judge["n_audits"] == 30 and judge["unbiased"]
        assert judge["ci"][0] <= 0.8 <= judge["ci"][1], judge
        said = {int(p.task): p.result[0]["value"]["choices"][0] for p in ls_api.predictions(project)}
        true_accuracy = (60 + sum(said[t] == truth[t] for t in truth if t not in reviewed)) / 120
        assert rep["label_set"]["n_human"] == 60
        assert rep["label_set"]["ci"][0] <= true_accuracy <= rep["label_set"]["ci"][1], (rep["label_set"], true_accuracy)

        # over HTTP, as the CLI prints it
        from ml_backend.http import create_app

        client = create_app(backend.settings, backend).test_client()
        answer = client.get(f"/review/{project}?n=3&seed=2&audit_share=0")
        assert answer.status_code == 200 and [q["kind"] for q in answer.get_json()["queue"]] == ["ranked"] * 3
        assert client.get(f"/review/{project}?n=0").status_code == 400
        assert client.get(f"/review/{project}?audit_share=2").status_code == 400

        # the CLI, as a person runs it: a table with links, and --json
        monkeypatch.setenv("MODEL_DIR", str(backend.settings.model_dir))
        flags = ["--project", str(project), "--url", label_studio.url, "--api-key", label_studio.token]
        assert main(["next", *flags, "--n", "5", "--seed", "1"]) == 0
        text = capfd.readouterr().out
        assert "likeliest judge mistakes first" in text and f"/projects/{project}/data?task=" in text
        assert main(["next", *flags, "--n", "5", "--json"]) == 0
        assert len(json.loads(capfd.readouterr().out)["queue"]) == 5
        assert main(["report", *flags]) == 0
        assert "judge labels: 60 not reviewed, estimated accuracy" in capfd.readouterr().out
        # the export carries each label's source and that source's estimated accuracy
        import pandas as pd

        out = tmp_path / "labels.csv"
        assert main(["export", *flags, "--out", str(out)]) == 0
        df = pd.read_csv(out).set_index("task_id")
        assert set(df.label_source) == {"human", "judge"}
        assert (df.label_source == "human").sum() == 60
        assert set(df[df.label_source == "judge"].label_estimated_accuracy) == {judge["accuracy"]}
        assert all(df.loc[t, "label"] == truth[t] for t in reviewed)
