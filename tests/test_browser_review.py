"""The review loop as a person sees it, in headless Chromium against a real Label Studio and the real
backend: `labeljudge next`'s queue as a Data Manager tab holding exactly the queued tasks (the judge's
likely mistakes and the random audits), and the report's estimate of how accurate the label set is.
Screenshots go to tests/artifacts/review_*.png."""
from __future__ import annotations

import re

import pytest

from ml_backend.workflows.labeling import label_project
from ml_backend.workflows.review import next_for_review

from .fake_openai import FakeOpenAI
from .test_browser_buttons import ART, login
from .test_e2e_quality import PASS_FAIL, simulated, truth_tasks

pytestmark = pytest.mark.e2e


def test_the_queue_is_a_label_studio_tab_and_the_report_shows_the_estimate(ls_api, label_studio, ls_project, request):
    from playwright.sync_api import expect

    ART.mkdir(parents=True, exist_ok=True)
    with FakeOpenAI(decide=simulated(0.8)) as fake:
        lp = ls_project("Browser review queue", PASS_FAIL, truth_tasks(60), fake=fake, connect=False, FEW_SHOT_K="0")
        assert label_project(lp.backend, ls_api, lp.project, concurrency=8).labeled == 60
        truth = {t.id: t.data["output"].split("TRUTH=")[1] for t in ls_api.tasks(lp.project)}
        first = next_for_review(lp.backend, ls_api, lp.project, n=20, audit_share=0.5, seed=1)
        for q in first["queue"]:  # a round of reviews, answered from the known labels
            ls_api.client.annotations.create(id=q["task"], result=[
                {"from_name": "verdict", "to_name": "output", "type": "choices",
                 "value": {"choices": [truth[q["task"]]]}}])
        out = next_for_review(lp.backend, ls_api, lp.project, n=8, audit_share=0.25, seed=2)
        queued = {q["task"] for q in out["queue"]}
        assert len(queued) == 8 and not queued & {q["task"] for q in first["queue"]}

        page = request.getfixturevalue("browser")  # after the labeling: Playwright's loop would refuse asyncio.run
        login(page, label_studio)
        page.goto(out["tab"])
        expect(page.get_by_text(ls_api.QUEUE_VIEW).first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("Tasks: 8 / 60")).to_be_visible(timeout=30_000)  # exactly the queue, of 60
        page.wait_for_timeout(1500)
        page.screenshot(path=str(ART / "review_1_queue_tab.png"))
        rows = page.locator("[class*=row-wrapper]")
        shown = {int(m.group(1)) for i in range(rows.count())
                 if (m := re.match(r"\s*(\d+)\b", rows.nth(i).inner_text()))}
        assert shown == queued, (shown, queued)

        page.goto(f"{lp.url}/report/{lp.project}")
        section = page.locator("#label-set")
        expect(section).to_be_visible(timeout=30_000)
        expect(page.locator("#label-set-sources")).to_contain_text("judge")
        expect(page.locator("#label-set-sources")).to_contain_text("95%")
        section.scroll_into_view_if_needed()
        page.screenshot(path=str(ART / "review_2_report_label_set.png"), full_page=True)
