"""The pairwise (reward-model-style) evaluator: one score per response, trained so the preferred
response scores higher (Bradley-Terry loss, -log sigmoid(s_preferred - s_other)).

P(A better than B) = sigmoid((s_A - s_B) / T), with T fitted on validation pairs like the
single-response evaluator's temperature. Each response is scored on its own, so the model cannot
prefer a position: swapping A and B exactly flips the probability. Same encoder, device choice,
early stopping, ONNX (+ int8) serving and registry as the single-response evaluator; its input is the
pair (response, conversation).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .data import join_fields
from .scorer import Scorer
from .train import (
    TrainConfig,
    autocast,
    binary_metrics,
    fit_loop,
    fit_temperature,
    load_base,
    save_trained,
    split_validation,
    train_precision,
)


def _as_logits(s_a: np.ndarray, s_b: np.ndarray) -> np.ndarray:
    """Two-column logits whose softmax is P(A better): the binary evaluator's calibration tools apply."""
    return np.stack([s_b, s_a], axis=1)


def sides_from_chosen(pairs: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """prompt/chosen/rejected rows (an export, a benchmark) as A/B rows with the chosen side drawn at
    random, so held-out accuracy and calibration are not measured on one side only."""
    a_first = np.random.default_rng(seed).random(len(pairs)) < 0.5
    out = pd.DataFrame({
        "task_id": pairs.get("task_id", pd.Series(range(len(pairs)))).to_numpy(),
        "prompt": pairs.prompt.to_numpy(),
        "response_a": np.where(a_first, pairs.chosen, pairs.rejected),
        "response_b": np.where(a_first, pairs.rejected, pairs.chosen),
        "label": a_first.astype(int),
        "weight": pairs["weight"].to_numpy() if "weight" in pairs else 1.0,
        "source": pairs["source"].to_numpy() if "source" in pairs else "human", "ground_truth": False})
    return out


def train_reward(train: pd.DataFrame, test: pd.DataFrame, out_dir: Path, cfg: TrainConfig | None = None,
                 progress: Callable[[dict], None] | None = None) -> dict:
    """Train, calibrate and save a reward model into ``out_dir``; return its held-out metrics.
    ``train``/``test``: prompt, response_a, response_b, label (1: A preferred), weight columns."""
    import torch

    cfg = cfg or TrainConfig()
    t0 = time.time()
    tok, model, device, path = load_base(cfg, 1)
    rng = np.random.default_rng(cfg.seed)
    fit, val = split_validation(train, test, cfg, rng)
    # a pair is two sequences: half as many pairs per step keeps the step count (and the memory) of
    # the single-response evaluator on the same responses
    batch = max(4, min(cfg.batch_size // 2, len(fit) // 20))
    precision = train_precision(device, cfg)

    def scores(part: pd.DataFrame, train_step: bool = False) -> tuple:
        """Both responses of every pair in one forward pass: (s_a, s_b)."""
        enc = tok(list(part.response_a) + list(part.response_b), list(part.prompt) * 2,
                  truncation="longest_first", max_length=cfg.max_length, padding=True, return_tensors="pt")
        with autocast(device, precision if train_step else "fp32"):
            s = model(**enc.to(device)).logits.float().squeeze(-1)
        return s[: len(part)], s[len(part):]

    def eval_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        a, b = [], []
        with torch.inference_mode():
            for i in range(0, len(df), batch * 2):
                s_a, s_b = scores(df.iloc[i:i + batch * 2])
                a.append(s_a.cpu().numpy())
                b.append(s_b.cpu().numpy())
        return (np.concatenate(a), np.concatenate(b)) if a else (np.zeros(0), np.zeros(0))

    def batch_loss(part: pd.DataFrame):
        s_a, s_b = scores(part, True)
        sign = torch.tensor(np.where(part.label.to_numpy() == 1, 1.0, -1.0), dtype=torch.float32, device=device)
        w = torch.tensor(part.weight.to_numpy(dtype=float), dtype=torch.float32, device=device)
        return (-torch.nn.functional.logsigmoid(sign * (s_a - s_b)) * w).sum() / w.sum()

    def validate() -> tuple[float, float | None]:
        v_a, v_b = eval_scores(val)
        y = val.label.to_numpy()
        if not len(y):
            return float("inf"), None
        d = np.where(y == 1, v_a - v_b, v_b - v_a)
        return float(np.mean(np.logaddexp(0, -d))), float(np.mean(d > 0))

    history = fit_loop(model, fit, batch, cfg, rng, batch_loss, validate, progress, t0)
    v_a, v_b = eval_scores(val)
    temperature = fit_temperature(_as_logits(v_a, v_b), val.label.to_numpy())
    t_a, t_b = eval_scores(test)
    metrics = binary_metrics(1 / (1 + np.exp(-(t_a - t_b) / temperature)), test.label.to_numpy())
    metrics.update(kind="reward", pair_accuracy=metrics["accuracy"])
    return save_trained(out_dir, model, tok, metrics, train=train, test=test, temperature=temperature,
                        device=device, t0=t0, history=history, cfg=cfg, base_model=path, precision=precision)


class RewardScorer(Scorer):
    """A reward model served like the binary evaluator (ONNX / int8 / torch), answering pairs."""

    def rewards(self, responses: Sequence[str], prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """The uncalibrated score of each response to its prompt (higher is better)."""
        return self.raw_logits(responses, prompts, batch_size)[:, 0]

    def prefer(self, prompts: Sequence[str], a: Sequence[str], b: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """P(response a is better than b) per pair, temperature-calibrated."""
        s = self.rewards(list(a) + list(b), list(prompts) * 2, batch_size)
        d = (s[: len(a)] - s[len(a):]) / self.temperature
        return 1 / (1 + np.exp(-d))

    def prefer_rows(self, rows: Sequence[dict], a_key: str, b_key: str, prompt_keys: Sequence[str],
                    batch_size: int = 64) -> np.ndarray:
        """P(A better) for task data / table rows: the responses under ``a_key`` and ``b_key``, the
        conversation from ``prompt_keys`` (as the pairs were built for training)."""
        return self.prefer([join_fields(r, prompt_keys) for r in rows], [join_fields(r, (a_key,)) for r in rows],
                           [join_fields(r, (b_key,)) for r in rows], batch_size)

    def pair_accuracy(self, pairs: pd.DataFrame) -> float:
        if len(pairs) == 0:
            return float("nan")
        p = self.prefer(list(pairs.prompt), list(pairs.response_a), list(pairs.response_b))
        return float(np.mean((p >= 0.5) == (pairs.label.to_numpy() == 1)))
