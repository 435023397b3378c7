"""Scoring one cell's methods on arrays: each method's query vectors (or rerank-only's scores),
its rankings over the corpus in query blocks, the measures per query and the paired tests
against the baseline."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from refine_core.baselines import RocchioParams, rerank_only_scores, rocchio_vectors
from refine_core.metrics import (
    MetricsResult,
    UnitDocuments,
    cosine_block,
    document_array,
    score_block_rows,
    unit_documents,
)
from refine_core.qrels import Qrels
from refine_core.recommended import RECOMMENDED, judged_positive_idx, lift_judged_positives
from refine_core.statistics import PairedTest, paired_ttest

VERDICTS_FIRST = ("recommended",)
"""Methods that rank the judge's relevant verdicts first (:func:`refine_core.recommended.lift_judged_positives`),
the rest by their vector."""


def positive_idx(feedback_idx: np.ndarray, judge_scores: np.ndarray, judge_mask: np.ndarray) -> np.ndarray:
    return judged_positive_idx(feedback_idx, judge_scores, judge_mask, RECOMMENDED.threshold)


BlockVisitor = Callable[[int, int, dict[str, np.ndarray]], None]
"""``visit(lo, hi, scores)``: sees every method's ``(hi - lo, N)`` ranking scores of queries ``lo:hi``."""


def method_vectors(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray | UnitDocuments,
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    round_vectors: list[np.ndarray],
    rocchio_params: RocchioParams | None = None,
    extra_vectors: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """The query vector ``(n, d)`` of every method that ranks by cosine (all but ``rerank_only``);
    ``extra_vectors`` adds methods, and may give ``rocchio``'s vectors (other weights) in place of
    the ones computed here."""
    fb_vectors = document_array(doc_vectors)[np.maximum(feedback_idx, 0)]
    vectors: dict[str, np.ndarray] = {
        "baseline": np.asarray(query_vectors),
        "rocchio": rocchio_vectors(query_vectors, fb_vectors, judge_scores, judge_mask, rocchio_params),
        "refined": np.asarray(round_vectors[0]),
    }
    for r in range(2, len(round_vectors) + 1):
        vectors[f"refined_r{r}"] = np.asarray(round_vectors[r - 1])
    for name, extra in (extra_vectors or {}).items():
        if (name in vectors and name != "rocchio") or name == "rerank_only":
            raise ValueError(f"extra method {name!r} clashes with a built-in method")
        vectors[name] = np.asarray(extra)  # "rocchio": Rocchio with other weights than rocchio_params
    return vectors


def method_score_blocks(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray | UnitDocuments,
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    round_vectors: list[np.ndarray],
    pool: Qrels | None = None,
    rocchio_params: RocchioParams | None = None,
    extra_vectors: dict[str, np.ndarray] | None = None,
    block_rows: int | None = None,
) -> Iterator[tuple[int, int, dict[str, np.ndarray]]]:
    """Every method's ranking scores, one block of queries at a time: ``(lo, hi, {method: (hi-lo, N)})``.

    Memory is O(block × N), never O(n × N). ``pool`` (pooled :class:`Qrels`) puts ``-inf`` outside
    each query's pool. Methods: ``baseline``, ``rerank_only``, ``rocchio``, ``refined``,
    ``refined_r2``..., then ``extra_vectors`` (e.g. ``hyde``).
    """
    vectors = method_vectors(
        query_vectors,
        doc_vectors,
        feedback_idx=feedback_idx,
        judge_scores=judge_scores,
        judge_mask=judge_mask,
        round_vectors=round_vectors,
        rocchio_params=rocchio_params,
        extra_vectors=extra_vectors,
    )
    docs_unit = unit_documents(doc_vectors)
    n = vectors["baseline"].shape[0]
    step = block_rows or score_block_rows(docs_unit.shape[0])

    def ranking(v: np.ndarray, in_pool: np.ndarray | None) -> np.ndarray:
        scores = cosine_block(v, docs_unit)
        return scores if in_pool is None else np.where(in_pool, scores, -np.inf)

    lifted = positive_idx(feedback_idx, judge_scores, judge_mask)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        in_pool = pool.pool_block(lo, hi) if pool is not None else None  # None for corpus qrels
        base = ranking(vectors["baseline"][lo:hi], in_pool)
        blocks = {
            "baseline": base,
            "rerank_only": rerank_only_scores(base, feedback_idx[lo:hi], judge_scores[lo:hi], mask=judge_mask[lo:hi]),
        }
        for name, v in vectors.items():
            if name != "baseline":
                blocks[name] = ranking(v[lo:hi], in_pool)
                if name in VERDICTS_FIRST:  # the judged positives first, in the original order
                    blocks[name] = lift_judged_positives(blocks[name], lifted[lo:hi], original=base)
        yield lo, hi, blocks


def method_rankings(
    query_vectors: np.ndarray, doc_vectors: np.ndarray, *, pool: np.ndarray | None = None, **kwargs: object
) -> dict[str, np.ndarray]:
    """Dense ``(n, N)`` ranking scores of every method (small inputs; see :func:`method_score_blocks`)."""
    qpool = Qrels.from_dense(np.zeros(np.shape(pool), np.float32), pool) if pool is not None else None
    parts: dict[str, list[np.ndarray]] = {}
    for _, _, blocks in method_score_blocks(query_vectors, doc_vectors, pool=qpool, **kwargs):  # type: ignore[arg-type]
        for name, scores in blocks.items():
            parts.setdefault(name, []).append(scores)
    return {name: np.concatenate(p) for name, p in parts.items()}


def per_query_columns(
    metrics: dict[str, MetricsResult],
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    query_ids: list[str],
    doc_ids: list[str],
) -> dict[str, list[Any]]:
    """The per-query file of a cell, as columns: query id, whether every judgment failed, how many
    failed, the judged documents' ids and the judge's scores (None where it failed), then
    ``ap_<method>`` and ``roc_auc_<method>`` for every method."""
    idx = np.asarray(feedback_idx)
    mask = np.asarray(judge_mask, dtype=bool)
    asked = idx >= 0
    columns: dict[str, list[Any]] = {
        "query_id": list(query_ids),
        "judge_failed": [not bool(x) for x in np.any(mask & asked, axis=1).tolist()],
        "judgments_failed": [int(x) for x in (~mask & asked).sum(axis=1)],
        "judged_doc_ids": [[doc_ids[int(j)] for j in row if j >= 0] for row in idx],
        "judge_scores": [
            [float(s) if m else None for s, m, j in zip(srow, mrow, irow) if j >= 0]
            for srow, mrow, irow in zip(judge_scores, mask, idx)
        ],
    }
    for method, result in metrics.items():
        columns[f"ap_{method}"] = result.per_query["ap"].tolist()
        columns[f"roc_auc_{method}"] = result.per_query["roc_auc"].tolist()
    return columns


def paired_tests(metrics: dict[str, MetricsResult], qrels: Qrels) -> dict[str, PairedTest]:
    n_without = int((qrels.n_relevant() == 0).sum())
    if n_without:
        warnings.warn(
            f"{n_without} of {qrels.n_queries} queries have no relevant document in their pool; "
            "they are excluded from every mean",
            stacklevel=3,
        )
    base_ap = metrics["baseline"].per_query["ap"]
    tests: dict[str, PairedTest] = {}
    for name, result in metrics.items():
        if name != "baseline" and np.isfinite(base_ap).sum() >= 2:
            tests[name] = paired_ttest(base_ap, result.per_query["ap"], alternative="greater")
    return tests


class ScoreSamples:
    """A block visitor (for :func:`score_methods`) that keeps score distributions for plots.

    Per chosen method: the scores of every relevant in-pool pair and of the first
    ``max_negatives`` other in-pool pairs, both in (query, document) order.
    """

    def __init__(
        self, qrels: Qrels, methods: tuple[str, ...] = ("baseline", "refined"), *, max_negatives: int = 200_000
    ) -> None:
        self.qrels = qrels
        self.methods = methods
        self.max_negatives = max_negatives
        self.positives: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        self.negatives: dict[str, list[np.ndarray]] = {m: [] for m in methods}
        self._negatives_kept = dict.fromkeys(methods, 0)

    def __call__(self, lo: int, hi: int, blocks: dict[str, np.ndarray]) -> None:
        block = self.qrels.rows(lo, hi)
        rows, docs = block.row_ids(), block.docs
        relevant = block.gains > 0
        negative = self.qrels.negative_block(lo, hi)
        for method in self.methods:
            scores = blocks[method]
            self.positives[method].append(scores[rows[relevant], docs[relevant]])
            room = self.max_negatives - self._negatives_kept[method]
            if room > 0:
                taken = scores[negative][:room]
                self.negatives[method].append(taken)
                self._negatives_kept[method] += taken.size

    def arrays(self, prefixes: dict[str, str] | None = None) -> dict[str, np.ndarray]:
        """``{<prefix>_pos, <prefix>_neg}`` per method (prefix defaults to the method name)."""
        out: dict[str, np.ndarray] = {}
        for method in self.methods:
            prefix = (prefixes or {}).get(method, method)
            out[f"{prefix}_pos"] = (
                np.concatenate(self.positives[method]) if self.positives[method] else np.zeros(0, np.float32)
            )
            out[f"{prefix}_neg"] = (
                np.concatenate(self.negatives[method]) if self.negatives[method] else np.zeros(0, np.float32)
            )
        return out
