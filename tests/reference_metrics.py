"""The dense ranking metrics as they were before the query-block engine (argsort of the whole pool,
scipy's rankdata for ROC-AUC): kept here only as the reference the engine is tested against."""

from __future__ import annotations

import numpy as np


def _check_inputs(
    scores: np.ndarray, labels: np.ndarray, pool: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (queries, documents), got shape {s.shape}")
    if y.shape != s.shape:
        raise ValueError(f"labels must have the shape of scores {s.shape}, got {y.shape}")
    if pool is None:
        p = np.ones(s.shape, dtype=bool)
    else:
        p = np.asarray(pool)
        if p.shape != s.shape or p.dtype != np.bool_:
            raise ValueError(f"pool must be a boolean array of shape {s.shape}, got {p.dtype} {p.shape}")
    if np.isnan(s[p]).any() or np.isinf(s[p]).any():
        raise ValueError("scores contains NaN or inf inside the pool")
    if np.isnan(y).any() or (y < 0).any():
        raise ValueError("labels must be finite and non-negative")
    return s, y, p


def _block_metrics(s: np.ndarray, y: np.ndarray, p: np.ndarray, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    b, total = s.shape
    masked = np.where(p, s, -np.inf)
    order = np.argsort(-masked, axis=1, kind="stable")
    gains = np.take_along_axis(np.where(p, y, 0.0), order, axis=1)
    rel = (gains > 0).astype(np.float64)
    n_pos = rel.sum(axis=1)
    pool_size = p.sum(axis=1)
    n_neg = pool_size - n_pos
    ranks = np.arange(1, total + 1, dtype=np.float64)
    hits = np.cumsum(rel, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        out: dict[str, np.ndarray] = {"ap": (rel * hits / ranks).sum(axis=1) / n_pos}
        discounts = 1.0 / np.log2(ranks + 1.0)
        ideal = -np.sort(-np.where(p, y, 0.0), axis=1)
        for k in ks:
            kk = min(k, total)
            dcg = (gains[:, :kk] * discounts[:kk]).sum(axis=1)
            idcg = (ideal[:, :kk] * discounts[:kk]).sum(axis=1)
            out[f"ndcg@{k}"] = dcg / idcg
        for k in ks:
            kk = min(k, total)
            out[f"recall@{k}"] = hits[:, kk - 1] / n_pos
            out[f"precision@{k}"] = hits[:, kk - 1] / k
        r_idx = np.clip(n_pos.astype(np.int64) - 1, 0, total - 1)
        out["r_precision"] = np.take_along_axis(hits, r_idx[:, None], axis=1)[:, 0] / n_pos
        # ROC-AUC by the rank-sum (Mann-Whitney) formula with average ranks for ties.
        # Out-of-pool documents sit at -inf below every pool document; subtract their count.
        from scipy.stats import rankdata

        avg_ranks = rankdata(masked, axis=1, method="average") - (total - pool_size)[:, None]
        pos_in_pool = (y > 0) & p
        rank_sum = np.where(pos_in_pool, avg_ranks, 0.0).sum(axis=1)
        out["roc_auc"] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        neg_in_pool = p & ~pos_in_pool
        mean_pos = np.where(pos_in_pool, s, 0.0).sum(axis=1) / n_pos
        mean_neg = np.where(neg_in_pool, s, 0.0).sum(axis=1) / n_neg
        ss_pos = np.where(pos_in_pool, (s - mean_pos[:, None]) ** 2, 0.0).sum(axis=1)
        ss_neg = np.where(neg_in_pool, (s - mean_neg[:, None]) ** 2, 0.0).sum(axis=1)
        pooled = np.sqrt((ss_pos + ss_neg) / (n_pos + n_neg - 2))
        out["separation"] = (mean_pos - mean_neg) / pooled
    undefined = n_pos == 0
    no_neg = n_neg == 0
    for name, values in out.items():
        values[undefined] = np.nan
        if name in ("roc_auc", "separation"):
            values[no_neg] = np.nan
    return out


def dense_reference(scores, labels, pool=None, ks=(5, 10, 20, 30, 40, 50)):
    s, y, p = _check_inputs(scores, labels, pool)
    return _block_metrics(s, y, p, tuple(ks))
