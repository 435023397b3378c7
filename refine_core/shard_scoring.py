"""The same scoring over corpus shards: inputs shared by every shard, one pass of counts per
shard (on any worker), the merge into the measures and tests of :mod:`refine_core.scoring`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refine_core.baselines import RocchioParams
from refine_core.metrics import (
    DEFAULT_KS,
    MetricsResult,
    check_ks,
    collect_metrics,
    cosine_block,
    score_block_rows,
    unit_documents,
)
from refine_core.qrels import Qrels
from refine_core.recommended import LIFT, lift_judged_positives
from refine_core.scoring import (
    VERDICTS_FIRST,
    method_vectors,
    paired_tests,
    positive_idx,
)
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
from refine_core.statistics import PairedTest


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
    lifted = positive_idx(feedback_idx, judge_scores, judge_mask)
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
    tests = paired_tests(metrics, qrels)
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
