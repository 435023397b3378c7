"""Choosing which documents the judge sees.

A strategy turns a similarity matrix ``(n, N)`` into ``(n, k)`` document indices. Documents
outside a query's pool carry ``-inf`` similarity (or are masked out by ``pool``) and are
never selected; neither are documents in ``exclude`` (already judged in an earlier round).
When a query has fewer than ``k`` selectable documents its row is padded with ``-1``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Protocol, runtime_checkable

import numpy as np

from refine_core._validation import check_positive_int
from refine_core.qrels import Qrels

if TYPE_CHECKING:
    from refine_core.metrics import UnitDocuments


@runtime_checkable
class FeedbackStrategy(Protocol):
    """Anything that picks the documents to be judged for each query."""

    @property
    def name(self) -> str:
        """A short label for logs and parameters."""
        ...

    def select(
        self,
        similarities: np.ndarray,
        *,
        k: int,
        exclude: np.ndarray | None = None,
    ) -> np.ndarray:
        """Return ``(n, k)`` int64 indices (``-1`` pads rows with too few candidates)."""
        ...


def _candidate_scores(similarities: np.ndarray, exclude: np.ndarray | None) -> np.ndarray:
    sims = np.asarray(similarities, dtype=np.float32)
    if sims.ndim != 2:
        raise ValueError(f"similarities must be 2-D (queries, documents), got shape {sims.shape}")
    if np.isnan(sims).any():
        raise ValueError("similarities contains NaN")
    if exclude is None:
        return sims
    ex = np.asarray(exclude)
    if ex.shape != sims.shape or ex.dtype != np.bool_:
        raise ValueError(f"exclude must be a boolean array of shape {sims.shape}, got {ex.dtype} {ex.shape}")
    return np.where(ex, -np.inf, sims)


def top_k_indices(scores: np.ndarray, k: int, *, block_rows: int = 256) -> np.ndarray:
    """Indices of the ``k`` largest finite entries per row, best first; ties go to the lower index.

    Equal to the first ``k`` of a stable descending argsort, without sorting the row: a partition
    finds the k-th largest value, and only the entries at or above it are ordered. Rows are
    processed in blocks so memory stays bounded for large similarity matrices.
    """
    n, total = scores.shape
    out = np.full((n, k), -1, dtype=np.int64)
    take = min(k, total)
    if take == 0:
        return out
    for start in range(0, n, block_rows):
        block = scores[start : start + block_rows]
        rows = block.shape[0]
        if take * 8 >= total:  # small rows: the plain stable sort is as fast
            order = np.argsort(-block, axis=1, kind="stable")[:, :take]
        else:
            kth = -np.partition(-block, take - 1, axis=1)[:, take - 1]
            r, c = np.nonzero(block >= kth[:, None])  # every entry that can be in the top (ties included)
            v = block[r, c]
            pick = np.lexsort((c, -v, r))  # by row, then score descending, then index
            r, c = r[pick], c[pick]
            first = np.searchsorted(r, np.arange(rows))
            nth = np.arange(r.size) - first[r]
            keep = nth < take
            order = np.empty((rows, take), dtype=np.int64)
            order[r[keep], nth[keep]] = c[keep]
        finite = np.isfinite(np.take_along_axis(block, order, axis=1))
        out[start : start + block_rows, :take] = np.where(finite, order, -1)
    return out


@dataclass(frozen=True)
class TopK:
    """The paper's choice: the ``k`` documents the current vector ranks highest."""

    name: str = "top-k"

    def select(self, similarities: np.ndarray, *, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
        check_positive_int(k, "k")
        return top_k_indices(_candidate_scores(similarities, exclude), k)


@dataclass(frozen=True)
class TopKPlusRandom:
    """``k - extra`` top documents plus ``extra`` drawn uniformly from the rest of the pool.

    The random tail shows the judge some clear negatives (the paper's code supports this).
    Seeded: the same inputs give the same selection.
    """

    extra: int
    seed: int = 0
    name: str = "top-k+random"
    blockwise: ClassVar[bool] = False  # one random stream over all rows: select in one block

    def select(self, similarities: np.ndarray, *, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
        check_positive_int(k, "k")
        check_positive_int(self.extra, "extra", minimum=0)
        if self.extra >= k:
            raise ValueError(f"extra must be smaller than k={k}, got {self.extra}")
        scores = _candidate_scores(similarities, exclude)
        top = top_k_indices(scores, k - self.extra)
        rng = np.random.default_rng(self.seed)
        n = scores.shape[0]
        out = np.full((n, k), -1, dtype=np.int64)
        out[:, : k - self.extra] = top
        for row in range(n):
            available = np.isfinite(scores[row])
            available[top[row][top[row] >= 0]] = False
            candidates = np.flatnonzero(available)
            take = min(self.extra, candidates.size)
            if take:
                out[row, k - self.extra : k - self.extra + take] = rng.choice(candidates, size=take, replace=False)
        return out


def select_feedback(
    similarities: np.ndarray,
    *,
    k: int = 20,
    strategy: FeedbackStrategy | None = None,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """Pick the documents to judge for each query.

    Args:
        similarities: ``(n, N)`` current query-document similarities; ``-inf`` marks
            documents outside a query's pool.
        k: documents per query (paper: 20).
        strategy: a :class:`FeedbackStrategy`; default :class:`TopK`.
        exclude: ``(n, N)`` bool, documents never to select (already judged).

    Returns:
        ``(n, k)`` int64 document indices, ``-1`` where a pool has fewer than ``k`` candidates.

    Example:
        >>> import numpy as np
        >>> select_feedback(np.array([[0.1, 0.9, 0.5]]), k=2).tolist()
        [[1, 2]]
    """
    return (strategy or TopK()).select(similarities, k=k, exclude=exclude)


def top_k_shard(
    vectors: np.ndarray,
    doc_shard: np.ndarray | UnitDocuments,
    offset: int,
    *,
    k: int = 20,
    pool: Qrels | None = None,
    exclude_idx: np.ndarray | None = None,
    block_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best documents of one corpus shard (rows ``offset ..`` of the corpus) for every query.

    Returns ``(indices, scores)``, both ``(n, k)``: global document indices, best first (``-1``
    pads), and their cosines. :func:`refine_core.shards.merge_top_k` of every shard's result is the
    top-K of the whole corpus, as :func:`select_feedback_blocks` with :class:`TopK` gives it.
    """
    from refine_core.metrics import cosine_block, score_block_rows, unit_documents

    check_positive_int(k, "k")
    docs_unit = unit_documents(doc_shard)
    width = docs_unit.shape[0]
    q = np.asarray(vectors, dtype=np.float32)
    n = q.shape[0]
    step = block_rows or score_block_rows(width)
    idx = np.full((n, k), -1, dtype=np.int64)
    scores = np.full((n, k), -np.inf, dtype=np.float32)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        sims = cosine_block(q[lo:hi], docs_unit)
        in_pool = pool.pool_block(lo, hi, (offset, offset + width)) if pool is not None else None
        if in_pool is not None:
            sims = np.where(in_pool, sims, -np.inf)
        if exclude_idx is not None and exclude_idx.size:
            ex = np.asarray(exclude_idx[lo:hi])
            r, c = np.nonzero((ex >= offset) & (ex < offset + width))
            sims[r, ex[r, c] - offset] = -np.inf
        local = top_k_indices(sims, k)
        found = local >= 0
        idx[lo:hi] = np.where(found, local + offset, -1)
        scores[lo:hi] = np.where(found, np.take_along_axis(sims, np.maximum(local, 0), axis=1), -np.inf)
    return idx, scores


def select_feedback_blocks(
    vectors: np.ndarray,
    documents: np.ndarray | UnitDocuments,
    *,
    k: int = 20,
    strategy: FeedbackStrategy | None = None,
    pool: Qrels | None = None,
    exclude_idx: np.ndarray | None = None,
    block_rows: int | None = None,
    corpus_shard: int | str | None = "auto",
) -> np.ndarray:
    """:func:`select_feedback` on the cosine ranking of ``vectors``, one query block at a time.

    Memory is O(block × N): no ``(n, N)`` similarity matrix. ``pool`` (pooled qrels) limits
    each query's candidates; ``exclude_idx`` ``(n, E)`` lists documents never to select
    (already judged; ``-1`` pads). A strategy with ``blockwise = False`` (one random stream
    over every row) sees all rows at once.

    ``corpus_shard``: with :class:`TopK`, take each shard's best ``k`` (:func:`top_k_shard`) and
    merge them (:func:`refine_core.shards.merge_top_k`: by score, then document index — the whole
    corpus's top K). ``"auto"`` shards only a corpus of more than twice
    :data:`refine_core.metrics.AUTO_SHARD_DOCUMENTS` when no ``block_rows`` is given; None never
    shards; other strategies always see whole-corpus blocks.
    """
    from refine_core.metrics import UnitDocuments, auto_corpus_shard, cosine_block, score_block_rows, unit_documents
    from refine_core.shards import merge_top_k

    strategy = strategy or TopK()
    docs_unit = unit_documents(documents)
    q = np.asarray(vectors, dtype=np.float32)
    n = q.shape[0]
    shard = auto_corpus_shard(corpus_shard, docs_unit.shape[0], one_pass=bool(block_rows))
    if shard is not None and type(strategy) is TopK:
        parts = [
            top_k_shard(
                q,
                UnitDocuments(docs_unit[a : a + shard]),
                a,
                k=k,
                pool=pool,
                exclude_idx=exclude_idx,
                block_rows=block_rows,
            )
            for a in range(0, docs_unit.shape[0], shard)
        ]
        return merge_top_k(parts, k)
    step = block_rows or score_block_rows(docs_unit.shape[0])
    if not getattr(strategy, "blockwise", True):
        step = max(n, 1)
    out = np.full((n, k), -1, dtype=np.int64)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        sims = cosine_block(q[lo:hi], docs_unit)
        in_pool = pool.pool_block(lo, hi) if pool is not None else None
        if in_pool is not None:
            sims = np.where(in_pool, sims, -np.inf)
        exclude = None
        if exclude_idx is not None and exclude_idx.size:
            exclude = np.zeros(sims.shape, dtype=bool)
            ex = np.asarray(exclude_idx[lo:hi])
            r, c = np.nonzero(ex >= 0)
            exclude[r, ex[r, c]] = True
        out[lo:hi] = select_feedback(sims, k=k, strategy=strategy, exclude=exclude)
    return out
