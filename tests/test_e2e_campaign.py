"""The campaign benchmark through a real Label Studio, at a size CI affords: the judge pre-labels over the
chat-completions protocol, simulated annotators review through GET /review, their annotations reach the
backend as webhooks, the evaluator retrains after each round, and the report's estimate is read back."""
from __future__ import annotations

import json

import pytest

from scripts.bench_campaign_ls import main

pytestmark = pytest.mark.e2e


def test_campaign_through_label_studio_reviews_retrains_and_estimates(tmp_path):
    out = tmp_path / "campaign_ls.json"
    result = main(["--dataset", "qa", "--tasks", "40", "--round", "10", "--budget", "20", "--train-epochs", "1",
                   "--train-max-length", "64", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == result["rows"]
    assert result["llm_calls"] == 80  # the judge labels each task once per strategy, and nothing else calls it
    by = {(r["strategy"], r["budget"]): r for r in result["rows"]}
    assert set(by) == {("random", 10), ("random", 20), ("queue", 10), ("queue", 20)}
    for r in result["rows"]:
        assert 0 <= r["errors_found"] <= r["budget"]
        assert r["final_accuracy"] >= result["judge_only"]  # a human label is right: reviewing never hurts
        assert r["ci"] is not None and 0 <= r["ci"][0] <= r["estimate"] <= r["ci"][1] <= 1
    assert by[("random", 10)]["training"] is None  # random review trains nothing (TRAIN_EVERY=0)
    # the first round's 10 annotations arrived as webhooks and started exactly one training, which the
    # second round waited for (after the last round nothing waits)
    assert by[("queue", 10)]["training"]["version"] == "evaluator-0001"
    assert by[("queue", 10)]["training"]["status"] == "finished" and by[("queue", 20)]["training"] is None
