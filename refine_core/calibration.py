"""Deciding labels from a ranking: the threshold, the number of positives and its interval.

The statistics behind ``refine classify`` (:func:`corpus.classify`), on arrays only:

* :func:`choose_threshold`: the similarity that best separates the judged documents (balanced
  accuracy; one class judged: just past it);
* :func:`positive_interval`: a bootstrap interval of the positives above that threshold;
* :func:`rank_bands`, :func:`stratified_sample`, :func:`stratified_estimate`: geometric bands of
  the refined ranking below the judged top, a random sample in each, and the stratified estimate
  (with a 90% interval) of how many documents are positive;
* :func:`tail_warning`: when the positives sampled at the bottom of the ranking, read as the
  judge's false positives, would explain most of that estimate;
* :func:`label_documents`: threshold labels, the judge's verdict winning where there is one;
* :func:`binary_metrics`, :func:`best_threshold_f1`: scoring the labels against gold ones.
"""

from __future__ import annotations

import numpy as np


def choose_threshold(similarities: np.ndarray, positive: np.ndarray) -> float:
    """The cut that best separates judged positives from judged negatives.

    Maximises balanced accuracy over the midpoints between consecutive judged similarities
    (ties: the middle of the best run of cuts). With one class only, the cut sits at the
    weakest judged positive (everything at least that similar is positive) or just above the
    strongest judged negative.
    """
    s = np.asarray(similarities, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if s.size == 0:
        raise ValueError("no judged documents to choose a threshold from")
    if y.all():
        return float(s.min())
    if not y.any():
        return float(np.nextafter(s.max(), np.inf))
    values = np.unique(s)
    cuts = np.concatenate([[values[0]], (values[:-1] + values[1:]) / 2, [np.nextafter(values[-1], np.inf)]])
    pos, neg = np.sort(s[y]), np.sort(s[~y])
    tpr = (pos.size - np.searchsorted(pos, cuts, side="left")) / pos.size  # positives at or above the cut
    tnr = np.searchsorted(neg, cuts, side="left") / neg.size  # negatives below it
    balanced = (tpr + tnr) / 2
    best = np.flatnonzero(balanced >= balanced.max() - 1e-12)
    return float(cuts[best[len(best) // 2]])


def positive_interval(
    scores: np.ndarray,
    judged_sims: np.ndarray,
    judged_positive: np.ndarray,
    *,
    samples: int = 1000,
    level: float = 0.9,
    seed: int = 0,
) -> tuple[int, int]:
    """Interval on the count above the threshold from the threshold's uncertainty: the judged
    documents are resampled with replacement, the threshold re-chosen, and the documents above
    it counted. (It says nothing about positives the threshold misses.)"""
    rng = np.random.default_rng(seed)
    sorted_scores = np.sort(scores)
    counts = []
    n = judged_sims.size
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        t = choose_threshold(judged_sims[pick], judged_positive[pick])
        counts.append(sorted_scores.size - np.searchsorted(sorted_scores, t, side="left"))
    lo, hi = np.quantile(counts, [(1 - level) / 2, 1 - (1 - level) / 2])
    return int(np.floor(lo)), int(np.ceil(hi))


def rank_bands(n: int, first: int) -> list[tuple[int, int]]:
    """Geometric bands ``[a, b)`` of a ranking of ``n``: ``first``, then doubling."""
    bands, start, size = [], 0, max(first, 1)
    while start < n:
        bands.append((start, min(start + size, n)))
        start += size
        size *= 2
    return bands


def stratified_sample(order: np.ndarray, budget: int, first_band: int, seed: int = 0) -> list[tuple[np.ndarray, int]]:
    """A uniform random sample inside each geometric band of ``order`` (document rows, best first).

    The budget is split evenly over the bands (the top bands get the remainder); when it is
    smaller than the number of bands the deepest bands are merged. Returns (sampled rows,
    band size) per band.
    """
    bands = rank_bands(order.size, first_band)
    if budget < len(bands):
        bands = bands[: budget - 1] + [(bands[budget - 1][0], order.size)] if budget > 0 else []
    rng = np.random.default_rng(seed)
    out = []
    for i, (a, b) in enumerate(bands):
        share = budget // len(bands) + (1 if i < budget % len(bands) else 0)
        share = min(share, b - a)
        out.append((order[a:b][rng.choice(b - a, size=share, replace=False)], b - a))
    return out


def stratified_estimate(
    known_positives: int, strata: list[tuple[int, int, int]], *, z: float = 1.645, total: int | None = None
) -> tuple[float, tuple[int, int]]:
    """Positives in a corpus: the judged positives, plus per band ``(size, sampled, positives found)``
    the band size times the sampled rate. The variance uses the finite-population correction and a
    rate of (x + 0.5) / (m + 1), so a band whose sample found nothing still counts as uncertain."""
    estimate, variance = float(known_positives), 0.0
    for size, m, x in strata:
        if m == 0:
            continue
        estimate += size * x / m
        rate = (x + 0.5) / (m + 1)
        variance += size**2 * rate * (1 - rate) / m * (1 - m / size if size > 1 else 0)
    half = z * variance**0.5
    lo = max(known_positives + sum(x for _, _, x in strata), int(np.floor(estimate - half)))
    hi = int(np.ceil(estimate + half))
    if total is not None:
        hi = min(hi, total)
    return estimate, (lo, hi)


def tail_warning(strata: list[tuple[int, int, int]], estimate: float, *, share: float = 0.5) -> str | None:
    """A warning when the positives sampled at the bottom of the ranking, read as the judge's
    mistakes, would explain more than ``share`` of ``estimate``; else None.

    ``strata`` is ``(size, sampled, positives found)`` per band, deepest last. The bottom of the
    refined ranking (the two deepest bands, or the only one) holds few true positives, so what the
    judge accepts there is mostly its false positives; at that rate over every band sampled from,
    a judge that accepts one negative in five adds about a fifth of the corpus to the estimate
    (measured in docs/corpus.md: counts 14–32 times too high). With a correct judge the bottom's sample
    is almost always empty and nothing is said.
    """
    if not strata or estimate <= 0:
        return None
    bottom = strata[-2:] if len(strata) >= 3 else strata[-1:]
    size = sum(s for s, _, _ in bottom)
    sampled = sum(m for _, m, _ in bottom)
    found = sum(x for _, _, x in bottom)
    if sampled == 0 or found == 0:
        return None
    noise = found / sampled * sum(s for s, _, _ in strata)
    if noise <= share * estimate:
        return None
    return (
        f"{found} of the {sampled} documents sampled among the {size} lowest-ranked were judged positive; "
        f"if those are the judge's mistakes, mistakes at that rate account for {min(noise, estimate):.0f} of the "
        f"{estimate:.0f} positives estimated: check those verdicts (judged documents are marked in the labels) "
        "or use the judged documents' threshold instead"
    )


def label_documents(
    scores: np.ndarray, threshold: float, judge_scores: np.ndarray, positive_at: float = 0.5
) -> np.ndarray:
    """The labels of a classification: ``score >= threshold``, except where the judge gave a verdict
    (a finite judge score; NaN = not judged or the judge failed), which wins: ``judge score >= positive_at``.
    Works on any slice of the corpus (the classify flow labels it in chunks)."""
    labels = np.asarray(scores) >= threshold
    judge = np.asarray(judge_scores, dtype=np.float64)
    verdict = np.isfinite(judge)
    labels[verdict] = judge[verdict] >= positive_at
    return labels


def binary_metrics(predicted: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """Precision, recall and F1 of boolean predictions (0 where undefined)."""
    p = np.asarray(predicted, dtype=bool)
    g = np.asarray(gold, dtype=bool)
    tp = float((p & g).sum())
    precision = tp / p.sum() if p.sum() else 0.0
    recall = tp / g.sum() if g.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def best_threshold_f1(scores: np.ndarray, gold: np.ndarray) -> dict[str, float]:
    """The best F1 any threshold on ``scores`` reaches against ``gold`` (the ceiling)."""
    g = np.asarray(gold, dtype=bool)
    order = np.argsort(-np.asarray(scores), kind="stable")
    tp = np.cumsum(g[order])
    predicted = np.arange(1, g.size + 1)
    precision = tp / predicted
    recall = tp / max(g.sum(), 1)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    i = int(np.argmax(f1))
    return {
        "precision": float(precision[i]),
        "recall": float(recall[i]),
        "f1": float(f1[i]),
        "threshold": float(np.asarray(scores)[order[i]]),
    }
