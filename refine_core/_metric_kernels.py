"""Compiled pass of the ranking metrics (numba): the rank of every relevant document without sorting the pool.

For one query with relevant documents ``r`` (scores ``t_r``) among the pool's candidates ``j``
(scores ``s_j``), one pass over the candidates counts, per relevant document,

    greater_r   = #{j : s_j > t_r}
    equal_r     = #{j : s_j = t_r}            (itself included)
    before_r    = #{j : s_j = t_r, j < r}     (ties keep document-index order)

with a binary search of ``s_j`` in the sorted relevant scores (candidates below the lowest
relevant score, most of a large corpus, cost one comparison). From them:

    rank_r    = 1 + greater_r + before_r                   (stable descending rank, 1-based)
    avg_asc_r = (n_pool - greater_r - equal_r) + (equal_r + 1) / 2   (ascending average rank)

which is all that AP, nDCG, R@k, P@k, R-precision and ROC-AUC need. The same pass sums the
scores for the separation; a second pass forms the squared deviations from the negatives' mean
(two-pass, as the dense formula does). Cost O(pool · log |R|) per query, memory O(|R|).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from refine_core import _parallel  # noqa: F401 - chooses the threading layer before any kernel runs


@njit(cache=True, parallel=True, error_model="numpy")
def relevant_ranks(scores, use_all, cand_indptr, cand_docs, rel_indptr, rel_docs,
                   out_rank, out_avg_asc, out_stats):  # noqa: ANN001 - numba signature
    """Fill ``out_rank``/``out_avg_asc`` (per relevant entry) and ``out_stats`` (per query:
    n_pool, sum_pos, sum_neg, ss_pos, ss_neg, non_finite) for the rows of ``scores``."""
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
        n_pool = c_hi - c_lo
        r_lo = rel_indptr[b]
        m = rel_indptr[b + 1] - r_lo
        out_stats[b, 0] = n_pool
        if m == 0:
            continue
        t = np.empty(m, dtype=np.float64)
        for r in range(m):
            t[r] = row[rel_docs[r_lo + r]]
        order = np.argsort(t)
        ts = t[order]
        ps = np.empty(m, dtype=np.int64)
        for r in range(m):
            ps[r] = rel_docs[r_lo + order[r]]
        add = np.zeros(m + 1, dtype=np.int64)
        equal = np.zeros(m, dtype=np.int64)
        before = np.zeros(m, dtype=np.int64)
        t_min = ts[0]
        total = 0.0
        bad = 0
        for c in range(c_lo, c_hi):
            j = c if use_all else cand_docs[c]
            s = np.float64(row[j])
            if not np.isfinite(s):
                bad += 1
                continue
            total += s
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
        sum_pos = 0.0
        for r in range(m - 1, -1, -1):
            greater += add[r + 1]
            # docs equal to ts[r] were counted in add[r] or lower, so greater excludes them
            k = r_lo + order[r]
            out_rank[k] = 1.0 + greater + before[r]
            out_avg_asc[k] = (n_pool - greater - equal[r]) + (equal[r] + 1) / 2.0
            sum_pos += ts[r]
        n_neg = n_pool - m
        out_stats[b, 1] = sum_pos
        out_stats[b, 2] = total - sum_pos
        out_stats[b, 5] = bad
        mean_pos = sum_pos / m
        ss_pos = 0.0
        pos_dev_neg = 0.0
        mean_neg = (total - sum_pos) / n_neg if n_neg > 0 else 0.0
        for r in range(m):
            ss_pos += (ts[r] - mean_pos) ** 2
            pos_dev_neg += (ts[r] - mean_neg) ** 2
        ss_all = 0.0
        if n_neg > 0:
            for c in range(c_lo, c_hi):
                j = c if use_all else cand_docs[c]
                s = np.float64(row[j])
                ss_all += (s - mean_neg) ** 2
        out_stats[b, 3] = ss_pos
        out_stats[b, 4] = ss_all - pos_dev_neg
