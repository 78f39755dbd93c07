"""The whole loop as a user does it, in headless Chromium (Debian's) driven by Playwright: log in to
Label Studio, open the project, see the judge's predictions in the Data Manager, open a task and see
the judge's label, score and reason, submit a correction, press Start Training, see the evaluator's
prediction after retraining, open the report page and see its plots. Screenshots go to
tests/artifacts/ (ignored by git, kept by CI)."""
from __future__ import annotations

import re
import time

import pytest

from ml_backend.workflows.labeling import label_project

from .conftest import CONFIGS, ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_e2e_evaluator import qa_tasks
from .test_e2e_quality import simulated

pytestmark = pytest.mark.e2e
ART = ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def shot(page, name: str) -> None:
    ART.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ART / f"loop_{name}.png"))


def test_the_whole_loop_in_a_real_browser(tmp_path, ls_api, label_studio):
    from playwright.sync_api import expect, sync_playwright

    tasks = qa_tasks(80, seed=5)
    for t in tasks:  # the simulated judge reads the truth from the text
        t["data"]["output"] = f"{t['data']['output']} TRUTH={t['data']['truth']}"
    with FakeOpenAI(decide=simulated(0.85)) as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url,
                                  LABEL_STUDIO_API_KEY=label_studio.token, TRAIN_EVERY="0", TRAIN_EPOCHS="3",
                                  TRAIN_MAX_LENGTH="64", FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("Browser loop", (CONFIGS / "pass_fail.xml").read_text())
            ids = ls_api.import_tasks(project, tasks)
            ls_api.connect_backend(project, srv.url)
            assert label_project(srv.backend, ls_api, project).labeled == 80
            # earlier review work: 59 tasks already annotated through the API
            for task in list(ls_api.tasks(project))[1:60]:
                ls_api.client.annotations.create(id=task.id, result=[{
                    "from_name": "verdict", "to_name": "output", "type": "choices",
                    "value": {"choices": [task.data["truth"]]}}])
            first = ids[0]
            (judged,) = ls_api.client.predictions.list(task=first)
            judge_label = judged.result[0]["value"]["choices"][0]
            correction = "Fail" if judge_label == "Pass" else "Pass"

            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 1400, "height": 900})
                    page.goto(f"{label_studio.url}/user/login/")
                    page.fill("input[name=email]", label_studio.username)
                    page.fill("input[name=password]", label_studio.password)
                    page.click("button[type=submit]")
                    page.wait_for_load_state("networkidle")
                    shot(page, "0_after_login")
                    assert "/user/login" not in page.url, "login failed"

                    page.goto(f"{label_studio.url}/projects/{project}/data")
                    expect(page.get_by_text("Predictions: 80")).to_be_visible(timeout=30_000)
                    shot(page, "1_data_manager")

                    page.goto(f"{label_studio.url}/projects/{project}/data?task={first}")
                    page.wait_for_timeout(3000)
                    shot(page, "2a_task_loading")
                    # the tab shows the version shortened ("judge-09...3e2ddf") and the score
                    expect(page.get_by_text(re.compile(re.escape(judged.model_version[:8]) + r".*"
                                                       + re.escape(judged.model_version[-6:]))).first
                           ).to_be_visible(timeout=30_000)
                    expect(page.get_by_text(f"{judged.score * 100:.2f}%").first).to_be_visible()
                    expect(page.get_by_text("Judged").first).to_be_visible()  # the judge's reason
                    shot(page, "2_task_with_judge_prediction")

                    # correct the judge and submit
                    choice = page.get_by_role("checkbox", name=re.compile(f"^{correction}"))
                    if not choice.count():
                        choice = page.locator("label").filter(has_text=re.compile(f"^{correction}"))
                    choice.first.click()
                    page.get_by_role("button", name="Submit").click()
                    deadline = time.time() + 20
                    while time.time() < deadline and not list(ls_api.client.annotations.list(id=first)):
                        time.sleep(0.5)
                    (ann,) = ls_api.client.annotations.list(id=first)
                    assert ann.result[0]["value"]["choices"] == [correction]
                    assert all("meta" not in r for r in ann.result), ann.result  # nothing of the judge's notes
                    shot(page, "3_correction_submitted")

                    # Start Training from the model settings
                    page.goto(f"{label_studio.url}/projects/{project}/settings/ml")
                    page.get_by_text("LabelJudge").first.wait_for(timeout=30_000)
                    shot(page, "4_model_settings")
                    # Label Studio's card menu can swallow a click (the page re-renders the card while
                    # it polls the backend's state): press again, on a fresh page, until the page has
                    # sent its train request (at most 5 times)
                    for _ in range(5):
                        if _start_training(page):
                            break
                        page.reload()
                        page.get_by_text("LabelJudge").first.wait_for(timeout=30_000)
                    else:  # seen in about 1 run of 4 under load: the request the button sends, sent for it
                        import warnings

                        warnings.warn("Label Studio's card menu swallowed Start Training 5 times; "
                                      "sent its request (POST /api/ml/<id>/train) directly")
                        ml_id = ls_api.backends(project)[0].id
                        ls_api.client.ml.train(id=ml_id)
                    deadline = time.time() + 300
                    job = None
                    while time.time() < deadline:
                        jobs = srv.backend.store.jobs(str(project), "train")
                        if jobs and jobs[0]["status"] in ("finished", "failed"):
                            job = jobs[0]
                            break
                        time.sleep(1)
                    assert job and job["status"] == "finished" and job["result"]["promoted"], job
                    assert job["result"]["n_train"] + job["result"]["n_test"] >= 60

                    # re-predict: the evaluator's predictions appear in the task view
                    version = srv.backend.state(project).version
                    assert version.startswith("evaluator-0001")
                    ls_api.retrieve_predictions(project)
                    target = ids[-1]
                    page.goto(f"{label_studio.url}/projects/{project}/data?task={target}")
                    expect(page.get_by_text(re.compile(r"^evaluat")).first).to_be_visible(timeout=30_000)
                    shot(page, "5_evaluator_prediction")

                    page.goto(f"{srv.url}/report/{project}")
                    assert page.locator("#versions tr").count() >= 3  # header + judge + evaluator
                    widths = page.eval_on_selector_all("img.plot", "els => els.map(e => e.naturalWidth)")
                    assert len(widths) >= 2 and all(w > 100 for w in widths)
                    page.screenshot(path=str(ART / "loop_6_report.png"), full_page=True)
                finally:
                    browser.close()


def _start_training(page) -> bool:
    """Press Start Training in the connected model's card menu; True once the page has sent Label
    Studio's train request (POST /api/ml/<id>/train), False if the click was swallowed."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    card_menu = page.locator("[class*=ml] button, [class*=card] button").filter(has_text=re.compile(r"^$"))
    try:
        with page.expect_request(lambda r: r.method == "POST" and re.search(r"/api/ml/\d+/train", r.url),
                                 timeout=10_000):
            for candidate in [page.get_by_role("button", name=re.compile("start training", re.I)),
                              page.get_by_text(re.compile("^start training$", re.I))]:
                if candidate.count() and candidate.first.is_visible():
                    candidate.first.click()
                    break
            else:
                for i in range(card_menu.count()):
                    card_menu.nth(i).click()
                    item = page.get_by_text(re.compile("^start training$", re.I))
                    try:
                        item.first.wait_for(state="visible", timeout=3000)
                    except PlaywrightTimeout:
                        continue
                    item.first.click()
                    break
                else:
                    raise AssertionError("no Start Training control on the model settings page")
            confirm = page.get_by_role("button", name=re.compile("^(train|start|ok|confirm)", re.I))
            if confirm.count():
                confirm.first.click()
    except PlaywrightTimeout:
        return False
    finally:
        shot(page, "4b_start_training_pressed")
    return True
