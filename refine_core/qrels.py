"""Relevance labels as sparse qrels: memory that grows with the judged pairs, not queries × corpus.

A :class:`Qrels` holds, for each query ``i`` (row), the documents ``docs[indptr[i]:indptr[i+1]]``
(ascending document index) and their graded gains (``> 0`` relevant, ``0`` labelled not relevant).

Two kinds, as in :mod:`evaluations.benchmark`:

* **corpus** (``pooled=False``): every document is a candidate for every query; only the
  relevant pairs need be listed (a listed gain 0 is the same as not listed).
* **per-query pools** (``pooled=True``): a query's rows *are* its pool: listed documents are
  ranked and counted, everything else is neither.

The dense ``(n, N)`` views (:meth:`Qrels.to_dense`, :meth:`Qrels.pool_block`) exist for small
inputs and query blocks; nothing in the pipeline builds them for all queries at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class Qrels:
    """Sparse graded relevance in CSR layout (rows = queries, columns = documents).

    Attributes:
        indptr: ``(n + 1,)`` int64 row offsets.
        docs: ``(nnz,)`` int64 document indices, ascending within each row.
        gains: ``(nnz,)`` float32 graded gains (0 = judged not relevant).
        n_documents: the corpus size ``N`` (document indices are ``0 .. N-1``).
        pooled: True when each query's listed documents are its whole pool.
    """

    indptr: np.ndarray
    docs: np.ndarray
    gains: np.ndarray
    n_documents: int
    pooled: bool = False

    def __post_init__(self) -> None:
        indptr, docs, gains = self.indptr, self.docs, self.gains
        if indptr.ndim != 1 or indptr.size < 1 or indptr[0] != 0 or (np.diff(indptr) < 0).any():
            raise ValueError("qrels indptr must be a non-decreasing 1-D array starting at 0")
        if docs.shape != (int(indptr[-1]),) or gains.shape != docs.shape:
            raise ValueError(
                f"qrels docs {docs.shape} and gains {gains.shape} must both have indptr[-1]={int(indptr[-1])} entries"
            )
        if docs.size and (docs.min() < 0 or docs.max() >= self.n_documents):
            raise ValueError(f"qrels document indices must lie in [0, {self.n_documents})")
        if gains.size and (not np.isfinite(gains).all() or (gains < 0).any()):
            raise ValueError("qrels gains must be finite and non-negative")

    # ---- construction ---------------------------------------------------------------
    @classmethod
    def from_pairs(
        cls,
        rows: np.ndarray,
        docs: np.ndarray,
        gains: np.ndarray,
        *,
        n_queries: int,
        n_documents: int,
        pooled: bool = False,
    ) -> Qrels:
        """From ``(query row, document index, gain)`` triples in any order (a repeated pair keeps its last gain)."""
        rows = np.asarray(rows, dtype=np.int64)
        docs = np.asarray(docs, dtype=np.int64)
        gains = np.asarray(gains, dtype=np.float32)
        if not rows.shape == docs.shape == gains.shape or rows.ndim != 1:
            raise ValueError(f"rows {rows.shape}, docs {docs.shape} and gains {gains.shape} must be 1-D of one length")
        if rows.size and (rows.min() < 0 or rows.max() >= n_queries):
            raise ValueError(f"qrels query rows must lie in [0, {n_queries})")
        order = np.lexsort((np.arange(rows.size), docs, rows))
        rows, docs, gains = rows[order], docs[order], gains[order]
        if rows.size:  # keep the last of repeated (row, doc) pairs
            last = np.ones(rows.size, dtype=bool)
            last[:-1] = (rows[1:] != rows[:-1]) | (docs[1:] != docs[:-1])
            rows, docs, gains = rows[last], docs[last], gains[last]
        indptr = np.zeros(n_queries + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n_queries), out=indptr[1:])
        return cls(indptr, docs, gains, int(n_documents), pooled)

    @classmethod
    def from_dense(cls, labels: np.ndarray, pool: np.ndarray | None = None) -> Qrels:
        """From an ``(n, N)`` label matrix and an optional ``(n, N)`` bool pool (small inputs and tests)."""
        y = np.asarray(labels, dtype=np.float64)
        if y.ndim != 2:
            raise ValueError(f"labels must be 2-D (queries, documents), got shape {y.shape}")
        if np.isnan(y).any() or (y < 0).any():
            raise ValueError("labels must be finite and non-negative")
        if pool is None:
            rows, docs = np.nonzero(y > 0)
            return cls.from_pairs(rows, docs, y[rows, docs], n_queries=y.shape[0], n_documents=y.shape[1])
        p = np.asarray(pool)
        if p.shape != y.shape or p.dtype != np.bool_:
            raise ValueError(f"pool must be a boolean array of shape {y.shape}, got {p.dtype} {p.shape}")
        rows, docs = np.nonzero(p)
        return cls.from_pairs(rows, docs, y[rows, docs], n_queries=y.shape[0], n_documents=y.shape[1], pooled=True)

    # ---- views ------------------------------------------------------------------------
    @property
    def n_queries(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def shape(self) -> tuple[int, int]:
        return self.n_queries, self.n_documents

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.docs.nbytes + self.gains.nbytes)

    def rows(self, lo: int, hi: int) -> Qrels:
        """The qrels of queries ``lo:hi`` (views, no copy of the pairs)."""
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return Qrels(self.indptr[lo : hi + 1] - a, self.docs[a:b], self.gains[a:b], self.n_documents, self.pooled)

    def take(self, query_rows: np.ndarray) -> Qrels:
        """The qrels of the given queries, in that order."""
        picks = [np.arange(self.indptr[i], self.indptr[i + 1]) for i in np.asarray(query_rows, dtype=np.int64)]
        sel = np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)
        indptr = np.zeros(len(picks) + 1, dtype=np.int64)
        np.cumsum([p.size for p in picks], out=indptr[1:])
        return Qrels(indptr, self.docs[sel], self.gains[sel], self.n_documents, self.pooled)

    def row_ids(self) -> np.ndarray:
        """The query row of every stored pair, ``(nnz,)``."""
        return np.repeat(np.arange(self.n_queries, dtype=np.int64), np.diff(self.indptr))

    def relevant(self) -> Qrels:
        """Only the pairs with gain > 0 (a corpus-kind view: pooling is dropped)."""
        keep = self.gains > 0
        return Qrels.from_pairs(
            self.row_ids()[keep],
            self.docs[keep],
            self.gains[keep],
            n_queries=self.n_queries,
            n_documents=self.n_documents,
        )

    def n_relevant(self) -> np.ndarray:
        """Relevant documents per query, ``(n,)``."""
        return np.bincount(self.row_ids()[self.gains > 0], minlength=self.n_queries)

    def gains_at(self, feedback_idx: np.ndarray) -> np.ndarray:
        """Gain of each ``(i, feedback_idx[i, k])`` pair, ``(n, K)`` float32 (0 for unlisted pairs and padding -1)."""
        idx = np.asarray(feedback_idx, dtype=np.int64)
        if idx.ndim != 2 or idx.shape[0] != self.n_queries:
            raise ValueError(f"feedback_idx must be ({self.n_queries}, K), got shape {idx.shape}")
        out = np.zeros(idx.shape, dtype=np.float32)
        for i in range(self.n_queries):
            a, b = self.indptr[i], self.indptr[i + 1]
            if a == b:
                continue
            row_docs = self.docs[a:b]
            pos = np.searchsorted(row_docs, idx[i])
            pos = np.minimum(pos, b - a - 1)
            hit = (row_docs[pos] == idx[i]) & (idx[i] >= 0)
            out[i, hit] = self.gains[a:b][pos[hit]]
        return out

    def _block_pairs(self, lo: int, hi: int, columns: tuple[int, int] | None) -> tuple[Qrels, np.ndarray, int, int]:
        block = self.rows(lo, hi)
        a, b = columns if columns is not None else (0, self.n_documents)
        return block, (block.docs >= a) & (block.docs < b), a, b

    def pool_block(self, lo: int, hi: int, columns: tuple[int, int] | None = None) -> np.ndarray | None:
        """``(hi - lo, N)`` bool pool of queries ``lo:hi``; None for corpus qrels (everything).
        ``columns=(a, b)``: only documents ``a .. b-1`` (a corpus shard), ``(hi - lo, b - a)``."""
        if not self.pooled:
            return None
        block, inside, a, b = self._block_pairs(lo, hi, columns)
        out = np.zeros((hi - lo, b - a), dtype=bool)
        out[block.row_ids()[inside], block.docs[inside] - a] = True
        return out

    def negative_block(self, lo: int, hi: int, columns: tuple[int, int] | None = None) -> np.ndarray:
        """``(hi - lo, N)`` bool: the non-relevant pairs of each query's pool (every document but
        the relevant ones for corpus qrels); ``columns`` as in :meth:`pool_block`."""
        block, inside, a, b = self._block_pairs(lo, hi, columns)
        pool = self.pool_block(lo, hi, columns)
        out = np.ones((hi - lo, b - a), dtype=bool) if pool is None else pool
        relevant = inside & (block.gains > 0)
        out[block.row_ids()[relevant], block.docs[relevant] - a] = False
        return out

    def to_dense(self) -> tuple[np.ndarray, np.ndarray | None]:
        """``(labels (n, N) float32, pool (n, N) bool or None)``: for small inputs and tests only."""
        labels = np.zeros(self.shape, dtype=np.float32)
        labels[self.row_ids(), self.docs] = self.gains
        return labels, self.pool_block(0, self.n_queries)


def as_qrels(labels: np.ndarray | Qrels, pool: np.ndarray | None = None) -> Qrels:
    """``labels`` as :class:`Qrels` (a dense matrix and optional pool are converted)."""
    if isinstance(labels, Qrels):
        if pool is not None:
            raise ValueError("pass the pool inside the Qrels (pooled=True), not as a separate matrix")
        return labels
    return Qrels.from_dense(labels, pool)


def block_rows_for(n_documents: int, *, bytes_per_cell: int = 8, budget_bytes: int = 128 << 20, cap: int = 1024) -> int:
    """Queries per block so that a ``(block, N)`` array of ``bytes_per_cell`` stays within ``budget_bytes``."""
    return int(max(1, min(cap, budget_bytes // max(1, n_documents * bytes_per_cell))))
