"""The offline campaign benchmark's plumbing: the strategies, the rounds' pools reaching the estimate,
and --cached-only never starting a fit."""
from __future__ import annotations

import json
import random

from scripts.bench_campaign import BUDGETS, campaign, main, simulate_judge


def test_each_strategy_reviews_each_budget_and_the_queue_finds_more_than_random():
    truth = ["Pass" if i % 2 else "Fail" for i in range(1000)]
    judge, conf = simulate_judge(truth, 0.85, random.Random(3))
    keys = [str(i) for i in range(1000)]
    rows = {s: campaign(s, truth, judge, conf, keys, 3, 0.1) for s in ("random", "queue")}
    for strategy, table in rows.items():
        assert [r["budget"] for r in table] == list(BUDGETS)
        assert all(r["final_accuracy"] >= sum(j == t for j, t in zip(judge, truth)) / 1000 for r in table)
        assert all(r["ci"][0] <= r["estimate"] <= r["ci"][1] for r in table)
    assert rows["random"][-1]["audits"] == BUDGETS[-1] and rows["queue"][-1]["audits"] == BUDGETS[-1] // 10
    assert rows["queue"][2]["errors_found"] > rows["random"][2]["errors_found"]


def test_cached_only_runs_no_fit_and_skips_the_evaluator_strategy(tmp_path, capsys):
    out = tmp_path / "campaign.json"
    main(["--datasets", "qa", "--tasks", "600", "--seeds", "1", "--evaluator-seeds", "1", "--cached-only",
          "--score-cache", str(tmp_path / "none.json"), "--out", str(out)])
    assert "no cached evaluator scores" in capsys.readouterr().out
    result = json.loads(out.read_text())
    assert {r["strategy"] for r in result["rows"]} == {"random", "queue"} and not (tmp_path / "none.json").exists()
