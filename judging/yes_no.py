"""The paper's score: P(yes) / (P(yes) + P(no)) from the first generated token.

Used by the OpenAI-compatible judge (top log-probabilities from the server) and the local
causal-LM judge (next-token logits). Token variants are matched robustly: a token counts as
"yes" when, stripped of whitespace, punctuation and the tokenizer's space markers
(``Ġ``, ``▁``) and lower-cased, it is exactly ``yes`` (so " Yes", "YES," and "yes." count,
"yesterday" does not).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable

_STRIP = re.compile(r"^[\sĠ▁\"'`*_.,:;!?()\[\]{}<>-]+|[\sĠ▁\"'`*_.,:;!?()\[\]{}<>-]+$")


def normalise_token(token: str) -> str:
    return _STRIP.sub("", token).lower()


def is_yes(token: str) -> bool:
    return normalise_token(token) == "yes"


def is_no(token: str) -> bool:
    return normalise_token(token) == "no"


def yes_probability(top_logprobs: Iterable[tuple[str, float]]) -> float | None:
    """``P(yes) / (P(yes) + P(no))`` from (token, logprob) pairs; None when neither occurs."""
    p_yes = p_no = 0.0
    for token, logprob in top_logprobs:
        if logprob is None or not math.isfinite(logprob):
            continue
        if is_yes(token):
            p_yes += math.exp(logprob)
        elif is_no(token):
            p_no += math.exp(logprob)
    total = p_yes + p_no
    return p_yes / total if total > 0 else None
