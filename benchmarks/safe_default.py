"""Safe by default: the commands' default refinement against rerank-only, the baseline and tuned
Rocchio, on dense and sparse relevance, with symmetric and asymmetric judge noise.

Data: NFCorpus, Banking77 and CLINC150 as shipped (many relevant documents per query) and their
registered ``-sparse`` variants (one relevant document per query, :meth:`Benchmark.sparse`).
Judges (the project's noisy oracle, seed 3): accuracy 1.0, 0.9, 0.8 *symmetric* (every verdict
flipped with probability 1 - accuracy) and 0.9, 0.8 *asymmetric* (balanced accuracy, a wrong
"relevant" three times as likely as a miss: false-positive / false-negative rates 0.15 / 0.05 and
0.3 / 0.1, :func:`judging.oracle.asymmetric_rates`). K = 20, one round.

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

``--unseen`` runs the same on sets the default was not chosen on (:data:`UNSEEN`), dense and sparse;
``--update-docs`` runs both and writes section 10 of docs/results.md.

    REFINE_DATA_DIR=... python benchmarks/safe_default.py [--datasets nfcorpus ...] [--update-docs] [--unseen] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._common import emit_json
from benchmarks.beyond import ROCCHIO_GRID, TIE, adjust_tests, choose, halves, per_query_ap
from judging.oracle import asymmetric_rates, noisy_oracle_scores
from refine_core.baselines import rerank_only_scores, rocchio_vectors
from refine_core.feedback import select_feedback
from refine_core.metrics import evaluate_rankings
from refine_core.recommended import RECOMMENDED, Recommended, judged_positive_idx, lift_judged_positives
from refine_core.statistics import paired_ttest, win_tie_loss

DATASETS = ("nfcorpus", "banking77", "clinc150")
K = 20
JUDGE_SEED = 3
JUDGES = (("symmetric", 1.0), ("symmetric", 0.9), ("symmetric", 0.8), ("asymmetric", 0.9), ("asymmetric", 0.8))
PREVIOUS = Recommended(start="rocchio", lr=3e-4, verdicts_first=False, min_positives=0, min_share=0.0)
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
    from benchmarks.harness import pooled_scores

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
        "baseline": per_query_ap(q, d, labels, pool),
        "rerank_only": evaluate_rankings(
            rerank_only_scores(base, fb, scores, mask=mask), labels, pool=pool, ks=(10,)
        ).per_query["ap"],
    }
    for name, settings in (("recommended", RECOMMENDED), ("rocchio_kl", PREVIOUS)):
        vectors = _vectors(q, d, fb, scores, mask, settings)
        ranking = pooled_scores(vectors, d, pool)
        if settings.verdicts_first:
            positive = judged_positive_idx(fb, scores, mask, settings.threshold)
            ranking = lift_judged_positives(ranking, positive, original=base)
        out[name] = evaluate_rankings(ranking, labels, pool=pool, ks=(10,)).per_query["ap"]
    out["rocchio_grid"] = {  # type: ignore[assignment]
        p: per_query_ap(rocchio_vectors(q, d[np.maximum(fb, 0)], scores, mask, p), d, labels, pool)
        for p in ROCCHIO_GRID
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


UNSEEN = ("nfcorpus-dev", "nfcorpus-train", "clinc150-test", "snips")
"""Sets the default was not chosen on (``--unseen``): unseen.py's three (NFCorpus's dev and train
queries, CLINC150's test utterances) and SNIPS, each dense and sparse."""


def unseen_data(names: tuple[str, ...]) -> dict:
    """quality.load_data's tuples for :data:`UNSEEN` sets and their sparse variants."""
    from benchmarks.harness import embed
    from benchmarks.unseen import DATASETS as FROM_UNSEEN
    from benchmarks.unseen import unseen_benchmark
    from evaluations.registry import SPARSE_SEED, data_dir, load_benchmark
    from tasks.storage import embedding_cache_dir

    data = {}
    for name in names:
        dense = unseen_benchmark(name, data_dir()) if name in FROM_UNSEEN else load_benchmark(name)
        q, d = embed(dense, embedding_cache_dir())
        for bench in (dense, dense.sparse(seed=SPARSE_SEED)):
            labels, pool = bench.label_matrix()
            data[bench.name] = (q, d, labels, pool, 0, (bench.query_texts(), bench.document_texts()))
        print(f"{name}: {q.shape[0]} queries x {d.shape[0]} documents", flush=True)
    return data


def run(names: tuple[str, ...], data: dict | None = None) -> dict:
    from benchmarks.harness import load_data

    if data is None:
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


SECTION = "## 10. Safe by default: sparse relevance and a judge that errs"


def render_safe(result: dict) -> list[str]:
    """docs/results.md's section 10 (the counts in its prose are computed from ``result``)."""
    cells = [(name, cell) for name, per in result.items() for cell in per.values()]
    dense = [cell for name, cell in cells if not name.endswith("-sparse")]
    sparse = [cell for name, cell in cells if name.endswith("-sparse")]
    behind = sum(cell["tests"]["recommended vs rocchio_tuned"]["p_loss_bh"] < 0.05 for cell in dense)
    erring = [
        cell
        for judge, cell in ((j, c) for name, per in result.items() if name.endswith("-sparse") for j, c in per.items())
        if judge != "oracle"
    ]
    noisy_sparse = [cell for cell in sparse if cell["map"]["rocchio_kl"] < cell["map"]["rerank_only"]]
    noisy_below = sum(cell["map"]["rocchio_kl"] < cell["map"]["rerank_only"] for cell in erring)
    counts = summary(result)
    per_query = ", ".join(
        f"{name} {per[next(iter(per))]['relevant_per_query']:.0f}"
        for name, per in result.items()
        if "-sparse" not in name
    )
    return [
        SECTION,
        "",
        f"`benchmarks/safe_default.py`. NFCorpus, Banking77 and CLINC150 as shipped (relevant documents per query: "
        f"{per_query}) and their `-sparse` variants (one relevant document per query: `Benchmark.sparse`, the others "
        "leave the query's pool). Judges: the noisy oracle (seed 3) at accuracy 1.0, 0.9, 0.8 symmetric, and 0.9, 0.8 "
        'asymmetric (balanced accuracy; a wrong "relevant" three times as likely as a miss: false-positive / '
        "false-negative rates in parentheses). K = 20, one round. MAP over every query. `recommended` is what `refine "
        "search` / `classify` run by default (`refine_core.recommended`: the judge's relevant verdicts first in the "
        f"original order, the rest by the paper's refinement from the query at lr {RECOMMENDED.lr:g}, no move unless the judge "
        "called at least 35% of the judged documents relevant), fixed; `Rocchio → "
        "KL` the previous default (β 1.5, γ 0.5, lr 3e-4), fixed; `tuned Rocchio` and `either` (recommended or Rocchio "
        "→ KL, whichever had the better MAP there) are chosen on the other half of the queries (cross-fitted). "
        "! : significantly below rerank-only or the baseline (one-sided paired t-test for a loss, Benjamini–Hochberg "
        "over every test of the table); ‹ : significantly below tuned Rocchio (same family).",
        "",
        *render(result),
        "",
        f"Read with the data and noise named. On the **sparse** variants the previous default, Rocchio → KL, is "
        f"below rerank-only in {len(noisy_sparse)} of {len(sparse)} cells, {noisy_below} of the {len(erring)} with a "
        f"judge that errs (most judged positives there are the judge's mistakes, and it moves the query toward "
        f"them); `recommended` is "
        f"significantly below rerank-only or the baseline in {counts['recommended']['losses vs rerank_only']} and "
        f"{counts['recommended']['losses vs baseline']} of all {counts['recommended']['cells']} cells, and equals "
        f"rerank-only with the oracle there. On the **dense** sets it keeps only part of the gain: significantly "
        f"below tuned Rocchio in {behind} of {len(dense)} dense cells (the paper's small step from the query moves "
        f"less than Rocchio). No single fixed method met both halves of the target here; chosen per data set on half "
        f"of its queries, `either` is significantly below rerank-only / the baseline in "
        f"{counts['either']['losses vs rerank_only']} / {counts['either']['losses vs baseline']} cells and below "
        f"tuned Rocchio in {counts['either']['losses vs rocchio_tuned']}, above it in "
        f"{counts['either']['gains vs rocchio_tuned']}. So the commands default to the method that did not lose, "
        "and a user with a few labelled queries should run a sweep with `methods: [recommended, rocchio_kl]` on "
        "them, and pass `--start rocchio --no-keep-verdicts` where Rocchio → KL wins.",
        "",
    ]


def render_unseen(result: dict) -> list[str]:
    """Section 10's second part: the same on sets the default was not chosen on."""
    counts = summary(result)["recommended"]
    return [
        "### Sets the default was not chosen on",
        "",
        "The same methods and judges on NFCorpus's dev and train queries and CLINC150's test utterances "
        "(benchmarks/unseen.py's sets) and SNIPS (7 intents), each as published and as its `-sparse` variant "
        "(`python benchmarks/safe_default.py --unseen`). One caveat: the default's 35% gate was set after its "
        "first version, without the gate, lost to rerank-only on `nfcorpus-train-sparse` here; that set has been "
        "seen since.",
        "",
        *render(result),
        "",
        f"`recommended` here: significantly below rerank-only in {counts['losses vs rerank_only']} and below the "
        f"baseline in {counts['losses vs baseline']} of {counts['cells']} cells; below tuned Rocchio in "
        f"{counts['losses vs rocchio_tuned']}, above it in {counts['gains vs rocchio_tuned']}.",
        "",
    ]


def update_docs(result: dict, docs: Path, unseen: dict | None = None) -> None:
    """Write section 10 into ``docs/results.md`` (replacing an older one) and ``safe`` (and
    ``safe_unseen``) into results.json."""
    import json

    md = docs / "results.md"
    text = md.read_text(encoding="utf-8")
    head = text.split(SECTION)[0].rstrip("\n")
    lines = render_safe(result) + (render_unseen(unseen) if unseen is not None else [])
    md.write_text(head + "\n\n" + "\n".join(lines), encoding="utf-8")
    path = docs / "results.json"
    stored = json.loads(path.read_text(encoding="utf-8"))
    stored["safe"] = json.loads(json.dumps(result, default=float))
    if unseen is not None:
        stored["safe_unseen"] = json.loads(json.dumps(unseen, default=float))
    path.write_text(json.dumps(stored, indent=1, sort_keys=True), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--update-docs", action="store_true", help="write section 10 of docs/results.md")
    parser.add_argument("--unseen", action="store_true", help="the sets the default was not chosen on (UNSEEN)")
    args = parser.parse_args()
    started = time.perf_counter()
    unseen = None
    if args.unseen or args.update_docs:
        names = tuple(args.datasets or UNSEEN) if args.unseen else UNSEEN
        unseen = run(names, unseen_data(names))
        print("\n".join(render(unseen)))
    result = unseen if unseen is not None and args.unseen else run(tuple(args.datasets or DATASETS))
    if not args.unseen:
        print("\n".join(render(result)))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.update_docs:  # both parts of section 10
        main_part = result if not args.unseen else run(DATASETS)
        update_docs(main_part, Path(__file__).resolve().parents[1] / "docs", unseen)
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
