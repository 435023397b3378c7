"""Choosing the learning rate from the judgments themselves (held-out judged documents).

The paper's lr = 1e-4 is robust to a noisy judge but leaves gains on the table with a good
one; the best lr depends on how reliable the judge is, which is unknown on a new task. This
module picks it from data already paid for: each query's judged documents are split at random
into a fitting part and a held-out part; the query is refined on the fitting part at every
candidate lr; the lr whose refined vectors best order the held-out documents (mean per-query
ROC-AUC of cosine similarity against the judge's verdicts) wins, ties going to the smaller lr.
The final refinement then uses every judgment at that lr. No extra judge call is made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refine_core.metrics import cosine_block, unit_documents
from refine_core.refinement import RefineConfig, refine

DEFAULT_CANDIDATES: tuple[float, ...] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)


@dataclass(frozen=True)
class LrSelection:
    """The chosen lr and the held-out agreement (mean AUC, and how many queries it averages) per candidate."""

    lr: float
    heldout_auc: dict[float, float]
    queries_scored: int


def _pairwise_auc(sims: np.ndarray, positive: np.ndarray) -> float:
    pos, neg = sims[positive], sims[~positive]
    if pos.size == 0 or neg.size == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (pos.size * neg.size))


def select_lr(
    queries: np.ndarray,
    documents: np.ndarray,
    feedback_idx: np.ndarray,
    scores: np.ndarray,
    mask: np.ndarray,
    *,
    candidates: tuple[float, ...] = DEFAULT_CANDIDATES,
    holdout: float = 0.25,
    positive_at: float = 0.5,
    seed: int = 0,
    config: RefineConfig | None = None,
) -> LrSelection:
    """The candidate lr whose refinement best orders held-out judged documents (see module docs).

    Args:
        queries: ``(n, d)`` start vectors.
        documents: ``(N, d)`` document matrix; ``feedback_idx`` ``(n, K)`` indexes it.
        scores, mask: ``(n, K)`` judge scores and validity.
        candidates: learning rates to try (ascending order is the tie-break).
        holdout: fraction of each query's valid judgments held out (at least one).
        positive_at: a judge score at or above this counts as a positive for the AUC.
        config: other refinement settings (steps, optimiser, temperatures); its lr is ignored.

    Raises:
        ValueError: no candidates, or a holdout fraction outside (0, 1).
    """
    if not candidates:
        raise ValueError("candidates must list at least one learning rate")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be in (0, 1), got {holdout}")
    base = config or RefineConfig()
    rng = np.random.default_rng(seed)
    fit = mask.copy()
    held = np.zeros_like(mask)
    for i in range(mask.shape[0]):
        valid = np.flatnonzero(mask[i])
        if valid.size < 3:
            continue  # too few to split: this query is refined on all it has and not scored
        n_held = max(1, int(round(holdout * valid.size)))
        chosen = rng.choice(valid, size=n_held, replace=False)
        held[i, chosen] = True
        fit[i, chosen] = False
    safe_idx = np.maximum(feedback_idx, 0)
    auc: dict[float, float] = {}
    scored = 0
    for lr in sorted(candidates):
        params = {**base.__dict__, "lr": lr}
        vectors = refine(
            queries, safe_idx, np.nan_to_num(scores), mask=fit, documents=documents, config=RefineConfig(**params)
        ).vectors
        per_query = []
        for i in np.flatnonzero(held.any(axis=1)).tolist():
            cols = np.flatnonzero(held[i])
            sims = cosine_block(vectors[i : i + 1], unit_documents(documents[safe_idx[i, cols]]))[0]
            per_query.append(_pairwise_auc(sims, scores[i, cols] >= positive_at))
        values = np.array(per_query, dtype=float)
        finite = values[np.isfinite(values)]
        auc[lr] = float(finite.mean()) if finite.size else float("nan")
        scored = int(finite.size)
    finite_items = [(lr, a) for lr, a in auc.items() if np.isfinite(a)]
    if not finite_items:
        return LrSelection(lr=min(candidates), heldout_auc=auc, queries_scored=0)
    best = max(a for _, a in finite_items)
    chosen_lr = min(lr for lr, a in finite_items if a >= best - 1e-12)
    return LrSelection(lr=chosen_lr, heldout_auc=auc, queries_scored=scored)
