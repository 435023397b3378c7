"""Safe by default: the commands' default refinement against rerank-only, the baseline and tuned
Rocchio, on dense and sparse relevance, with symmetric and asymmetric judge noise.

Data: NFCorpus, Banking77 and CLINC150 as shipped (many relevant documents per query) and their
registered ``-sparse`` variants (one relevant document per query, :meth:`Benchmark.sparse`).
Judges (the project's noisy oracle, seed 3): accuracy 1.0, 0.9, 0.8 *symmetric* (every verdict
flipped with probability 1 - accuracy) and 0.9, 0.8 *asymmetric* (balanced accuracy, a wrong
"relevant" three times as likely as a miss: false-positive / false-negative rates 0.15 / 0.05 and
0.3 / 0.1, :func:`refine_core.judges.oracle.asymmetric_rates`). K = 20, one round.

Methods, per query AP:

* ``baseline``, ``rerank_only``;
* ``recommended``: :data:`refine_core.recommended.RECOMMENDED`, fixed (what ``refine search`` runs);
* ``rocchio_kl``: the previous default, Rocchio (1.5, 0.5) → KL at lr 3e-4, fixed;
* ``rocchio_tuned``: Rocchio with (beta, gamma) chosen on the other half of the queries
  (cross-fitted: each query scored under the setting chosen on the half it is not in);
* ``either``: recommended or Rocchio → KL, whichever had the better MAP on the other half
  (cross-fitted): what a user with a few labelled queries of their own could do.

Tests: one-sided paired t-tests for a *loss* of recommended and either against rerank-only and
the baseline (one Benjamini–Hochberg family), and both directions against tuned Rocchio (a family
for gains, one for losses).

    REFINE_DATA_DIR=... python benchmarks/safe_default.py [--datasets nfcorpus ...] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit_json
from beyond import ROCCHIO_GRID, TIE, _ap, adjust_tests, choose, halves

from refine_core.baselines import rerank_only_scores, rocchio_vectors
from refine_core.feedback import select_feedback
from refine_core.judges.oracle import asymmetric_rates, noisy_oracle_scores
from refine_core.metrics import evaluate_rankings
from refine_core.recommended import RECOMMENDED, Recommended, judged_positive_idx, lift_judged_positives
from refine_core.statistics import paired_ttest, win_tie_loss

DATASETS = ("nfcorpus", "banking77", "clinc150")
K = 20
JUDGE_SEED = 3
JUDGES = (("symmetric", 1.0), ("symmetric", 0.9), ("symmetric", 0.8), ("asymmetric", 0.9), ("asymmetric", 0.8))
PREVIOUS = Recommended(start="rocchio", lr=3e-4, verdicts_first=False, min_positives=0)
"""The commands' default before this benchmark: Rocchio (1.5, 0.5) → KL at lr 3e-4."""
SHOWN = {
    "baseline": "baseline",
    "rerank_only": "rerank-only",
    "recommended": "recommended",
    "rocchio_kl": "Rocchio → KL (previous default)",
    "rocchio_tuned": "tuned Rocchio",
    "either": "either, chosen on half",
}


def judge_rates(kind: str, accuracy: float) -> tuple[float, float]:
    """(false-positive rate, false-negative rate) of a judge of this kind and accuracy."""
    return (1.0 - accuracy, 1.0 - accuracy) if kind == "symmetric" else asymmetric_rates(accuracy)


def judge_label(kind: str, accuracy: float) -> str:
    if accuracy == 1.0:
        return "oracle"
    fpr, fnr = judge_rates(kind, accuracy)
    return f"{accuracy:g} sym" if kind == "symmetric" else f"{accuracy:g} asym ({fpr:g}/{fnr:g})"


def method_ap(q, d, labels, pool, texts, rates) -> dict[str, np.ndarray]:
    """Per-query AP of every method (the cross-fitted ones finished in :func:`crossfit`)."""
    from quality import pooled_scores

    base = pooled_scores(q, d, pool)
    fb = select_feedback(base, k=K)
    scores, mask = noisy_oracle_scores(
        labels,
        fb,
        flip_rate=0.0,
        seed=JUDGE_SEED,
        query_texts=texts[0],
        document_texts=texts[1],
        false_positive_rate=rates[0],
        false_negative_rate=rates[1],
    )
    out = {
        "baseline": _ap(q, d, labels, pool),
        "rerank_only": evaluate_rankings(
            rerank_only_scores(base, fb, scores, mask=mask), labels, pool=pool, ks=(10,)
        ).per_query["ap"],
    }
    for name, settings in (("recommended", RECOMMENDED), ("rocchio_kl", PREVIOUS)):
        vectors = _vectors(q, d, fb, scores, mask, settings)
        ranking = pooled_scores(vectors, d, pool)
        if settings.verdicts_first:
            ranking = lift_judged_positives(ranking, judged_positive_idx(fb, scores, mask, settings.threshold))
        out[name] = evaluate_rankings(ranking, labels, pool=pool, ks=(10,)).per_query["ap"]
    out["rocchio_grid"] = {  # type: ignore[assignment]
        p: _ap(rocchio_vectors(q, d[np.maximum(fb, 0)], scores, mask, p), d, labels, pool) for p in ROCCHIO_GRID
    }
    return out


def _vectors(q, d, fb, scores, mask, settings: Recommended) -> np.ndarray:
    from refine_core.recommended import recommended_vectors

    return recommended_vectors(q, d, fb, scores, mask, settings)


def crossfit(ap: dict) -> dict[str, np.ndarray]:
    """Every query's AP under the setting chosen on the half of the queries it is not in."""
    n = ap["baseline"].size
    a, b = halves(n)
    out = {m: ap[m] for m in ("baseline", "rerank_only", "recommended", "rocchio_kl")}
    for name, runs in (
        ("rocchio_tuned", {p: {1: v} for p, v in ap["rocchio_grid"].items()}),
        ("either", {m: {1: ap[m]} for m in ("recommended", "rocchio_kl")}),
    ):
        values = np.empty(n)
        for tune, report in ((a, b), (b, a)):
            chosen = choose(runs, tune)[1]
            values[report] = runs[chosen][1][report]
        out[name] = values
    return out


def tests_of(ap: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for method, other in itertools.product(("recommended", "either"), ("rerank_only", "baseline", "rocchio_tuned")):
        new, old = ap[method], ap[other]
        wins, ties, losses = win_tie_loss(old, new, tol=TIE)
        out[f"{method} vs {other}"] = {
            "delta": float(np.nanmean(new - old)),
            "pvalue": float(paired_ttest(old, new, alternative="greater").pvalue),
            "pvalue_loss": float(paired_ttest(old, new, alternative="less").pvalue),
            "wins": wins,
            "ties": ties,
            "losses": losses,
        }
    return out


def run(names: tuple[str, ...]) -> dict:
    from quality import load_data

    data, _ = load_data(tuple(f"{n}{v}" for n in names for v in ("", "-sparse")))
    result: dict = {}
    for name, (q, d, labels, pool, _, texts) in data.items():
        result[name] = {}
        for kind, accuracy in JUDGES:
            ap = crossfit(method_ap(q, d, labels, pool, texts, judge_rates(kind, accuracy)))
            result[name][judge_label(kind, accuracy)] = {
                "queries": int(q.shape[0]),
                "relevant_per_query": float(np.mean((labels > 0).sum(axis=1))),
                "map": {m: float(np.nanmean(v)) for m, v in ap.items()},
                "tests": tests_of(ap),
            }
    adjust_tests([cell for per in result.values() for cell in per.values()])
    return result


def summary(result: dict) -> dict[str, dict]:
    """Per method: significant losses (loss family BH < 0.05) against each control, and against
    tuned Rocchio significant gains and losses, over every cell."""
    out: dict[str, dict] = {}
    for method in ("recommended", "either"):
        counts: dict[str, int] = {}
        for other in ("rerank_only", "baseline", "rocchio_tuned"):
            tests = [cell["tests"][f"{method} vs {other}"] for per in result.values() for cell in per.values()]
            counts[f"losses vs {other}"] = sum(t["p_loss_bh"] < 0.05 for t in tests)
            counts[f"gains vs {other}"] = sum(t["p_bh"] < 0.05 for t in tests)
            counts["cells"] = len(tests)
        out[method] = counts
    return out


def render(result: dict) -> list[str]:
    order = ("baseline", "rerank_only", "rocchio_tuned", "rocchio_kl", "recommended", "either")
    lines = [
        "| dataset | relevant / query | judge | " + " | ".join(SHOWN[m] for m in order) + " |",
        "|---|---|---|" + "---|" * len(order),
    ]
    for name, per in result.items():
        for judge, cell in per.items():
            row = [name, f"{cell['relevant_per_query']:.1f}", judge]
            for m in order:
                mark = ""
                if m in ("recommended", "either"):
                    loss = min(cell["tests"][f"{m} vs {o}"]["p_loss_bh"] for o in ("rerank_only", "baseline"))
                    behind = cell["tests"][f"{m} vs rocchio_tuned"]["p_loss_bh"] < 0.05
                    mark = (" !" if loss < 0.05 else "") + (" ‹" if behind else "")
                row.append(f"{cell['map'][m]:.3f}{mark}")
            lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "| method | cells | significant losses vs rerank-only / baseline | vs tuned Rocchio: gains / losses |",
    ]
    lines.append("|---|---|---|---|")
    for method, c in summary(result).items():
        lines.append(
            f"| {SHOWN[method]} | {c['cells']} | {c['losses vs rerank_only']} / {c['losses vs baseline']} | "
            f"{c['gains vs rocchio_tuned']} / {c['losses vs rocchio_tuned']} |"
        )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    result = run(tuple(args.datasets or DATASETS))
    print("\n".join(render(result)))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
