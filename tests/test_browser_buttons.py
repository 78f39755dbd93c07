"""Label Studio's own buttons in headless Chromium (Debian's, driven by Playwright), against the real
backend: Retrieve predictions on a selection bigger than /predict's budget, the review-queue tab, and
an annotator's note with Auto-Annotation on. Screenshots go to tests/artifacts/."""
from __future__ import annotations

import re
import time

import httpx
import pytest

from .conftest import ROOT, judge_settings, serve_backend
from .fake_openai import FakeOpenAI
from .test_e2e_labelstudio import PASS_FAIL, _tasks, _wait, predictions_per_task

pytestmark = pytest.mark.e2e
ART = ROOT / "tests" / "artifacts"
INTERACTIVE = """<View><Text name="output" value="$output"/>
<Choices name="verdict" toName="output"><Choice value="Pass"/><Choice value="Fail"/></Choices>
<TextArea name="reason" toName="output" editable="true" placeholder="Why"/>
<TextArea name="hint" toName="output" editable="true" smart="true" placeholder="A note for the judge"/></View>"""


def shot(page, name: str) -> None:
    ART.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ART / f"buttons_{name}.png"))


def login(page, ls) -> None:
    page.goto(f"{ls.url}/user/login/")
    page.fill("input[name=email]", ls.username)
    page.fill("input[name=password]", ls.password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/user/login" not in page.url, "login failed"


def test_retrieve_predictions_on_a_big_selection_then_the_review_queue(tmp_path, ls_api, label_studio, browser):
    from playwright.sync_api import expect

    page = browser
    def p_answer(body):  # a different confidence per task, so the review queue has an order to show
        n = int(re.search(r"question (\d+)", body["messages"][-1]["content"]).group(1))
        return 0.55 + (n * 37 % 40) / 100

    with FakeOpenAI(latency=0.2, p_answer=p_answer) as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  PREDICT_BUDGET="4", PREDICT_CONCURRENCY="2", FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("Browser retrieve", PASS_FAIL)
            ls_api.import_tasks(project, _tasks(60))
            ls_api.connect_backend(project, srv.url)
            login(page, label_studio)
            page.goto(f"{label_studio.url}/projects/{project}/data")
            expect(page.get_by_text("Tasks: 60 / 60")).to_be_visible(timeout=30_000)
            page.locator("input[type=checkbox]").first.click()  # select all
            page.wait_for_timeout(800)
            page.get_by_text(re.compile(r"^60 Tasks$")).first.click()
            page.wait_for_timeout(800)  # the menu animates in; a click during it is lost
            page.get_by_text(re.compile("Retrieve Predictions", re.I)).first.click()
            ok = page.get_by_text("OK", exact=True)
            expect(ok).to_be_visible(timeout=10_000)
            shot(page, "1_retrieve_confirm")
            t0 = time.time()
            with page.expect_response(lambda r: "/api/dm/actions" in r.url, timeout=100_000) as answer:
                ok.click()
            assert answer.value.status == 200 and time.time() - t0 < 60  # inside Label Studio's 100 s (the budget is 30 s; CI's cores are shared)
            first = len(ls_api.predictions(project))
            job = httpx.get(f"{srv.url}/jobs?project={project}&kind=label").json()["jobs"][0]
            handed = int(re.search(r"(\d+) tasks left by /predict", job["progress"]["reason"]).group(1))
            # the job may already have finished its share: count what /predict answered, not a race
            assert 0 < handed < 60 and first >= 60 - handed, (handed, first)
            page.goto(f"{srv.url}/report/{project}")
            expect(page.locator("#labeling-jobs")).to_be_visible()
            shot(page, "2_report_with_the_background_job")
            _wait(lambda: httpx.get(f"{srv.url}/jobs/{job['id']}").json()["status"] == "finished", timeout=120,
                  what="the background job")
            per_task = predictions_per_task(ls_api, project)
            assert len(per_task) == 60 and set(per_task.values()) == {1}

            # the review queue: lowest score first, score and predicted label shown
            view = ls_api.ensure_review_view(project)
            page.goto(f"{label_studio.url}/projects/{project}/data?tab={view}")
            expect(page.get_by_text(ls_api.REVIEW_VIEW).first).to_be_visible(timeout=30_000)
            page.wait_for_timeout(2000)
            shot(page, "3_review_queue")
            scores = {int(p.task): p.score for p in ls_api.predictions(project)}
            lowest = min(scores, key=lambda t: (scores[t], t))
            expect(page.get_by_text(f"{scores[lowest]:.3f}").first).to_be_visible(timeout=30_000)  # the score column
            rows = page.locator("[class*=row-wrapper]")
            shown = [float(m.group()) for i in range(min(rows.count(), 8))
                     if (m := re.search(r"\b0\.\d{3}\b", rows.nth(i).inner_text()))]
            assert len(shown) >= 5 and shown == sorted(shown) and shown[0] == round(scores[lowest], 3), shown


def test_an_annotators_note_changes_the_judges_answer_in_the_labeling_ui(tmp_path, ls_api, label_studio, browser):
    from playwright.sync_api import expect

    page = browser
    with FakeOpenAI() as fake:
        settings = judge_settings(tmp_path, fake, LABEL_STUDIO_URL=label_studio.url, LABEL_STUDIO_API_KEY=label_studio.token,
                                  FEW_SHOT_K="0")
        with serve_backend(settings) as srv:
            project = ls_api.create_project("Browser interactive", INTERACTIVE)
            (task,) = ls_api.import_tasks(project, [{"data": {"output": "The sky is green. EXPECT=Pass"}}])
            ls_api.connect_backend(project, srv.url, is_interactive=True, extra_params={"prompt": "Judge this: {output}"})
            login(page, label_studio)
            page.goto(f"{label_studio.url}/projects/{project}/data?task={task}")
            expect(page.get_by_text("Auto-Annotation")).to_be_visible(timeout=30_000)
            expect(page.get_by_role("checkbox", name=re.compile("^Pass"))).to_be_checked(timeout=30_000)
            page.get_by_text("Auto-Annotation").click()
            box = page.get_by_placeholder("A note for the judge")
            box.fill("The sky is not green. EXPECT=Fail")
            with page.expect_response(lambda r: "interactive-annotating" in r.url, timeout=60_000) as answer:
                box.press("Enter")
            assert answer.value.json()["data"]["model_version"].endswith("+hint")
            expect(page.get_by_role("checkbox", name=re.compile("^Fail"))).to_be_checked(timeout=30_000)
            shot(page, "4_interactive_note")
            assert "A note from the annotator" in fake.requests[-1]["body"]["messages"][-1]["content"]
            assert srv.backend.projects.examples(str(project), srv.backend.state(project).schema) == ()
