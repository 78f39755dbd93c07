"""transformers' lazily resolved classes, resolved once per process and thread-safely.

transformers resolves ``from transformers import X`` lazily and not thread-safely: two threads doing
it at once (the model preload and a labeling job, say) can fail with "cannot import name". Whatever is
about to use transformers calls ``resolve_transformers()`` first (the judge's embeddings and local
model, the evaluator's scorer and training); the server also calls it in a background thread at start, so
/health answers at once instead of after the import (about 4 s here). Nothing else waits for it:
Label Studio gives /setup 3 s when a backend is connected.
"""
from __future__ import annotations

import threading

_lock = threading.Lock()
_done = False


def resolve_transformers() -> None:
    """Import the transformers classes LabelJudge uses, once; other callers wait for the first."""
    global _done
    with _lock:
        if not _done:
            from transformers import AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer  # noqa: F401

            _done = True
