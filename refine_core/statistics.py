"""Significance of per-query differences between two systems.

* :func:`paired_ttest`: paired t-test on per-query AP (paper: one-sided, "B better than A");
* :func:`benjamini_hochberg`: false-discovery-rate adjustment across a table of comparisons;
* :func:`bootstrap_delta_ci`: paired bootstrap confidence interval on the mean difference.

The distributions come from scipy; nothing here re-implements them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

# scipy.stats is imported where it is used: it costs 1-3 s to import, which every `refine`
# command would otherwise pay (a cached re-run computes no test).

Alternative = Literal["greater", "less", "two-sided"]


@dataclass(frozen=True)
class PairedTest:
    """Result of a paired comparison of system B against system A over the same queries."""

    mean_a: float
    mean_b: float
    delta: float
    statistic: float
    pvalue: float
    n: int
    alternative: Alternative

    @property
    def relative_gain(self) -> float:
        """``delta / mean_a`` (NaN when ``mean_a`` is 0)."""
        return self.delta / self.mean_a if self.mean_a else float("nan")


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"a and b must be 1-D arrays of the same length, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def paired_ttest(a: np.ndarray, b: np.ndarray, *, alternative: Alternative = "greater") -> PairedTest:
    """Paired t-test of per-query values ``b`` against ``a``.

    Queries where either value is NaN (e.g. no positives) are dropped. With
    ``alternative="greater"`` the null hypothesis is mean(b - a) <= 0.
    When every difference is zero the p-value is 1 for a one-sided test (no evidence).

    Example:
        >>> t = paired_ttest([0.1, 0.2, 0.3, 0.4], [0.2, 0.3, 0.35, 0.5])
        >>> t.pvalue < 0.05
        True
    """
    x, y = _paired(a, b)
    if x.size < 2:
        raise ValueError(f"need at least 2 paired values with both sides defined, got {x.size}")
    diff = y - x
    if np.allclose(diff, diff[0]) and diff[0] == 0:
        statistic, pvalue = 0.0, 1.0 if alternative != "two-sided" else 1.0
    else:
        from scipy import stats

        res = stats.ttest_rel(y, x, alternative=alternative)
        statistic, pvalue = float(res.statistic), float(res.pvalue)
    return PairedTest(
        mean_a=float(x.mean()),
        mean_b=float(y.mean()),
        delta=float(diff.mean()),
        statistic=statistic,
        pvalue=pvalue,
        n=int(x.size),
        alternative=alternative,
    )


def benjamini_hochberg(pvalues: np.ndarray | list[float]) -> np.ndarray:
    """Benjamini–Hochberg adjusted p-values (same order as the input; NaN stays NaN).

    Reject at FDR level alpha where the adjusted value is <= alpha.

    Example:
        >>> benjamini_hochberg([0.01, 0.04, 0.03]).round(3).tolist()
        [0.03, 0.04, 0.04]
    """
    p = np.asarray(pvalues, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"pvalues must be 1-D, got shape {p.shape}")
    finite = np.isfinite(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("pvalues must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    if finite.any():
        # Benjamini & Hochberg (1995), step-up: p_(i) * m / i, then the running minimum from the
        # largest p down, capped at 1. Written out in numpy (equal to scipy's
        # false_discovery_control(method="bh"), which the tests check) so that logging a sweep
        # does not import scipy.stats.
        q = p[finite]
        order = np.argsort(q, kind="stable")
        m = q.size
        scaled = q[order] * m / np.arange(1, m + 1)
        adjusted = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
        result = np.empty(m)
        result[order] = adjusted
        out[finite] = result
    return out


def bootstrap_delta_ci(
    a: np.ndarray,
    b: np.ndarray,
    *,
    confidence: float = 0.95,
    n_resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Paired bootstrap (BCa) confidence interval on ``mean(b) - mean(a)``.

    Queries are resampled as pairs, so the interval reflects per-query correlation.
    """
    x, y = _paired(a, b)
    if x.size < 2:
        raise ValueError(f"need at least 2 paired values with both sides defined, got {x.size}")
    diff = y - x
    if np.ptp(diff) == 0:
        return float(diff[0]), float(diff[0])
    from scipy import stats

    res = stats.bootstrap(
        (diff,),
        np.mean,
        confidence_level=confidence,
        n_resamples=n_resamples,
        method="BCa",
        random_state=np.random.default_rng(seed),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def win_tie_loss(before: np.ndarray, after: np.ndarray, *, tol: float = 1e-9) -> tuple[int, int, int]:
    """How many queries a method improved, left unchanged and hurt: ``after - before`` above
    ``tol``, within ``±tol``, below ``-tol`` (pairs with a NaN on either side are left out).

    Example:
        >>> win_tie_loss(np.array([0.2, 0.5, 0.5]), np.array([0.4, 0.5, 0.1]))
        (1, 1, 1)
    """
    a, b = _paired(np.asarray(before, float), np.asarray(after, float))
    delta = b - a
    return int((delta > tol).sum()), int((np.abs(delta) <= tol).sum()), int((delta < -tol).sum())
