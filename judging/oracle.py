"""Oracle feedback: the gold labels as judge scores (the ceiling), optionally made noisy.

Two forms: array functions for the evaluation engine (:func:`oracle_scores`,
:func:`noisy_oracle_scores`) and a :class:`OracleJudge` that speaks the judge protocol over
texts, so the same pipeline code runs with the oracle or with an LLM.

There is one noisy oracle: a verdict is flipped when :func:`flip_draws` of (seed, query text,
document text) falls below the flip rate. It can be asymmetric, as LLM judges tend to be: a
*false-positive rate* for non-relevant pairs (said "relevant" wrongly) and a *false-negative rate*
for relevant ones (missed), each defaulting to the flip rate (:func:`error_rates`). The draw depends on nothing else (not the round, the
position in the feedback list, the batch or the command), so ``refine demo``, ``refine run``,
the corpus commands and ``benchmarks/quality.py`` measure the same judge under one name.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from judging.base import JudgeConfigError, JudgeIdentity, JudgeResponse, Judgment, Usage
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


def error_rates(
    flip_rate: float, false_positive_rate: float | None = None, false_negative_rate: float | None = None
) -> tuple[float, float]:
    """``(false-positive rate, false-negative rate)`` of a noisy oracle: each one given, or the flip
    rate (a symmetric judge). A ``ValueError`` names a rate outside [0, 1]."""
    rates = (
        flip_rate if false_positive_rate is None else false_positive_rate,
        flip_rate if false_negative_rate is None else false_negative_rate,
    )
    for name, value in zip(("flip_rate", "false_positive_rate", "false_negative_rate"), (flip_rate, *rates)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return rates


def asymmetric_rates(accuracy: float, ratio: float = 3.0) -> tuple[float, float]:
    """The asymmetric noisy oracle of *balanced* accuracy ``accuracy`` (the mean of its accuracy on
    relevant and on non-relevant pairs) that says "relevant" wrongly ``ratio`` times as often as it
    misses a relevant document: ``(false-positive rate, false-negative rate)``. At accuracy 0.8 and
    ratio 3: (0.3, 0.1); the benchmarks' asymmetric judge."""
    if not 0.5 <= accuracy <= 1.0 or ratio < 1:
        raise ValueError(f"accuracy must be in [0.5, 1] and ratio >= 1, got {accuracy!r}, {ratio!r}")
    error = 2.0 * (1.0 - accuracy)
    return error * ratio / (1 + ratio), error / (1 + ratio)


def noisy_oracle_scores(
    labels: np.ndarray | Qrels,
    feedback_idx: np.ndarray,
    *,
    flip_rate: float,
    seed: int = 0,
    query_texts: Sequence[str] | None = None,
    document_texts: Sequence[str] | None = None,
    false_positive_rate: float | None = None,
    false_negative_rate: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gold labels with each judgment flipped with probability ``flip_rate`` (a non-relevant pair
    with ``false_positive_rate`` and a relevant one with ``false_negative_rate`` where given).

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
    fpr, fnr = error_rates(flip_rate, false_positive_rate, false_negative_rate)
    scores, mask = oracle_scores(labels, feedback_idx)
    if fpr == 0 and fnr == 0:
        return scores, mask
    if query_texts is None or document_texts is None:
        raise ValueError(
            "noisy_oracle_scores needs query_texts and document_texts: a verdict is a function of "
            "(seed, query, document)"
        )
    if len(query_texts) != scores.shape[0]:
        raise ValueError(f"query_texts has {len(query_texts)} texts for {scores.shape[0]} rows of labels")
    flips = flip_draws(seed, query_texts, document_texts, feedback_idx) < np.where(scores > 0, fnr, fpr)
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
        false_positive_rate, false_negative_rate: an asymmetric judge's rates of a wrong verdict on
            a non-relevant and on a relevant pair (each defaults to ``flip_rate``).
    """

    documents_per_request: int | None = None

    def __init__(
        self,
        relevant: Mapping[str, set[str]],
        *,
        flip_rate: float = 0.0,
        seed: int = 0,
        false_positive_rate: float | None = None,
        false_negative_rate: float | None = None,
    ) -> None:
        self.rates = error_rates(flip_rate, false_positive_rate, false_negative_rate)
        self.relevant = relevant
        self.flip_rate = flip_rate
        self.seed = seed
        noisy = self.rates != (0.0, 0.0)
        params: dict[str, object] = {"flip_rate": flip_rate, "seed": seed} if noisy else {}
        if noisy and self.rates != (flip_rate, flip_rate):  # a symmetric judge keeps its old identity
            params.update(false_positive_rate=self.rates[0], false_negative_rate=self.rates[1])
        self.identity = JudgeIdentity.of("noisy-oracle" if noisy else "oracle", "gold-labels", "gold", "v1", **params)

    def _flipped(self, query: str, document: str, relevant: bool) -> bool:
        rate = self.rates[1] if relevant else self.rates[0]
        return rate > 0 and flip_draw(self.seed, query, document) < rate

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        gold = self.relevant.get(query, set())
        verdicts = []
        for document in documents:
            label = document in gold
            if self._flipped(query, document, label):
                label = not label
            verdicts.append(Judgment(score=1.0 if label else 0.0, raw="gold"))
        return JudgeResponse(verdicts, Usage())


def from_spec(spec: Any, bench: Any = None) -> OracleJudge:
    """The oracle (or noisy oracle) of a config's judge spec, reading ``bench``'s gold labels."""
    if bench is None:
        raise JudgeConfigError(
            f"the {spec.kind} judge reads gold labels and only works on a benchmark; "
            "for your own corpus use anthropic, openai-compatible, local-lm or cross-encoder"
        )
    return OracleJudge(
        bench.relevant_texts(),
        flip_rate=spec.flip_rate,
        seed=spec.seed,
        false_positive_rate=spec.false_positive_rate,
        false_negative_rate=spec.false_negative_rate,
    )
