"""What a judge call costs: the price table and the estimate from token usage."""

from __future__ import annotations

from judging.base import Usage

# USD per million tokens: (input, output). Cache reads cost 0.1x input, cache writes 1.25x.
DEFAULT_PRICES: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-opus-4-1": (15.0, 75.0),
}


def estimate_cost(model: str, usage: Usage, prices: dict[str, tuple[float, float]] | None = None) -> float:
    """Estimated USD of ``usage`` under the price table (0 for models not in it)."""
    table = DEFAULT_PRICES if prices is None else prices
    if model not in table:
        return 0.0
    p_in, p_out = table[model]
    return (
        usage.input_tokens * p_in
        + usage.output_tokens * p_out
        + usage.cache_read_tokens * p_in * 0.1
        + usage.cache_write_tokens * p_in * 1.25
    ) / 1e6
