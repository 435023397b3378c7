"""Rocchio → KL: the one place where Rocchio's update and the KL refinement are put together.

The ``rocchio_kl`` method (and ``refine search --start rocchio``) moves the original query to
Rocchio's vector of the judged documents in one step, then runs the KL refinement from there on
the same judgments. :func:`rocchio_start` is the first half (also the ``rocchio`` baseline with
judged documents given by index), :func:`rocchio_kl` both.
"""

from __future__ import annotations

import numpy as np

from refine_core.baselines import RocchioParams, rocchio_vectors
from refine_core.refinement import RefineConfig, RefineResult, refine


def rocchio_start(
    queries: np.ndarray,
    documents: np.ndarray,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    mask: np.ndarray,
    params: RocchioParams | None = None,
) -> np.ndarray:
    """Rocchio's vectors ``(n, d)`` of the judged documents ``feedback_idx`` ``(n, K)`` (rows of
    ``documents``; ``-1`` is padding and never counts), their scores and ``mask``."""
    idx = np.asarray(feedback_idx)
    valid = np.asarray(mask, dtype=bool) & (idx >= 0)
    return rocchio_vectors(
        queries, np.asarray(documents)[np.maximum(idx, 0)], np.nan_to_num(np.asarray(judge_scores)), valid, params
    )


def rocchio_kl(
    queries: np.ndarray,
    documents: np.ndarray,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    mask: np.ndarray,
    *,
    rocchio: RocchioParams | None = None,
    config: RefineConfig | None = None,
    refine_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, RefineResult]:
    """Rocchio's vector of the judgments, then the KL refinement from it on the same judgments.

    ``refine_mask`` (default: the valid judgments) limits what the refinement sees, e.g. the gate
    of :mod:`refine_core.recommended`. Returns the Rocchio start ``(n, d)`` and the refinement's
    result (its ``vectors`` are the method's)."""
    idx = np.asarray(feedback_idx)
    valid = np.asarray(mask, dtype=bool) & (idx >= 0)
    scores = np.nan_to_num(np.asarray(judge_scores))
    start = rocchio_start(queries, documents, idx, scores, valid, rocchio)
    used = valid if refine_mask is None else np.asarray(refine_mask, dtype=bool) & valid
    result = refine(start, np.maximum(idx, 0), scores, mask=used, documents=documents, config=config)
    return start, result
