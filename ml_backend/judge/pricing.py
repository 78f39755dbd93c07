"""Token prices per model (USD per 1M tokens, input/output) for the cost ledger.

Built-in figures are list prices at the time of writing and only a starting point: set JUDGE_PRICES
(JSON, e.g. '{"my-model": [0.5, 1.5]}') for your models and contracts. Unknown models cost 0 and the
ledger still counts their tokens.
"""
from __future__ import annotations

import json
from typing import Mapping

DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4o": (2.50, 10.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1": (2.00, 8.00),
}


def prices(env: Mapping[str, str]) -> dict[str, tuple[float, float]]:
    """The price table: the built-in list prices, overridden by JUDGE_PRICES from ``env``."""
    table = dict(DEFAULT_PRICES)
    raw = env.get("JUDGE_PRICES")
    if raw:
        try:
            extra = json.loads(raw)
            table.update({k: (float(v[0]), float(v[1])) for k, v in extra.items()})
        except (ValueError, TypeError, IndexError, KeyError):
            raise ValueError('JUDGE_PRICES must be JSON like {"model": [input_per_1M, output_per_1M]}') from None
    return table


def cost(model: str, tokens_in: int, tokens_out: int, table: Mapping[str, tuple[float, float]]) -> float:
    p_in, p_out = table.get(model, (0.0, 0.0))
    return (tokens_in * p_in + tokens_out * p_out) / 1_000_000
