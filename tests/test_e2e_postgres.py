"""Label Studio as production runs it: on PostgreSQL (Debian's, its DJANGO_DB/POSTGRE_* settings),
beside the sqlite default the other e2e tests use. The labeling, sync, report and training paths run
against it, through the real HTTP API."""
from __future__ import annotations

import pytest

from ml_backend.labelstudio import LabelStudioAPI
from ml_backend.labelstudio.local import LocalLabelStudio, find_ls_venv
from ml_backend.workflows.labeling import label_project
from ml_backend.workflows.learning import resync
from ml_backend.workflows.reporting import project_report
from ml_backend.workflows.training import train_project

from .conftest import ROOT, judge_settings, serve_backend
from .postgres import postgres_server
from .test_e2e_evaluator import annotate_all, qa_tasks
from .test_e2e_labelstudio import PASS_FAIL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ls_on_postgres(tmp_path_factory):
    root = tmp_path_factory.mktemp("ls-postgres")
    with postgres_server() as database:
        ls = LocalLabelStudio(root / "ls", find_ls_venv(ROOT), database=database)
        ls.start(timeout=600)  # a fresh PostgreSQL database: Label Studio's migrations run first
        try:
            yield ls
        finally:
            ls.stop()


def test_label_sync_report_and_train_against_label_studio_on_postgresql(tmp_path, fake_llm, ls_on_postgres):
    ls = ls_on_postgres
    api = LabelStudioAPI(ls.url, ls.token)
    log = (ls.data_dir / "label_studio.log").read_text(errors="replace")
    assert "postgresql" in log.lower() or not (ls.data_dir / "label_studio.sqlite3").exists()
    settings = judge_settings(tmp_path, fake_llm, LABEL_STUDIO_URL=ls.url, LABEL_STUDIO_API_KEY=ls.token,
                              TRAIN_EVERY="0", TRAIN_EPOCHS="2", TRAIN_MAX_LENGTH="64", FEW_SHOT_K="0")
    with serve_backend(settings) as srv:
        project = api.create_project("e2e on postgres", PASS_FAIL)
        tasks = qa_tasks(40, seed=21)
        for t in tasks:  # a cue 2 short epochs learn: this tests the paths, not quality
            t["data"]["output"] = f"{t['data']['output']} TRUTH={t['data']['truth']}"
        api.import_tasks(project, tasks)
        api.connect_backend(project, srv.url)
        summary = label_project(srv.backend, api, project, concurrency=4)  # labeling: predictions written
        assert summary.labeled == 40 and summary.failed == 0
        assert len(api.predictions(project)) == 40
        assert label_project(srv.backend, api, project).skipped == 40  # resumable: nothing written twice
        annotate_all(api, project)
        synced = resync(srv.backend, project)  # sync: every annotation read back
        assert synced["annotations"] == 40
        report = project_report(api, srv.backend.store, project)  # report: judge vs the human labels
        assert report["n_reference"] == 40 and report["versions"][0]["n"] == 40
        result = train_project(srv.backend, project)  # training: from the same export path
        assert result["n_train"] + result["n_test"] == 40 and result["promoted"], result
    assert not (ls.data_dir / "label_studio.sqlite3").exists(), "Label Studio fell back to sqlite"
