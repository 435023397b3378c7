"""Beyond the paper: every method at equal judgments, settings chosen on one half of the queries.

For each dataset and judge accuracy (oracle, 0.9, 0.8 — the noisy oracle of quality.py), at the
budgets of 1, 2 and 3 rounds (20, 40, 60 judgments per query, each round judging the current
vector's top 20 not judged yet):

* rerank-only (1 round: the judged documents first, in judge order);
* Rocchio with the SMART weights, and Rocchio with (beta, gamma) chosen on the tuning half;
* the paper's refinement (lr 1e-4) and the refinement with lr chosen on the tuning half;
* ``rocchio_kl``: the KL refinement started from the (tuned) Rocchio vector, lr chosen on the
  tuning half (refine_core.rounds.rocchio_rounds with ``then_refine``);
* ``pull``: the refinement whose objective adds a pull toward the judged-positive centroid
  (``RefineConfig.pull``), (lr, pull) chosen on the tuning half;
* ``rocchio_kl_pull``: the two together — the pull's objective started from the tuned Rocchio
  vector, (lr, pull) from the pull's grid, chosen on the tuning half.

Queries are split in halves with a seeded permutation; every setting is chosen by MAP on the
tuning half and reported on the other half only (both halves printed). On the report half:
paired one-sided t-tests of each new method against tuned Rocchio at the same budget and against
rerank-only, Benjamini–Hochberg over every test of the section, and per-query win/tie/loss.

    REFINE_DATA_DIR=... python benchmarks/beyond.py [--json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import time
from typing import Any

import numpy as np

from benchmarks._common import emit_json
from flows.report import adjust_sweep_pvalues
from refine_core.baselines import RocchioParams, rerank_only_scores
from refine_core.feedback import select_feedback
from refine_core.metrics import evaluate_rankings
from refine_core.refinement import RefineConfig
from refine_core.rounds import refine_rounds, rocchio_rounds
from refine_core.statistics import paired_ttest, win_tie_loss

ACCURACIES = (1.0, 0.9, 0.8)
ROUNDS = 3
K = 20
SPLIT_SEED = 20261127
JUDGE_SEED = 3
ROCCHIO_GRID = tuple(
    RocchioParams(beta=b, gamma=g) for b, g in itertools.product((0.75, 1.0, 1.5, 2.0, 3.0), (0.15, 0.5))
)
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3)
KL_LR_GRID = (1e-4, 3e-4, 1e-3)
PULL_GRID = tuple(itertools.product((1e-3, 3e-3), (0.03, 0.1, 0.3)))  # (lr, pull)
NEW_METHODS = ("rocchio_kl", "pull", "rocchio_kl_pull")
TIE = 1e-6  # per-query AP differences below this count as ties


def halves(n: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A seeded split of ``n`` queries: (tuning half, report half), each sorted."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def per_query_ap(vectors: np.ndarray, d: np.ndarray, labels: np.ndarray, pool: np.ndarray | None) -> np.ndarray:
    from benchmarks.harness import pooled_scores

    return evaluate_rankings(pooled_scores(vectors, d, pool), labels, pool=pool, ks=(10,)).per_query["ap"]


def _mean(ap: np.ndarray, rows: np.ndarray | slice) -> float:
    values = ap[rows]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def one_setting(q, d, labels, pool, judge) -> dict:
    """Per-query AP of every method and setting at every budget, on all queries."""
    n = q.shape[0]
    rows = np.arange(n)
    runs: dict[str, dict] = {}
    from benchmarks.harness import pooled_scores

    base_scores = pooled_scores(q, d, pool)
    fb = select_feedback(base_scores, k=K)
    scores, mask = judge(rows, fb)
    rerank = rerank_only_scores(base_scores, fb, np.nan_to_num(scores), mask=mask)
    runs["baseline"] = {None: {0: per_query_ap(q, d, labels, pool)}}
    runs["rerank_only"] = {None: {1: evaluate_rankings(rerank, labels, pool=pool, ks=(10,)).per_query["ap"]}}
    runs["rocchio"] = {}
    for params in ROCCHIO_GRID:
        res = rocchio_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, params=params)
        runs["rocchio"][params] = {r + 1: per_query_ap(res.round_vectors[r], d, labels, pool) for r in range(ROUNDS)}
    runs["refined"] = {}
    for lr in LR_GRID:
        res = refine_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, config=RefineConfig(lr=lr))
        runs["refined"][lr] = {r + 1: per_query_ap(res.round_vectors[r], d, labels, pool) for r in range(ROUNDS)}
    runs["pull"] = {}
    for lr, pull in PULL_GRID:
        res = refine_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, config=RefineConfig(lr=lr, pull=pull))
        runs["pull"][(lr, pull)] = {r + 1: per_query_ap(res.round_vectors[r], d, labels, pool) for r in range(ROUNDS)}
    return runs


def choose(runs: dict, tune: np.ndarray) -> dict[int, Any]:
    """For each budget, the setting with the best MAP on the tuning half (ties: first in the grid)."""
    budgets = sorted({b for per in runs.values() for b in per})
    out = {}
    for b in budgets:
        best, best_map = None, -np.inf
        for setting, per in runs.items():
            value = _mean(per[b], tune)
            if value > best_map + 1e-12:
                best, best_map = setting, value
        out[b] = best
    return out


def run_dataset(q, d, labels, pool, judge) -> dict:
    """Every method's report-half AP per budget, with the settings chosen on the tuning half, and
    the cross-fitted comparison (``crossfit``): the halves swap roles, so every query is reported
    once, under the settings chosen on the half it is not in."""
    tune, report = halves(q.shape[0])
    runs = one_setting(q, d, labels, pool, judge)
    started: dict = {}  # runs from a Rocchio vector, shared by both directions of the split
    methods, settings = tuned_methods(q, d, labels, pool, judge, runs, tune, started)
    table = {
        method: {b: {"tune": _mean(ap, tune), "report": _mean(ap, report)} for b, ap in per.items()}
        for method, per in methods.items()
    }
    tests = new_method_tests(methods, NEW_METHODS, "rocchio_tuned", report)
    swapped, swapped_settings = tuned_methods(q, d, labels, pool, judge, runs, report, started)
    in_report = np.zeros(q.shape[0], dtype=bool)
    in_report[report] = True
    crossed = {m: {b: np.where(in_report, ap, swapped[m][b]) for b, ap in per.items()} for m, per in methods.items()}
    return {
        "queries": int(q.shape[0]),
        "tune": int(tune.size),
        "report": int(report.size),
        "map": table,
        "settings": settings,
        "tests": tests,
        "crossfit": {
            "map": {m: {b: _mean(ap, slice(None)) for b, ap in per.items()} for m, per in crossed.items()},
            "settings_on_report_half": swapped_settings,
            "tests": new_method_tests(crossed, NEW_METHODS, "rocchio_tuned"),
        },
    }


def tuned_methods(q, d, labels, pool, judge, runs: dict, tune: np.ndarray, started: dict) -> tuple[dict, dict]:
    """Per-query AP (every query) of every method per budget with each setting chosen by MAP on the
    queries ``tune``, and the chosen settings. ``started``: a cache of the runs from a Rocchio vector."""
    rocchio_choice = choose(runs["rocchio"], tune)
    lr_choice = choose(runs["refined"], tune)
    pull_choice = choose(runs["pull"], tune)
    kl_grid = [(lr, 0.0) for lr in KL_LR_GRID]
    kl_ap, kl_choice = from_rocchio(q, d, labels, pool, judge, rocchio_choice, tune, kl_grid, started)
    kl_pull_ap, kl_pull_choice = from_rocchio(q, d, labels, pool, judge, rocchio_choice, tune, PULL_GRID, started)
    smart = RocchioParams()
    methods: dict[str, dict[int, np.ndarray]] = {
        "baseline": runs["baseline"][None],
        "rerank_only": runs["rerank_only"][None],
        "rocchio_smart": runs["rocchio"][smart],
        "rocchio_tuned": {b: runs["rocchio"][rocchio_choice[b]][b] for b in rocchio_choice},
        "refined_paper": runs["refined"][1e-4],
        "refined_tuned": {b: runs["refined"][lr_choice[b]][b] for b in lr_choice},
        "rocchio_kl": kl_ap,
        "pull": {b: runs["pull"][pull_choice[b]][b] for b in pull_choice},
        "rocchio_kl_pull": kl_pull_ap,
    }
    settings = {
        "rocchio_tuned": {b: {"beta": p.beta, "gamma": p.gamma} for b, p in rocchio_choice.items()},
        "refined_tuned": {b: {"lr": lr} for b, lr in lr_choice.items()},
        "rocchio_kl": {b: {"beta": p.beta, "gamma": p.gamma, "lr": lr} for b, (p, lr, _) in kl_choice.items()},
        "pull": {b: {"lr": lr, "pull": pull} for b, (lr, pull) in pull_choice.items()},
        "rocchio_kl_pull": {
            b: {"beta": p.beta, "gamma": p.gamma, "lr": lr, "pull": pull} for b, (p, lr, pull) in kl_pull_choice.items()
        },
    }
    return methods, settings


def from_rocchio(
    q, d, labels, pool, judge, rocchio_choice: dict, tune: np.ndarray, grid, started: dict | None = None
) -> tuple[dict, dict]:
    """The KL refinement started from the Rocchio vector, at each budget from the Rocchio weights
    chosen for that budget, with (lr, pull) from ``grid`` chosen on the tuning half: per-query AP
    per budget and the chosen (params, lr, pull) per budget. ``started`` caches each run's AP."""
    started = {} if started is None else started
    runs: dict = {}
    for params in sorted(set(rocchio_choice.values()), key=ROCCHIO_GRID.index):
        for lr, pull in grid:
            key = (params, lr, pull)
            if key not in started:
                res = rocchio_rounds(
                    q,
                    d,
                    judge,
                    rounds=ROUNDS,
                    k=K,
                    pool=pool,
                    params=params,
                    then_refine=RefineConfig(lr=lr, pull=pull),
                )
                started[key] = {r + 1: per_query_ap(res.round_vectors[r], d, labels, pool) for r in range(ROUNDS)}
            runs[key] = {b: ap for b, ap in started[key].items() if rocchio_choice[b] == params}
    choice = {}
    for b in range(1, ROUNDS + 1):
        candidates = {key: {b: per[b]} for key, per in runs.items() if b in per}
        choice[b] = choose(candidates, tune)[b]
    return {b: runs[choice[b]][b] for b in choice}, choice


def section_beyond(data: dict) -> dict:
    """Every dataset of ``data`` (quality.py's tuples) at every accuracy of :data:`ACCURACIES`."""
    from benchmarks.harness import judge_of

    out: dict = {}
    for name, (q, d, labels, pool, _, texts) in data.items():
        out[name] = {}
        for acc in ACCURACIES:
            out[name][str(acc)] = run_dataset(q, d, labels, pool, judge_of(labels, texts, acc, seed=JUDGE_SEED))
    adjust_tests([cell for per in out.values() for cell in per.values()])
    adjust_tests([cell["crossfit"] for per in out.values() for cell in per.values()])
    return out


def new_method_tests(ap: dict, methods: tuple[str, ...], against: str, rows=slice(None)) -> dict:
    """One-sided paired t-tests (raw p of a gain, ``pvalue``, and of a loss, ``pvalue_loss``), mean ΔAP and queries won / tied / lost of each of
    ``methods`` against ``against`` at every budget and against rerank-only at one round, on the
    queries ``rows`` of the per-query AP arrays ``ap[method][budget]``."""
    tests = {}
    for method, b in itertools.product(methods, range(1, ROUNDS + 1)):
        new = ap[method][b][rows]
        for other in (against, "rerank_only"):
            if other == "rerank_only" and b != 1:
                continue
            old = ap[other][b][rows]
            wins, ties, losses = win_tie_loss(old, new, tol=TIE)
            tests[f"{method} vs {other} @{b}"] = {
                "delta": float(np.nanmean(new - old)),
                "pvalue": float(paired_ttest(old, new, alternative="greater").pvalue),
                "pvalue_loss": float(paired_ttest(old, new, alternative="less").pvalue),
                "wins": wins,
                "ties": ties,
                "losses": losses,
            }
    return tests


def adjust_tests(cells: list[dict]) -> None:
    """One Benjamini–Hochberg family over every test of ``cells`` (the project's one BH function);
    each test's adjusted p is stored as ``p_bh``; the tests for a loss, where present, form a
    family of their own (``p_loss_bh``)."""
    adjust_sweep_pvalues(cells)
    losses = [test for cell in cells for test in cell["tests"].values() if "pvalue_loss" in test]
    family = {"tests": {i: {"pvalue": test["pvalue_loss"]} for i, test in enumerate(losses)}}
    adjust_sweep_pvalues([family])
    for i, test in enumerate(losses):
        test["p_loss_bh"] = family["tests"][i].get("pvalue_bh", float("nan"))
    for cell in cells:
        for test in cell["tests"].values():
            test["p_bh"] = test.pop("pvalue_bh", float("nan"))


def judge_label(acc: str) -> str:
    """``oracle`` or ``acc 0.8``: a judge accuracy as the tables show it."""
    return "oracle" if float(acc) == 1.0 else f"acc {acc}"


SHOWN = {
    "rocchio_kl_pull": "Rocchio → KL + pull",
    "rocchio_kl": "Rocchio → KL",
    "pull": "refined + pull",
    "rocchio_tuned": "tuned Rocchio",
    "rerank_only": "rerank-only",
}


def _test_label(key: str) -> str:
    """``pull vs rocchio_tuned @2`` as the table shows it: ``refined + pull vs tuned Rocchio at 2``."""
    method, rest = key.split(" vs ")
    against, budget = rest.split(" @")
    return f"{SHOWN[method]} vs {SHOWN[against]} at {budget}"


def render_beyond(result: dict) -> list[str]:
    lines = [
        "## 8. Beyond the paper: equal judgments, settings chosen on half the queries",
        "",
        "MAP on the **report half** of each dataset's queries (seeded split; the tuning half, on which every "
        "setting was chosen, in parentheses). Budgets: 20, 40 and 60 judgments per query (1, 2, 3 rounds; each "
        "round judges the current vector's top 20 not yet judged). `Rocchio, tuned`: (beta, gamma) from "
        f"{len(ROCCHIO_GRID)} pairs; `refined, tuned`: lr from {', '.join(f'{x:g}' for x in LR_GRID)}; "
        "`Rocchio → KL`: the KL refinement started from the tuned Rocchio vector, lr from "
        f"{', '.join(f'{x:g}' for x in KL_LR_GRID)}; `refined + pull`: the objective with the pull toward the "
        "judged-positive centroid, (lr, pull) from "
        f"{', '.join(f'({lr:g}, {p:g})' for lr, p in PULL_GRID)}; `Rocchio → KL + pull`: the pull's objective started "
        "from the tuned Rocchio vector, (lr, pull) from the same pairs. Judge: oracle or noisy oracle of the given "
        "accuracy.",
        "",
        "| dataset | judge | budget | rerank-only | Rocchio (SMART) | Rocchio, tuned | refined (lr 1e-4) | "
        "refined, tuned | Rocchio → KL | refined + pull | Rocchio → KL + pull |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = (
        "rerank_only",
        "rocchio_smart",
        "rocchio_tuned",
        "refined_paper",
        "refined_tuned",
        "rocchio_kl",
        "pull",
        "rocchio_kl_pull",
    )
    for name, per in result.items():
        for acc, cell in per.items():
            for b in range(1, ROUNDS + 1):
                cells = []
                for method in order:
                    m = cell["map"][method].get(b)
                    cells.append("" if m is None else f"{m['report']:.3f} ({m['tune']:.3f})")
                judge = judge_label(acc)
                lines.append(f"| {name} | {judge} | {b * K} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Rocchio → KL, refined + pull and Rocchio → KL + pull against tuned Rocchio at the same budget and against rerank-only (20 judgments), on the "
        "report half: mean ΔAP, one-sided paired t-test, Benjamini–Hochberg over every test of this table, "
        f"queries won / tied / lost (|ΔAP| < {TIE:g} is a tie).",
        "",
        "| dataset | judge | comparison | ΔMAP | p (BH) | W / T / L |",
        "|---|---|---|---|---|---|",
    ]
    for name, per in result.items():
        for acc, cell in per.items():
            judge = judge_label(acc)
            for label, t in cell["tests"].items():
                star = " *" if t["p_bh"] < 0.05 else ""
                lines.append(
                    f"| {name} | {judge} | {_test_label(label)} "
                    f"| {t['delta']:+.4f} | {t['p_bh']:.2g}{star} | {t['wins']} / {t['ties']} / {t['losses']} |"
                )
    lines.append("")
    if all("crossfit" in cell for per in result.values() for cell in per.values()):
        lines += render_crossfit(result)
    return lines


def goal_summary(result: dict, part: str = "crossfit") -> dict[str, dict]:
    """Issue 17's goal, counted per new method over the tests of ``part`` (``crossfit``: every
    query, settings from the other half; ``report``: the report half of the single split):
    comparisons with tuned Rocchio whose mean ΔAP is ≥ 0, significant gains (BH p < 0.05),
    significant losses (the loss family's BH p < 0.05), the largest loss, and the same count
    against rerank-only."""
    out: dict[str, dict] = {}
    for method in NEW_METHODS:
        rocchio: list[dict] = []
        rerank: list[dict] = []
        for per in result.values():
            for cell in per.values():
                tests = cell["crossfit"]["tests"] if part == "crossfit" else cell["tests"]
                for key, t in tests.items():
                    name, rest = key.split(" vs ")
                    if name == method:
                        (rerank if rest.startswith("rerank_only") else rocchio).append(t)
        out[method] = {
            "comparisons": len(rocchio),
            "at_or_above": sum(t["delta"] >= 0 for t in rocchio),
            "significant_gains": sum(t["p_bh"] < 0.05 for t in rocchio),
            "significant_losses": sum(t.get("p_loss_bh", 1.0) < 0.05 for t in rocchio),
            "largest_loss": float(min([0.0] + [t["delta"] for t in rocchio])),
            "rerank_comparisons": len(rerank),
            "above_rerank": sum(t["delta"] > 0 and t["p_bh"] < 0.05 for t in rerank),
        }
    return out


def render_crossfit(result: dict) -> list[str]:
    """Section 8's second part: the same choices made on each half in turn, every query reported."""
    lines = [
        "### Every query reported: the halves swapped (cross-fitting)",
        "",
        "The same procedure run twice with the halves' roles swapped: each query's AP is the one it gets under the "
        "settings chosen on the half it is *not* in, so every query is reported once and no setting saw the query it "
        "is scored on. ΔMAP against tuned Rocchio (chosen the same way) at the same budget; * BH p < 0.05 over every "
        "test of this part (gains); a loss is marked ! where the one-sided test for a loss is BH p < 0.05 (a family of "
        f"its own); W/T/L: queries won / tied / lost (|ΔAP| < {TIE:g}).",
        "",
        "| dataset | judge | judgments | rerank-only | Rocchio, tuned | "
        + " | ".join(f"{SHOWN[m]} (Δ, W/T/L)" for m in NEW_METHODS)
        + " |",
        "|---|---|---|---|---|" + "---|" * len(NEW_METHODS),
    ]
    for name, per in result.items():
        for acc, cell in per.items():
            cf = cell["crossfit"]
            for b in range(1, ROUNDS + 1):
                rerank = cf["map"]["rerank_only"].get(b)
                row = [name, judge_label(acc), str(b * K), "" if rerank is None else f"{rerank:.3f}"]
                row.append(f"{cf['map']['rocchio_tuned'][b]:.3f}")
                for method in NEW_METHODS:
                    t = cf["tests"][f"{method} vs rocchio_tuned @{b}"]
                    mark = " *" if t["p_bh"] < 0.05 else (" !" if t.get("p_loss_bh", 1.0) < 0.05 else "")
                    row.append(
                        f"{cf['map'][method][b]:.3f} ({t['delta']:+.3f}{mark}, {t['wins']}/{t['ties']}/{t['losses']})"
                    )
                lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "The goal, counted (Δ ≥ 0 against tuned Rocchio at equal judgments; rerank-only: BH-significant gains at 20):",
        "",
        "| method | part | ≥ tuned Rocchio | significant gains | significant losses | largest loss | beats rerank-only |",
        "|---|---|---|---|---|---|---|",
    ]
    for part, shown in (("report", "report half"), ("crossfit", "every query")):
        for method, g in goal_summary(result, part).items():
            lines.append(
                f"| {SHOWN[method]} | {shown} | {g['at_or_above']} / {g['comparisons']} | {g['significant_gains']} | "
                f"{g['significant_losses']} | {g['largest_loss']:+.3f} | {g['above_rerank']} / {g['rerank_comparisons']} |"
            )
    lines.append("")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from benchmarks.harness import DATASETS, load_data

    started = time.perf_counter()
    data, _ = load_data(tuple(args.datasets or DATASETS))
    result = section_beyond(data)
    print("\n".join(render_beyond(result)))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
