"""Fine-tune a BERT-like encoder (default: the packaged all-MiniLM-L6-v2) as a binary evaluator.

A short torch loop rather than Trainer: sample weights (judge labels count less than human ones),
class weighting, and temperature scaling so a score of 0.8 means about 80%. The binary evaluator trains
a fixed number of epochs on the train split (from 200 labels: two seeds, their weights averaged, see
`soup`), is measured and calibrated on the held-out labels, then (``refit``) that model trains one more
epoch over every label and is served: a validation split and
early stopping on a few dozen rows were noise, every label held back from the served model cost
accuracy, and retraining from scratch on every label doubled the time. CUDA when present, then MPS,
then CPU; training steps in bf16 autocast on
CUDA and on CPUs with native bf16.
No Flask, no Label Studio: it runs in a notebook, a worker or on a GPU box with only this package.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np
import pandas as pd

from ..warmup import resolve_transformers


@dataclass
class TrainConfig:
    base_model: str | None = None  # None: the packaged MiniLM; else any HF path or hub id
    layers: int | None = None  # keep N encoder layers, evenly spaced (a faster student); None: all
    max_length: int = 256
    epochs: int = 4
    batch_size: int = 16
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup: float = 0.1
    patience: int = 1
    val_fraction: float = 0.1  # the pairwise evaluator's validation split (early stopping)
    steps_per_epoch: int = 0  # >0: small sets get smaller batches (down to 4 rows) for this many steps an epoch
    min_steps: int = 32  # small sets get more epochs: at least this many optimiser steps in a fit
    refit: bool = True  # the binary evaluator: after measuring on the held-out labels, train again on all
    refit_from: str = "measured"  # "measured": keep training the measured model on every label; "base": start over
    refit_epochs: int = 1  # epochs of that continued training (at least min_steps // 4 steps); "base" uses ``epochs``
    class_weighting: bool = True
    seed: int = 0
    soup: int = 2  # the binary evaluator: fine-tune this many seeds (seed, seed+1, ...) and average their weights
    soup_min_rows: int = 160  # ... from this many training rows (200 labels); below it one seed
    device: str | None = None
    precision: str = "auto"  # "auto": bf16 autocast for training steps where the hardware has bf16; "fp32"


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def train_precision(device: str, cfg: TrainConfig) -> str:
    """"bf16" on CUDA and on CPUs with native bf16 (AVX512-BF16 / AMX), where autocast about halves
    a MiniLM training step (scripts/bench_evaluator.py); else "fp32"."""
    import torch

    if cfg.precision == "fp32" or device not in ("cuda", "cpu"):
        return "fp32"
    if device == "cuda":
        return "bf16"
    try:
        return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else "fp32"
    except (AttributeError, RuntimeError):
        return "fp32"


def autocast(device: str, precision: str):
    """The context for a training step's forward pass. Evaluation stays fp32, like the served model,
    so the held-out numbers are the served model's."""
    import contextlib

    import torch

    return torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()


def base_model_path(cfg: TrainConfig) -> str:
    if cfg.base_model:
        return cfg.base_model
    from ..judge.embeddings import default_encoder_path

    return default_encoder_path()


def load_base(cfg: TrainConfig, num_labels: int):
    """Seeded tokenizer + sequence-classification model on the chosen device: (tok, model, device, path)."""
    import torch

    resolve_transformers()
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    torch.manual_seed(cfg.seed)
    device = pick_device(cfg.device)
    path = base_model_path(cfg)
    tok = AutoTokenizer.from_pretrained(path)
    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its load report names the new classification head: expected
    try:
        model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=num_labels)
    finally:
        hf_logging.set_verbosity(level)
    if cfg.layers:
        keep_layers(model, cfg.layers)
    model.to(device)
    return tok, model, device, path


def keep_layers(model, n: int) -> list[int]:
    """Shrink the encoder to ``n`` of its layers, evenly spaced from the first (6 -> 3 keeps 0, 2, 4,
    as DistilBERT was initialised). On HaluEval dialogue that kept 0.732 accuracy where the first
    three layers kept 0.646 and all six 0.764 (same rows, 2 epochs). Returns the kept indices."""
    import torch

    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    if not 0 < n <= len(layers):
        raise ValueError(f"cannot keep {n} layers: the base model has {len(layers)}")
    keep = [i * len(layers) // n for i in range(n)]
    base.encoder.layer = torch.nn.ModuleList([layers[i] for i in keep])
    model.config.num_hidden_layers = n
    return keep


def split_validation(train: pd.DataFrame, test: pd.DataFrame, cfg: TrainConfig,
                     rng: np.random.Generator) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows to fit, validation rows): ``val_fraction`` of ``train``, or the test rows for tiny sets."""
    order = rng.permutation(len(train))
    n_val = max(1, int(len(train) * cfg.val_fraction)) if len(train) >= 20 else 0
    if not n_val:
        return train, test
    return train.iloc[order[n_val:]], train.iloc[order[:n_val]]


def fit_loop(model, fit: pd.DataFrame, batch_size: int, cfg: TrainConfig, rng: np.random.Generator,
             batch_loss: Callable[[pd.DataFrame], Any], validate: Callable[[], tuple[float, float | None]] | None,
             progress: Callable[[dict], None] | None, t0: float, *, early_stop: bool = True,
             phase: str | None = None, tags: dict | None = None) -> list[dict]:
    """The loop both evaluators share: AdamW with a short warmup then a constant rate (a decaying one
    halved the little learning a few hundred labels allow), clipped steps over shuffled batches,
    ``validate() -> (loss, accuracy)`` after each epoch, and with ``early_stop`` early stopping on that
    loss with the best weights restored. (Batches are not grouped by length: where length tracks the
    label, as in HaluEval QA, that makes batches of one class.)
    ``batch_loss(rows)`` is the weighted mean loss of a batch. Returns the per-epoch history."""
    import torch
    from transformers import get_constant_schedule_with_warmup

    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * math.ceil(len(fit) / batch_size)
    sched = get_constant_schedule_with_warmup(opt, int(cfg.warmup * steps))
    history, best_loss, best_state, bad = [], float("inf"), None, 0
    model.train()
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(fit))
        batches = [order[i:i + batch_size] for i in range(0, len(fit), batch_size)]
        total = 0.0
        for idx in batches:
            part = fit.iloc[idx]
            loss = batch_loss(part)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            total += float(loss.detach()) * len(part)
        model.eval()
        v_loss, v_acc = validate() if validate is not None else (None, None)
        model.train()
        row = {"epoch": epoch + 1, "train_loss": total / max(len(fit), 1), "val_loss": v_loss, "val_accuracy": v_acc,
               "seconds": round(time.time() - t0, 1), **({"phase": phase} if phase else {}), **(tags or {})}
        history.append(row)
        if progress:
            progress(row)
        if not early_stop or v_loss is None:
            continue
        if v_loss < best_loss - 1e-4:
            best_loss, bad = v_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            bad += 1
            if bad > cfg.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return history


def train_evaluator(train: pd.DataFrame, test: pd.DataFrame, out_dir: Path, cfg: TrainConfig | None = None,
                    progress: Callable[[dict], None] | None = None, fresh: pd.DataFrame | None = None) -> dict:
    """Train on ``train`` for ``cfg.epochs``; measure and calibrate on ``test`` (the held-out human
    labels, also drawn per epoch in the curve, never used to choose anything but the temperature);
    then with ``cfg.refit`` train on every row (by default one more pass of the measured model, or
    from the base with ``refit_from="base"``) and save that one. With ``cfg.soup`` > 1 each of those
    models is the average of the weights of that many fine-tunes that differ only in their seed (see
    `soup`). Saves model, tokenizer, calibration.json and metrics.json into ``out_dir``; returns the
    metrics, which describe the model trained without the held-out rows (``test_scores``: its
    calibrated scores), plus ``served_test_scores``: the served model's calibrated scores on the same
    inputs, and with ``fresh`` inputs (text_a, text_b: tasks no row came from) ``fresh_scores``: both
    models' scores on them (for `carry_band`).
    ``train``/``test`` have text_a, text_b, label, weight columns."""
    cfg = cfg or TrainConfig()
    t0 = time.time()
    y_test = test.label.to_numpy()
    seeds = [cfg.seed + i for i in range(soup_size(cfg, len(train)))]
    fits = [_fit_binary(train, replace(cfg, seed=s), progress, t0, test if s == cfg.seed else None,
                        member=(i, len(seeds))) for i, s in enumerate(seeds)]
    tok, device, path, precision = fits[0].tok, fits[0].device, fits[0].path, fits[0].precision
    history = [row for f in fits for row in f.history]
    measured = soup([f.model for f in fits])
    logits_of = _logits_fn(measured, tok, device, cfg)
    t_logits = logits_of(test)
    temperature = fit_temperature(t_logits, y_test)
    p_test = softmax_pos(t_logits, temperature)
    metrics = binary_metrics(p_test, y_test)
    metrics["test_scores"] = [round(float(p), 4) for p in p_test]
    if len(seeds) > 1:  # what each seed alone would have scored: the soup's reason to exist, on the record
        metrics["soup"] = {"seeds": seeds, "accuracy_by_seed": [
            binary_metrics(softmax_pos(f.logits_of(test), temperature), y_test)["accuracy"] for f in fits]}
    served = train
    fresh = fresh if fresh is not None and len(fresh) and cfg.refit and len(test) else None
    if fresh is not None:
        metrics["fresh_scores"] = {"measured": _rounded(softmax_pos(logits_of(fresh), temperature))}
    if cfg.refit and len(test):
        served = pd.concat([train, test], ignore_index=True)
        refits = []
        for i, (s, f) in enumerate(zip(seeds, fits)):
            if cfg.refit_from == "base":
                start, refit_cfg = None, replace(cfg, seed=s)
            else:  # the measured model has learned the task; a short pass over every label adds the held-out rows
                start = (tok, f.model)
                refit_cfg = replace(cfg, seed=s, epochs=cfg.refit_epochs, min_steps=cfg.min_steps // 4)
            refits.append(_fit_binary(served, refit_cfg, progress, t0, None, phase="refit on every label",
                                      start=start, member=(i, len(seeds))))
        history += [row for f in refits for row in f.history]
        del fits
        measured = soup([f.model for f in refits])
        # the served model's scores on the held-out inputs: where its band must sit to answer the same share
        served_logits = _logits_fn(measured, tok, device, cfg)
        metrics["served_test_scores"] = _rounded(softmax_pos(served_logits(test), temperature))
        if fresh is not None:
            metrics["fresh_scores"]["served"] = _rounded(softmax_pos(served_logits(fresh), temperature))
    metrics["n_served_train"] = int(len(served))
    return save_trained(out_dir, measured, tok, metrics, train=train, test=test, temperature=temperature,
                        device=device, t0=t0, history=history, cfg=cfg, base_model=path, precision=precision)


def soup_size(cfg: TrainConfig, n_rows: int) -> int:
    """How many seeds to average for ``n_rows`` training rows: ``cfg.soup`` from ``cfg.soup_min_rows``
    up, else 1. Below about 200 labels a second seed would put the fit over 1.5x a plain fine-tune's
    time (there the evaluator's minimum step count already makes it 1.05-1.7x), and it is seconds
    either way."""
    return max(1, cfg.soup) if n_rows >= cfg.soup_min_rows else 1


def soup(models: list):
    """One model whose weights are the mean of ``models``' (fine-tunes of one base that differ in their
    seed: head initialisation and batch order). One seed moved accuracy by up to 8 points at 1,000
    labels (0.848 / 0.925 / 0.920 on unseen HaluEval summarization rows); the mean of two of them's
    weights scored 0.900-0.935 (0.918 on average, about what averaging their predictions gave) and is
    served as one model, at one model's cost. Returns a new model (``models`` are left as they were);
    one model is returned as is."""
    import copy

    import torch

    if len(models) == 1:
        return models[0]
    states = [m.state_dict() for m in models]
    with torch.no_grad():
        mean = {k: (torch.stack([s[k].float() for s in states]).mean(0).to(v.dtype) if v.is_floating_point() else v)
                for k, v in states[0].items()}
    out = copy.deepcopy(models[0])
    out.load_state_dict(mean)
    return out.eval()


def _rounded(p: np.ndarray) -> list[float]:
    return [round(float(x), 6) for x in p]


class Fit(NamedTuple):
    """One fine-tune's outcome (``_fit_binary``): the model and how to score rows with it."""

    model: Any
    tok: Any
    device: str
    path: str
    precision: str
    history: list[dict]
    logits_of: Callable[[pd.DataFrame], np.ndarray]


def _fit_binary(rows: pd.DataFrame, cfg: TrainConfig, progress: Callable[[dict], None] | None, t0: float,
                watch: pd.DataFrame | None, phase: str | None = None, start: tuple | None = None,
                member: tuple[int, int] = (0, 1)) -> Fit:
    """A fresh base model (or ``start``'s (tokenizer, model), trained further) fine-tuned on ``rows`` for
    ``cfg.epochs`` (``watch``: rows whose loss and accuracy are recorded per epoch, for the curve only;
    ``member``: (index, count) of this seed in a soup, recorded in each epoch's row).
    Returns a `Fit`."""
    import torch

    if start is None:
        tok, model, device, path = load_base(cfg, 2)
    else:
        (tok, model), device, path = start, pick_device(cfg.device), base_model_path(cfg)
    rng = np.random.default_rng(cfg.seed)
    # batches of ``batch_size``, as the plain recipe (the smaller batches small sets used to get cost more steps)
    batch_size = max(4, min(cfg.batch_size, len(rows) // cfg.steps_per_epoch)) if cfg.steps_per_epoch else cfg.batch_size
    counts = np.bincount(rows.label.to_numpy(), minlength=2).astype(float)
    class_w = (counts.sum() / (2 * np.maximum(counts, 1))) if cfg.class_weighting else np.ones(2)
    class_w_t = torch.tensor(class_w, dtype=torch.float32, device=device)
    precision = train_precision(device, cfg)

    logits_of = _logits_fn(model, tok, device, cfg)

    def batch_loss(part: pd.DataFrame):
        y = torch.tensor(part.label.to_numpy(), device=device)
        w = torch.tensor(part.weight.to_numpy(), dtype=torch.float32, device=device)
        with autocast(device, precision):
            logits = model(**_encoded(tok, part, cfg, device)).logits.float()
        loss_vec = torch.nn.functional.cross_entropy(logits, y, weight=class_w_t, reduction="none")
        return (loss_vec * w).sum() / w.sum()

    def validate() -> tuple[float, float | None]:
        assert watch is not None  # validate() is only called with rows to watch
        v_logits = logits_of(watch)
        v_acc = float((v_logits.argmax(1) == watch.label.to_numpy()).mean()) if len(watch) else None
        return _nll(v_logits, watch.label.to_numpy(), 1.0), v_acc

    # the epoch count from the label count: 32 rows in batches of 16 would otherwise get 8 steps and learn nothing
    epochs = max(cfg.epochs, math.ceil(cfg.min_steps / max(1, math.ceil(len(rows) / batch_size))))
    cfg = replace(cfg, epochs=epochs)
    history = fit_loop(model, rows, batch_size, cfg, rng, batch_loss,
                       validate if watch is not None and len(watch) else None, progress, t0,
                       early_stop=False, phase=phase,
                       tags={"seed": cfg.seed, "member": f"{member[0] + 1} of {member[1]}"} if member[1] > 1 else None)
    return Fit(model, tok, device, path, precision, history, logits_of)


def _encoded(tok, part: pd.DataFrame, cfg: TrainConfig, device: str):
    """A batch of text pairs as model inputs, padded to its longest row."""
    return tok(list(part.text_a), list(part.text_b), truncation="longest_first", max_length=cfg.max_length,
               padding=True, return_tensors="pt").to(device)


def _logits_fn(model, tok, device: str, cfg: TrainConfig) -> Callable[[pd.DataFrame], np.ndarray]:
    """``logits_of(rows)``: the model's fp32 logits (as served) for any number of rows, 64 at a time."""
    import torch

    def logits_of(df: pd.DataFrame) -> np.ndarray:
        with torch.inference_mode():
            out = [model(**_encoded(tok, df.iloc[i:i + 64], cfg, device)).logits.float().cpu().numpy()
                   for i in range(0, len(df), 64)]
        return np.concatenate(out) if out else np.zeros((0, 2))
    return logits_of


def save_trained(out_dir: Path, model, tok, metrics: dict, *, train: pd.DataFrame, test: pd.DataFrame,
                 temperature: float, device: str, t0: float, history: list[dict], cfg: TrainConfig,
                 base_model: str, precision: str) -> dict:
    """Complete the held-out ``metrics`` with what the run used, and save model, tokenizer,
    calibration.json and metrics.json into ``out_dir``; returns the metrics."""
    sources = train.source if "source" in train else None
    metrics.update(n_train=int(len(train)), n_test=int(len(test)),
                   n_human_train=int((sources == "human").sum()) if sources is not None else None,
                   n_judge_train=int((sources == "judge").sum()) if sources is not None else None,
                   temperature=temperature, device=device, precision=precision,
                   seconds=round(time.time() - t0, 2), history=history,
                   config=asdict(cfg), base_model=base_model)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to("cpu").save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    (out_dir / "calibration.json").write_text(json.dumps({"temperature": temperature}))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics


def softmax_pos(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e[:, 1] / e.sum(axis=1)


def _nll(logits: np.ndarray, y: np.ndarray, t: float) -> float:
    if len(y) == 0:
        return float("inf")
    p = np.clip(softmax_pos(logits, t), 1e-7, 1 - 1e-7)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature minimising validation NLL (a 1-D search over a log grid, then refined)."""
    if len(y) < 5:
        return 1.0
    grid = np.exp(np.linspace(np.log(0.25), np.log(8), 60))
    best = min(grid, key=lambda t: _nll(logits, y, t))
    fine = np.linspace(best * 0.9, best * 1.1, 21)
    return float(min(fine, key=lambda t: _nll(logits, y, t)))


def binary_metrics(p: np.ndarray, y: np.ndarray) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    from ..quality.metrics import calibration

    if len(y) == 0:
        return {"accuracy": None, "f1": None, "auc": None, "ece": None}
    pred = (p >= 0.5).astype(int)
    conf = np.where(pred == 1, p, 1 - p)
    ece, _ = calibration(conf, (pred == y).astype(float))
    return {"accuracy": float(accuracy_score(y, pred)), "f1": float(f1_score(y, pred, zero_division=0)),
            "auc": float(roc_auc_score(y, p)) if len(set(y)) == 2 else None, "ece": ece}
