"""Oracle feedback: the gold labels as judge scores (the ceiling), optionally made noisy.

Two forms: array functions for the evaluation engine (:func:`oracle_scores`,
:func:`noisy_oracle_scores`) and a :class:`OracleJudge` that speaks the judge protocol over
texts, so the same pipeline code runs with the oracle or with an LLM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from refine_core.judges.base import JudgeIdentity, Judgment, JudgeResponse, Usage


def oracle_scores(labels: np.ndarray, feedback_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gold relevance (1 relevant, 0 not) of each feedback document.

    Args:
        labels: ``(n, N)`` relevance labels (graded allowed; ``> 0`` counts as relevant).
        feedback_idx: ``(n, K)`` document indices, ``-1`` for padding.

    Returns:
        ``(scores (n, K) float32, mask (n, K) bool)``; padding is masked out.
    """
    idx = np.asarray(feedback_idx)
    mask = idx >= 0
    scores = (np.take_along_axis(np.asarray(labels), np.maximum(idx, 0), axis=1) > 0).astype(np.float32)
    return np.where(mask, scores, 0.0).astype(np.float32), mask


def noisy_oracle_scores(
    labels: np.ndarray,
    feedback_idx: np.ndarray,
    *,
    flip_rate: float,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels with each judgment flipped independently with probability ``flip_rate``.

    A judge of accuracy ``a`` is ``flip_rate = 1 - a``. Seeded: the same call gives the
    same flips.
    """
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate!r}")
    scores, mask = oracle_scores(labels, feedback_idx)
    flips = np.random.default_rng(seed).random(scores.shape) < flip_rate
    return np.where(mask & flips, 1.0 - scores, scores).astype(np.float32), mask


class OracleJudge:
    """Gold labels as a judge: 1.0 for a relevant (query, document) pair, else 0.0.

    With ``flip_rate > 0`` (``noisy-oracle``) each verdict is flipped with that probability,
    decided by a hash of (seed, query, document) so the same pair always gets the same
    verdict, whichever order or batch it comes in.

    Args:
        relevant: query text -> set of relevant document texts.
        flip_rate: probability of a wrong verdict (judge accuracy = 1 - flip_rate).
        seed: seed of the flips.
    """

    documents_per_request: int | None = None

    def __init__(self, relevant: Mapping[str, set[str]], *, flip_rate: float = 0.0, seed: int = 0) -> None:
        if not 0.0 <= flip_rate <= 1.0:
            raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate!r}")
        self.relevant = relevant
        self.flip_rate = flip_rate
        self.seed = seed
        kind = "oracle" if flip_rate == 0 else "noisy-oracle"
        params = {} if flip_rate == 0 else {"flip_rate": flip_rate, "seed": seed}
        self.identity = JudgeIdentity.of(kind, "gold-labels", "gold", "v1", **params)

    def _flipped(self, query: str, document: str) -> bool:
        if self.flip_rate == 0:
            return False
        digest = hashlib.sha256(f"{self.seed}\x00{query}\x00{document}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.flip_rate

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        gold = self.relevant.get(query, set())
        verdicts = []
        for document in documents:
            label = document in gold
            if self._flipped(query, document):
                label = not label
            verdicts.append(Judgment(score=1.0 if label else 0.0, raw="gold"))
        return JudgeResponse(verdicts, Usage())
