"""One evaluation cell on arrays: every method scored on the same queries and judgments.

Methods: ``baseline`` (original ranking), ``rerank_only``, ``rocchio``, ``refined`` (the
paper) and, with ``rounds > 1``, ``refined_r2`` ... ``refined_rR``. All share the first
round's judgments of the top-K documents of the original ranking, so the comparison is
paired and costs K judgments per query per round.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refine_core.baselines import RocchioParams, rerank_only_scores, rocchio_vectors
from refine_core.feedback import FeedbackStrategy
from refine_core.metrics import (
    DEFAULT_KS,
    MetricsResult,
    UnitDocuments,
    auto_corpus_shard,
    check_ks,
    collect_metrics,
    cosine_block,
    document_array,
    rank_metrics,
    score_block_rows,
    unit_documents,
)
from refine_core.qrels import Qrels, as_qrels
from refine_core.recommended import LIFT, RECOMMENDED, judged_positive_idx, lift_judged_positives
from refine_core.refinement import RefineConfig
from refine_core.rounds import JudgeFn, refine_rounds, remembering, rocchio_rounds
from refine_core.shards import (
    ShardPart,
    Specials,
    count_shard,
    finish_rerank_only,
    measures,
    merge_shards,
    pair_scores,
    relevant_specials,
    rerank_only_specials,
)
from refine_core.statistics import PairedTest, paired_ttest


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


VERDICTS_FIRST = ("recommended",)
"""Methods that rank the judge's relevant verdicts first (:func:`refine_core.recommended.lift_judged_positives`),
the rest by their vector."""


def _positive_idx(feedback_idx: np.ndarray, judge_scores: np.ndarray, judge_mask: np.ndarray) -> np.ndarray:
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

    lifted = _positive_idx(feedback_idx, judge_scores, judge_mask)
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
    return metrics, _paired_tests(metrics, qrels)


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


# ---- the same evaluation over corpus shards ------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class ShardInputs:
    """What every corpus shard needs, computed once where the queries are (:func:`shard_inputs`).

    Attributes:
        vectors: method -> ``(n, d)`` query vectors of the methods that rank by cosine.
        specials: method -> :class:`~refine_core.shards.Specials` (every method, ``rerank_only`` included).
        order: the methods, in the order :func:`method_score_blocks` yields them.
        positive_idx: ``(n, K)`` the judged-positive documents (``-1`` elsewhere) that the
            :data:`VERDICTS_FIRST` methods rank first.
    """

    vectors: dict[str, np.ndarray]
    specials: dict[str, Specials]
    order: tuple[str, ...]
    positive_idx: np.ndarray | None = None

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"order": np.array(self.order)}
        if self.positive_idx is not None:
            out["positive_idx"] = self.positive_idx
        for name, v in self.vectors.items():
            out[f"vectors.{name}"] = v
        for name, sp in self.specials.items():
            out.update(sp.arrays(f"specials.{name}"))
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ShardInputs:
        order = tuple(str(x) for x in arrays["order"])
        vectors = {name: arrays[f"vectors.{name}"] for name in order if f"vectors.{name}" in arrays}
        specials = {name: Specials.from_arrays(arrays, f"specials.{name}") for name in order}
        return cls(vectors, specials, order, arrays.get("positive_idx"))


@dataclass(frozen=True, eq=False)
class ShardScores:
    """One shard's contribution: per method its counts (:class:`~refine_core.shards.ShardPart`) and,
    for the sampled methods, the first scores of non-relevant pool pairs in (query, document) order
    with their number per query."""

    parts: dict[str, ShardPart]
    negatives: dict[str, tuple[np.ndarray, np.ndarray]]

    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {"methods": np.array(list(self.parts)), "sampled": np.array(list(self.negatives))}
        for name, part in self.parts.items():
            out.update(part.arrays(f"part.{name}"))
        for name, (values, counts) in self.negatives.items():
            out[f"neg.{name}.values"], out[f"neg.{name}.counts"] = values, counts
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ShardScores:
        parts = {str(m): ShardPart.from_arrays(arrays, f"part.{m}") for m in arrays["methods"]}
        negatives = {str(m): (arrays[f"neg.{m}.values"], arrays[f"neg.{m}.counts"]) for m in arrays["sampled"]}
        return cls(parts, negatives)


def shard_bounds(n_documents: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` document ranges of at most ``shard_size`` documents."""
    if shard_size < 1:
        raise ValueError(f"corpus shard size must be >= 1, got {shard_size}")
    return [(a, min(a + shard_size, n_documents)) for a in range(0, n_documents, shard_size)]


def shard_inputs(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    qrels: Qrels,
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    round_vectors: list[np.ndarray],
    rocchio_params: RocchioParams | None = None,
    extra_vectors: dict[str, np.ndarray] | None = None,
) -> ShardInputs:
    """Every method's query vectors and the scores of its special documents (relevant; for
    rerank-only also judged). Reads only the rows of ``doc_vectors`` it needs: a memory map of a
    corpus larger than this process's memory is fine."""
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
    relevant_qrels = qrels.relevant()
    rows, docs = relevant_qrels.row_ids(), relevant_qrels.docs
    specials: dict[str, Specials] = {}
    lifted = _positive_idx(feedback_idx, judge_scores, judge_mask)
    # a relevant document the judge called relevant: its score lifted as the shards lift it
    n_docs = int(np.shape(doc_vectors)[0])
    lifted_pair = np.isin(rows * n_docs + docs, (np.arange(lifted.shape[0])[:, None] * n_docs + lifted)[lifted >= 0])
    original = pair_scores(vectors["baseline"], doc_vectors, rows, docs)
    for name, v in vectors.items():
        scores = original if name == "baseline" else pair_scores(v, doc_vectors, rows, docs)
        if name in VERDICTS_FIRST:  # as the shards lift them: the original score + LIFT, in float32
            lifted_score = (original.astype(np.float32) + np.float32(LIFT)).astype(np.float64)
            scores = np.where(lifted_pair, lifted_score, scores)
        specials[name] = relevant_specials(relevant_qrels, scores)
        if name == "baseline":
            idx = np.asarray(feedback_idx, dtype=np.int64)
            r, c = np.nonzero(idx >= 0)
            judged_base = np.full(idx.shape, np.nan)
            judged_base[r, c] = pair_scores(v, doc_vectors, r, idx[r, c])
            specials["rerank_only"] = rerank_only_specials(
                specials["baseline"], idx, judge_scores, judge_mask, judged_base, pool=qrels if qrels.pooled else None
            )
    order = ("baseline", "rerank_only", *[m for m in vectors if m != "baseline"])
    return ShardInputs(vectors, {m: specials[m] for m in order}, order, lifted)


def score_shard(
    inputs: ShardInputs,
    doc_shard: np.ndarray,
    offset: int,
    qrels: Qrels,
    *,
    block_rows: int | None = None,
    sampled: tuple[str, ...] = ("baseline", "refined"),
    max_negatives: int = 200_000,
) -> ShardScores:
    """Counts of every method over the documents ``offset .. offset + len(doc_shard) - 1``, in query blocks."""
    docs_unit = unit_documents(doc_shard)
    width = docs_unit.shape[0]
    n = qrels.n_queries
    step = block_rows or score_block_rows(width)
    parts: dict[str, list[ShardPart]] = {m: [] for m in inputs.order}
    kept: dict[str, list[np.ndarray]] = {m: [] for m in sampled}
    counts = {m: np.zeros(n, dtype=np.int64) for m in sampled}
    room = dict.fromkeys(sampled, max_negatives)
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        block = qrels.rows(lo, hi)
        baseline_scores = None
        for name in inputs.order:
            if name == "rerank_only" and baseline_scores is not None:
                scores = (
                    baseline_scores  # rerank-only ranks by the baseline's scores (its judged documents are special)
                )
            else:
                vec = inputs.vectors["baseline" if name == "rerank_only" else name]
                scores = cosine_block(vec[lo:hi], docs_unit)
                if name == "baseline":
                    baseline_scores = scores
                if name in VERDICTS_FIRST and inputs.positive_idx is not None:
                    scores = lift_judged_positives(scores, inputs.positive_idx[lo:hi], offset, original=baseline_scores)
            parts[name].append(count_shard(scores, offset, block, inputs.specials[name].rows(lo, hi)))
            if name in room and room[name] > 0:
                negative = block.negative_block(0, hi - lo, (offset, offset + width))
                values = scores[negative][: room[name]]
                r = np.nonzero(negative)[0][: values.size]
                counts[name][lo:hi] += np.bincount(r, minlength=hi - lo)
                kept[name].append(values)
                room[name] -= values.size
    return ShardScores(
        {m: ShardPart.concat(p) for m, p in parts.items()},
        {m: (np.concatenate(kept[m]) if kept[m] else np.zeros(0, np.float32), counts[m]) for m in sampled},
    )


def finish_shards(
    inputs: ShardInputs,
    shards: list[ShardScores],
    qrels: Qrels,
    ks: tuple[int, ...] = DEFAULT_KS,
    *,
    max_negatives: int = 200_000,
) -> tuple[dict[str, MetricsResult], dict[str, PairedTest], dict[str, np.ndarray]]:
    """Metrics and tests of every method from all shards' counts (as :func:`score_methods` returns
    them), and the plot samples (``<method>_pos``/``<method>_neg``, as :class:`ScoreSamples` keeps them)."""
    ks = check_ks(ks)
    per_method: dict[str, dict[str, np.ndarray]] = {}
    for name in inputs.order:
        merged = merge_shards([shard.parts[name] for shard in shards])
        specials = inputs.specials[name]
        if name == "rerank_only":
            specials = finish_rerank_only(specials, merged)
        per_method[name] = measures(merged, specials, ks)
    metrics = {name: collect_metrics([p], qrels, ks, warn=False) for name, p in per_method.items()}
    tests = _paired_tests(metrics, qrels)
    samples: dict[str, np.ndarray] = {}
    for name in shards[0].negatives if shards else ():
        samples[f"{name}_pos"] = inputs.specials[name].scores.astype(np.float32)
        pieces = []
        starts = [np.concatenate([[0], np.cumsum(s.negatives[name][1])]) for s in shards]
        for i in range(qrels.n_queries):
            for s, st in zip(shards, starts):
                pieces.append(s.negatives[name][0][st[i] : st[i + 1]])
        samples[f"{name}_neg"] = (np.concatenate(pieces) if pieces else np.zeros(0, np.float32))[:max_negatives]
    return metrics, tests, samples


def _paired_tests(metrics: dict[str, MetricsResult], qrels: Qrels) -> dict[str, PairedTest]:
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
