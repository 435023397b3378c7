"""Cosine similarity against a corpus: documents scaled to unit length once (:func:`unit_documents`,
or :class:`UnitDocuments` for a corpus known to be), then one product per block of queries
(:func:`cosine_block`), or one query at a time (:func:`cosine_one`). The one cosine of the project:
the scoring of :mod:`refine_core.metrics` and :mod:`refine_core.shards`, and of the corpus commands."""

from __future__ import annotations

import numpy as np

from refine_core._validation import MIN_NORM


class UnitDocuments:
    """A corpus already scaled to unit length (float32): scoring uses it as it is, with no copy.

    Wrap a large corpus once (:func:`unit_documents` of the raw vectors, or vectors known to be
    unit length) and pass the wrapper wherever ``doc_vectors``/``documents`` is scored.
    """

    __slots__ = ("vectors",)

    def __init__(self, vectors: np.ndarray) -> None:
        v = np.asarray(vectors)
        if v.ndim != 2 or v.dtype != np.float32:
            raise ValueError(f"UnitDocuments needs a 2-D float32 array, got {v.dtype} {v.shape}")
        self.vectors = v

    @property
    def shape(self) -> tuple[int, ...]:
        return self.vectors.shape


def document_array(documents: np.ndarray | UnitDocuments) -> np.ndarray:
    """The document vectors behind ``documents`` (the wrapped array for :class:`UnitDocuments`)."""
    return documents.vectors if isinstance(documents, UnitDocuments) else np.asarray(documents)


def unit_documents(documents: np.ndarray | UnitDocuments) -> np.ndarray:
    """Documents scaled to unit length, float32 (once per corpus, then :func:`cosine_block` per query block)."""
    if isinstance(documents, UnitDocuments):
        return documents.vectors
    docs = np.asarray(documents, dtype=np.float32)
    if docs.ndim != 2:
        raise ValueError(f"documents must be 2-D (documents, dimension), got shape {docs.shape}")
    d_norm = np.linalg.norm(docs, axis=1, keepdims=True)
    if (d_norm < MIN_NORM).any():
        raise ValueError(f"documents contains a zero vector at row {int(np.flatnonzero(d_norm < MIN_NORM)[0])}")
    return docs / d_norm


def cosine_block(vectors: np.ndarray, docs_unit: np.ndarray) -> np.ndarray:
    """Cosine of each query vector with every unit document, ``(b, N)`` float32."""
    q = np.asarray(vectors, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != docs_unit.shape[1]:
        raise ValueError(f"vectors {q.shape} and documents {docs_unit.shape} must be 2-D with the same dimension")
    q_norm = np.linalg.norm(q, axis=1, keepdims=True)
    if (q_norm < MIN_NORM).any():
        raise ValueError(f"vectors contains a zero vector at row {int(np.flatnonzero(q_norm < MIN_NORM)[0])}")
    return (q / q_norm) @ docs_unit.T


def unit_query(query: np.ndarray) -> np.ndarray:
    """One query vector ``(d,)`` scaled to unit length, float32 (a ``ValueError`` for a zero vector)."""
    q = np.asarray(query, dtype=np.float32)
    if q.ndim != 1:
        raise ValueError(f"query must be one vector (d,), got shape {q.shape}")
    norm = float(np.linalg.norm(q))
    if norm < MIN_NORM:
        raise ValueError("query is a zero vector: it has no direction to rank by")
    return q / norm


def cosine_one(docs_unit: np.ndarray, query: np.ndarray, *, chunk: int = 262_144) -> np.ndarray:
    """Cosine of one query with every unit document ``(N,)`` float32, ``chunk`` documents per product:
    ``docs_unit`` may be a memory-mapped corpus larger than memory (the corpus commands' index)."""
    q = unit_query(query)
    if docs_unit.ndim != 2 or docs_unit.shape[1] != q.shape[0]:
        raise ValueError(f"documents {docs_unit.shape} and query {q.shape} must have the same dimension")
    out = np.empty(docs_unit.shape[0], dtype=np.float32)
    for start in range(0, docs_unit.shape[0], chunk):
        out[start : start + chunk] = np.asarray(docs_unit[start : start + chunk], dtype=np.float32) @ q
    return out
