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

import numpy as np

from refine_core.baselines import rerank_only_scores, rocchio
from refine_core.feedback import FeedbackStrategy
from refine_core.metrics import (
    DEFAULT_KS,
    MetricsResult,
    check_ks,
    collect_metrics,
    UnitDocuments,
    cosine_block,
    document_array,
    rank_metrics,
    score_block_rows,
    unit_documents,
)
from refine_core.qrels import Qrels, as_qrels
from refine_core.refinement import RefineConfig
from refine_core.rounds import JudgeFn, refine_rounds
from refine_core.statistics import PairedTest, paired_ttest


@dataclass(frozen=True)
class RocchioParams:
    alpha: float = 1.0
    beta: float = 0.75
    gamma: float = 0.15
    threshold: float = 0.5


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
    """
    config = config or RefineConfig()
    qrels = as_qrels(labels, pool)
    outcome = refine_rounds(query_vectors, doc_vectors, judge, rounds=rounds, k=k,
                            pool=qrels if qrels.pooled else None, strategy=strategy, config=config)
    metrics, tests = score_methods(
        query_vectors, doc_vectors, qrels,
        feedback_idx=outcome.feedback_idx[:, :k],
        judge_scores=np.nan_to_num(outcome.scores[:, :k]),
        judge_mask=outcome.mask[:, :k],
        round_vectors=list(outcome.round_vectors),
        rocchio_params=rocchio_params, ks=ks,
    )
    return CellOutcome(
        metrics=metrics,
        tests=tests,
        feedback_idx=outcome.feedback_idx,
        judge_scores=outcome.scores,
        judge_mask=outcome.mask,
        refined_vectors=outcome.vectors,
        losses=outcome.losses,
        failed_queries=~outcome.mask[:, :k].any(axis=1),
    )


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
    """The query vector ``(n, d)`` of every method that ranks by cosine (all but ``rerank_only``)."""
    rp = rocchio_params or RocchioParams()
    fb_vectors = document_array(doc_vectors)[np.maximum(feedback_idx, 0)]
    vectors: dict[str, np.ndarray] = {
        "baseline": np.asarray(query_vectors),
        "rocchio": rocchio(query_vectors, fb_vectors, judge_scores, mask=judge_mask, alpha=rp.alpha, beta=rp.beta,
                           gamma=rp.gamma, positive_threshold=rp.threshold, negative_threshold=rp.threshold),
        "refined": np.asarray(round_vectors[0]),
    }
    for r in range(2, len(round_vectors) + 1):
        vectors[f"refined_r{r}"] = np.asarray(round_vectors[r - 1])
    for name, extra in (extra_vectors or {}).items():
        if name in vectors or name == "rerank_only":
            raise ValueError(f"extra method {name!r} clashes with a built-in method")
        vectors[name] = np.asarray(extra)
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
    vectors = method_vectors(query_vectors, doc_vectors, feedback_idx=feedback_idx, judge_scores=judge_scores,
                             judge_mask=judge_mask, round_vectors=round_vectors, rocchio_params=rocchio_params,
                             extra_vectors=extra_vectors)
    docs_unit = unit_documents(doc_vectors)
    n = vectors["baseline"].shape[0]
    step = block_rows or score_block_rows(docs_unit.shape[0])
    pooled = pool is not None and pool.pooled
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        in_pool = pool.pool_block(lo, hi) if pooled else None

        def ranking(v: np.ndarray) -> np.ndarray:
            scores = cosine_block(v[lo:hi], docs_unit)
            return scores if in_pool is None else np.where(in_pool, scores, -np.inf)

        base = ranking(vectors["baseline"])
        blocks = {"baseline": base,
                  "rerank_only": rerank_only_scores(base, feedback_idx[lo:hi], judge_scores[lo:hi],
                                                    mask=judge_mask[lo:hi])}
        for name, v in vectors.items():
            if name != "baseline":
                blocks[name] = ranking(v)
        yield lo, hi, blocks


def method_rankings(query_vectors: np.ndarray, doc_vectors: np.ndarray, *, pool: np.ndarray | None = None,
                    **kwargs: object) -> dict[str, np.ndarray]:
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
) -> tuple[dict[str, MetricsResult], dict[str, PairedTest]]:
    """Metrics of every method and a paired one-sided t-test of each against the baseline.

    Scores and measures are computed one query block at a time (``block_rows``, default from the
    corpus size): memory grows with the corpus and the qrels, not with queries × corpus.
    ``visit`` sees each block's scores (e.g. to sample score distributions for plots).
    """
    qrels = as_qrels(labels, pool)
    ks = check_ks(ks)
    parts: dict[str, list[dict[str, np.ndarray]]] = {}
    for lo, hi, blocks in method_score_blocks(query_vectors, doc_vectors, feedback_idx=feedback_idx,
                                              judge_scores=judge_scores, judge_mask=judge_mask,
                                              round_vectors=round_vectors, pool=qrels if qrels.pooled else None,
                                              rocchio_params=rocchio_params, extra_vectors=extra_vectors,
                                              block_rows=block_rows):
        block_qrels = qrels.rows(lo, hi)
        for name, scores in blocks.items():
            parts.setdefault(name, []).append(rank_metrics(scores, block_qrels, ks))
        if visit is not None:
            visit(lo, hi, blocks)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one warning below, not one per method
        metrics = {name: collect_metrics(p, qrels, ks) for name, p in parts.items()}
    n_without = int((qrels.n_relevant() == 0).sum())
    if n_without:
        warnings.warn(f"{n_without} of {qrels.n_queries} queries have no relevant document in their pool; "
                      "they are excluded from every mean", stacklevel=2)
    base_ap = metrics["baseline"].per_query["ap"]
    tests: dict[str, PairedTest] = {}
    for name, result in metrics.items():
        if name != "baseline" and np.isfinite(base_ap).sum() >= 2:
            tests[name] = paired_ttest(base_ap, result.per_query["ap"], alternative="greater")
    return metrics, tests


class ScoreSamples:
    """A block visitor (for :func:`score_methods`) that keeps score distributions for plots.

    Per chosen method: the scores of every relevant in-pool pair and of the first
    ``max_negatives`` other in-pool pairs, both in (query, document) order.
    """

    def __init__(self, qrels: Qrels, methods: tuple[str, ...] = ("baseline", "refined"), *,
                 max_negatives: int = 200_000) -> None:
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
        negative = np.ones((hi - lo, self.qrels.n_documents), dtype=bool) if not block.pooled else \
            np.zeros((hi - lo, self.qrels.n_documents), dtype=bool)
        if block.pooled:
            negative[rows[~relevant], docs[~relevant]] = True
        else:
            negative[rows[relevant], docs[relevant]] = False
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
            out[f"{prefix}_pos"] = np.concatenate(self.positives[method]) if self.positives[method] else np.zeros(0, np.float32)
            out[f"{prefix}_neg"] = np.concatenate(self.negatives[method]) if self.negatives[method] else np.zeros(0, np.float32)
        return out
