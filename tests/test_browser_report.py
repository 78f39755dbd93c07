"""The report page's evaluator section in a real browser (Debian's Chromium, through Playwright),
served by the backend under its CSP: a trained evaluator's run with its held-out accuracy, the
cascade band its training chose, the served model's row count and its training curve as an image
that loads; and the cascade's tasks answered without the LLM beside the judge calls. Screenshot in
tests/artifacts/report_evaluators.png."""
from __future__ import annotations

import httpx
import pytest

from .conftest import ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_browser_loop import CHROMIUM_ARGS
from .test_e2e_evaluator import annotate_all, qa_tasks
from .test_e2e_labelstudio import PASS_FAIL, _wait

pytestmark = pytest.mark.e2e
ART = ROOT / "tests" / "artifacts"


def test_the_report_shows_training_runs_their_curves_and_the_cascade_savings(tmp_path, ls_api, label_studio):
    from playwright.sync_api import sync_playwright

    with FakeOpenAI() as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  TRAIN_EVERY="0", TRAIN_EPOCHS="2", TRAIN_MAX_LENGTH="64", FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("e2e report evaluators", PASS_FAIL)
            tasks = qa_tasks(40, seed=31)
            for t in tasks:  # a cue two short epochs learn
                t["data"]["output"] = f"{t['data']['output']} TRUTH={t['data']['truth']}"
            ls_api.import_tasks(project, tasks)
            ls_api.connect_backend(project, srv.url)
            annotate_all(ls_api, project)
            job = srv.backend.trainer.request(str(project), "Start Training")["job"]  # Start Training's path
            done = _wait(lambda: srv.backend.store.job(job)["status"] in ("finished", "failed")
                         and srv.backend.store.job(job), timeout=600, what="the training run")
            result = done["result"]
            assert done["status"] == "finished" and result["promoted"], done
            more = qa_tasks(12, seed=32)
            r = httpx.post(f"{srv.url}/predict", json={"project": project, "tasks": [
                {"id": 10_000 + i, "data": t["data"]} for i, t in enumerate(more)]})
            assert r.status_code == 200 and r.json()["model_version"].startswith(result["version"])
            rep = httpx.get(f"{srv.url}/report/{project}?format=json").json()
            run = rep["training"][0]
            assert run["cascade"]["band"] == result["cascade"]["band"] and run["n_served_train"] == 40
            assert run["curve"].startswith("data:image/png;base64,")
            cascade = rep["evaluators"]["cascade"][0]
            assert cascade["evaluator_answered"] + cascade["judge_answered"] == 12
            assert rep["evaluators"]["serving"]["version"] == result["version"]
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 1000})
                    errors = []
                    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                    page.goto(f"{srv.url}/report/{project}")
                    curve = page.locator("#training-runs img.curve").first
                    assert curve.evaluate("img => img.complete && img.naturalWidth > 100")  # loads under the CSP
                    assert page.locator("#evaluators").is_visible()
                    text = page.locator("#cascade").inner_text()
                    assert result["version"] in text
                    page.locator("#training").scroll_into_view_if_needed()
                    ART.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(ART / "report_evaluators.png"), full_page=True)
                    assert not [e for e in errors if "Content Security Policy" in e], errors
                finally:
                    browser.close()
