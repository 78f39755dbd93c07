"""Pairwise report: win rate per model with bootstrap CIs, judge-human agreement on the pairs humans
labeled, and the judge's position bias (how often its verdict flips when the responses swap)."""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ..judge.types import pair_side as side
from .metrics import agreement
from .report import norm


def win_rates(pairs: Sequence[tuple[str, str, str]], *, n_boot: int = 1000, seed: int = 0) -> list[dict]:
    """pairs: (model_a, model_b, outcome in A/B/Tie). Win rate = (wins + ties/2) / comparisons."""
    models = sorted({m for a, b, _ in pairs for m in (a, b) if m})
    if not pairs or not models:
        return []
    points = np.zeros((len(pairs), len(models)))
    present = np.zeros((len(pairs), len(models)))
    for i, (a, b, o) in enumerate(pairs):
        ia, ib = models.index(a), models.index(b)
        present[i, ia] = present[i, ib] = 1
        points[i, ia] = {"A": 1.0, "B": 0.0, "Tie": 0.5}[o]
        points[i, ib] = 1.0 - points[i, ia]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(pairs), size=(n_boot, len(pairs)))
    boot = points[picks].sum(1) / np.maximum(present[picks].sum(1), 1)
    rows = []
    for j, m in enumerate(models):
        n = int(present[:, j].sum())
        lo, hi = np.quantile(boot[:, j], [0.025, 0.975])
        rows.append({"model": m, "comparisons": n, "win_rate": float(points[:, j].sum() / max(n, 1)),
                     "ci_low": float(lo), "ci_high": float(hi)})
    return sorted(rows, key=lambda r: -r["win_rate"])


def position_bias(judgments: Sequence[dict]) -> dict:
    """From both orders' answers: how often the verdict flipped, and how often the judge picked
    whatever stood first (a judge that always says "A" flips on every pair it does not call a tie)."""
    n = len(judgments)
    if not n:
        return {"n": 0, "flip_rate": None, "first_position_rate": None}
    flips = sum(1 for j in judgments if not j["consistent"])
    # in the swapped order the first-shown response is the original B
    first = sum((side(j["first"]) == "A") + (side(j["second"]) == "B") for j in judgments)
    return {"n": n, "flip_rate": flips / n, "first_position_rate": first / (2 * n)}


def pairwise_report(tasks: Sequence[dict], control: str, judgments: Sequence[dict], *,
                    judge_versions: Sequence[str] = ()) -> dict:
    human_pairs, judge_pairs, h, j = [], [], [], []
    for t in tasks:
        d = t.get("data") or {}
        ma, mb = d.get("model_a") or "", d.get("model_b") or ""
        human = [side(norm(a["answers"].get(control))) for a in t["annotations"] if a["answers"].get(control)]
        judged = [side(norm(p["answers"].get(control))) for p in t["predictions"]
                  if p["answers"].get(control) and (not judge_versions or p["model_version"] in judge_versions)]
        if human and human[-1]:
            human_pairs.append((ma, mb, human[-1]))
        if judged and judged[-1]:
            judge_pairs.append((ma, mb, judged[-1]))
        if human and judged and human[-1] and judged[-1]:
            h.append(human[-1])
            j.append(judged[-1])
    by_version = defaultdict(list)
    for row in judgments:
        by_version[row["version"]].append(row)
    return {
        "win_rates_human": win_rates(human_pairs),
        "win_rates_judge": win_rates(judge_pairs),
        "judge_vs_human": agreement(h, j, labels=["A", "B", "Tie"]),
        "position_bias": {v: position_bias(rows) for v, rows in by_version.items()},
    }
