"""A trained evaluator directory, loaded once and scored on task data: the one place that reads a
manifest and picks the scorer (binary classifier or pairwise reward model), for serving and for
``score_dataframe`` alike."""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .data import InputSpec
from .scorer import Scorer


@dataclass
class LoadedEvaluator:
    """A model directory's manifest and (loaded on first use) scorer. ``score(records)`` is P(positive)
    per task, or for a pairwise evaluator P(response A is better than B)."""

    path: Path
    manifest: dict

    @cached_property
    def scorer(self) -> Scorer:
        if self.kind == "reward":
            from .reward import RewardScorer

            return RewardScorer(self.path)
        return Scorer(self.path)

    @property
    def kind(self) -> str:
        return self.manifest.get("kind", "binary")

    @property
    def inputs(self) -> dict:
        return self.manifest.get("input", {})

    @property
    def spec(self) -> InputSpec:
        return InputSpec.from_params(self.inputs, pairwise=self.kind == "reward")

    @property
    def sides(self) -> tuple[str, str]:
        """A pairwise evaluator's two response fields."""
        return self.inputs["a"], self.inputs["b"]

    def check_columns(self, columns: Sequence[str]) -> None:
        """ValueError naming what is missing when rows with ``columns`` cannot be scored."""
        if self.kind == "reward":
            missing = [k for k in self.sides if k not in columns]
            if missing:
                raise ValueError(f"a pairwise evaluator needs the columns {self.sides[0]} and {self.sides[1]}; "
                                 f"missing: {', '.join(missing)}")
            return
        spec = self.spec
        if not any(k in columns for k in spec.text_a):
            raise ValueError(f"the evaluator reads the column(s) {', '.join(spec.text_a)} (and {', '.join(spec.text_b)} "
                             f"as context); the data has none of {', '.join(spec.text_a)} "
                             f"(its columns: {', '.join(map(str, list(columns)[:20]))})")

    def score(self, records: Sequence[dict[str, Any]], batch_size: int = 64) -> np.ndarray:
        if self.kind == "reward":
            a_key, b_key = self.sides
            return self.scorer.prefer_rows(records, a_key, b_key, self.spec.text_b, batch_size)  # type: ignore[attr-defined]
        pairs = [self.spec.pair(r) for r in records]
        return self.scorer.score([a for a, _ in pairs], [b for _, b in pairs], batch_size=batch_size)


def load_evaluator(path: Path | str) -> LoadedEvaluator:
    """The evaluator in ``path`` (a registry version's directory or any trained model directory)."""
    path = Path(path)
    manifest = json.loads((path / "manifest.json").read_text()) if (path / "manifest.json").exists() else {}
    return LoadedEvaluator(path, manifest)
