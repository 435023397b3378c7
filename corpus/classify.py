"""Classify every document of an index for a criterion: refine, choose a threshold, label.

The threshold comes from the judged documents, or — with ``calibrate`` — from a stratified
sample of the refined ranking judged as well; the statistics are :mod:`refine_core.calibration`'s.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from corpus.index import CorpusError, CorpusIndex, corpus_scores
from corpus.query import Refinement, judge_rows, refine_query
from embedders.models import SentenceTransformerEmbedder
from judging.ledger import JudgmentLedger
from refine_core.baselines import RocchioParams
from refine_core.calibration import (
    choose_threshold,
    label_documents,
    positive_interval,
    stratified_estimate,
    stratified_sample,
    tail_warning,
)
from refine_core.refinement import RefineConfig


@dataclass
class Classification:
    """Every document's refined score and label for one criterion.

    ``labels`` are the judge's verdicts for judged documents and ``score >= threshold`` for
    the rest. ``estimate`` and ``interval`` (90%) concern the number of positives in the corpus:
    with ``calibrate`` they come from a stratified random sample of the ranking (see
    :func:`stratified_estimate`); without, ``estimate`` is the count above the threshold and the
    interval only reflects how uncertain the threshold is (a bootstrap of the judged documents).
    """

    criterion: str
    threshold: float
    scores: np.ndarray  # refined similarity of every document
    labels: np.ndarray  # bool per document
    judged: np.ndarray  # bool per document
    judge_scores: np.ndarray  # NaN where not judged (or the judge failed)
    positives: int  # labels.sum()
    estimate: float
    interval: tuple[int, int]
    refinement: Refinement
    calibrated: int = 0
    method: str = "threshold"
    positive_at: float = 0.5  # a judge score at or above this is a positive verdict
    warnings: tuple[str, ...] = ()  # what makes the estimate doubtful (see :func:`tail_warning`)

    def as_dict(self) -> dict:
        r = self.refinement.report
        return {
            "criterion": self.criterion,
            "documents": int(self.scores.size),
            "threshold": self.threshold,
            "positives": self.positives,
            "positives_estimate": self.estimate,
            "positives_interval": list(self.interval),
            "estimate_method": self.method,
            "judged": int(self.judged.sum()),
            "calibration_judged": self.calibrated,
            "cost_usd": r.cost,
            "judgments_paid": r.paid,
            "judgments_free": r.judged - r.paid,
            "judgments_from_ledger": r.from_ledger,
            "refinement": dict(self.refinement.settings),
            "judge_failed": int(r.failed),
            "warnings": list(self.warnings),
        }


def classify(
    index: CorpusIndex,
    criterion: str,
    *,
    judge,
    embedder: SentenceTransformerEmbedder | None = None,
    k: int = 20,
    rounds: int = 1,
    calibrate: int = 0,
    config: RefineConfig | None = None,
    instruction: str | None = None,
    ledger: JudgmentLedger | None = None,
    concurrency: int = 4,
    positive_at: float = 0.5,
    judge_instruction: str | None = None,
    seed: int = 0,
    optimise: bool = True,
    start: str = "query",
    rocchio: RocchioParams | None = None,
    min_positives: int = 0,
    min_share: float = 0.0,
) -> Classification:
    """Label every document of ``index`` for ``criterion`` (see the module docs).

    Args:
        calibrate: after refinement, judge this many more documents, sampled at random inside
            geometric bands of the refined ranking below the judged top; the number of positives
            is estimated from them (with an interval) and the threshold set so that as many
            documents are labelled positive. 0: the threshold that best separates the judged
            documents.
        positive_at: a judge score at or above this counts as a positive.
        seed: the calibration sample's seed.
        optimise: False labels with the unrefined query vector (same judging and threshold rule).
        start: ``"query"`` (the paper) or ``"rocchio"`` (refine from the Rocchio vector; see
            :func:`corpus.query.refine_query`).
        rocchio: Rocchio's weights for ``start="rocchio"`` (default SMART).
        min_positives, min_share: refine only with at least this many positive verdicts, making at
            least this share of the valid ones (the commands: RECOMMENDED's).
    """
    if calibrate < 0:
        raise CorpusError(f"calibrate must be >= 0, got {calibrate}")
    embedder = embedder or SentenceTransformerEmbedder(index.model)
    ref = refine_query(
        index,
        criterion,
        judge=judge,
        embedder=embedder,
        k=k,
        rounds=rounds,
        config=config,
        instruction=instruction,
        ledger=ledger,
        concurrency=concurrency,
        what="criterion",
        judge_instruction=judge_instruction,
        optimise=optimise,
        start=start,
        rocchio=rocchio,
        min_positives=min_positives,
        min_share=min_share,
    )
    scores = corpus_scores(index.vectors(), ref.refined)
    if ref.judged_ok.sum() == 0:
        raise CorpusError(
            f"the judge failed on every document judged for {criterion!r}; nothing to set a threshold from "
            "(the judgments that did succeed are kept in the ledger)"
        )
    order = np.argsort(-scores, kind="stable")
    added, method, warnings = 0, "threshold", list(ref.warnings()) if optimise else []
    if calibrate:
        judged_mask = np.zeros(scores.size, dtype=bool)
        judged_mask[ref.judged_idx] = True
        known = int((ref.judged_scores[ref.judged_ok] >= positive_at).sum())
        sample = stratified_sample(order[~judged_mask[order]], calibrate, first_band=k, seed=seed)
        extra = np.concatenate([rows for rows, _ in sample]) if sample else np.empty(0, dtype=np.int64)
        if extra.size:
            _, texts = index.documents()
            extra_scores = judge_rows(
                judge, criterion, extra, texts, judge_instruction or instruction, ledger, concurrency, ref.report
            )
            ref.judged_idx = np.concatenate([ref.judged_idx, extra])
            ref.judged_scores = np.concatenate([ref.judged_scores, extra_scores])
            added = int(extra.size)
            strata = _strata(sample, extra_scores, positive_at)
            estimate, interval = stratified_estimate(known, strata, total=scores.size)
            if (warning := tail_warning(strata, estimate)) is not None:
                warnings.append(warning)
            threshold = float(scores[order[max(int(round(estimate)), 1) - 1]])
            method = "stratified-sample"
    if method == "threshold":
        ok = ref.judged_ok
        threshold = choose_threshold(scores[ref.judged_idx[ok]], ref.judged_scores[ok] >= positive_at)
        estimate = float((scores >= threshold).sum())
        interval = positive_interval(scores, scores[ref.judged_idx[ok]], ref.judged_scores[ok] >= positive_at)
    judged = np.zeros(scores.size, dtype=bool)
    judged[ref.judged_idx] = True
    judge_scores = np.full(scores.size, np.nan, dtype=np.float32)
    judge_scores[ref.judged_idx] = ref.judged_scores
    labels = label_documents(scores, threshold, judge_scores, positive_at)
    return Classification(
        criterion=criterion,
        threshold=threshold,
        scores=scores,
        labels=labels,
        judged=judged,
        judge_scores=judge_scores,
        positives=int(labels.sum()),
        estimate=estimate,
        interval=interval,
        refinement=ref,
        calibrated=added,
        method=method,
        positive_at=positive_at,
        warnings=tuple(warnings),
    )


def _strata(sample: list[tuple[np.ndarray, int]], scores: np.ndarray, positive_at: float) -> list[tuple[int, int, int]]:
    """Per band of the calibration sample: (band size, judgments that succeeded, positives among
    them); a failed judgment is dropped from its band's sample."""
    strata, at = [], 0
    for rows, size in sample:
        got = scores[at : at + rows.size]
        at += rows.size
        ok = np.isfinite(got)
        strata.append((size, int(ok.sum()), int((got[ok] >= positive_at).sum())))
    return strata


def write_labels(result: Classification, index: CorpusIndex, path: str | os.PathLike[str]) -> Path:
    """Every document's id, refined score, label, whether it was judged and the judge's score, as parquet."""
    import polars as pl

    ids, _ = index.documents()
    out = Path(path)
    if out.suffix.lower() != ".parquet":
        raise CorpusError(f"--out {out}: labels are written as parquet; give a path ending in .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        {
            "id": ids,
            "score": result.scores.astype(np.float32),
            "label": result.labels,
            "judged": result.judged,
            "judge_score": pl.Series(
                [None if not np.isfinite(s) else float(s) for s in result.judge_scores], dtype=pl.Float32
            ),
        }
    )
    tmp = out.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, out)
    return out
