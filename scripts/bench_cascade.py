"""Cascade benchmark: how many tasks the evaluator answers without the LLM, and at what accuracy, against
asking the judge every time, with a simulated judge of known accuracy, on HaluEval data in one run.

Per dataset: ``--train`` labeled tasks (each also carrying the simulated judge's answer, as a project
pre-labeled by the judge would) and ``--unlabeled`` tasks nobody labeled go through the product's
training path (`run_training`), which holds some labels out, measures the judge on them, chooses the
band there and carries it over to the served model on the unlabeled tasks; then ``--test`` other fresh
tasks are answered
three ways: judge only, the cascade with the chosen band, and the cascade with the old fixed
[0.2, 0.8] band. Prints a table and writes JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.evaluator.cascade import judge_asked  # noqa: E402
from ml_backend.evaluator.data import InputSpec  # noqa: E402
from ml_backend.evaluator.loading import load_evaluator  # noqa: E402
from ml_backend.evaluator.pipeline import run_training  # noqa: E402
from ml_backend.evaluator.registry import Registry  # noqa: E402
from ml_backend.evaluator.train import TrainConfig  # noqa: E402
from scripts.bench_learning_curve import CONTROL, as_records, dataset  # noqa: E402


def simulated_judge(labels: list[str], accuracy: float, rng: np.random.Generator) -> list[str]:
    """Right with probability ``accuracy``, else the other label."""
    flip = rng.random(len(labels)) >= accuracy
    return [("Fail" if y == "Pass" else "Pass") if f else y for y, f in zip(labels, flip)]


def cascade(p: np.ndarray, band: tuple[float, float], judge: list[str]) -> tuple[list[str], float]:
    asked = judge_asked(p, band)  # exactly what serving sends to the judge
    answers = [j if a else ("Pass" if s >= 0.5 else "Fail") for s, a, j in zip(p, asked, judge)]
    return answers, float(1 - asked.mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default="dialogue,qa,summarization")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--unlabeled", type=int, default=500,
                        help="tasks in the project with no label (other than the fresh ones), as a project has")
    parser.add_argument("--judge-accuracy", type=float, default=0.95)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", default=str(ROOT / "bench_results" / "cascade.json"))
    args = parser.parse_args()
    rows = []
    print(f"simulated judge accuracy {args.judge_accuracy}; {args.train} labels to train; {args.test} fresh tasks")
    print(f"{'dataset':<14}{'way':<26}{'accuracy':>9}{'vs judge':>10}{'no LLM':>8}  band")
    for name in args.datasets.split(","):
        rng = np.random.default_rng(7)
        pool, test = dataset(name, args.train + args.unlabeled, args.test)
        records = as_records(pool)
        for rec, judged in zip(records, simulated_judge(list(pool.label), args.judge_accuracy, rng)):
            rec["predictions"] = [{"model_version": "judge-simulated", "answers": {"label": judged}, "score": None}]
        for rec in records[args.train:]:  # not labeled yet: what the band is carried over to the served model on
            rec["annotations"], rec["predictions"] = [], []
        with tempfile.TemporaryDirectory() as tmp:
            registry = Registry(Path(tmp), "1")
            result = run_training(records, CONTROL, registry, spec=InputSpec(judge_weight=0.0),
                                  cfg=TrainConfig(max_length=args.max_length))
            model = load_evaluator(registry.path(result.version))
            p = np.asarray(model.score([{"input": r.input, "context": r.context, "output": r.output}
                                        for r in test.itertuples()]))
        truth = list(test.label)
        judge = simulated_judge(truth, args.judge_accuracy, rng)
        judge_acc = float(np.mean([j == y for j, y in zip(judge, truth)]))
        chosen = tuple(result.cascade["band"])
        for way, band in (("judge only", (0.0, 1.0)), ("cascade, chosen band", chosen),
                          ("cascade, fixed [0.2, 0.8]", (0.2, 0.8)), ("evaluator only", (0.5, 0.5))):
            answers, saved = cascade(p, band, judge)
            acc = float(np.mean([a == y for a, y in zip(answers, truth)]))
            rows.append({"dataset": name, "way": way, "band": list(band), "accuracy": acc, "unlabeled": args.unlabeled,
                         "vs_judge": acc - judge_acc, "answered_without_llm": saved,
                         "training": {k: getattr(result, k) for k in ("accuracy", "n_train", "n_test", "cascade")}})
            print(f"{name:<14}{way:<26}{acc:>9.3f}{acc - judge_acc:>+10.3f}{saved:>8.0%}  "
                  f"[{band[0]:.3f}, {band[1]:.3f}]", flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"args": vars(args), "results": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
