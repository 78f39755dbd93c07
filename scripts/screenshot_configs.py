"""Screenshot every label config in a real Label Studio (headless Chromium), with a judge-style
prediction on its first demo task, into docs/img/<config>.png for the README."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.judge.types import Answer, Verdict  # noqa: E402
from ml_backend.labelstudio import LabelStudioAPI  # noqa: E402
from ml_backend.labelstudio.config import parse_label_config  # noqa: E402
from ml_backend.labelstudio.local import LocalLabelStudio, find_ls_venv  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def example_verdict(schema) -> Verdict:
    answers = {}
    for name, spec in schema.controls.items():
        q = spec.question
        answers[name] = Answer(value=[q.options[0]] if q.kind == "multiple" else q.options[-1 if spec.tag == "Rating" else 0],
                               confidence=0.87)
    return Verdict(answers=answers, rationale="The response is supported by the context and answers the question.")


def main() -> None:
    from playwright.sync_api import sync_playwright

    out = ROOT / "docs" / "img"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        ls = LocalLabelStudio(data_dir=Path(tmp) / "ls", venv=find_ls_venv(ROOT)).start()
        try:
            api = LabelStudioAPI(ls.url, ls.token)
            shots = []
            for xml in sorted((ROOT / "label_configs").glob("*.xml")):
                config = xml.read_text()
                schema = parse_label_config(config)
                project = api.create_project(xml.stem, config)
                task = json.loads((ROOT / "label_configs" / "demo" / f"{xml.stem}.json").read_text())[0]
                (tid,) = api.import_tasks(project, [task])
                api.client.predictions.create(task=tid, result=schema.build_result(example_verdict(schema)),
                                              score=0.87, model_version="judge-3f2a9c1b7e")
                shots.append((xml.stem, project, tid))
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
                page = browser.new_page(viewport={"width": 1300, "height": 850})
                page.goto(f"{ls.url}/user/login/")
                page.fill("input[name=email]", ls.username)
                page.fill("input[name=password]", ls.password)
                page.click("button[type=submit]")
                page.wait_for_load_state("networkidle")
                for name, project, tid in shots:
                    page.goto(f"{ls.url}/projects/{project}/data?task={tid}")
                    page.wait_for_timeout(4000)
                    page.screenshot(path=str(out / f"{name}.png"))
                    print(f"docs/img/{name}.png")
                browser.close()
        finally:
            ls.stop()


if __name__ == "__main__":
    main()
