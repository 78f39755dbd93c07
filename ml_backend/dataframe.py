"""The Python API: label a pandas DataFrame with a prompt or a built-in metric, outside Label Studio.

    from ml_backend.dataframe import label_dataframe
    out = label_dataframe(df, metric="faithfulness", labels=["Pass", "Fail"],
                          provider="openai", model="gpt-4o-mini")
    out[["judge_label", "judge_score", "judge_rationale"]]

The same engine as `labeljudge label` (concurrency, retries, rate limits, the persistent cache).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import pandas as pd

from .evaluator.loading import load_evaluator
from .evaluator.registry import Registry
from .judge.runner import Outcome, RateLimiter, run_judge
from .judge.types import Question
from .judges import build_judge, judge_spec, make_provider
from .settings import ProjectConfig, Settings
from .store import Store


def label_dataframe(df: pd.DataFrame, *, prompt: str | None = None, metric: str | None = None,
                    labels: Sequence[str] = ("Pass", "Fail"), provider: str | None = None,
                    model: str | None = None, temperature: float | None = None, rationale: bool = True,
                    concurrency: int = 8, rpm: float | None = None, tpm: float | None = None,
                    cache: Store | str | Path | None = None, prefix: str = "judge_",
                    base_url: str | None = None, api_key: str | None = None,
                    settings: Settings | None = None) -> pd.DataFrame:
    """A copy of ``df`` with ``judge_label``, ``judge_score``, ``judge_score_method`` (how the score was
    read: renormalized over the labels, or the answer's own token probability), ``judge_rationale``
    and ``judge_error`` columns. Each row's columns are the template's fields ({input}, {output}, {context}, ...).
    ``base_url`` / ``api_key``: the OpenAI-compatible server and its key, as the openai client takes them
    (default: OPENAI_BASE_URL / OPENAI_API_KEY); giving ``base_url`` implies ``provider="openai"``."""
    settings = settings or Settings.from_env()
    if base_url is not None or api_key is not None:
        from dataclasses import replace

        settings = replace(settings, openai_base_url=base_url or settings.openai_base_url,
                           openai_api_key=api_key or settings.openai_api_key)
        if base_url is not None and provider is None:
            provider = "openai"
    params = {k: v for k, v in {"provider": provider, "model": model, "prompt": prompt, "metric": metric,
                                "temperature": temperature}.items() if v is not None}
    config = ProjectConfig.resolve(settings, params)
    spec = judge_spec(config, (Question("label", "single", tuple(labels)),), rationale=rationale)
    judge = build_judge(spec, make_provider(config, settings), list(df.columns), settings)
    store = cache if isinstance(cache, Store) or cache is None else Store(cache)
    out = df.copy()
    cols: dict[str, list[Any]] = {name: [None] * len(df) for name in ("label", "score", "score_method", "rationale", "error")}

    def on_outcome(o: Outcome) -> None:
        answer = o.verdict.answers.get("label") if o.verdict else None
        if answer is not None and answer.value is not None:
            cols["label"][o.key], cols["score"][o.key] = answer.value, answer.confidence
            cols["score_method"][o.key] = answer.confidence_method
            cols["rationale"][o.key] = o.verdict.rationale if o.verdict else None
        else:
            cols["error"][o.key] = o.error or "no usable answer"

    rows = ((i, {k: v for k, v in rec.items() if not _missing(v)}) for i, rec in enumerate(df.to_dict("records")))
    run_judge(judge, rows, on_outcome, concurrency=concurrency, cache=store, limiter=RateLimiter(rpm, tpm))
    for name, values in cols.items():
        out[prefix + name] = values
    out.attrs["judge_version"] = judge.version
    return out


def _missing(value) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def score_dataframe(df: pd.DataFrame, *, model: str | Path, project: int | str | None = None,
                    column: str = "score", batch_size: int = 64, model_dir: str | Path | None = None) -> pd.DataFrame:
    """A copy of ``df`` with the evaluator's 0..1 score per row (input/output/context/... columns; for a
    pairwise evaluator, response_a/response_b and the conversation, scored as P(A is better)).
    ``model`` is a model directory, or a version (``evaluator-0003``) of ``project``'s registry."""
    path = Path(model)
    if not path.is_dir():
        if project is None:
            raise FileNotFoundError(f"{model} is not a model directory; give project= to look it up by version")
        root = Path(model_dir) / "evaluators" if model_dir is not None else Settings.from_env().evaluators_dir
        path = Registry(root, str(project)).path(str(model))
    evaluator = load_evaluator(path)
    evaluator.check_columns(list(df.columns))
    scores = evaluator.score([{k: v for k, v in rec.items() if not _missing(v)} for rec in df.to_dict("records")],
                             batch_size)
    out = df.copy()
    out[column] = scores
    return out
