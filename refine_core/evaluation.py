"""One evaluation cell on arrays: every method scored on the same queries and judgments.

Methods: ``baseline`` (original ranking), ``rerank_only``, ``rocchio``, ``refined`` (the
paper) and, with ``rounds > 1``, ``refined_r2`` ... ``refined_rR``. All share the first
round's judgments of the top-K documents of the original ranking, so the comparison is
paired and costs K judgments per query per round.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refine_core.baselines import rerank_only_scores, rocchio
from refine_core.feedback import FeedbackStrategy
from refine_core.metrics import DEFAULT_KS, MetricsResult, cosine_scores, evaluate_rankings
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
    doc_vectors: np.ndarray,
    labels: np.ndarray,
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
        labels: ``(n, N)`` relevance labels (graded allowed).
        judge: returns judge scores for chosen documents (see ``refine_core.rounds.JudgeFn``).
        pool: ``(n, N)`` per-query pools (None = whole corpus).
        k: documents judged per query per round (paper: 20).
        rounds: refinement rounds (1 = paper).
        config: refinement hyperparameters (default: paper).
        strategy: feedback selection (default: top-K).
        rocchio_params: Rocchio weights and threshold.
        ks: metric cut-offs.
    """
    config = config or RefineConfig()
    outcome = refine_rounds(query_vectors, doc_vectors, judge, rounds=rounds, k=k, pool=pool,
                            strategy=strategy, config=config)
    metrics, tests = score_methods(
        query_vectors, doc_vectors, labels,
        feedback_idx=outcome.feedback_idx[:, :k],
        judge_scores=np.nan_to_num(outcome.scores[:, :k]),
        judge_mask=outcome.mask[:, :k],
        round_vectors=list(outcome.round_vectors),
        pool=pool, rocchio_params=rocchio_params, ks=ks,
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


def method_rankings(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    round_vectors: list[np.ndarray],
    pool: np.ndarray | None = None,
    rocchio_params: RocchioParams | None = None,
    extra_vectors: dict[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Ranking scores ``(n, N)`` of every method, from the first round's judgments.

    ``round_vectors[r]`` is the refined vector after round ``r + 1``; ``extra_vectors`` adds
    methods that are plain query vectors (e.g. ``hyde`` and ``hyde_refined``).
    """
    rp = rocchio_params or RocchioParams()

    def ranking(vectors: np.ndarray) -> np.ndarray:
        scores = cosine_scores(vectors, doc_vectors)
        return scores if pool is None else np.where(pool, scores, -np.inf)

    base = ranking(query_vectors)
    rankings: dict[str, np.ndarray] = {
        "baseline": base,
        "rerank_only": rerank_only_scores(base, feedback_idx, judge_scores, mask=judge_mask),
    }
    fb_vectors = doc_vectors[np.maximum(feedback_idx, 0)]
    rankings["rocchio"] = ranking(rocchio(query_vectors, fb_vectors, judge_scores, mask=judge_mask,
                                          alpha=rp.alpha, beta=rp.beta, gamma=rp.gamma,
                                          positive_threshold=rp.threshold, negative_threshold=rp.threshold))
    rankings["refined"] = ranking(round_vectors[0])
    for r in range(2, len(round_vectors) + 1):
        rankings[f"refined_r{r}"] = ranking(round_vectors[r - 1])
    for name, vectors in (extra_vectors or {}).items():
        if name in rankings:
            raise ValueError(f"extra method {name!r} clashes with a built-in method")
        rankings[name] = ranking(vectors)
    return rankings


def score_methods(
    query_vectors: np.ndarray,
    doc_vectors: np.ndarray,
    labels: np.ndarray,
    *,
    feedback_idx: np.ndarray,
    judge_scores: np.ndarray,
    judge_mask: np.ndarray,
    round_vectors: list[np.ndarray],
    pool: np.ndarray | None = None,
    rocchio_params: RocchioParams | None = None,
    ks: tuple[int, ...] = DEFAULT_KS,
    extra_vectors: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, MetricsResult], dict[str, PairedTest]]:
    """Metrics of every method and a paired one-sided t-test of each against the baseline."""
    rankings = method_rankings(query_vectors, doc_vectors, feedback_idx=feedback_idx, judge_scores=judge_scores,
                               judge_mask=judge_mask, round_vectors=round_vectors, pool=pool,
                               rocchio_params=rocchio_params, extra_vectors=extra_vectors)
    metrics = {name: evaluate_rankings(s, labels, pool=pool, ks=ks) for name, s in rankings.items()}
    base_ap = metrics["baseline"].per_query["ap"]
    tests: dict[str, PairedTest] = {}
    for name, result in metrics.items():
        if name != "baseline" and np.isfinite(base_ap).sum() >= 2:
            tests[name] = paired_ttest(base_ap, result.per_query["ap"], alternative="greater")
    return metrics, tests
