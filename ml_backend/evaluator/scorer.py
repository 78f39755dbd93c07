"""Serve a trained evaluator: ONNX Runtime on CPU (dynamic int8 when it keeps accuracy), torch otherwise.

One Scorer per model version, loaded once, used by /predict, the CLI and the Python API alike.
Batches are padded to their longest item only, so short inputs stay cheap.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Sequence

import numpy as np

from ..warmup import resolve_transformers
from .train import softmax_pos

ONNX_FILE = "model.onnx"
INT8_FILE = "model_int8.onnx"


def export_onnx(model_dir: Path, *, quantize: bool = True) -> dict:
    """Write model.onnx (and model_int8.onnx) next to the weights; returns what was written."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
    tok = AutoTokenizer.from_pretrained(model_dir)
    enc = tok(["a response"], ["a question"], return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
    dyn = {k: {0: "batch", 1: "seq"} for k in names}
    dyn["logits"] = {0: "batch"}
    torch.onnx.export(model, tuple(enc[k] for k in names), str(model_dir / ONNX_FILE), input_names=names,
                      output_names=["logits"], dynamic_axes=dyn, opset_version=17, dynamo=False)
    written = {"onnx": ONNX_FILE}
    if quantize:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic

        onnxruntime.set_default_logger_severity(3)  # its C++ warnings are for its developers, not our users

        quantize_dynamic(str(model_dir / ONNX_FILE), str(model_dir / INT8_FILE), weight_type=QuantType.QInt8)
        written["int8"] = INT8_FILE
    return written


def trained_max_length(model_dir: Path, default: int = 256) -> int:
    """The input length the model was trained at (from metrics.json): serve it the same way."""
    try:
        return int(json.loads((model_dir / "metrics.json").read_text())["config"]["max_length"])
    except (OSError, ValueError, KeyError, TypeError):
        return default


class Scorer:
    """``score(text_a, text_b) -> probability of the positive label`` (temperature-calibrated)."""

    def __init__(self, model_dir: Path | str, *, runtime: str = "auto", threads: int | None = None,
                 max_length: int | None = None) -> None:
        resolve_transformers()
        from transformers import AutoTokenizer

        self.model_dir = Path(model_dir)
        self.tok = AutoTokenizer.from_pretrained(self.model_dir)
        calib = self.model_dir / "calibration.json"
        self.temperature = json.loads(calib.read_text())["temperature"] if calib.exists() else 1.0
        meta = self.model_dir / "serving.json"
        serving = json.loads(meta.read_text()) if meta.exists() else {}
        # the length it was trained at, unless serving.json says otherwise
        self.max_length = max_length or serving.get("max_length") or trained_max_length(self.model_dir)
        self._lock = threading.Lock()
        self.runtime = runtime
        if runtime == "auto":
            self.runtime = serving.get("runtime") or ("onnx" if (self.model_dir / ONNX_FILE).exists() else "torch")
        if self.runtime in ("onnx", "onnx-int8"):
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if threads:
                opts.intra_op_num_threads = threads
            opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            file = INT8_FILE if self.runtime == "onnx-int8" else ONNX_FILE
            self.session = ort.InferenceSession(str(self.model_dir / file), opts, providers=["CPUExecutionProvider"])
            self._inputs = {i.name for i in self.session.get_inputs()}
        else:
            import torch
            from transformers import AutoModelForSequenceClassification

            self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).eval()
            self._torch = torch

    def logits(self, text_a: Sequence[str], text_b: Sequence[str]) -> np.ndarray:
        enc = self.tok(list(text_a), list(text_b), truncation="longest_first", max_length=self.max_length,
                       padding=True, return_tensors="np")
        if self.runtime.startswith("onnx"):
            feed = {k: v.astype(np.int64) for k, v in enc.items() if k in self._inputs}
            return self.session.run(["logits"], feed)[0]
        with self._torch.inference_mode():
            return self.model(**{k: self._torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()

    def raw_logits(self, text_a: Sequence[str], text_b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Logits for any number of items, in batches of ``batch_size``."""
        out = [self.logits(text_a[i:i + batch_size], text_b[i:i + batch_size]) for i in range(0, len(text_a), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, 2))

    def score(self, text_a: Sequence[str], text_b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        logits = self.raw_logits(text_a, text_b, batch_size)
        return softmax_pos(logits, self.temperature) if len(logits) else np.zeros(0)
