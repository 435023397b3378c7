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

The measures, their names in every spelling and their definitions are values in
:mod:`refine_core.measures`. Formulas, for one query with relevant set R and ranking d_1, d_2, ...:

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
from typing import TYPE_CHECKING

import numpy as np

from refine_core.cosine import UnitDocuments as UnitDocuments  # re-exported: scoring's public names
from refine_core.cosine import cosine_block as cosine_block
from refine_core.cosine import document_array as document_array
from refine_core.cosine import unit_documents as unit_documents
from refine_core.measures import DEFAULT_KS as DEFAULT_KS  # re-exported: the cut-offs every caller defaults to
from refine_core.measures import ranking_measures
from refine_core.qrels import Qrels, as_qrels

if TYPE_CHECKING:
    import polars as pl


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
        mean_keys = {m.key: m.mean_key for m in ranking_measures(self.ks)}
        out: dict[str, float] = {}
        for name, values in self.per_query.items():
            finite = values[np.isfinite(values)]
            out[mean_keys.get(name, name)] = float(finite.mean()) if finite.size else float("nan")
        return out

    def __getitem__(self, name: str) -> float:
        return self.means[name]

    def to_polars(self, query_ids: list[str] | None = None) -> pl.DataFrame:
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


# Queries scored at once. A (block, N) float64 array stays within 256 MiB, and up to 1,024 queries
# are one matrix product as they always were (BLAS results depend on the product's shape in the
# last bits, so every shipped benchmark keeps its exact scores).
SCORE_BLOCK_BYTES = 256 << 20
SCORE_BLOCK_CAP = 1024


AUTO_SHARD_DOCUMENTS = 1 << 18
"""The shard size of the whole-corpus passes — feedback selection and scoring every method — for
a corpus of more than twice this many documents, unless the caller says otherwise.

A query block holds ``SCORE_BLOCK_BYTES / (8 N)`` rows, so in one pass over an N-document corpus
each block serves fewer queries as N grows and the bytes read grow as N² (``benchmarks/scale.py
--one-pass``). In shards the block is sized by the shard (128 rows here) and the bytes read grow
as N. Below twice the shard size one pass is as fast (the blocks are large already)."""


def auto_corpus_shard(corpus_shard: int | str | None, n_documents: int, *, one_pass: bool = False) -> int | None:
    """Resolve a ``corpus_shard`` argument: ``"auto"`` is :data:`AUTO_SHARD_DOCUMENTS` for a corpus
    of more than twice that and None (the whole corpus in one pass) otherwise, or whenever the
    caller needs one pass (``one_pass``: it chose its own block size, or reads whole-corpus
    blocks); None and sizes are kept."""
    if corpus_shard == "auto":
        return AUTO_SHARD_DOCUMENTS if n_documents > 2 * AUTO_SHARD_DOCUMENTS and not one_pass else None
    if corpus_shard is not None and (isinstance(corpus_shard, str) or corpus_shard < 1):
        raise ValueError(f"corpus_shard must be a positive document count, 'auto' or None, got {corpus_shard!r}")
    return corpus_shard


def score_block_rows(n_documents: int) -> int:
    """Queries per scoring block for a corpus of ``n_documents``."""
    return int(max(1, min(SCORE_BLOCK_CAP, SCORE_BLOCK_BYTES // max(1, 8 * n_documents))))


def cosine_scores(vectors: np.ndarray, documents: np.ndarray, *, block_rows: int = SCORE_BLOCK_CAP) -> np.ndarray:
    """Cosine similarity of every query vector with every document, ``(n, N)`` float32.

    A dense ``(n, N)`` result: for small inputs. The pipeline scores query blocks
    (:func:`unit_documents` once, then :func:`cosine_block`) and never holds all of it.
    """
    q = np.asarray(vectors, dtype=np.float32)
    docs = np.asarray(documents, dtype=np.float32)
    if q.ndim != 2 or docs.ndim != 2 or q.shape[1] != docs.shape[1]:
        raise ValueError(f"vectors {q.shape} and documents {docs.shape} must be 2-D with the same dimension")
    docs_unit = unit_documents(docs)
    out = np.empty((q.shape[0], docs.shape[0]), dtype=np.float32)
    for start in range(0, q.shape[0], block_rows):
        out[start : start + block_rows] = cosine_block(q[start : start + block_rows], docs_unit)
    return out


def _check_scores(s: np.ndarray, n: int) -> np.ndarray:
    s = np.asarray(s)
    if s.ndim != 2:
        raise ValueError(f"scores must be 2-D (queries, documents), got shape {s.shape}")
    if s.shape[0] != n:
        raise ValueError(f"scores has {s.shape[0]} rows for {n} queries of labels")
    if s.dtype not in (np.float32, np.float64):
        s = s.astype(np.float64)
    return s


def rank_metrics(scores: np.ndarray, qrels: Qrels, ks: tuple[int, ...] = DEFAULT_KS) -> dict[str, np.ndarray]:
    """Every measure for one block of queries: ``scores`` ``(B, N)`` against ``qrels`` of the same B queries.

    No sort of the pool: the compiled pass (:mod:`refine_core._metric_kernels`) finds each
    relevant document's rank, and every measure follows from those ranks. For pooled qrels only
    each query's pool columns of ``scores`` are read (the rest may hold anything, e.g. -inf).
    This is the one-shard case of :mod:`refine_core.shards`.
    """
    from refine_core.shards import count_shard, measures, relevant_specials  # numba: loaded when first scored

    s = _check_scores(scores, qrels.n_queries)
    if s.shape[1] != qrels.n_documents:
        raise ValueError(f"scores has {s.shape[1]} columns for {qrels.n_documents} documents of labels")
    specials = relevant_specials(qrels, s[qrels.row_ids(), qrels.docs])
    return measures(count_shard(s, 0, qrels, specials), specials, ks)


def check_ks(ks: tuple[int, ...]) -> tuple[int, ...]:
    if any((not isinstance(k, (int, np.integer))) or k < 1 for k in ks):
        raise ValueError(f"ks must be positive integers, got {ks!r}")
    return tuple(int(k) for k in ks)


def collect_metrics(
    parts: list[dict[str, np.ndarray]], qrels: Qrels, ks: tuple[int, ...], *, stacklevel: int = 2, warn: bool = True
) -> MetricsResult:
    """One :class:`MetricsResult` from the per-block outputs of :func:`rank_metrics`, in query order.

    ``warn=False`` leaves the warning about queries without a relevant document to the caller
    (one warning for a cell, not one per method)."""
    per_query = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]} if parts else {}
    n_without = int((qrels.n_relevant() == 0).sum())
    if n_without and warn:
        warnings.warn(
            f"{n_without} of {qrels.n_queries} queries have no relevant document in their pool; "
            "they are excluded from every mean",
            stacklevel=stacklevel + 1,
        )
    return MetricsResult(per_query=per_query, n_queries=qrels.n_queries, n_without_positives=n_without, ks=tuple(ks))


def evaluate_rankings(
    scores: np.ndarray,
    labels: np.ndarray | Qrels,
    *,
    pool: np.ndarray | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    block_rows: int = 64,
) -> MetricsResult:
    """Score every query's ranking of its pool.

    Args:
        scores: ``(n, N)`` ranking scores, higher first.
        labels: ``(n, N)`` relevance labels (0 = not relevant; graded values feed nDCG), or
            sparse :class:`~refine_core.qrels.Qrels` (then ``pool`` stays None).
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
    if np.ndim(scores) != 2:
        raise ValueError(f"scores must be 2-D (queries, documents), got shape {np.shape(scores)}")
    if not isinstance(labels, Qrels):
        y = np.asarray(labels)
        s_shape = np.shape(scores)
        if y.shape != s_shape:
            raise ValueError(f"labels must have the shape of scores {s_shape}, got {y.shape}")
    qrels = as_qrels(labels, pool)
    ks = check_ks(ks)
    s = _check_scores(scores, qrels.n_queries)
    parts = [
        rank_metrics(s[lo : lo + block_rows], qrels.rows(lo, min(lo + block_rows, qrels.n_queries)), ks)
        for lo in range(0, qrels.n_queries, block_rows)
    ]
    return collect_metrics(parts, qrels, ks)
