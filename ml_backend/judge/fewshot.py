"""Pick few-shot examples for a task from the project's human labels.

The k most similar examples (MiniLM cosine similarity of the rendered criterion), balanced across
labels (round-robin over labels, best match first, so one label cannot crowd out the others), with
humans' corrections of the judge ranked ahead of confirmations (they teach the judge what it gets wrong).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Callable, Sequence

import numpy as np

from .types import Example

CORRECTION_BONUS = 0.15  # similarity added to an example that corrected the judge


class FewShotSelector:
    def __init__(self, examples: Sequence[Example], texts: Sequence[str], k: int, *,
                 label_of: Callable[[Example], str], embed: Callable[[Sequence[str]], np.ndarray]) -> None:
        self.examples = list(examples)
        self.k = k
        self.labels = [label_of(e) for e in self.examples]
        self.texts = list(texts)
        self._embed = embed
        self._vectors = embed(list(texts)) if len(self.examples) > k else None

    def select(self, text: str) -> list[Example]:
        """Never the task itself: an example with the same rendered text would hand it its label."""
        keep = [i for i, t in enumerate(self.texts) if t != text]
        if self._vectors is None:
            return [self.examples[i] for i in keep[: self.k]]
        sims = self._vectors @ self._embed([text])[0]
        sims[[i for i in range(len(self.texts)) if i not in set(keep)]] = -np.inf
        sims = sims + CORRECTION_BONUS * np.array([1.0 if e.correction else 0.0 for e in self.examples])
        by_label: dict[str, list[int]] = defaultdict(list)
        for i in np.argsort(-sims):
            if np.isfinite(sims[i]):
                by_label[self.labels[i]].append(int(i))
        order = sorted((lab for lab in by_label if by_label[lab]), key=lambda lab: -sims[by_label[lab][0]])
        chosen: list[int] = []
        while len(chosen) < self.k and any(by_label.values()):
            for lab in order:
                if by_label[lab] and len(chosen) < self.k:
                    chosen.append(by_label[lab].pop(0))
        # most similar last: closest to the task in the conversation
        chosen.sort(key=lambda i: sims[i])
        return [self.examples[i] for i in chosen]
