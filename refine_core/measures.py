"""The measures, as values with one canonical name each (in the manner of ir_measures).

Every measure :func:`refine_core.metrics.rank_metrics` computes is a :class:`Measure` here, and
every place that names one takes the name from here:

============  ===============  ==============  =================  =====================
canonical     per query        mean            MLflow key          meaning
============  ===============  ==============  =================  =====================
AP            ``ap``           ``map``         ``map``             average precision
nDCG@k        ``ndcg@k``       ``ndcg@k``      ``ndcg_at_kk``      normalised DCG, cut at k
R@k           ``recall@k``     ``recall@k``    ``recall_at_kk``    recall at k
P@k           ``precision@k``  ``precision@k`` ``precision_at_kk`` precision at k
Rprec         ``r_precision``  ``r_precision`` ``r_precision``     R-precision
ROC-AUC       ``roc_auc``      ``roc_auc``     ``roc_auc``         area under the ROC curve
separation    ``separation``   ``separation``  ``separation``      Cohen's d of the scores
============  ===============  ==============  =================  =====================

The per-query spelling is that of the per-query parquet files, ``refine compare`` and every
``--json`` output (kept as they were documented); the mean of ``ap`` is ``map``. MLflow keys may
not contain ``@``, so a cut-off becomes ``_at_`` and two digits (``precision_at_05``), which also
makes the keys sort by cut-off in the MLflow UI (:func:`mlflow_key`, :func:`from_mlflow_key`).

Conventions shared by all (tested in ``tests/test_metrics.py`` and ``tests/test_scale.py``):
the pool is the whole corpus or the query's own pool when the qrels are pooled; documents
outside it are neither ranked nor counted; ``R`` is the set of documents with gain > 0 in the
pool (graded gains count only in nDCG); ranks are by score, descending, ties in document-index
order (a stable sort); a query without a relevant document gets NaN for every measure and is
left out of every mean; one without a non-relevant document gets NaN ROC-AUC and separation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 30, 40, 50)


@dataclass(frozen=True)
class Measure:
    """One measure: its canonical name, the spellings used elsewhere, and what it means.

    Attributes:
        name: canonical name (``"nDCG@10"``).
        key: per-query spelling (``"ndcg@10"``), the key in :func:`~refine_core.metrics.rank_metrics`.
        mean_key: the spelling of its mean over queries (``"map"`` for AP).
        cutoff: k for the measures cut at rank k, else None.
        definition: the formula, its convention and where it is defined.
    """

    name: str
    key: str
    mean_key: str
    cutoff: int | None
    definition: str

    @property
    def mlflow_key(self) -> str:
        """The key of its mean in MLflow (``ndcg_at_10``, ``map``)."""
        return mlflow_key(self.mean_key)


def _ap() -> Measure:
    return Measure(
        "AP",
        "ap",
        "map",
        None,
        "AP = (1/|R|) * sum over relevant documents d of precision at rank(d): the mean of the precision "
        "at each relevant document's rank, relevant documents never retrieved contributing 0 (none are, "
        "the whole pool is ranked). Its mean over queries is MAP. trec_eval's map; Manning, Raghavan & "
        "Schütze, Introduction to Information Retrieval (2008), sec. 8.4.",
    )


def _ndcg(k: int) -> Measure:
    return Measure(
        f"nDCG@{k}",
        f"ndcg@{k}",
        f"ndcg@{k}",
        k,
        f"nDCG@{k} = DCG@{k} / IDCG@{k}, DCG@{k} = sum over ranks i <= {k} of gain(d_i) / log2(i + 1), with the "
        "graded gain as given (no exponential gain), IDCG from the ideal order of the pool's gains. "
        "Järvelin & Kekäläinen, ACM TOIS 20(4), 2002; trec_eval's ndcg_cut.",
    )


def _recall(k: int) -> Measure:
    return Measure(
        f"R@{k}",
        f"recall@{k}",
        f"recall@{k}",
        k,
        f"R@{k} = |relevant documents among the first {k}| / |R|. trec_eval's recall.{k}.",
    )


def _precision(k: int) -> Measure:
    return Measure(
        f"P@{k}",
        f"precision@{k}",
        f"precision@{k}",
        k,
        f"P@{k} = |relevant documents among the first {k}| / {k}, divided by {k} even when the pool is smaller "
        f"(trec_eval's P.{k} convention).",
    )


def _rprec() -> Measure:
    return Measure(
        "Rprec",
        "r_precision",
        "r_precision",
        None,
        "Rprec = precision at rank |R|. trec_eval's Rprec; Manning, Raghavan & Schütze (2008), sec. 8.4.",
    )


def _roc_auc() -> Measure:
    return Measure(
        "ROC-AUC",
        "roc_auc",
        "roc_auc",
        None,
        "ROC-AUC = P(score(relevant) > score(non-relevant)) + 0.5 * P(equal), over every relevant / "
        "non-relevant pair of the pool (the Mann-Whitney U statistic divided by |R| * |pool minus R|; "
        "ties count one half). Hanley & McNeil, Radiology 143(1), 1982.",
    )


def _separation() -> Measure:
    return Measure(
        "separation",
        "separation",
        "separation",
        None,
        "separation = (mean score of R - mean score of the rest of the pool) / pooled standard deviation, "
        "pooled over both groups with n - 2 degrees of freedom (Cohen's d). Cohen, Statistical Power "
        "Analysis for the Behavioral Sciences (1988).",
    )


def ranking_measures(ks: tuple[int, ...] = DEFAULT_KS) -> tuple[Measure, ...]:
    """The measures :func:`~refine_core.metrics.rank_metrics` returns for cut-offs ``ks``, in its order."""
    return (
        _ap(),
        *(_ndcg(k) for k in ks),
        *(_recall(k) for k in ks),
        *(_precision(k) for k in ks),
        _rprec(),
        _roc_auc(),
        _separation(),
    )


_CUT = re.compile(r"^(?P<base>[A-Za-z_\-]+?)(?:@|_at_)0*(?P<k>\d+)$")
_BY_BASE = {
    "ndcg": _ndcg,
    "recall": _recall,
    "r": _recall,
    "precision": _precision,
    "p": _precision,
}
_PLAIN = {m.key: m for m in (_ap(), _rprec(), _roc_auc(), _separation())}
_PLAIN.update({m.name.lower(): m for m in _PLAIN.values()})
_PLAIN["map"] = _ap()


def parse_measure(text: str) -> Measure:
    """The measure any spelling names: canonical (``nDCG@10``), per query (``ndcg@10``), mean
    (``map``) or MLflow key (``ndcg_at_10``); case does not matter.

    Raises:
        ValueError: naming the text and the measures there are.
    """
    lowered = text.strip().lower()
    if lowered in _PLAIN:
        return _PLAIN[lowered]
    found = _CUT.match(lowered)
    if found and found["base"] in _BY_BASE and int(found["k"]) >= 1:
        return _BY_BASE[found["base"]](int(found["k"]))
    names = ", ".join(m.name for m in ranking_measures((10,)))
    raise ValueError(f"unknown measure {text!r}; measures: {names} (cut-offs @k for nDCG, R and P)")


_CUTOFF = re.compile(r"@(\d+)")
_CUTOFF_KEY = re.compile(r"_at_0*(\d+)")


def mlflow_key(name: str) -> str:
    """A measure's (or any metric's) name as an MLflow key: cut-offs as ``_at_`` and two digits,
    ``ndcg@10`` -> ``ndcg_at_10``, ``refined.precision@5`` -> ``refined.precision_at_05``."""
    return _CUTOFF.sub(lambda m: f"_at_{int(m.group(1)):02d}", name)


def from_mlflow_key(key: str) -> str:
    """The inverse of :func:`mlflow_key`: ``precision_at_05`` -> ``precision@5``."""
    return _CUTOFF_KEY.sub(lambda m: f"@{int(m.group(1))}", key)
