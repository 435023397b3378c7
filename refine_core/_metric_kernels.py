"""Compiled pass of the ranking metrics (numba): counts against "special" documents, one corpus shard at a time.

For one query, the *special* documents ``r`` are those whose scores ``t_r`` are known apart
from the pass: the relevant documents (and, for rerank-only, the judged ones). One pass over the
shard's other candidates ``j`` (scores ``s_j``, global document index ``j``) counts, per special
document,

    greater_r   = #{j : s_j > t_r}
    equal_r     = #{j : s_j = t_r}
    before_r    = #{j : s_j = t_r, j < r}     (ties keep document-index order)

with a binary search of ``s_j`` in the sorted special scores (candidates below the lowest
special score, most of a large corpus, cost one comparison), and per query the count, sum,
sum of squared deviations (two passes within the shard) and maximum of the other candidates.
All of it adds up over shards of the corpus (the deviations by Chan's rule), so the corpus can
be split across processes or machines; comparisons among the special documents themselves are
made once, where their scores are (:mod:`refine_core.shards`). Cost O(pool · log |S|) per
query, memory O(|S|).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from refine_core import _parallel  # noqa: F401 - chooses the threading layer before any kernel runs

# columns of the per-query statistics
N_OTHER, MEAN_OTHER, M2_OTHER, MAX_OTHER, NON_FINITE = range(5)
N_STATS = 5


@njit(cache=True, parallel=True, error_model="numpy")
def special_counts(
    scores: np.ndarray,
    offset: int,
    use_all: bool,
    cand_indptr: np.ndarray,
    cand_docs: np.ndarray,
    sp_indptr: np.ndarray,
    sp_docs: np.ndarray,
    sp_scores: np.ndarray,
    out_greater: np.ndarray,
    out_equal: np.ndarray,
    out_before: np.ndarray,
    out_stats: np.ndarray,
) -> None:
    """Fill the per-special counts and the per-query statistics of the other candidates.

    ``scores`` ``(B, S)`` holds the columns ``offset .. offset+S-1`` of the corpus; with
    ``use_all`` every column is a candidate, else the candidates of row ``b`` are the global
    indices ``cand_docs[cand_indptr[b]:cand_indptr[b+1]]`` (all inside this shard). Special
    documents of row ``b``: ``sp_docs[sp_indptr[b]:sp_indptr[b+1]]`` (ascending) with scores
    ``sp_scores`` (``+inf`` = above every candidate). Special documents are skipped as candidates,
    which must come in ascending document order within a row.
    """
    n_rows = scores.shape[0]
    n_cols = scores.shape[1]
    for b in prange(n_rows):
        row = scores[b]
        if use_all:
            c_lo = 0
            c_hi = n_cols
        else:
            c_lo = cand_indptr[b]
            c_hi = cand_indptr[b + 1]
        s_lo = sp_indptr[b]
        m = sp_indptr[b + 1] - s_lo
        sdocs = sp_docs[s_lo : s_lo + m]
        t = np.empty(m, dtype=np.float64)
        for r in range(m):
            t[r] = sp_scores[s_lo + r]
        order = np.argsort(t)
        ts = np.empty(m, dtype=np.float64)
        ps = np.empty(m, dtype=np.int64)
        for r in range(m):
            ts[r] = t[order[r]]
            ps[r] = sdocs[order[r]]
        add = np.zeros(m + 1, dtype=np.int64)
        equal = np.zeros(m, dtype=np.int64)
        before = np.zeros(m, dtype=np.int64)
        t_min = ts[0] if m > 0 else np.inf
        n_other = 0
        total = 0.0
        top = -np.inf
        bad = 0
        p = 0  # candidates come in ascending document order: a moving pointer finds the special ones
        for c in range(c_lo, c_hi):
            j = offset + c if use_all else cand_docs[c]
            while p < m and sdocs[p] < j:
                p += 1
            if p < m and sdocs[p] == j:
                continue
            s = np.float64(row[j - offset])
            if not np.isfinite(s):
                bad += 1
                continue
            n_other += 1
            total += s
            if s > top:
                top = s
            if s < t_min:
                continue
            lo = 0
            hi = m
            while lo < hi:  # lo = #{t < s}
                mid = (lo + hi) >> 1
                if ts[mid] < s:
                    lo = mid + 1
                else:
                    hi = mid
            add[lo] += 1
            e = lo
            while e < m and ts[e] == s:
                equal[e] += 1
                if j < ps[e]:
                    before[e] += 1
                e += 1
        greater = 0
        for r in range(m - 1, -1, -1):
            greater += add[r + 1]  # candidates equal to ts[r] sit in add[r] or lower
            k = s_lo + order[r]
            out_greater[k] = greater
            out_equal[k] = equal[r]
            out_before[k] = before[r]
        mean = total / n_other if n_other > 0 else 0.0
        m2 = 0.0
        if n_other > 1:
            p = 0
            for c in range(c_lo, c_hi):
                j = offset + c if use_all else cand_docs[c]
                while p < m and sdocs[p] < j:
                    p += 1
                if p < m and sdocs[p] == j:
                    continue
                s = np.float64(row[j - offset])
                if np.isfinite(s):
                    m2 += (s - mean) ** 2
        out_stats[b, N_OTHER] = n_other
        out_stats[b, MEAN_OTHER] = mean
        out_stats[b, M2_OTHER] = m2
        out_stats[b, MAX_OTHER] = top
        out_stats[b, NON_FINITE] = bad
