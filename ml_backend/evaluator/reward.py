"""A pairwise (reward-model-style) evaluator: one score per response, trained so the preferred
response scores higher (Bradley-Terry loss, -log sigmoid(s_chosen - s_rejected)).

P(A better than B) = sigmoid(s_A - s_B). Same encoder, device choice and ONNX-free torch serving as
the single-response evaluator; the input pair is (response, conversation).
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .train import TrainConfig, load_base


def train_reward(train: pd.DataFrame, test: pd.DataFrame, out_dir: Path, cfg: TrainConfig | None = None) -> dict:
    """``train``/``test``: prompt, chosen, rejected (and optional weight) columns."""
    import torch
    from transformers import get_linear_schedule_with_warmup

    cfg = cfg or TrainConfig()
    t0 = time.time()
    tok, model, device, _ = load_base(cfg, 1)
    batch = max(4, min(cfg.batch_size, len(train) // 20))
    steps = cfg.epochs * -(-len(train) // batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = get_linear_schedule_with_warmup(opt, int(cfg.warmup * steps), max(1, steps))
    rng = np.random.default_rng(cfg.seed)
    weights = train["weight"].to_numpy() if "weight" in train else np.ones(len(train))

    def enc(responses, prompts):
        return tok(list(responses), list(prompts), truncation="longest_first", max_length=cfg.max_length,
                   padding=True, return_tensors="pt").to(device)

    history = []
    model.train()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(train))
        total = 0.0
        for i in range(0, len(order), batch):
            part = train.iloc[order[i:i + batch]]
            w = torch.tensor(weights[order[i:i + batch]], dtype=torch.float32, device=device)
            s_c = model(**enc(part.chosen, part.prompt)).logits.squeeze(-1)
            s_r = model(**enc(part.rejected, part.prompt)).logits.squeeze(-1)
            loss = (-torch.nn.functional.logsigmoid(s_c - s_r) * w).sum() / w.sum()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += float(loss.detach()) * len(part)
        history.append({"epoch": epoch + 1, "train_loss": total / len(train), "seconds": round(time.time() - t0, 1)})
    model.eval().to("cpu")
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    scorer = RewardScorer(out_dir, max_length=cfg.max_length)
    acc = scorer.pair_accuracy(test)
    metrics = {"pair_accuracy": acc, "n_train": len(train), "n_test": len(test), "device": device,
               "seconds": round(time.time() - t0, 2), "history": history, "kind": "reward"}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


class RewardScorer:
    def __init__(self, model_dir: Path | str, *, max_length: int = 256) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForSequenceClassification.from_pretrained(model_dir).eval()
        self.max_length = max_length
        self._torch = torch

    def scores(self, responses: list[str], prompts: list[str], batch_size: int = 64) -> np.ndarray:
        out = []
        with self._torch.inference_mode():
            for i in range(0, len(responses), batch_size):
                e = self.tok(responses[i:i + batch_size], prompts[i:i + batch_size], truncation="longest_first",
                             max_length=self.max_length, padding=True, return_tensors="pt")
                out.append(self.model(**e).logits.squeeze(-1).numpy())
        return np.concatenate(out) if out else np.zeros(0)

    def prefer(self, prompts: list[str], a: list[str], b: list[str]) -> np.ndarray:
        """P(response a is better than b) per pair."""
        return 1 / (1 + np.exp(-(self.scores(a, prompts) - self.scores(b, prompts))))

    def pair_accuracy(self, pairs: pd.DataFrame) -> float:
        if len(pairs) == 0:
            return float("nan")
        p = self.prefer(list(pairs.prompt), list(pairs.chosen), list(pairs.rejected))
        return float((p > 0.5).mean())
