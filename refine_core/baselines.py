"""The controls refinement is compared against, in the same array-in/array-out API.

* original ranking: cosine of the original query vector (:func:`refine_core.metrics.cosine_scores`);
* :func:`rerank_only_scores`: the paper's key control. The judged documents are re-sorted
  by their judge scores and keep the top block; every other document keeps its place;
* :func:`rocchio`: the classic relevance-feedback update of the query vector.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refine_core._validation import as_float_array, as_mask


@dataclass(frozen=True)
class RocchioParams:
    """Rocchio's weights (SMART defaults) and the judge score at which a document counts as positive."""

    alpha: float = 1.0
    beta: float = 0.75
    gamma: float = 0.15
    threshold: float = 0.5


def _feedback_mask(feedback_idx: np.ndarray, scores: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    valid = np.ones(scores.shape, dtype=bool) if mask is None else as_mask(mask, "mask", shape=scores.shape)
    valid &= feedback_idx >= 0
    if not np.isfinite(scores[valid]).all():
        raise ValueError("scores contains NaN or inf where mask is True")
    return valid


def rerank_only_scores(
    base_scores: np.ndarray,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    *,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """Scores that rank the judged documents first, in judge order, and leave the rest alone.

    Every judged document gets a score above the query's best unjudged score; among them
    the judge score decides, and equal judge scores keep the original order. Documents
    whose judgment is missing (``mask`` False) are treated as unjudged. The returned
    values are ranking scores, not similarities.

    Args:
        base_scores: ``(n, N)`` original similarities (``-inf`` outside a query's pool).
        feedback_idx: ``(n, K)`` judged document indices (``-1`` = padding).
        judge_scores: ``(n, K)`` judge scores.
        mask: ``(n, K)`` bool, True where the judgment exists.

    Returns:
        ``(n, N)`` float64 scores.

    Example:
        >>> import numpy as np
        >>> s = rerank_only_scores(np.array([[0.9, 0.8, 0.7, 0.1]]), np.array([[0, 1]]), np.array([[0.2, 0.9]]))
        >>> np.argsort(-s[0], kind="stable").tolist()
        [1, 0, 2, 3]
    """
    base = np.asarray(base_scores, dtype=np.float64)
    idx = np.asarray(feedback_idx)
    judge = np.asarray(judge_scores, dtype=np.float64)
    if base.ndim != 2:
        raise ValueError(f"base_scores must be 2-D, got shape {base.shape}")
    if idx.ndim != 2 or idx.shape[0] != base.shape[0] or judge.shape != idx.shape:
        raise ValueError(
            f"feedback_idx {idx.shape} and judge_scores {judge.shape} must both be (n, K) with n={base.shape[0]}"
        )
    valid = _feedback_mask(idx, judge, mask)
    out = base.copy()
    k = idx.shape[1]
    for row in range(base.shape[0]):
        cols = idx[row][valid[row]]
        if cols.size == 0:
            continue
        finite = np.isfinite(base[row])
        top = base[row][finite].max() if finite.any() else 0.0
        # Sort the judged documents by judge score, ties by original score (descending).
        order = np.lexsort((-base[row, cols], -judge[row][valid[row]]))
        out[row, cols[order]] = top + 1.0 + (k - np.arange(cols.size))
    return out


def rocchio(
    queries: np.ndarray,
    feedback_vectors: np.ndarray,
    judge_scores: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    alpha: float = 1.0,
    beta: float = 0.75,
    gamma: float = 0.15,
    positive_threshold: float = 0.5,
    negative_threshold: float = 0.5,
) -> np.ndarray:
    """Rocchio update ``alpha*q + beta*mean(pos) - gamma*mean(neg)`` on unit vectors.

    A judged document is positive when its score is ``>= positive_threshold`` and negative
    when it is ``< negative_threshold``; documents in between (when the thresholds differ)
    and missing judgments are ignored. All vectors are normalised first.

    Args:
        queries: ``(n, d)``.
        feedback_vectors: ``(n, K, d)`` judged document vectors.
        judge_scores: ``(n, K)`` scores in [0, 1].
        mask: ``(n, K)`` bool, True where the judgment exists.
        alpha, beta, gamma: the classic weights (SMART defaults 1, 0.75, 0.15).

    Returns:
        ``(n, d)`` float32 updated query vectors.
    """
    q = as_float_array(queries, "queries", ndim=2)
    fb = as_float_array(feedback_vectors, "feedback_vectors", ndim=3)
    scores = np.asarray(judge_scores, dtype=np.float64)
    if fb.shape[0] != q.shape[0] or fb.shape[2] != q.shape[1] or scores.shape != fb.shape[:2]:
        raise ValueError(f"queries {q.shape}, feedback_vectors {fb.shape} and judge_scores {scores.shape} do not match")
    if positive_threshold < negative_threshold:
        raise ValueError("positive_threshold must be >= negative_threshold")
    valid = np.ones(scores.shape, dtype=bool) if mask is None else as_mask(mask, "mask", shape=scores.shape)
    if not np.isfinite(scores[valid]).all():
        raise ValueError("judge_scores contains NaN or inf where mask is True")
    unit_q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    unit_fb = fb / np.maximum(np.linalg.norm(fb, axis=2, keepdims=True), 1e-12)
    pos = valid & (scores >= positive_threshold)
    neg = valid & (scores < negative_threshold)
    pos_mean = np.einsum("nk,nkd->nd", pos, unit_fb) / np.maximum(pos.sum(1, keepdims=True), 1)
    neg_mean = np.einsum("nk,nkd->nd", neg, unit_fb) / np.maximum(neg.sum(1, keepdims=True), 1)
    return (alpha * unit_q + beta * pos_mean - gamma * neg_mean).astype(np.float32)


def rocchio_vectors(
    queries: np.ndarray,
    feedback_vectors: np.ndarray,
    judge_scores: np.ndarray,
    mask: np.ndarray | None,
    params: RocchioParams | None = None,
) -> np.ndarray:
    """:func:`rocchio` with its weights and one threshold taken from ``params``."""
    rp = params or RocchioParams()
    return rocchio(
        queries,
        feedback_vectors,
        judge_scores,
        mask=mask,
        alpha=rp.alpha,
        beta=rp.beta,
        gamma=rp.gamma,
        positive_threshold=rp.threshold,
        negative_threshold=rp.threshold,
    )
