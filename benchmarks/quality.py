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
    DATASETS,
    LR_ACCURACIES,
    LR_GRID,
    MODEL,
    first_feedback,
    judge_of,
    load_data,
    map_of,
    pooled_scores,
    refined_map,
)
from flows.report import adjust_sweep_pvalues
from judging.oracle import oracle_scores
from refine_core.evaluation import evaluate_cell_arrays
from refine_core.feedback import select_feedback
from refine_core.lr_selection import select_lr
from refine_core.metrics import evaluate_rankings

MEASURES = (("map", "MAP"), ("ndcg@10", "nDCG@10"), ("recall@50", "R@50"), ("roc_auc", "ROC-AUC"))
ACCURACIES = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
K_GRID = (5, 10, 20, 50, 100)
STEPS_GRID = (50, 100, 200)
# The paper's MAP, Qwen3-Embedding-0.6B with Mistral-Small-3.2-24B as judge: original, refined, rerank-only.
PAPER = {"clinc150": (0.59, 0.74, 0.60), "banking77": (0.53, 0.60, 0.53), "nfcorpus": (0.20, 0.23, 0.21)}
PAPER_E5 = {"clinc150": (0.69, 0.78), "banking77": (0.55, 0.58), "nfcorpus": (0.21, 0.24)}


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


# ---- rendering -------------------------------------------------------------------------------------------
def _p(p: float) -> str:
    return f"{p:.2g}{' *' if p < 0.05 else ''}"


def _methods_section(results: dict, meta: dict) -> list[str]:
    lines = [
        "# refine-eval: measured quality",
        "",
        f"Generated by `python benchmarks/quality.py` on {meta['date']} (commit {meta['commit']}), "
        f"{meta['machine']['cpu_count']} CPU cores, Python {meta['machine']['python']}, in {meta['seconds']:.0f} s. "
        f"Embedding model: bundled {MODEL} (384-d) for every row. Judges: the **oracle** (gold labels of the judged "
        "documents, the ceiling of any judge), **noisy oracles** (each verdict flipped with probability 1 − accuracy, "
        "the same flip for the same pair), and the local **SmolLM2-135M** judge. Refinement: the paper's settings "
        "(K = 20 top documents, Adam, lr 1e-4, 100 steps) unless a table says otherwise. Sections 1–9: five "
        "benchmarks with many relevant documents per query and a symmetric noisy judge; section 10: one relevant "
        "document per query and an asymmetric judge too.",
        "",
        "## 1. Methods with the oracle judge",
        "",
        "p: one-sided paired t-test of per-query AP against the original ranking, Benjamini–Hochberg corrected over "
        "every method of every dataset in this section (the project's one family, flows.report.BH_FAMILY); * p < 0.05. Rounds 2 and 3 judge K new documents each (the top unjudged of the current ranking).",
        "",
    ]
    labels = {
        "baseline": "original",
        "rerank_only": "rerank-only",
        "rocchio": "Rocchio",
        "refined": "refined",
        "refined_r2": "refined, 2 rounds",
        "refined_r3": "refined, 3 rounds",
    }
    for name, r in results["main"].items():
        lines += [
            f"**{name}** ({r['queries']} queries, {r['documents']} documents)",
            "",
            "| method | " + " | ".join(title for _, title in MEASURES) + " | p (BH) |",
            "|---|" + "---|" * (len(MEASURES) + 1),
        ]
        for method, title in labels.items():
            m = r["metrics"][method]
            p = r.get("p_bh", {}).get(method)
            lines.append(
                f"| {title} | "
                + " | ".join(f"{m[key]:.4f}" for key, _ in MEASURES)
                + f" | {'' if p is None else _p(p)} |"
            )
        lines.append("")
    return lines


def _accuracy_section(results: dict) -> list[str]:
    lines: list[str] = []
    lines += [
        "## 2. How good must the judge be?",
        "",
        "ΔMAP of refined against rerank-only (the key control: both use the same judgments) as the judge's "
        "accuracy on the 20 judged documents falls. ![judge accuracy](quality_judge_accuracy.png)",
        "",
        "| dataset | " + " | ".join(f"acc {a:g}" for a in ACCURACIES) + " |",
        "|---|" + "---|" * len(ACCURACIES),
    ]
    for lr in (1e-4, 1e-3):
        for name, r in results["accuracy"].items():
            cells = [f"{p[f'refined_lr{lr:g}'] - p['rerank_only']:+.3f}" for p in r["points"]]
            lines.append(f"| {name}, lr {lr:g} | " + " | ".join(cells) + " |")
    crossings = []
    for name, r in results["accuracy"].items():
        paying = [p["accuracy"] for p in r["points"] if p["refined_lr0.0001"] - p["rerank_only"] > 0]
        crossings.append(f"{name}: {min(paying):g}" if paying else f"{name}: never")
    lines += ["", "Lowest accuracy at which refinement (lr 1e-4) beats rerank-only: " + "; ".join(crossings) + ".", ""]
    return lines


def _lr_section(results: dict) -> list[str]:
    lines: list[str] = []
    lines += [
        "## 3. Learning rate × judge accuracy",
        "",
        "Refined MAP per learning rate; **auto** is the lr chosen per dataset and accuracy from held-out judged "
        "documents (`refine_core.lr_selection.select_lr`: a quarter of each query's judgments held out, the lr "
        "whose refinement orders them best wins; no extra judge call). ![lr x accuracy](quality_lr_accuracy.png)",
        "",
    ]
    for name, r in results["lr"].items():
        lines += [
            f"**{name}**",
            "",
            "| accuracy | " + " | ".join(f"lr {lr:g}" for lr in LR_GRID) + " | auto (lr) | best − auto |",
            "|---|" + "---|" * (len(LR_GRID) + 2),
        ]
        for acc in LR_ACCURACIES:
            row = r["grid"][acc]
            best = max(row.values())
            auto = r["auto"][acc]
            lines.append(
                f"| {acc:g} | "
                + " | ".join(f"**{v:.4f}**" if v == best else f"{v:.4f}" for v in row.values())
                + f" | {auto['map']:.4f} ({auto['lr']:g}) | {best - auto['map']:.4f} |"
            )
        lines.append("")
    settings = [(n, acc) for n in results["lr"] for acc in LR_ACCURACIES]

    def near_best(value: float, n: str, acc: float) -> bool:
        return max(results["lr"][n]["grid"][acc].values()) - value <= 0.01

    auto_ok = sum(near_best(results["lr"][n]["auto"][acc]["map"], n, acc) for n, acc in settings)
    fixed_ok = {lr: sum(near_best(results["lr"][n]["grid"][acc][lr], n, acc) for n, acc in settings) for lr in LR_GRID}
    best_fixed = max(fixed_ok, key=lambda lr: fixed_ok[lr])
    lines += [
        f"Within 0.01 MAP of the best lr in hindsight: auto in {auto_ok} of {len(settings)} settings; "
        + "; ".join(f"fixed lr {lr:g} in {fixed_ok[lr]}" for lr in LR_GRID)
        + f". The best single fixed lr here "
        f"is {best_fixed:g}.",
        "",
    ]
    return lines


def _budget_section(results: dict) -> list[str]:
    lines: list[str] = []
    lines += [
        "## 4. Feedback budget",
        "",
        "Refined MAP (oracle judge) against K judged documents per query, and the estimated judge cost per query "
        "for a listwise Claude Haiku 4.5 call (about 400 prompt tokens, the K documents at the dataset's mean "
        "length in tokens ≈ characters / 4, 8 output tokens per document; $1 / $5 per million tokens). "
        "![budget](quality_budget.png)",
        "",
    ]
    for name, points in results["budget"].items():
        lines += [
            f"**{name}**",
            "",
            "| K | $ / query | "
            + " | ".join(f"steps {s}, lr {lr:g}" for s in STEPS_GRID for lr in (1e-4, 1e-3))
            + " |",
            "|---|---|" + "---|" * (len(STEPS_GRID) * 2),
        ]
        for k in K_GRID:
            row = [p for p in points if p["k"] == k]
            lines.append(
                f"| {k} | {row[0]['cost_per_query_usd']:.4f} | " + " | ".join(f"{p['map']:.4f}" for p in row) + " |"
            )
        lines.append("")
    return lines


def _smollm2_section(results: dict) -> list[str]:
    lines: list[str] = []
    lines += [
        "## 5. A small local judge (SmolLM2-135M, GGUF, on CPU)",
        "",
        "Judge AUC: per-query ROC-AUC of the judge's P(yes) against the gold labels of the 20 judged documents "
        "(queries whose 20 are all one class are left out).",
        "",
        "| dataset | queries | judge AUC | MAP original | refined with SmolLM2 | refined with the oracle | judgments |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["smollm2"].items():
        paid = (f"{r['judgments_paid']} in {r['judge_seconds']:.0f} s" if r["judgments_paid"] else "") + (
            f"{', ' if r['judgments_paid'] else ''}{r['from_ledger']} from the ledger" if r["from_ledger"] else ""
        )
        lines.append(
            f"| {name} | {r['queries']} | {r['judge_auc']:.3f} ({r['auc_queries']} q) | {r['baseline']:.4f} | "
            f"{r['refined_smollm2']:.4f} | {r['refined_oracle']:.4f} | {paid} |"
        )
    lines += [
        "",
        "SmolLM2-135M is no judge (AUC near 0.5): refinement with it cannot help, and this is the expected "
        "result — it is here to exercise the local-judge path, not as a quality claim.",
        "",
    ]
    return lines


def _paper_section(results: dict) -> list[str]:
    lines: list[str] = []
    lines += [
        "## 6. Beside the paper",
        "",
        "The paper: Qwen3-Embedding-0.6B embeddings judged by Mistral-Small-3.2-24B (and E5-Mistral-7B). Ours: the "
        "22M-parameter MiniLM judged by gold labels (oracle) or a noisy oracle of accuracy 0.8, K = 20, lr 1e-4. "
        "Different models and judges: compare the shape (refined > rerank-only > original), not the levels.",
        "",
        "| dataset | paper original → refined [rerank-only] | paper E5-Mistral original → refined | ours, oracle | ours, accuracy 0.8 |",
        "|---|---|---|---|---|",
    ]
    for name, (o, r, rr) in PAPER.items():
        m = results["main"][name]["metrics"]
        acc08 = next(p for p in results["accuracy"][name]["points"] if p["accuracy"] == 0.8)
        e5 = PAPER_E5[name]
        lines.append(
            f"| {name} | {o:.2f} → {r:.2f} [{rr:.2f}] | {e5[0]:.2f} → {e5[1]:.2f} | "
            f"{m['baseline']['map']:.3f} → {m['refined']['map']:.3f} [{m['rerank_only']['map']:.3f}] | "
            f"{results['accuracy'][name]['baseline']:.3f} → {acc08['refined_lr0.0001']:.3f} [{acc08['rerank_only']:.3f}] |"
        )
    lines.append("")
    return lines


def _template_section(results: dict) -> list[str]:
    lines: list[str] = []
    lines += [
        "## 7. The query template on a model without instruction tuning",
        "",
        "The paper embeds queries as `Instruct: {instruction}\\nQuery: {query}`, written for instruction-tuned "
        "models. MiniLM is not one: baseline MAP with that template and with the bare query, and refined MAP "
        "(oracle, lr 1e-4) from the bare query.",
        "",
        "| dataset | instruction | with template | bare query | bare query, refined |",
        "|---|---|---|---|---|",
    ]
    for name, r in results["template"].items():
        lines.append(
            f"| {name} | {r['instruction']} | {r['template']:.4f} | {r['bare']:.4f} | {r['bare_refined']:.4f} |"
        )
    lines.append("")
    return lines


def render(results: dict, out: Path, meta: dict) -> str:
    lines = _methods_section(results, meta)
    lines += _accuracy_section(results)
    lines += _lr_section(results)
    lines += _budget_section(results)
    lines += _smollm2_section(results)
    lines += _paper_section(results)
    lines += _template_section(results)
    if "beyond" in results:
        from benchmarks.beyond import render_beyond

        lines += render_beyond(results["beyond"])
    if "unseen" in results:
        from benchmarks.unseen import render_unseen

        lines += render_unseen(results["unseen"])
    if "safe" in results:
        from benchmarks.safe_default import render_safe, render_unseen

        lines += render_safe(results["safe"])
        if "safe_unseen" in results:
            lines += render_unseen(results["safe_unseen"])
    text = "\n".join(lines)
    (out / "results.md").write_text(text, encoding="utf-8")
    return text


def plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for name, r in results["accuracy"].items():
        acc = [p["accuracy"] for p in r["points"]]
        (line,) = ax.plot(
            acc, [p["refined_lr0.0001"] - p["rerank_only"] for p in r["points"]], marker="o", label=f"{name} lr 1e-4"
        )
        ax.plot(
            acc,
            [p["refined_lr0.001"] - p["rerank_only"] for p in r["points"]],
            ls="--",
            color=line.get_color(),
            label=f"{name} lr 1e-3",
        )
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xlabel("judge accuracy on the 20 judged documents")
    ax.set_ylabel("MAP refined − MAP rerank-only")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "quality_judge_accuracy.png", dpi=110)
    plt.close(fig)

    names = list(results["lr"])
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names):
        grid = results["lr"][name]["grid"]
        heat = np.array([[grid[acc][lr] for lr in LR_GRID] for acc in LR_ACCURACIES])
        image = ax.imshow(heat, aspect="auto", cmap="viridis", origin="lower")
        ax.set_xticks(range(len(LR_GRID)), [f"{lr:g}" for lr in LR_GRID], rotation=45, fontsize=7)
        ax.set_yticks(range(len(LR_ACCURACIES)), [f"{a:g}" for a in LR_ACCURACIES], fontsize=7)
        for row, accuracy in enumerate(LR_ACCURACIES):
            column = LR_GRID.index(results["lr"][name]["auto"][accuracy]["lr"])
            ax.plot(column, row, marker="x", color="red")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("lr (x: auto)", fontsize=8)
        fig.colorbar(image, ax=ax, fraction=0.046)
    axes[0][0].set_ylabel("judge accuracy")
    fig.tight_layout()
    fig.savefig(out / "quality_lr_accuracy.png", dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in results["budget"].items():
        best = [max(p["map"] for p in points if p["k"] == k) for k in K_GRID]
        paper = [
            next(p["map"] for p in points if p["k"] == k and p["steps"] == 100 and p["lr"] == 1e-4) for k in K_GRID
        ]
        (line,) = ax.plot(K_GRID, best, marker="o", label=f"{name}, best steps/lr")
        ax.plot(K_GRID, paper, ls="--", color=line.get_color(), label=f"{name}, paper settings")
    ax.set_xscale("log")
    ax.set_xlabel("K judged documents per query")
    ax.set_ylabel("MAP (oracle judge)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "quality_budget.png", dpi=110)
    plt.close(fig)


def summary_table(results: dict) -> str:
    lines = [
        "| dataset | original | rerank-only | Rocchio | refined | refined, 3 rounds | refined, judge acc 0.8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in results["main"].items():
        m = r["metrics"]
        acc08 = next(p for p in results["accuracy"][name]["points"] if p["accuracy"] == 0.8)
        lines.append(
            f"| {name} | {m['baseline']['map']:.3f} | {m['rerank_only']['map']:.3f} | {m['rocchio']['map']:.3f} | "
            f"{m['refined']['map']:.3f} | {m['refined_r3']['map']:.3f} | {acc08['refined_lr0.0001']:.3f} |"
        )
    return "\n".join(lines)


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
