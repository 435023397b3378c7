"""Quality report: refinement against its controls on five benchmarks, measured offline.

Writes ``docs/results.md`` (tables), ``docs/results.json`` (every number) and PNG plots under
``docs/``; prints the README's summary table. Everything runs on the bundled MiniLM with the
oracle judge (gold labels of the K judged documents: the ceiling), noisy oracles of chosen
accuracy, and the local SmolLM2 judge. Sections:

1. MAP, nDCG@10, R@50, ROC-AUC of original, rerank-only, Rocchio, refined (paper defaults) and
   refined after 2 and 3 rounds, oracle judge, paired one-sided t-tests BH-corrected over the
   project's one family (flows.report.BH_FAMILY: every method of every dataset).
2. Judge accuracy 0.55 ... 1.0 -> ΔMAP of refined against rerank-only (lr 1e-4 and 1e-3).
3. Learning rate x judge accuracy -> refined MAP, with the lr chosen from held-out judgments.
4. Feedback budget K and steps x lr -> MAP and estimated judge cost per query.
5. The local SmolLM2-135M judge on 20 CLINC150 and 20 NFCorpus queries.
6. The paper's numbers beside ours.
7. The paper's query template against the bare query on this (not instruction-tuned) model.
8. Beyond the paper (benchmarks/beyond.py): every method at 20/40/60 judgments, settings chosen
   on a seeded half of the queries and reported on the other half.
9. Unseen data (benchmarks/unseen.py); 10. safe by default (benchmarks/safe_default.py): the
   commands' default on dense and one-relevant-document data, symmetric and asymmetric judges.

    REFINE_DATA_DIR=... python benchmarks/quality.py [--out docs] [--quick] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import emit_json, machine_info
from benchmarks.harness import (
    ACCURACIES,
    DATASETS,
    K_GRID,
    LR_ACCURACIES,
    LR_GRID,
    MEASURES,
    MODEL,
    STEPS_GRID,
    first_feedback,
    judge_of,
    load_data,
    map_of,
    pooled_scores,
    refined_map,
)
from benchmarks.quality_report import plots, render, summary_table
from flows.report import adjust_sweep_pvalues
from judging.oracle import oracle_scores
from refine_core.evaluation import evaluate_cell_arrays
from refine_core.feedback import select_feedback
from refine_core.lr_selection import select_lr
from refine_core.metrics import evaluate_rankings


# ---- sections -------------------------------------------------------------------------------------------
def section_main(data: dict) -> dict:
    out: dict[str, dict[str, Any]] = {}
    for name, (q, d, labels, pool, _, texts) in data.items():
        outcome = evaluate_cell_arrays(q, d, labels, judge_of(labels, texts), pool=pool, k=20, rounds=3)
        out[name] = {
            "metrics": {m: {key: r.means[key] for key, _ in MEASURES} for m, r in outcome.metrics.items()},
            "pvalue": {m: t.pvalue for m, t in outcome.tests.items()},
            "queries": int(q.shape[0]),
            "documents": int(d.shape[0]),
            "without_positives": outcome.metrics["baseline"].n_without_positives,
        }
    # the project's one Benjamini–Hochberg family: every method of every cell (here, every dataset)
    cells = {n: {"tests": {m: {"pvalue": p} for m, p in out[n]["pvalue"].items()}} for n in out}
    adjust_sweep_pvalues(list(cells.values()))
    for n, cell in cells.items():
        out[n]["p_bh"] = {m: t["pvalue_bh"] for m, t in cell["tests"].items() if "pvalue_bh" in t}
    return out


def section_accuracy(data: dict) -> dict:
    from refine_core.baselines import rerank_only_scores

    out: dict = {}
    for name, (q, d, labels, pool, _, texts) in data.items():
        base_scores = pooled_scores(q, d, pool)  # the original ranking, shared by every accuracy below
        fb = select_feedback(base_scores, k=20)
        rows = np.arange(q.shape[0])
        base = evaluate_rankings(base_scores, labels, pool=pool, ks=(10,)).means["map"]
        out[name] = {"baseline": base, "points": []}
        for acc in ACCURACIES:
            scores, mask = judge_of(labels, texts, acc, seed=1)(rows, fb)
            rerank = evaluate_rankings(
                rerank_only_scores(base_scores, fb, scores, mask=mask), labels, pool=pool, ks=(10,)
            ).means["map"]
            point = {"accuracy": acc, "rerank_only": rerank}
            for lr in (1e-4, 1e-3):
                point[f"refined_lr{lr:g}"] = refined_map(q, d, labels, pool, fb, scores, mask, lr)
            out[name]["points"].append(point)
    return out


def section_lr(data: dict) -> dict:
    out: dict = {}
    for name, (q, d, labels, pool, _, texts) in data.items():
        fb = first_feedback(q, d, pool, 20)
        rows = np.arange(q.shape[0])
        grid = {}
        auto = {}
        for acc in LR_ACCURACIES:
            scores, mask = judge_of(labels, texts, acc, seed=2)(rows, fb)
            grid[acc] = {lr: refined_map(q, d, labels, pool, fb, scores, mask, lr) for lr in LR_GRID}
            chosen = select_lr(q, d, fb, scores, mask, candidates=LR_GRID, seed=0)
            auto[acc] = {"lr": chosen.lr, "map": grid[acc][chosen.lr], "heldout_auc": chosen.heldout_auc}
        out[name] = {"grid": grid, "auto": auto}
    return out


def section_budget(data: dict, names: tuple[str, ...]) -> dict:
    out: dict = {}
    for name in names:
        q, d, labels, pool, doc_tokens, texts = data[name]
        rows = np.arange(q.shape[0])
        points = []
        for k in K_GRID:
            fb = first_feedback(q, d, pool, k)
            scores, mask = judge_of(labels, texts)(rows, fb)
            # listwise Claude Haiku 4.5 at $1 / $5 per M tokens: ~400 prompt tokens, the K documents, ~8 output tokens each
            cost = ((400 + k * doc_tokens) * 1.0 + 8 * k * 5.0) / 1e6
            for steps in STEPS_GRID:
                for lr in (1e-4, 1e-3):
                    points.append(
                        {
                            "k": k,
                            "steps": steps,
                            "lr": lr,
                            "cost_per_query_usd": cost,
                            "map": refined_map(q, d, labels, pool, fb, scores, mask, lr, steps),
                        }
                    )
        out[name] = points
    return out


def section_smollm2(data_root_benches: dict, n_queries: int) -> dict:
    from judging import JudgmentLedger, run_judge
    from judging.local_lm import LocalLMJudge
    from judging.runner import JudgeRequest
    from tasks.storage import ledger_url

    judge = LocalLMJudge("smollm2-135m")
    ledger = JudgmentLedger(ledger_url())
    out = {}
    for name, (bench, q, d, labels, pool) in data_root_benches.items():
        q, labels = q[:n_queries], labels[:n_queries]
        pool = None if pool is None else pool[:n_queries]
        fb = first_feedback(q, d, pool, 20)
        texts, queries = bench.document_texts(), bench.query_texts()[:n_queries]
        started = time.perf_counter()
        report = run_judge(
            judge,
            [
                JudgeRequest(
                    query=queries[i], documents=tuple(texts[j] for j in fb[i]), task_instruction=bench.judge_instruction
                )
                for i in range(n_queries)
            ],
            ledger=ledger,
            concurrency=1,
        )
        seconds = time.perf_counter() - started
        scores = np.array([[v.score if v.ok else np.nan for v in row] for row in report.judgments], dtype=np.float32)
        mask = np.isfinite(scores)
        gold, _ = oracle_scores(labels, fb)
        aucs = []
        for i in range(n_queries):
            pos, neg = scores[i][gold[i] > 0], scores[i][gold[i] == 0]
            if pos.size and neg.size:
                aucs.append(
                    float(
                        ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
                        / (pos.size * neg.size)
                    )
                )
        base = map_of(q, d, labels, pool)
        out[name] = {
            "queries": n_queries,
            "judge_auc": float(np.mean(aucs)) if aucs else float("nan"),
            "auc_queries": len(aucs),
            "baseline": base,
            "refined_smollm2": refined_map(q, d, labels, pool, fb, np.nan_to_num(scores), mask, 1e-4),
            "refined_oracle": refined_map(q, d, labels, pool, fb, gold, gold >= 0, 1e-4),
            "judge_seconds": seconds,
            "judgments_paid": report.judged,
            "from_ledger": report.from_ledger,
        }
    return out


def section_template(raw: dict) -> dict:
    """Baseline MAP with the paper's query template and with the bare query (MiniLM is not instruction-tuned)."""
    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from tasks.storage import embedding_cache_dir

    embedder = SentenceTransformerEmbedder(MODEL, threads=2)
    cache = EmbeddingCache(embedding_cache_dir())
    out = {}
    for name, (bench, q, d, labels, pool) in raw.items():
        bare = embedder.embed_queries(bench.query_texts(), instruction=None, cache=cache)
        row = {}
        for label, vectors in (("template", q), ("bare", bare)):
            row[label] = map_of(vectors, d, labels, pool)
        fb = first_feedback(bare, d, pool, 20)
        scores, mask = judge_of(labels, (bench.query_texts(), bench.document_texts()))(np.arange(bare.shape[0]), fb)
        row["bare_refined"] = refined_map(bare, d, labels, pool, fb, scores, mask, 1e-4)
        row["instruction"] = bench.embed_instruction
        out[name] = row
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "docs")
    parser.add_argument("--smollm2-queries", type=int, default=20)
    parser.add_argument("--skip-smollm2", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    started = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    data, raw = load_data(DATASETS, started)
    results = {"main": section_main(data)}
    print(f"section 1 done ({time.perf_counter() - started:.0f} s)", flush=True)
    results["accuracy"] = section_accuracy(data)
    print(f"section 2 done ({time.perf_counter() - started:.0f} s)", flush=True)
    results["lr"] = section_lr(data)
    print(f"section 3 done ({time.perf_counter() - started:.0f} s)", flush=True)
    results["budget"] = section_budget(data, ("clinc150", "banking77", "nfcorpus"))
    print(f"section 4 done ({time.perf_counter() - started:.0f} s)", flush=True)
    results["smollm2"] = (
        {}
        if args.skip_smollm2
        else section_smollm2({n: raw[n] for n in ("clinc150", "nfcorpus")}, args.smollm2_queries)
    )
    print(f"section 5 done ({time.perf_counter() - started:.0f} s)", flush=True)
    results["template"] = section_template(raw)
    from benchmarks.beyond import section_beyond

    results["beyond"] = section_beyond(data)
    print(f"section 8 done ({time.perf_counter() - started:.0f} s)", flush=True)
    from benchmarks.unseen import DATASETS as UNSEEN
    from benchmarks.unseen import run as run_unseen
    from evaluations.registry import data_dir

    results["unseen"] = run_unseen(UNSEEN, data_dir())
    print(f"section 9 done ({time.perf_counter() - started:.0f} s)", flush=True)
    from benchmarks.safe_default import DATASETS as SAFE
    from benchmarks.safe_default import UNSEEN as SAFE_UNSEEN
    from benchmarks.safe_default import run as run_safe
    from benchmarks.safe_default import unseen_data

    results["safe"] = run_safe(SAFE)
    results["safe_unseen"] = run_safe(SAFE_UNSEEN, unseen_data(SAFE_UNSEEN))
    print(f"section 10 done ({time.perf_counter() - started:.0f} s)", flush=True)
    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).resolve().parent
        ).stdout.strip()
        or "unknown"
    )
    meta = {
        "date": dt.date.today().isoformat(),
        "commit": commit,
        "machine": machine_info(),
        "seconds": time.perf_counter() - started,
    }
    plots(results, args.out)
    render(results, args.out, meta)
    serialisable = json.loads(json.dumps({"meta": meta, **results}, default=float))
    (args.out / "results.json").write_text(json.dumps(serialisable, indent=1, sort_keys=True), encoding="utf-8")
    print(summary_table(results))
    print(f"\nwrote {args.out / 'results.md'} and plots in {meta['seconds']:.0f} s")
    if args.json:
        emit_json(serialisable)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
