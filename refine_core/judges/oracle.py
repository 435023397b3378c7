"""Oracle feedback: the gold labels as judge scores (the ceiling), optionally made noisy.

Two forms: array functions for the evaluation engine (:func:`oracle_scores`,
:func:`noisy_oracle_scores`) and a :class:`OracleJudge` that speaks the judge protocol over
texts, so the same pipeline code runs with the oracle or with an LLM.

There is one noisy oracle: a verdict is flipped when :func:`flip_draws` of (seed, query text,
document text) falls below the flip rate. The draw depends on nothing else (not the round, the
position in the feedback list, the batch or the command), so ``refine demo``, ``refine run``,
the corpus commands and ``benchmarks/quality.py`` measure the same judge under one name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np

from refine_core.judges.base import JudgeIdentity, JudgeResponse, Judgment, Usage
from refine_core.qrels import Qrels


def oracle_scores(labels: np.ndarray | Qrels, feedback_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gold relevance (1 relevant, 0 not) of each feedback document.

    Args:
        labels: ``(n, N)`` relevance labels or sparse :class:`Qrels` (graded allowed; ``> 0`` counts as relevant).
        feedback_idx: ``(n, K)`` document indices, ``-1`` for padding.

    Returns:
        ``(scores (n, K) float32, mask (n, K) bool)``; padding is masked out.
    """
    idx = np.asarray(feedback_idx)
    mask = idx >= 0
    if isinstance(labels, Qrels):
        scores = (labels.gains_at(np.where(mask, idx, -1)) > 0).astype(np.float32)
    else:
        scores = (np.take_along_axis(np.asarray(labels), np.maximum(idx, 0), axis=1) > 0).astype(np.float32)
    return np.where(mask, scores, 0.0).astype(np.float32), mask


def flip_draw(seed: int, query: str, document: str) -> float:
    """The noisy oracle's uniform draw in [0, 1) for one (query, document) pair under ``seed``."""
    digest = hashlib.sha256(f"{seed}\x00{query}\x00{document}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def flip_draws(
    seed: int, query_texts: Sequence[str], document_texts: Sequence[str], feedback_idx: np.ndarray
) -> np.ndarray:
    """:func:`flip_draw` for every feedback entry: ``(n, K)``, row i for ``query_texts[i]``,
    entry (i, k) for ``document_texts[feedback_idx[i, k]]`` (padding ``-1`` draws 1.0: never flipped)."""
    idx = np.asarray(feedback_idx)
    out = np.ones(idx.shape, dtype=np.float64)
    for i, row in enumerate(idx):
        for k, j in enumerate(row):
            if j >= 0:
                out[i, k] = flip_draw(seed, query_texts[i], document_texts[j])
    return out


def noisy_oracle_scores(
    labels: np.ndarray | Qrels,
    feedback_idx: np.ndarray,
    *,
    flip_rate: float,
    seed: int = 0,
    query_texts: Sequence[str] | None = None,
    document_texts: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels with each judgment flipped with probability ``flip_rate``.

    A judge of accuracy ``a`` is ``flip_rate = 1 - a``. The flip of a pair is a function of
    (seed, query text, document text) alone (:func:`flip_draw`), the same as
    :class:`OracleJudge`'s: the same pair gets the same verdict in every round and command.

    Args:
        labels: ``(n, N)`` relevance labels of the ``n`` queries judged here.
        feedback_idx: ``(n, K)`` document indices, ``-1`` for padding.
        flip_rate: probability of a wrong verdict.
        seed: the noisy oracle's seed.
        query_texts: the ``n`` queries' texts (required when ``flip_rate > 0``).
        document_texts: every document's text, indexed like ``labels``' columns (required
            when ``flip_rate > 0``).
    """
    if not 0.0 <= flip_rate <= 1.0:
        raise ValueError(f"flip_rate must be in [0, 1], got {flip_rate!r}")
    scores, mask = oracle_scores(labels, feedback_idx)
    if flip_rate == 0:
        return scores, mask
    if query_texts is None or document_texts is None:
        raise ValueError(
            "noisy_oracle_scores needs query_texts and document_texts: a verdict is a function of "
            "(seed, query, document)"
        )
    if len(query_texts) != scores.shape[0]:
        raise ValueError(f"query_texts has {len(query_texts)} texts for {scores.shape[0]} rows of labels")
    flips = flip_draws(seed, query_texts, document_texts, feedback_idx) < flip_rate
    return np.where(mask & flips, 1.0 - scores, scores).astype(np.float32), mask


class OracleJudge:
    """Gold labels as a judge: 1.0 for a relevant (query, document) pair, else 0.0.

    With ``flip_rate > 0`` (``noisy-oracle``) each verdict is flipped with that probability,
    decided by :func:`flip_draw` of (seed, query, document), so the same pair always gets the
    same verdict, whichever round, order or batch it comes in.

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
        return self.flip_rate > 0 and flip_draw(self.seed, query, document) < self.flip_rate

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        gold = self.relevant.get(query, set())
        verdicts = []
        for document in documents:
            label = document in gold
            if self._flipped(query, document):
                label = not label
            verdicts.append(Judgment(score=1.0 if label else 0.0, raw="gold"))
        return JudgeResponse(verdicts, Usage())
