"""Ranking metrics over a full document pool, vectorised over queries.

Inputs are dense ``(n, N)`` matrices over one document axis: ``scores`` (higher is better),
``labels`` (graded relevance, 0 = not relevant) and an optional ``pool`` mask for per-query
candidate pools (documents outside a query's pool are neither ranked nor counted).

Conventions (each tested):

* **Ranking and ties.** Documents are sorted by score, descending; equal scores keep
  document-index order (a stable sort). Without ties every measure equals trec_eval's.
  ROC-AUC counts a tied positive/negative pair as one half.
* **Binary measures** (AP, recall, precision, R-precision, ROC-AUC, separation) treat
  ``label > 0`` as relevant; nDCG uses the graded label as gain with a log2 discount.
* **Queries without positives** get NaN for every measure and are left out of every mean;
  their number is reported (``MetricsResult.n_without_positives``) with a warning.
  Queries without negatives get NaN ROC-AUC and separation only.
* ``precision@k`` divides by k even when the pool is smaller (trec_eval's convention).

Formulas, for one query with relevant set R and ranking d_1, d_2, ...:

    AP          = (1/|R|) * sum_{i: d_i in R} precision@i
    nDCG@k      = DCG@k / IDCG@k,   DCG@k = sum_{i<=k} label(d_i) / log2(i + 1)
    recall@k    = |{d_1..d_k} ∩ R| / |R|
    R-precision = precision@|R|
    ROC-AUC     = P(score(pos) > score(neg)) + 0.5 * P(score(pos) = score(neg))
    separation  = (mean(score | pos) - mean(score | neg)) / pooled std   (Cohen's d)
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from refine_core._validation import MIN_NORM

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 30, 40, 50)


@dataclass(frozen=True)
class MetricsResult:
    """Per-query values and their means.

    Attributes:
        per_query: measure name -> ``(n,)`` float64 array (NaN where undefined).
        n_queries: number of queries scored.
        n_without_positives: queries excluded because they have no relevant document.
    """

    per_query: dict[str, np.ndarray]
    n_queries: int
    n_without_positives: int
    ks: tuple[int, ...] = field(default=DEFAULT_KS)

    @property
    def means(self) -> dict[str, float]:
        """Mean of each measure over the queries where it is defined (``ap`` -> ``map``)."""
        out: dict[str, float] = {}
        for name, values in self.per_query.items():
            finite = values[np.isfinite(values)]
            out["map" if name == "ap" else name] = float(finite.mean()) if finite.size else float("nan")
        return out

    def __getitem__(self, name: str) -> float:
        return self.means[name]

    def to_polars(self, query_ids: list[str] | None = None):  # noqa: ANN201 - polars is optional here
        """Per-query table (one row per query, one column per measure)."""
        import polars as pl

        data: dict[str, object] = {"query_index": np.arange(self.n_queries)}
        if query_ids is not None:
            data["query_id"] = list(query_ids)
        data.update(self.per_query)
        return pl.DataFrame(data)

    def to_markdown(self, names: tuple[str, ...] = ("map", "ndcg@10", "recall@50", "roc_auc")) -> str:
        """A two-row markdown table of the chosen means."""
        means = self.means
        header = "| " + " | ".join(names) + " |"
        rule = "|" + "---|" * len(names)
        row = "| " + " | ".join(f"{means[n]:.4f}" for n in names) + " |"
        return "\n".join([header, rule, row])


def cosine_scores(vectors: np.ndarray, documents: np.ndarray, *, block_rows: int = 1024) -> np.ndarray:
    """Cosine similarity of every query vector with every document, ``(n, N)`` float32."""
    q = np.asarray(vectors, dtype=np.float32)
    docs = np.asarray(documents, dtype=np.float32)
    if q.ndim != 2 or docs.ndim != 2 or q.shape[1] != docs.shape[1]:
        raise ValueError(f"vectors {q.shape} and documents {docs.shape} must be 2-D with the same dimension")
    q_norm = np.linalg.norm(q, axis=1, keepdims=True)
    d_norm = np.linalg.norm(docs, axis=1, keepdims=True)
    if (q_norm < MIN_NORM).any():
        raise ValueError(f"vectors contains a zero vector at row {int(np.flatnonzero(q_norm < MIN_NORM)[0])}")
    if (d_norm < MIN_NORM).any():
        raise ValueError(f"documents contains a zero vector at row {int(np.flatnonzero(d_norm < MIN_NORM)[0])}")
    docs_unit = docs / d_norm
    out = np.empty((q.shape[0], docs.shape[0]), dtype=np.float32)
    for start in range(0, q.shape[0], block_rows):
        block = q[start : start + block_rows] / q_norm[start : start + block_rows]
        out[start : start + block_rows] = block @ docs_unit.T
    return out


def _check_inputs(scores: np.ndarray, labels: np.ndarray, pool: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        from scipy.stats import rankdata  # lazily: see refine_core.statistics

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


def evaluate_rankings(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    pool: np.ndarray | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    block_rows: int = 64,
) -> MetricsResult:
    """Score every query's ranking of its pool.

    Args:
        scores: ``(n, N)`` ranking scores, higher first.
        labels: ``(n, N)`` relevance labels (0 = not relevant; graded values feed nDCG).
        pool: ``(n, N)`` bool, the documents of each query's pool; all documents if None.
        ks: cut-offs for nDCG, recall and precision.
        block_rows: queries processed at once (bounds memory).

    Returns:
        A :class:`MetricsResult`; ``result.means["map"]`` is MAP.

    Example:
        >>> import numpy as np
        >>> r = evaluate_rankings(np.array([[0.9, 0.8, 0.1]]), np.array([[1, 0, 1]]), ks=(1,))
        >>> round(r.means["map"], 4)   # (1/1 + 2/3) / 2
        0.8333
    """
    s, y, p = _check_inputs(scores, labels, pool)
    if any((not isinstance(k, (int, np.integer))) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    parts: list[dict[str, np.ndarray]] = []
    for start in range(0, s.shape[0], block_rows):
        sl = slice(start, start + block_rows)
        parts.append(_block_metrics(s[sl], y[sl], p[sl], tuple(ks)))
    per_query = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}
    n_without = int((~((y > 0) & p).any(axis=1)).sum())
    if n_without:
        warnings.warn(
            f"{n_without} of {s.shape[0]} queries have no relevant document in their pool; "
            "they are excluded from every mean",
            stacklevel=2,
        )
    return MetricsResult(per_query=per_query, n_queries=int(s.shape[0]), n_without_positives=n_without, ks=tuple(ks))
