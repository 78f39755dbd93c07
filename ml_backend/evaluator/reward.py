"""The pairwise (reward-model-style) evaluator: one score per response, trained so the preferred
response scores higher (Bradley-Terry loss, -log sigmoid(s_preferred - s_other)).

P(A better than B) = sigmoid((s_A - s_B) / T), with T fitted on validation pairs like the
single-response evaluator's temperature. Each response is scored on its own, so the model cannot
prefer a position: swapping A and B exactly flips the probability. Same encoder, device choice,
early stopping, ONNX (+ int8) serving and registry as the single-response evaluator; its input is the
pair (response, conversation).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from .scorer import Scorer
from .train import TrainConfig, _null, binary_metrics, fit_temperature, load_base


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
    from transformers import get_linear_schedule_with_warmup

    cfg = cfg or TrainConfig()
    t0 = time.time()
    tok, model, device, path = load_base(cfg, 1)
    rng = np.random.default_rng(cfg.seed)
    order = rng.permutation(len(train))
    n_val = max(1, int(len(train) * cfg.val_fraction)) if len(train) >= 20 else 0
    val = train.iloc[order[:n_val]] if n_val else test
    fit = train.iloc[order[n_val:]] if n_val else train
    # a pair is two sequences: half as many pairs per step keeps the step count (and the memory) of
    # the single-response evaluator on the same responses
    batch = max(4, min(cfg.batch_size // 2, len(fit) // 20))
    steps = cfg.epochs * math.ceil(len(fit) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * steps), max(1, steps))
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device == "cuda" else _null()

    def scores(part: pd.DataFrame) -> tuple:
        """Both responses of every pair in one forward pass: (s_a, s_b)."""
        enc = tok(list(part.response_a) + list(part.response_b), list(part.prompt) * 2,
                  truncation="longest_first", max_length=cfg.max_length, padding=True, return_tensors="pt")
        with amp:
            s = model(**enc.to(device)).logits.float().squeeze(-1)
        return s[: len(part)], s[len(part):]

    def eval_scores(df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        model.eval()
        a, b = [], []
        with torch.inference_mode():
            for i in range(0, len(df), batch * 2):
                s_a, s_b = scores(df.iloc[i:i + batch * 2])
                a.append(s_a.cpu().numpy())
                b.append(s_b.cpu().numpy())
        model.train()
        return (np.concatenate(a), np.concatenate(b)) if a else (np.zeros(0), np.zeros(0))

    def pair_loss(s_a: np.ndarray, s_b: np.ndarray, y: np.ndarray) -> float:
        d = np.where(y == 1, s_a - s_b, s_b - s_a)
        return float(np.mean(np.logaddexp(0, -d))) if len(d) else float("inf")

    history, best_loss, best_state, bad = [], float("inf"), None, 0
    model.train()
    for epoch in range(cfg.epochs):
        perm = rng.permutation(len(fit))
        total = 0.0
        for i in range(0, len(perm), batch):
            part = fit.iloc[perm[i:i + batch]]
            s_a, s_b = scores(part)
            sign = torch.tensor(np.where(part.label.to_numpy() == 1, 1.0, -1.0), dtype=torch.float32, device=device)
            w = torch.tensor(part.weight.to_numpy(dtype=float), dtype=torch.float32, device=device)
            loss = (-torch.nn.functional.logsigmoid(sign * (s_a - s_b)) * w).sum() / w.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += float(loss.detach()) * len(part)
        v_a, v_b = eval_scores(val)
        y_val = val.label.to_numpy()
        v_loss = pair_loss(v_a, v_b, y_val)
        row = {"epoch": epoch + 1, "train_loss": total / max(len(fit), 1), "val_loss": v_loss,
               "val_accuracy": float(np.mean((v_a > v_b) == (y_val == 1))) if len(y_val) else None,
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        if progress:
            progress(row)
        if v_loss < best_loss - 1e-4:
            best_loss, bad = v_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad > cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    v_a, v_b = eval_scores(val)
    temperature = fit_temperature(_as_logits(v_a, v_b), val.label.to_numpy())
    t_a, t_b = eval_scores(test)
    metrics = binary_metrics(1 / (1 + np.exp(-(t_a - t_b) / temperature)), test.label.to_numpy())
    metrics.update(kind="reward", pair_accuracy=metrics["accuracy"], n_train=int(len(train)), n_test=int(len(test)),
                   n_human_train=int((train.source == "human").sum()) if "source" in train else None,
                   n_judge_train=int((train.source == "judge").sum()) if "source" in train else None,
                   temperature=temperature, device=device, seconds=round(time.time() - t0, 2), history=history,
                   config=asdict(cfg), base_model=path)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "calibration.json").write_text(json.dumps({"temperature": temperature}))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


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

    def pair_accuracy(self, pairs: pd.DataFrame) -> float:
        if len(pairs) == 0:
            return float("nan")
        p = self.prefer(list(pairs.prompt), list(pairs.response_a), list(pairs.response_b))
        return float(np.mean((p >= 0.5) == (pairs.label.to_numpy() == 1)))
