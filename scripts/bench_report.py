"""Report build time for a project of N tasks (default 10,000) with 3 judge versions and human labels
on 20% of them: metrics, bootstrap CIs, agreement, disagreements, and the HTML with its plots.
(Fetching the records from Label Studio is not included: it depends on Label Studio's API speed.)
Prints a table and writes JSON (default bench_results/report.json)."""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.quality.html import render_html  # noqa: E402
from ml_backend.quality.report import build_report  # noqa: E402


def records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    tasks = []
    for i in range(n):
        truth = "Pass" if rng.random() < 0.6 else "Fail"
        anns = [{"id": i, "annotator": int(rng.integers(1, 4)), "ground_truth": False, "answers": {"verdict": truth}}] \
            if rng.random() < 0.2 else []
        preds = []
        for v, acc in (("judge-a", 0.8), ("judge-b", 0.85), ("judge-c", 0.9)):
            right = rng.random() < acc
            label = truth if right else ("Fail" if truth == "Pass" else "Pass")
            preds.append({"model_version": v, "answers": {"verdict": label}, "score": float(rng.uniform(0.5, 1))})
        tasks.append({"id": i, "annotations": anns, "predictions": preds})
    return tasks


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "report.json"))
    args = ap.parse_args()
    tasks = records(args.tasks)
    controls = [{"name": "verdict", "kind": "single", "options": ["Pass", "Fail"], "ordinal": False}]
    build, html = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        rep = build_report(tasks, controls, task_url="http://ls/projects/1/data?task={id}", project=1)
        build.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        render_html(rep)
        html.append(time.perf_counter() - t0)
    out = {"tasks": args.tasks, "reference": rep["n_reference"], "versions": len(rep["versions"]),
           "build_median_s": round(statistics.median(build), 3), "html_median_s": round(statistics.median(html), 3)}
    print(f"{'tasks':>7}{'with reference':>16}{'versions':>10}{'build s':>9}{'html+plots s':>14}")
    print(f"{out['tasks']:>7}{out['reference']:>16}{out['versions']:>10}{out['build_median_s']:>9}{out['html_median_s']:>14}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
