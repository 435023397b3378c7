"""One evaluation cell on arrays: every method scored on the same queries and judgments.

Methods: ``baseline`` (original ranking), ``rerank_only``, ``rocchio``, ``refined`` (the
paper) and, with ``rounds > 1``, ``refined_r2`` ... ``refined_rR``. All share the first
round's judgments of the top-K documents of the original ranking, so the comparison is
paired and costs K judgments per query per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refine_core.baselines import RocchioParams
from refine_core.feedback import FeedbackStrategy
from refine_core.metrics import (
    DEFAULT_KS,
    MetricsResult,
    UnitDocuments,
    auto_corpus_shard,
    check_ks,
    collect_metrics,
    document_array,
    rank_metrics,
)
from refine_core.qrels import Qrels, as_qrels
from refine_core.refinement import RefineConfig
from refine_core.rounds import JudgeFn, refine_rounds, remembering, rocchio_rounds
from refine_core.scoring import (
    VERDICTS_FIRST,
    BlockVisitor,
    ScoreSamples,
    method_rankings,
    method_score_blocks,
    method_vectors,
    paired_tests,
    per_query_columns,
    positive_idx,
)
from refine_core.shard_scoring import (
    ShardInputs,
    ShardScores,
    finish_shards,
    score_shard,
    shard_bounds,
    shard_inputs,
)
from refine_core.statistics import PairedTest


@dataclass(frozen=True)
class CellOutcome:
    """Everything one cell produced.

    Attributes:
        metrics: method name -> :class:`MetricsResult`.
        tests: method name -> paired one-sided t-test of its AP against ``baseline``.
        feedback_idx / judge_scores / judge_mask: all judgments, ``(n, rounds*K)``.
        refined_vectors: final refined vectors.
        losses: per round, the ``(n, steps)`` loss curves.
        failed_queries: queries whose first-round judgments all failed (they keep the
            baseline ranking in every method).
    """

    metrics: dict[str, MetricsResult]
    tests: dict[str, PairedTest]
    feedback_idx: np.ndarray
    judge_scores: np.ndarray
    judge_mask: np.ndarray
    refined_vectors: np.ndarray
    losses: list[np.ndarray]
    failed_queries: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    def summary(self, measure: str = "map") -> dict[str, float]:
        return {method: result.means[measure] for method, result in self.metrics.items()}


def evaluate_cell_arrays(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray | UnitDocuments,
    labels: np.ndarray | Qrels,
    judge: JudgeFn,
    *,
    pool: np.ndarray | None = None,
    k: int = 20,
    rounds: int = 1,
    config: RefineConfig | None = None,
    strategy: FeedbackStrategy | None = None,
    rocchio_params: RocchioParams | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    variants: tuple[str, ...] = (),
) -> CellOutcome:
    """Score baseline, rerank-only, Rocchio and refinement on one set of embeddings.

    Args:
        query_vectors: ``(n, d)`` original query embeddings.
        doc_vectors: ``(N, d)`` document embeddings.
        labels: ``(n, N)`` relevance labels (graded allowed) or sparse :class:`Qrels`.
        judge: returns judge scores for chosen documents (see ``refine_core.rounds.JudgeFn``).
        pool: ``(n, N)`` per-query pools with dense labels (None = whole corpus; pooled Qrels carry their own).
        k: documents judged per query per round (paper: 20).
        rounds: refinement rounds (1 = paper).
        config: refinement hyperparameters (default: paper).
        strategy: feedback selection (default: top-K).
        rocchio_params: Rocchio weights and threshold.
        ks: metric cut-offs.
        variants: more methods (:data:`VARIANTS`), each at the budget of the refinement it sits
            beside: ``"rocchio_rounds"`` adds ``rocchio_r2`` ... ``rocchio_rR`` (Rocchio after R
            rounds of its own top-K judgments, :func:`refine_core.rounds.rocchio_rounds`);
            ``"rocchio_kl"`` adds ``rocchio_kl`` (the KL refinement started from the Rocchio
            vector, on the first round's judgments) and ``rocchio_kl_r2`` ... with rounds. Their
            first round judges the same documents as the refinement's; later rounds judge the
            documents their own vector ranks first. ``judge`` is asked about each (query,
            document) pair once (:func:`refine_core.rounds.remembering`): a variant's first round,
            and any document another method already judged, costs no call.
    """
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise ValueError(f"variants: unknown {', '.join(map(repr, unknown))}; choose from {', '.join(VARIANTS)}")
    config = config or RefineConfig()
    qrels = as_qrels(labels, pool)
    if variants:
        judge = remembering(judge)
    outcome = refine_rounds(
        query_vectors,
        doc_vectors,
        judge,
        rounds=rounds,
        k=k,
        pool=qrels if qrels.pooled else None,
        strategy=strategy,
        config=config,
    )
    metrics, tests = score_methods(
        query_vectors,
        doc_vectors,
        qrels,
        feedback_idx=outcome.feedback_idx[:, :k],
        judge_scores=np.nan_to_num(outcome.scores[:, :k]),
        judge_mask=outcome.mask[:, :k],
        round_vectors=list(outcome.round_vectors),
        rocchio_params=rocchio_params,
        ks=ks,
        extra_vectors=variant_vectors(
            query_vectors,
            doc_vectors,
            judge,
            variants,
            rounds=rounds,
            k=k,
            pool=qrels if qrels.pooled else None,
            strategy=strategy,
            config=config,
            rocchio_params=rocchio_params,
        ),
    )
    return CellOutcome(
        metrics=metrics,
        tests=tests,
        feedback_idx=outcome.feedback_idx,
        judge_scores=outcome.scores,
        judge_mask=outcome.mask,
        refined_vectors=outcome.vectors,
        losses=outcome.losses,
        failed_queries=np.asarray(~outcome.mask[:, :k].any(axis=1)),
    )


VARIANTS = ("rocchio_rounds", "rocchio_kl")
"""Methods beyond the paper's controls that :func:`evaluate_cell_arrays` can add."""


def variant_vectors(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray | UnitDocuments,
    judge: JudgeFn,
    variants: tuple[str, ...],
    *,
    rounds: int,
    k: int,
    pool: Qrels | None,
    strategy: FeedbackStrategy | None,
    config: RefineConfig,
    rocchio_params: RocchioParams | None,
) -> dict[str, np.ndarray]:
    """The query vectors of the requested :data:`VARIANTS`, by method name (see
    :func:`evaluate_cell_arrays`)."""
    out: dict[str, np.ndarray] = {}
    wanted: list[tuple[str, RefineConfig | None]] = (
        [("rocchio_r", None)] if "rocchio_rounds" in variants and rounds > 1 else []
    )
    wanted += [("rocchio_kl_r", config)] if "rocchio_kl" in variants else []
    for prefix, then_refine in wanted:
        result = rocchio_rounds(
            query_vectors,
            doc_vectors,
            judge,
            rounds=rounds,
            k=k,
            pool=pool,
            strategy=strategy,
            params=rocchio_params,
            then_refine=then_refine,
        )
        if then_refine is not None:
            out["rocchio_kl"] = result.round_vectors[0]
        for r in range(2, rounds + 1):
            out[f"{prefix}{r}"] = result.round_vectors[r - 1]
    return out


def score_methods(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray | UnitDocuments,
    labels: np.ndarray | Qrels,
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    round_vectors: list[np.ndarray],
    pool: np.ndarray | None = None,
    rocchio_params: RocchioParams | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    extra_vectors: dict[str, np.ndarray] | None = None,
    visit: BlockVisitor | None = None,
    block_rows: int | None = None,
    corpus_shard: int | str | None = "auto",
) -> tuple[dict[str, MetricsResult], dict[str, PairedTest]]:
    """Metrics of every method and a paired one-sided t-test of each against the baseline.

    Scores and measures are computed one query block at a time (``block_rows``, default from the
    corpus size): memory grows with the corpus and the qrels, not with queries × corpus.
    ``visit`` sees each block's scores (e.g. to sample score distributions for plots).
    ``corpus_shard``: score the corpus that many documents at a time and merge the counts
    (:func:`shard_inputs`, :func:`score_shard`, :func:`finish_shards`; a memory-mapped corpus is
    then read one shard at a time); ``visit`` is not available then. ``"auto"`` (the default)
    shards a corpus of more than twice :data:`refine_core.metrics.AUTO_SHARD_DOCUMENTS` when no
    ``visit`` or ``block_rows`` is given (every shipped benchmark is far below it: one whole-corpus pass).
    """
    qrels = as_qrels(labels, pool)
    ks = check_ks(ks)
    corpus_shard = auto_corpus_shard(
        corpus_shard, qrels.n_documents, one_pass=visit is not None or block_rows is not None
    )
    if corpus_shard is not None:
        if visit is not None:
            raise ValueError("visit needs whole-corpus score blocks; leave corpus_shard out to use it")
        docs = document_array(doc_vectors)
        inputs = shard_inputs(
            query_vectors,
            docs,
            qrels,
            feedback_idx=feedback_idx,
            judge_scores=judge_scores,
            judge_mask=judge_mask,
            round_vectors=round_vectors,
            rocchio_params=rocchio_params,
            extra_vectors=extra_vectors,
        )
        shards = [
            score_shard(inputs, np.asarray(docs[a:b]), a, qrels, block_rows=block_rows, sampled=())
            for a, b in shard_bounds(qrels.n_documents, corpus_shard)
        ]
        metrics, tests, _ = finish_shards(inputs, shards, qrels, ks)
        return metrics, tests
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    for lo, hi, blocks in method_score_blocks(
        query_vectors,
        doc_vectors,
        feedback_idx=feedback_idx,
        judge_scores=judge_scores,
        judge_mask=judge_mask,
        round_vectors=round_vectors,
        pool=qrels if qrels.pooled else None,
        rocchio_params=rocchio_params,
        extra_vectors=extra_vectors,
        block_rows=block_rows,
    ):
        block_qrels = qrels.rows(lo, hi)
        for name, scores in blocks.items():
            parts.setdefault(name, []).append(rank_metrics(scores, block_qrels, ks))
        if visit is not None:
            visit(lo, hi, blocks)
    metrics = {name: collect_metrics(p, qrels, ks, warn=False) for name, p in parts.items()}
    return metrics, paired_tests(metrics, qrels)


__all__ = [  # this module's names and the scoring's, which lived here before
    "BlockVisitor",
    "CellOutcome",
    "evaluate_cell_arrays",
    "finish_shards",
    "method_rankings",
    "method_score_blocks",
    "method_vectors",
    "paired_tests",
    "per_query_columns",
    "positive_idx",
    "score_methods",
    "score_shard",
    "ScoreSamples",
    "shard_bounds",
    "shard_inputs",
    "ShardInputs",
    "ShardScores",
    "variant_vectors",
    "VARIANTS",
    "VERDICTS_FIRST",
]
