"""The evaluator with the real packaged MiniLM: training beats chance, ONNX matches torch, the gate
keeps a worse model out, rollback works, and a killed run leaves the registry consistent."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from ml_backend.datasets import halueval_rows
from ml_backend.evaluator.cascade import judge_asked
from ml_backend.evaluator.data import InputSpec, build_dataset, split
from ml_backend.evaluator.pipeline import run_training
from ml_backend.evaluator.registry import Registry
from ml_backend.evaluator.scorer import Scorer
from ml_backend.evaluator.train import TrainConfig

from .conftest import ROOT

pytestmark = pytest.mark.slow
CONTROL = {"name": "verdict", "kind": "single", "options": ["Pass", "Fail"], "ordinal": False}
FAST = TrainConfig(epochs=3, max_length=64, batch_size=8, lr=1e-4, soup=1)  # one seed: the soup has its own test


def records(n: int, *, shuffle_labels: bool = False, seed: int = 0) -> list[dict]:
    # HaluEval QA: real labels; its length cue makes a tiny, fast run clearly better than chance
    df = halueval_rows("qa", n, seed=seed)
    labels = df.label.sample(frac=1, random_state=1).tolist() if shuffle_labels else df.label.tolist()
    return [{"id": i, "data": {"input": r.input, "context": r.context, "output": r.output},
             "annotations": [{"id": i, "annotator": 1, "ground_truth": False, "answers": {"verdict": lab}}],
             "predictions": []} for i, (r, lab) in enumerate(zip(df.itertuples(), labels))]


def test_dataset_weights_humans_over_judge_and_holds_out_humans_only():
    tasks = records(40)
    for t in tasks[30:]:  # the judge labeled these, no human did
        t["predictions"] = [{"model_version": "judge-x", "answers": t["annotations"][0]["answers"], "score": 0.9}]
        t["annotations"] = []
    df = build_dataset(tasks, CONTROL, InputSpec(judge_weight=0.25))
    assert (df.source == "judge").sum() == 10 and set(df[df.source == "judge"].weight) == {0.25}
    train, test = split(df)
    assert set(test.source) == {"human"} and len(test) == 6
    assert build_dataset(tasks, CONTROL, InputSpec(judge_weight=0)).source.eq("human").all()
    assert df.iloc[0].label == (1 if tasks[0]["annotations"][0]["answers"]["verdict"] == "Pass" else 0)


def test_training_beats_chance_onnx_matches_and_the_gate_keeps_a_worse_model_out(tmp_path):
    registry = Registry(tmp_path / "evaluators", "1")
    good = run_training(records(240), CONTROL, registry, cfg=FAST)
    assert good.promoted and good.version == "evaluator-0001" and registry.current() == "evaluator-0001"
    assert good.accuracy > 0.7 and good.auc > 0.75, good
    path = registry.path(good.version)
    for name in ("model.onnx", "model_int8.onnx", "calibration.json", "manifest.json", "curve.png", "metrics.json"):
        assert (path / name).exists(), name
    metrics = json.loads((path / "metrics.json").read_text())
    assert len(metrics["history"]) >= 1 and metrics["temperature"] > 0
    a, b = ["Paris."] * 2 + ["It is a long answer that goes on and on."], ["Capital of France?"] * 3
    torch_p = Scorer(path, runtime="torch").score(a, b)
    onnx_p = Scorer(path, runtime="onnx").score(a, b)
    assert np.allclose(torch_p, onnx_p, atol=1e-4)
    assert ((Scorer(path).score(a, b) >= 0) & (Scorer(path).score(a, b) <= 1)).all()
    assert Scorer(path).max_length == FAST.max_length  # served at the length it was trained at
    # the band was chosen on the measured model; on the served one (refit on every label) it answers
    # the same number of held-out inputs (no unlabeled tasks here), not the same thresholds
    cascade = good.cascade
    assert cascade["coverage"] > 0 and cascade["measured_band"] != cascade["band"]
    assert cascade["carried_on"].endswith("held-out inputs answered")
    _, test = split(build_dataset(records(240), CONTROL, InputSpec()), seed=FAST.seed)
    served = Scorer(path, runtime="torch").score(list(test.text_a), list(test.text_b))
    low, high = cascade["band"]
    assert abs(int((~judge_asked(served, (low, high))).sum()) - cascade["n_confident"]) <= 1  # 1: score rounding

    bad = run_training(records(240, shuffle_labels=True), CONTROL, registry, cfg=FAST)
    assert bad.version == "evaluator-0002" and not bad.promoted
    assert registry.current() == "evaluator-0001" and "does not beat evaluator-0001" in bad.reason

    registry.promote("evaluator-0002", "by hand")
    assert registry.rollback() == "evaluator-0001" and registry.current() == "evaluator-0001"


def test_a_three_layer_student_starts_from_evenly_spaced_pretrained_layers_and_serves(tmp_path):
    from dataclasses import replace

    from ml_backend.evaluator.train import load_base

    _, full, _, _ = load_base(TrainConfig(), 2)
    _, student, _, _ = load_base(TrainConfig(layers=3), 2)
    assert len(student.bert.encoder.layer) == 3
    for i, j in enumerate((0, 2, 4)):  # pretrained layers 0, 2, 4, not fresh ones
        a, b = full.bert.encoder.layer[j].state_dict(), student.bert.encoder.layer[i].state_dict()
        assert all((a[k] == b[k]).all() for k in a)
    assert not (full.bert.encoder.layer[1].state_dict()["output.dense.weight"]
                == student.bert.encoder.layer[1].state_dict()["output.dense.weight"]).all()
    with pytest.raises(ValueError, match="has 6"):
        load_base(TrainConfig(layers=9), 2)

    registry = Registry(tmp_path / "evaluators", "4")
    res = run_training(records(240), CONTROL, registry, cfg=replace(FAST, layers=3))
    assert res.promoted and res.accuracy > 0.7, res
    path = registry.path(res.version)
    assert json.loads((path / "config.json").read_text())["num_hidden_layers"] == 3
    metrics = json.loads((path / "metrics.json").read_text())
    assert metrics["config"]["layers"] == 3 and metrics["precision"] in ("bf16", "fp32")
    p = Scorer(path).score(["Paris."], ["Capital of France?"])
    assert 0 <= p[0] <= 1


def test_score_dataframe_and_cli_evaluate(tmp_path):
    registry = Registry(tmp_path / "evaluators", "3")
    res = run_training(records(120), CONTROL, registry, cfg=TrainConfig(epochs=1, max_length=64))
    from ml_backend.dataframe import score_dataframe

    df = pd.DataFrame({"input": ["q1", "q2"], "context": ["c", "c"], "output": ["short", "a much longer answer"]})
    out = score_dataframe(df, model=registry.path(res.version))
    assert list(out.columns) == ["input", "context", "output", "score"] and out.score.between(0, 1).all()
    df.to_csv(tmp_path / "data.csv", index=False)
    env = dict(os.environ, MODEL_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "ml_backend.cli", "evaluate", str(tmp_path / "data.csv"),
                          "--model", res.version, "--project", "3", "--out", str(tmp_path / "scored.csv")],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    scored = pd.read_csv(tmp_path / "scored.csv")
    assert np.allclose(scored.score, out.score, atol=1e-5)


def test_a_killed_training_leaves_registry_and_served_version_untouched(tmp_path):
    registry = Registry(tmp_path / "evaluators", "2")
    first = run_training(records(80), CONTROL, registry, cfg=TrainConfig(epochs=1, max_length=32))
    before = (registry.current(), [v["version"] for v in registry.versions()])
    script = (
        "import sys; sys.path.insert(0, %r)\n"
        "from tests.test_evaluator import records, CONTROL\n"
        "from ml_backend.evaluator.pipeline import run_training\n"
        "from ml_backend.evaluator.registry import Registry\n"
        "from ml_backend.evaluator.train import TrainConfig\n"
        "run_training(records(400), CONTROL, Registry(%r, '2'), cfg=TrainConfig(epochs=20, max_length=128),"
        " progress=lambda r: print('epoch', flush=True))\n" % (str(ROOT), str(tmp_path / "evaluators")))
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("epoch")  # mid-training
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (registry.current(), [v["version"] for v in registry.versions()]) == before
    assert any(d.name.startswith(".train-") for d in registry.dir.iterdir())  # the partial run, never served
    assert registry.cleanup_staging() == 1
    assert Scorer(registry.path(first.version)).score(["x"], ["y"]).shape == (1,)


def test_a_project_whose_every_label_is_ground_truth_trains_on_a_split_and_says_so():
    tasks = records(80)
    for t in tasks:  # the team marked its whole gold set
        t["annotations"][0]["ground_truth"] = True
    train, test = split(build_dataset(tasks, CONTROL, InputSpec()))
    assert len(train) == 64 and len(test) == 16  # before: 0 train rows, all 80 held out
    assert "were split too" in test.attrs["holdout"]


def test_ground_truth_holds_out_when_enough_rows_remain_to_train():
    tasks = records(60)
    for t in tasks[:12]:
        t["annotations"][0]["ground_truth"] = True
    train, test = split(build_dataset(tasks, CONTROL, InputSpec()))
    assert len(test) == 12 and test.ground_truth.all() and "12 ground-truth" in test.attrs["holdout"]


def test_never_trains_on_fewer_rows_than_the_minimum():
    import pytest as _pytest

    from ml_backend.evaluator.data import MIN_TRAIN_ROWS

    with _pytest.raises(ValueError, match=f"at least {MIN_TRAIN_ROWS}"):
        split(build_dataset(records(12), CONTROL, InputSpec()))


def test_the_cascade_band_is_carried_over_on_the_projects_unlabeled_tasks(tmp_path):
    # 60 tasks nobody labeled: neither model trained on them, so the served band answers as many of them
    # as the measured band does (the count is recorded; here checked against the served model's scores)
    tasks = records(300)
    for t in tasks[240:]:
        t["annotations"] = []
    registry = Registry(tmp_path / "evaluators", "1")
    result = run_training(tasks, CONTROL, registry, cfg=FAST)
    cascade = result.cascade
    assert cascade["coverage"] > 0 and cascade["carried_on"].endswith("of 60 unlabeled tasks answered"), cascade
    k = int(cascade["carried_on"].split()[0])
    unlabeled = [InputSpec().pair(t["data"]) for t in tasks[240:]]
    served = Scorer(registry.path(result.version), runtime="torch").score([a for a, _ in unlabeled],
                                                                              [b for _, b in unlabeled])
    low, high = cascade["band"]
    assert abs(int((~judge_asked(served, (low, high))).sum()) - k) <= 1  # 1: score rounding


def test_with_no_unlabeled_tasks_the_band_is_carried_over_on_the_judge_labeled_ones(tmp_path):
    tasks = records(300)
    for t in tasks[240:]:  # the judge labeled these, no human did: both models train on them
        t["predictions"] = [{"model_version": "judge-x", "answers": t["annotations"][0]["answers"], "score": 0.9}]
        t["annotations"] = []
    result = run_training(tasks, CONTROL, Registry(tmp_path / "evaluators", "1"), cfg=FAST)
    assert result.n_judge_train == 60
    assert result.cascade["carried_on"].endswith("of 60 judge-labeled tasks answered"), result.cascade


def test_a_soup_is_the_mean_of_its_seeds_weights_and_leaves_them_as_they_were():
    import torch

    from ml_backend.evaluator.train import load_base, soup, soup_size

    _, a, _, _ = load_base(TrainConfig(seed=0), 2)
    _, b, _, _ = load_base(TrainConfig(seed=1), 2)
    head_a = a.classifier.weight.detach().clone()
    assert not torch.equal(head_a, b.classifier.weight)  # the seed draws the classification head
    mixed = soup([a, b])
    assert mixed is not a and mixed is not b and torch.equal(a.classifier.weight, head_a)
    for (name, m), pa, pb in zip(mixed.state_dict().items(), a.state_dict().values(), b.state_dict().values()):
        if m.is_floating_point():
            assert torch.allclose(m, (pa + pb) / 2), name
        else:
            assert torch.equal(m, pa), name  # integer buffers (position ids) are copied, not averaged
    assert soup([a]) is a
    assert [soup_size(TrainConfig(), n) for n in (0, 159, 160, 5000)] == [1, 1, 2, 2]
    assert soup_size(TrainConfig(soup=1), 5000) == 1 and soup_size(TrainConfig(soup=3), 160) == 3


def test_the_served_evaluator_averages_two_seeds_and_records_what_each_scored(tmp_path):
    from dataclasses import replace

    registry = Registry(tmp_path / "evaluators", "5")
    one = run_training(records(160), CONTROL, registry, cfg=replace(FAST, soup=1))
    two = run_training(records(160), CONTROL, Registry(tmp_path / "evaluators", "6"),
                       cfg=replace(FAST, soup=2, soup_min_rows=100))
    m1 = json.loads((registry.path(one.version) / "metrics.json").read_text())
    m2 = json.loads((Registry(tmp_path / "evaluators", "6").path(two.version) / "metrics.json").read_text())
    assert "soup" not in m1 and m2["soup"]["seeds"] == [0, 1]
    by_seed = m2["soup"]["accuracy_by_seed"]
    assert len(by_seed) == 2 and all(0 <= x <= 1 for x in by_seed)
    assert by_seed[0] == pytest.approx(m1["accuracy"], abs=0.02)  # seed 0 alone is the one-seed model
    assert {h.get("seed") for h in m2["history"]} == {0, 1}  # both seeds trained, refit included
    assert sum(1 for h in m2["history"] if h.get("phase")) >= 2
    assert m2["config"]["soup"] == 2 and two.accuracy > 0.6


def _sentiment(n: int) -> tuple[list[dict], list[int]]:
    good = ["great and accurate answer", "correct, clear and helpful", "exactly right, well sourced"]
    bad = ["wrong and made up", "false claim, no source", "invented facts, incorrect"]
    rows = [{"input": f"question {i}", "output": (good if i % 2 else bad)[i % 3] + f" #{i}"} for i in range(n)]
    return rows, [i % 2 for i in range(n)]


@pytest.mark.slow
def test_the_evaluator_object_fits_predicts_saves_and_loads(tmp_path):
    from ml_backend.evaluator import Evaluator

    rows, labels = _sentiment(80)
    est = Evaluator(TrainConfig(epochs=2, max_length=32, batch_size=8, lr=1e-4, soup=1)).fit(rows, labels)
    assert est.metrics_["accuracy"] > 0.8, est.metrics_
    p = est.predict_proba(rows[:10])
    assert p.shape == (10,) and ((0 <= p) & (p <= 1)).all()
    assert (est.predict(rows[:10]) == np.asarray(labels[:10])).mean() >= 0.8
    saved = est.save(tmp_path / "model")
    again = Evaluator.load(saved)
    assert np.allclose(again.predict_proba(rows[:10]), p, atol=1e-5)
    assert again.metrics_["accuracy"] == est.metrics_["accuracy"]


def test_the_evaluator_object_refuses_what_it_cannot_fit_or_score(tmp_path):
    from ml_backend.evaluator import Evaluator

    rows, labels = _sentiment(10)
    with pytest.raises(ValueError, match="10 records but 9 labels"):
        Evaluator().fit(rows, labels[:9])
    with pytest.raises(ValueError, match="both classes"):
        Evaluator().fit(rows, [1] * 10)
    with pytest.raises(RuntimeError, match="fit or load"):
        Evaluator().predict_proba(rows)
    with pytest.raises(FileNotFoundError, match="no trained evaluator"):
        Evaluator.load(tmp_path / "nothing-here")
