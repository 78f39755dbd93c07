"""The binary evaluator as one object with scikit-learn's shape: ``fit`` / ``predict_proba`` /
``predict`` / ``save`` / ``load``, for a notebook or a script that has labeled rows and no Label
Studio. It is the same model the backend trains and serves (``train_evaluator``, the same manifest,
``load_evaluator``), not a second implementation."""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from .data import InputSpec, split
from .loading import LoadedEvaluator, load_evaluator
from .train import TrainConfig, train_evaluator


class Evaluator:
    """``Evaluator(cfg, spec).fit(records, labels)`` then ``predict_proba(records)``: records are dicts
    of task fields (``spec`` says which form the pair, default ``output`` against ``input``/``context``),
    labels are 0/1 (or booleans). ``metrics_`` holds the held-out numbers of the last fit."""

    def __init__(self, cfg: TrainConfig | None = None, spec: InputSpec | None = None) -> None:
        self.cfg = cfg or TrainConfig()
        self.spec = spec or InputSpec()
        self.metrics_: dict[str, Any] = {}
        self._model: LoadedEvaluator | None = None
        self._dir: tempfile.TemporaryDirectory | None = None

    def fit(self, records: Sequence[dict], labels: Sequence[int | bool], *, weights: Sequence[float] | None = None,
            test_size: float = 0.2, seed: int = 0) -> Evaluator:
        """Fine-tune on ``records``; ``test_size`` of them are held out to measure and calibrate."""
        if len(records) != len(labels):
            raise ValueError(f"{len(records)} records but {len(labels)} labels")
        if len(set(int(y) for y in labels)) < 2:
            raise ValueError("the labels must hold both classes (0 and 1)")
        pairs = [self.spec.pair(r) for r in records]
        rows = pd.DataFrame({"task_id": range(len(records)), "text_a": [a for a, _ in pairs],
                             "text_b": [b for _, b in pairs], "label": [int(y) for y in labels],
                             "weight": list(weights) if weights is not None else 1.0, "source": "human",
                             "ground_truth": False})
        train, test = split(rows, test_size=test_size, seed=seed)
        self._dir = tempfile.TemporaryDirectory(prefix="labeljudge-evaluator-")
        out = Path(self._dir.name)
        self.metrics_ = train_evaluator(train, test, out, self.cfg)
        (out / "manifest.json").write_text(json.dumps({
            "kind": "binary", "control": "label", "positive": ["1"],
            "input": {"text_a": list(self.spec.text_a), "text_b": list(self.spec.text_b)}}, indent=1))
        self._model = load_evaluator(out)
        return self

    def predict_proba(self, records: Sequence[dict]) -> np.ndarray:
        """P(label 1) per record, calibrated on the held-out rows."""
        return self._loaded().score(list(records))

    def predict(self, records: Sequence[dict], threshold: float = 0.5) -> np.ndarray:
        return (self.predict_proba(records) >= threshold).astype(int)

    def save(self, path: Path | str) -> Path:
        """The model directory (weights, tokenizer, calibration, manifest) copied to ``path``; the
        backend's ``labeljudge evaluate --model`` and ``load`` read it."""
        path = Path(path)
        shutil.copytree(self._loaded().path, path, dirs_exist_ok=True)
        return path

    @classmethod
    def load(cls, path: Path | str) -> Evaluator:
        """An evaluator saved by ``save``, or any trained registry version's directory."""
        if not (Path(path) / "config.json").exists():
            raise FileNotFoundError(f"no trained evaluator in {path} (it holds no config.json)")
        model = load_evaluator(path)
        if model.kind != "binary":
            raise ValueError(f"{path} holds a {model.kind} evaluator; Evaluator is the binary one")
        est = cls(spec=model.spec)
        est._model = model
        metrics = Path(path) / "metrics.json"
        est.metrics_ = json.loads(metrics.read_text()) if metrics.exists() else {}
        return est

    def _loaded(self) -> LoadedEvaluator:
        if self._model is None:
            raise RuntimeError("fit or load the evaluator first")
        return self._model
