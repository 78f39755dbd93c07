"""The pairwise (reward-model) evaluator with the real packaged MiniLM: pairs from a preference
project's records, training beats chance, P(A better) flips exactly when A and B swap, ONNX serves it,
the gate keeps a worse model out, and the DataFrame API and CLI score pairs."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_backend.datasets import halueval_pairs
from ml_backend.evaluator.data import InputSpec, build_pairs
from ml_backend.evaluator.pipeline import run_reward_training
from ml_backend.evaluator.registry import Registry
from ml_backend.evaluator.reward import RewardScorer
from ml_backend.evaluator.train import TrainConfig

from .conftest import ROOT

FAST = TrainConfig(epochs=3, max_length=64, batch_size=8, lr=1e-4)
SPEC = InputSpec(text_b=("messages", "input", "context"))


def pair_records(n: int, *, seed: int = 0) -> list[dict]:
    """HaluEval QA pairs as a preference project's tasks: the right answer on a seeded random side,
    and a human picking it."""
    df = halueval_pairs("qa", n, seed=seed)
    rng = np.random.default_rng(seed)
    tasks = []
    for i, r in enumerate(df.itertuples()):
        a_right = bool(rng.random() < 0.5)
        pick = "A" if a_right else "B"
        tasks.append({"id": i, "data": {
            "messages": [{"role": "user", "content": f"{r.context}\n{r.input}"}],
            "response_a": r.chosen if a_right else r.rejected, "response_b": r.rejected if a_right else r.chosen,
            "model_a": "m1", "model_b": "m2"},
            "annotations": [{"id": i, "annotator": 1, "ground_truth": False, "answers": {"preference": pick}}],
            "predictions": []})
    return tasks


def test_pairs_take_humans_as_gold_judge_as_weak_and_leave_ties_out():
    tasks = pair_records(12)
    tasks[0]["annotations"][0]["answers"]["preference"] = "Tie"
    for t in tasks[8:]:
        t["predictions"] = [{"model_version": "judge-x", "answers": t["annotations"][0]["answers"], "score": 0.9}]
        t["annotations"] = []
    df = build_pairs(tasks, "preference", "response_a", "response_b", InputSpec(text_b=("messages",), judge_weight=0.2))
    assert len(df) == 11 and 0 not in set(df.task_id)  # the tie prefers nothing
    assert (df.source == "judge").sum() == 4 and set(df[df.source == "judge"].weight) == {0.2}
    assert df.prompt.iloc[0].startswith("user: ") and "m1" not in " ".join(df.prompt)
    first = df.iloc[0]
    assert first.label == (1 if tasks[1]["annotations"][0]["answers"]["preference"] == "A" else 0)
    left_right = [{**t, "annotations": [{**t["annotations"][0], "answers": {"preference": "left"}}]} for t in tasks[1:3]]
    assert build_pairs(left_right, "preference", "response_a", "response_b", SPEC).label.tolist() == [1, 1]


@pytest.mark.slow
def test_reward_training_beats_chance_is_symmetric_serves_onnx_and_is_gated(tmp_path):
    registry = Registry(tmp_path / "evaluators", "7")
    good = run_reward_training(pair_records(200), "preference", ("response_a", "response_b"), registry,
                               spec=SPEC, cfg=FAST)
    assert good.promoted and good.kind == "reward" and registry.current() == good.version
    assert good.accuracy > 0.7 and good.n_test >= 30, good
    path = registry.path(good.version)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["kind"] == "reward" and manifest["input"]["a"] == "response_a"
    for name in ("model.onnx", "model_int8.onnx", "calibration.json", "curve.png"):
        assert (path / name).exists(), name

    prompts, a, b = ["user: Capital of France?"] * 2, ["Paris.", "Lyon, I think."], ["Lyon, I think.", "Paris."]
    onnx = RewardScorer(path, runtime="onnx")
    p_ab, p_ba = onnx.prefer(prompts, a, b), onnx.prefer(prompts, b, a)
    assert np.allclose(p_ab + p_ba, 1.0, atol=1e-6)  # no position can be preferred
    assert np.allclose(p_ab, RewardScorer(path, runtime="torch").prefer(prompts, a, b), atol=1e-4)

    # a barely trained model on the same pairs (so the same held-out split) must not replace it
    bad = run_reward_training(pair_records(200), "preference", ("response_a", "response_b"), registry, spec=SPEC,
                              cfg=TrainConfig(epochs=1, max_length=64, lr=1e-9))
    assert not bad.promoted and registry.current() == good.version, bad
    assert f"does not beat {good.version}" in bad.reason


@pytest.mark.slow
def test_pairwise_score_dataframe_and_cli_evaluate(tmp_path):
    registry = Registry(tmp_path / "evaluators", "8")
    res = run_reward_training(pair_records(80), "preference", ("response_a", "response_b"), registry, spec=SPEC,
                              cfg=TrainConfig(epochs=1, max_length=64))
    from ml_backend.dataframe import score_dataframe

    df = pd.DataFrame({"messages": [json.dumps([{"role": "user", "content": "Capital of France?"}])] * 2,
                       "response_a": ["Paris.", "Lyon"], "response_b": ["Lyon", "Paris."]})
    out = score_dataframe(df, model=registry.path(res.version))
    assert out.score.between(0, 1).all() and abs(out.score[0] + out.score[1] - 1) < 1e-6
    with pytest.raises(ValueError, match="response_b"):
        score_dataframe(df.drop(columns=["response_b"]), model=registry.path(res.version))
    df.to_csv(tmp_path / "pairs.csv", index=False)
    env = dict(os.environ, MODEL_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "ml_backend.cli", "evaluate", str(tmp_path / "pairs.csv"),
                          "--model", res.version, "--project", "8", "--out", str(tmp_path / "scored.csv")],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert np.allclose(pd.read_csv(tmp_path / "scored.csv").score, out.score, atol=1e-5)
