"""Oracle feedback: the gold labels as judge scores (the ceiling), optionally made noisy."""

from __future__ import annotations

import numpy as np


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
