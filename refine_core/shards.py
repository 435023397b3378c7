"""Exact ranking measures from corpus shards, merged: the corpus never has to sit in one place.

Every measure of :mod:`refine_core.metrics` follows from the rank of each relevant document
among the query's pool and from the mean and spread of the other scores. Both add up over any
split of the corpus into shards, once the relevant documents' own scores are known:

1. the scores of each query's *special* documents (its relevant documents; for rerank-only
   also its judged ones) are computed where the query is (:func:`pair_scores`, a few rows of the
   corpus per query);
2. each shard counts, per special document, how many of *its* other candidates score higher,
   the same, and the same with a lower index (ties keep document order), and summarises the
   other candidates' scores by count, mean, squared deviations and maximum
   (:func:`count_shard`, the compiled pass of :mod:`refine_core._metric_kernels`);
3. the shards' counts are summed and their summaries merged (:func:`merge_shards`; deviations
   by Chan, Golub and LeVeque's pairwise rule), the special documents are compared among
   themselves, and the measures are formed (:func:`measures`).

With one shard holding the whole corpus this *is* :func:`refine_core.metrics.rank_metrics`: there
is one implementation of the counting and of the measures. Sharded, the results equal the
unsharded ones whenever the special scores computed in step 1 equal the ones a full score
matrix would hold; a float32 matrix product can round the last bit differently by its shape, so
a score within one unit in the last place of a relevant document's may then count as tied.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from refine_core._metric_kernels import M2_OTHER, MAX_OTHER, MEAN_OTHER, N_OTHER, N_STATS, NON_FINITE
from refine_core.cosine import unit_documents
from refine_core.measures import ranking_measures
from refine_core.qrels import Qrels


@dataclass(frozen=True, eq=False)
class Specials:
    """Per query (CSR rows), the documents whose scores are known apart from the counting pass.

    Attributes:
        indptr: ``(n + 1,)`` row offsets.
        docs: document indices, ascending within each row.
        scores: float64 score of each; ``+inf`` marks "above every other candidate" (rerank-only's
            judged documents, whose final score is set by :func:`finish_rerank_only`).
        gains: graded gain (``> 0`` relevant, 0 a special document that is not relevant).
        lift: rerank-only: how far above the query's best score a judged document is placed
            (NaN for documents that were not judged); None otherwise.
        base: rerank-only: each special document's own baseline score; None otherwise.
    """

    indptr: np.ndarray
    docs: np.ndarray
    scores: np.ndarray
    gains: np.ndarray
    lift: np.ndarray | None = None
    base: np.ndarray | None = None

    @property
    def n_queries(self) -> int:
        return int(self.indptr.size - 1)

    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), np.diff(self.indptr))

    def rows(self, lo: int, hi: int) -> Specials:
        a, b = int(self.indptr[lo]), int(self.indptr[hi])

        def cut(x: np.ndarray | None) -> np.ndarray | None:
            return None if x is None else x[a:b]

        return Specials(
            self.indptr[lo : hi + 1] - a,
            self.docs[a:b],
            self.scores[a:b],
            self.gains[a:b],
            cut(self.lift),
            cut(self.base),
        )

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        """The fields as named arrays (for saving with numpy); :meth:`from_arrays` reads them back."""
        out = {
            f"{prefix}.indptr": self.indptr,
            f"{prefix}.docs": self.docs,
            f"{prefix}.scores": self.scores,
            f"{prefix}.gains": self.gains,
        }
        if self.lift is not None and self.base is not None:
            out[f"{prefix}.lift"] = self.lift
            out[f"{prefix}.base"] = self.base
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> Specials:
        return cls(
            arrays[f"{prefix}.indptr"],
            arrays[f"{prefix}.docs"],
            arrays[f"{prefix}.scores"],
            arrays[f"{prefix}.gains"],
            arrays.get(f"{prefix}.lift"),
            arrays.get(f"{prefix}.base"),
        )


def relevant_specials(qrels: Qrels, scores: np.ndarray) -> Specials:
    """The relevant pairs of ``qrels`` as special documents; ``scores`` holds one score per stored pair."""
    keep = qrels.gains > 0
    indptr = np.zeros(qrels.n_queries + 1, dtype=np.int64)
    np.cumsum(np.bincount(qrels.row_ids()[keep], minlength=qrels.n_queries), out=indptr[1:])
    return Specials(
        indptr, qrels.docs[keep], np.asarray(scores, dtype=np.float64)[keep], qrels.gains[keep].astype(np.float64)
    )


def pair_scores(
    query_vectors: np.ndarray, documents: np.ndarray, rows: np.ndarray, docs: np.ndarray, *, chunk: int = 65536
) -> np.ndarray:
    """Cosine of ``query_vectors[rows[e]]`` with ``documents[docs[e]]`` for every pair ``e``, float64.

    Reads only the rows of ``documents`` it needs (a memory map stays on disk). Each product is
    summed in float64 and rounded to float32, so every process gets the same value.
    """
    rows = np.asarray(rows, dtype=np.int64)
    docs = np.asarray(docs, dtype=np.int64)
    out = np.empty(rows.size, dtype=np.float64)
    if rows.size == 0:
        return out
    q = unit_documents(query_vectors)
    wanted, inverse = np.unique(docs, return_inverse=True)
    d = unit_documents(np.asarray(documents[wanted]))
    for a in range(0, rows.size, chunk):
        b = min(a + chunk, rows.size)
        prod = np.einsum("ij,ij->i", q[rows[a:b]].astype(np.float64), d[inverse[a:b]].astype(np.float64))
        out[a:b] = prod.astype(np.float32)
    return out


@dataclass(frozen=True, eq=False)
class ShardPart:
    """What one shard (or the merge of several) knows about one set of queries.

    Attributes:
        greater / equal / before: int64 per special document (the layout of :class:`Specials`).
        stats: ``(n, 5)`` float64 per query over the other candidates: count, mean, sum of squared
            deviations, maximum, non-finite scores seen.
    """

    greater: np.ndarray
    equal: np.ndarray
    before: np.ndarray
    stats: np.ndarray

    @classmethod
    def concat(cls, parts: Sequence[ShardPart]) -> ShardPart:
        """Blocks of consecutive queries, one after the other."""
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("greater", "equal", "before", "stats")))

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}.{f}": getattr(self, f) for f in ("greater", "equal", "before", "stats")}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], prefix: str) -> ShardPart:
        return cls(*(arrays[f"{prefix}.{f}"] for f in ("greater", "equal", "before", "stats")))


def count_shard(scores: np.ndarray, offset: int, qrels: Qrels, specials: Specials) -> ShardPart:
    """Counts and summaries of the columns ``offset .. offset + S - 1`` of the corpus for ``qrels``' queries.

    ``scores`` ``(B, S)``: the shard's scores (for pooled qrels only each query's pool columns
    are read; the rest may hold anything). ``specials`` lists the same B queries.
    """
    from refine_core._metric_kernels import special_counts  # numba: compiled on first use
    from refine_core._parallel import KERNEL_LOCK

    s = np.ascontiguousarray(scores)
    b, width = s.shape
    if qrels.n_queries != b or specials.n_queries != b:
        raise ValueError(f"scores has {b} rows, qrels {qrels.n_queries}, specials {specials.n_queries}")
    if qrels.pooled:
        inside = (qrels.docs >= offset) & (qrels.docs < offset + width)
        cand_docs = qrels.docs[inside]
        cand_indptr = np.zeros(b + 1, dtype=np.int64)
        np.cumsum(np.bincount(qrels.row_ids()[inside], minlength=b), out=cand_indptr[1:])
    else:
        cand_docs = np.zeros(0, dtype=np.int64)
        cand_indptr = np.zeros(b + 1, dtype=np.int64)
    n_sp = specials.docs.size
    greater = np.empty(n_sp, dtype=np.int64)
    equal = np.empty(n_sp, dtype=np.int64)
    before = np.empty(n_sp, dtype=np.int64)
    stats = np.zeros((b, N_STATS), dtype=np.float64)
    with KERNEL_LOCK:
        special_counts(
            s,
            int(offset),
            not qrels.pooled,
            cand_indptr,
            cand_docs,
            specials.indptr,
            specials.docs.astype(np.int64, copy=False),
            specials.scores.astype(np.float64, copy=False),
            greater,
            equal,
            before,
            stats,
        )
    return ShardPart(greater, equal, before, stats)


def _merge_moments(
    n_a: np.ndarray, mean_a: np.ndarray, m2_a: np.ndarray, n_b: np.ndarray, mean_b: np.ndarray, m2_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, mean and squared deviations of two groups together (Chan et al.'s pairwise update)."""
    n = n_a + n_b
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = mean_b - mean_a
        mean = np.where(n > 0, mean_a + delta * np.where(n > 0, n_b / n, 0.0), 0.0)
        m2 = m2_a + m2_b + np.where(n > 0, delta * delta * n_a * n_b / n, 0.0)
    mean = np.where(n_a == 0, mean_b, np.where(n_b == 0, mean_a, mean))
    m2 = np.where(n_a == 0, m2_b, np.where(n_b == 0, m2_a, m2))
    return n, mean, m2


def merge_shards(parts: Sequence[ShardPart]) -> ShardPart:
    """The counts and summaries of the shards together (in any order)."""
    if not parts:
        raise ValueError("no shard to merge")
    first = parts[0]
    greater, equal, before = first.greater.copy(), first.equal.copy(), first.before.copy()
    stats = first.stats.copy()
    for part in parts[1:]:
        greater += part.greater
        equal += part.equal
        before += part.before
        n, mean, m2 = _merge_moments(
            stats[:, N_OTHER],
            stats[:, MEAN_OTHER],
            stats[:, M2_OTHER],
            part.stats[:, N_OTHER],
            part.stats[:, MEAN_OTHER],
            part.stats[:, M2_OTHER],
        )
        stats[:, N_OTHER], stats[:, MEAN_OTHER], stats[:, M2_OTHER] = n, mean, m2
        stats[:, MAX_OTHER] = np.maximum(stats[:, MAX_OTHER], part.stats[:, MAX_OTHER])
        stats[:, NON_FINITE] += part.stats[:, NON_FINITE]
    return ShardPart(greater, equal, before, stats)


def rerank_only_specials(
    relevant: Specials,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    judged_base: np.ndarray,
    pool: Qrels | None = None,
) -> Specials:
    """Rerank-only's special documents: the relevant ones and every validly judged one (in the pool).

    As :func:`refine_core.baselines.rerank_only_scores`: the judged documents go above the query's
    best score, ordered by judge score (ties by their baseline score, descending), the i-th at
    ``best + 1 + (K - i)``. Their scores are ``+inf`` here (above every other candidate) until
    :func:`finish_rerank_only` knows the best score. ``judged_base`` ``(n, K)``: the baseline
    score of each judged document; ``relevant.scores`` are baseline scores.
    """
    idx = np.asarray(feedback_idx, dtype=np.int64)
    judge = np.asarray(judge_scores, dtype=np.float64)
    valid = np.asarray(judge_mask, dtype=bool) & (idx >= 0)
    if not np.isfinite(judge[valid]).all():
        raise ValueError("scores contains NaN or inf where mask is True")
    n, k = idx.shape
    if pool is not None and pool.pooled:  # a judged document outside the pool is neither ranked nor counted
        for i in range(n):
            row_docs = pool.docs[pool.indptr[i] : pool.indptr[i + 1]]
            valid[i] &= np.isin(idx[i], row_docs)
    rows_out, docs_out, scores_out, gains_out, lift_out, base_out = [], [], [], [], [], []
    for i in range(n):
        a, b = relevant.indptr[i], relevant.indptr[i + 1]
        cols = idx[i][valid[i]]
        order = np.lexsort((-judged_base[i][valid[i]], -judge[i][valid[i]]))
        lift = np.full(cols.size, np.nan)
        lift[order] = 1.0 + (k - np.arange(cols.size))
        docs = np.concatenate([relevant.docs[a:b], cols])
        base = np.concatenate([relevant.scores[a:b], judged_base[i][valid[i]]])
        lifts = np.concatenate([np.full(b - a, np.nan), lift])
        gains = np.concatenate([relevant.gains[a:b], np.zeros(cols.size)])
        # a judged relevant document appears twice: keep one entry, with its gain and its lift
        uniq, first = np.unique(docs, return_index=True)
        merged_gain = np.zeros(uniq.size)
        np.maximum.at(merged_gain, np.searchsorted(uniq, docs), gains)
        merged_lift = np.full(uniq.size, np.nan)
        has_lift = np.isfinite(lifts)
        merged_lift[np.searchsorted(uniq, docs[has_lift])] = lifts[has_lift]
        rows_out.append(np.full(uniq.size, i, dtype=np.int64))
        docs_out.append(uniq)
        gains_out.append(merged_gain)
        lift_out.append(merged_lift)
        base_out.append(base[first])
        scores_out.append(np.where(np.isfinite(merged_lift), np.inf, base[first]))
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum([r.size for r in rows_out], out=indptr[1:])

    def cat(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype=dtype)

    return Specials(
        indptr,
        cat(docs_out, np.int64),
        cat(scores_out, np.float64),
        cat(gains_out, np.float64),
        cat(lift_out, np.float64),
        cat(base_out, np.float64),
    )


def finish_rerank_only(specials: Specials, merged: ShardPart) -> Specials:
    """Rerank-only's specials with the judged documents' final scores: the query's best score plus the lift."""
    if specials.lift is None or specials.base is None:
        raise ValueError("these special documents carry no rerank-only lift")
    rows = specials.row_ids()
    best = merged.stats[:, MAX_OTHER].copy()
    finite = np.isfinite(specials.base)
    np.maximum.at(best, rows[finite], specials.base[finite])
    best = np.where(np.isfinite(best), best, 0.0)  # no finite score at all: 0, as rerank_only_scores
    judged = np.isfinite(specials.lift)
    scores = np.where(judged, best[rows] + np.nan_to_num(specials.lift), specials.base)
    return Specials(specials.indptr, specials.docs, scores, specials.gains, specials.lift, specials.base)


def _special_ties(specials: Specials) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per special document: specials of its query scoring higher, the same (itself included), the same at a lower index."""
    rows = specials.row_ids()
    t, docs = specials.scores, specials.docs
    m = t.size
    greater = np.zeros(m, dtype=np.int64)
    equal = np.zeros(m, dtype=np.int64)
    before = np.zeros(m, dtype=np.int64)
    if m == 0:
        return greater, equal, before
    order = np.lexsort((docs, t, rows))
    r_o, t_o = rows[order], t[order]
    pos = np.arange(m)
    new_group = np.ones(m, dtype=bool)
    new_group[1:] = (r_o[1:] != r_o[:-1]) | (t_o[1:] != t_o[:-1])
    group_start = np.maximum.accumulate(np.where(new_group, pos, 0))
    group_id = np.cumsum(new_group) - 1
    group_end = np.zeros(group_id[-1] + 1, dtype=np.int64)
    np.maximum.at(group_end, group_id, pos + 1)
    row_end = specials.indptr[1:][r_o]
    greater[order] = row_end - group_end[group_id]
    equal[order] = group_end[group_id] - group_start
    before[order] = pos - group_start
    return greater, equal, before


def measures(merged: ShardPart, specials: Specials, ks: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Every measure of :func:`refine_core.measures.ranking_measures`, per query (keyed by
    :attr:`~refine_core.measures.Measure.key`, in that order), from the merged counts of all shards."""
    b = specials.n_queries
    stats = merged.stats
    if stats[:, NON_FINITE].any() or not np.isfinite(specials.scores).all():
        raise ValueError("scores contains NaN or inf inside the pool")
    g_sp, e_sp, b_sp = _special_ties(specials)
    greater_all = merged.greater + g_sp
    equal_all = merged.equal + e_sp
    before_all = merged.before + b_sp
    sp_rows = specials.row_ids()
    n_special = np.diff(specials.indptr).astype(np.float64)
    n_pool = stats[:, N_OTHER] + n_special

    rel = specials.gains > 0
    rel_rows = sp_rows[rel]
    gains = specials.gains[rel]
    rank = 1.0 + greater_all[rel] + before_all[rel]
    avg_asc = (n_pool[rel_rows] - greater_all[rel] - equal_all[rel]) + (equal_all[rel] + 1) / 2.0
    rel_indptr = np.zeros(b + 1, dtype=np.int64)
    np.cumsum(np.bincount(rel_rows, minlength=b), out=rel_indptr[1:])
    n_pos = np.diff(rel_indptr).astype(np.float64)
    n_neg = n_pool - n_pos

    order = np.lexsort((rank, rel_rows))  # relevant documents in ranking order within each query
    rows_o, rank_o, gains_o = rel_rows[order], rank[order], gains[order]
    nth = np.arange(rows_o.size, dtype=np.float64) - rel_indptr[rows_o] + 1.0  # i-th relevant of its query
    ideal = np.lexsort((-gains, rel_rows))
    ideal_pos = np.arange(rows_o.size, dtype=np.float64) - rel_indptr[rel_rows[ideal]] + 1.0
    ideal_gain = gains[ideal]

    def per_query(values: np.ndarray, rows: np.ndarray = rows_o) -> np.ndarray:
        return np.bincount(rows, weights=values, minlength=b)

    by_name: dict[str, np.ndarray] = {}  # canonical name -> per-query values (refine_core.measures)
    with np.errstate(invalid="ignore", divide="ignore"):
        by_name["AP"] = per_query(nth / rank_o) / n_pos
        discount = 1.0 / np.log2(rank_o + 1.0)
        ideal_discount = 1.0 / np.log2(ideal_pos + 1.0)
        for k in ks:
            dcg = per_query(np.where(rank_o <= k, gains_o * discount, 0.0))
            idcg = per_query(np.where(ideal_pos <= k, ideal_gain * ideal_discount, 0.0), rel_rows[ideal])
            by_name[f"nDCG@{k}"] = dcg / idcg
        for k in ks:
            hits = per_query((rank_o <= k).astype(np.float64))
            by_name[f"R@{k}"] = hits / n_pos
            by_name[f"P@{k}"] = hits / k
        by_name["Rprec"] = per_query((rank_o <= n_pos[rows_o]).astype(np.float64)) / n_pos
        rank_sum = np.bincount(rel_rows, weights=avg_asc, minlength=b)
        by_name["ROC-AUC"] = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
        by_name["separation"] = _separation(stats, specials, rel, n_pos, n_neg)
    undefined = n_pos == 0
    no_neg = n_neg == 0
    out: dict[str, np.ndarray] = {}
    for measure in ranking_measures(ks):
        values = by_name[measure.name]
        values[undefined] = np.nan
        if measure.name in ("ROC-AUC", "separation"):  # need a non-relevant document too
            values[no_neg] = np.nan
        out[measure.key] = values
    return out


def _separation(
    stats: np.ndarray, specials: Specials, rel: np.ndarray, n_pos: np.ndarray, n_neg: np.ndarray
) -> np.ndarray:
    """Per query, the relevant documents' scores against the rest's (the other candidates and the
    non-relevant specials): difference of means over the pooled standard deviation."""
    b = specials.n_queries
    sp_rows = specials.row_ids()
    rel_rows, t_rel = sp_rows[rel], specials.scores[rel]
    mean_pos = np.bincount(rel_rows, weights=t_rel, minlength=b) / n_pos
    ss_pos = np.bincount(rel_rows, weights=(t_rel - mean_pos[rel_rows]) ** 2, minlength=b)
    neg_sp = ~rel
    ns_rows = sp_rows[neg_sp]
    n_sn = np.bincount(ns_rows, minlength=b).astype(np.float64)
    mean_sn = np.bincount(ns_rows, weights=specials.scores[neg_sp], minlength=b) / np.maximum(n_sn, 1)
    m2_sn = np.bincount(ns_rows, weights=(specials.scores[neg_sp] - mean_sn[ns_rows]) ** 2, minlength=b)
    _, mean_neg, ss_neg = _merge_moments(
        stats[:, N_OTHER], stats[:, MEAN_OTHER], stats[:, M2_OTHER], n_sn, mean_sn, m2_sn
    )
    pooled_sd = np.sqrt((ss_pos + ss_neg) / (n_pos + n_neg - 2))
    return (mean_pos - mean_neg) / pooled_sd


def merge_top_k(parts: Sequence[tuple[np.ndarray, np.ndarray]], k: int) -> np.ndarray:
    """The ``k`` best ``(n, k)`` document indices from each shard's best ``(indices, scores)``.

    Each part holds global indices (``-1`` pads) and their scores; the merge orders by score,
    descending, then by index, which is what one stable ranking of the whole corpus gives.
    """
    idx = np.concatenate([p[0] for p in parts], axis=1)
    sc = np.concatenate([np.where(p[0] >= 0, p[1], -np.inf) for p in parts], axis=1).astype(np.float64)
    key_idx = np.where(idx >= 0, idx, np.iinfo(np.int64).max)
    order = _row_lexsort(key_idx, -sc)
    best = np.take_along_axis(idx, order, axis=1)[:, :k]
    best_sc = np.take_along_axis(sc, order, axis=1)[:, :k]
    out = np.where(np.isfinite(best_sc) & (best >= 0), best, -1)
    if out.shape[1] < k:
        out = np.concatenate([out, np.full((out.shape[0], k - out.shape[1]), -1, dtype=out.dtype)], axis=1)
    return out


def _row_lexsort(secondary: np.ndarray, primary: np.ndarray) -> np.ndarray:
    """Per row, the order by ``primary`` then ``secondary`` (both ascending)."""
    n, w = primary.shape
    rows = np.repeat(np.arange(n), w)
    order = np.lexsort((secondary.ravel(), primary.ravel(), rows))
    return (order - rows * w).reshape(n, w)
