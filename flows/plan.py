"""``refine run CONFIG --dry-run``: what a sweep would pay, per cell, without paying anything.

The free stages run (they are cached and shared with the real run): loading, embedding, the
first round's feedback selection. For every paid judge (a remote service) the first round's
(query, document) pairs are looked up in the ledger, so what is already paid for costs
nothing; later rounds and the HyDE-refined round depend on judgments not yet made, so they are
counted as their most (every query x k). HyDE passages are looked up in the generation store.
The estimate uses the same high token estimate as the budget (see
:mod:`judging.spend`). Local judges (oracle, local LM, cross-encoder) are free.
"""

# No ``from __future__ import annotations``: Prefect resolves the flow's parameter annotations.
from typing import Any

from prefect import flow

from evaluations.config import SweepConfig
from flows.cell import embed_corpus
from judging.ledger import JudgmentLedger, doc_hash, query_hash
from judging.runner import estimate_cost
from judging.spend import estimate_call_cost, estimate_usage
from tasks.core import embed_queries_task, load_benchmark_task, select_feedback_task
from tasks.storage import ledger_url, load_arrays


def _call_estimate(
    model: str, query: str, instruction: str | None, documents: list[str], per_request: int | None, batch: bool
) -> float:
    """Estimated USD of judging ``documents`` for one query, in calls of ``per_request`` documents."""
    size = per_request or max(len(documents), 1)
    total = 0.0
    for start in range(0, len(documents), size):
        total += estimate_call_cost(model, query, instruction, documents[start : start + size])
    return total / 2 if batch else total


@flow(name="plan-sweep", flow_run_name="plan {config.name}", log_prints=False)
def plan_sweep(config: SweepConfig) -> dict:
    """Per cell: the judgments and HyDE generations still to pay and their estimated cost."""
    from generators.hyde import GenerationStore, hyde_prompt, prompt_hash
    from tasks.judging import build_generator, build_judge

    ledger = JudgmentLedger(ledger_url())
    cells = config.cells()
    benches = {spec: load_benchmark_task(spec) for spec in {c.benchmark for c in cells}}
    loaded = {spec: ref.load() for spec, ref in benches.items()}
    shared = {}
    for spec, model in {(c.benchmark, c.model) for c in cells}:
        docs = embed_corpus(benches[spec], model, config.execution)
        shared[(spec, model)] = (docs, embed_queries_task(benches[spec], model, config.query_templates.get(model)))
    judges: dict[str, object] = {}
    seen_pairs: set[tuple[str, str, str]] = set()
    rows = []
    total = {"judgments_to_pay": 0, "judgments_at_most": 0, "hyde_to_pay": 0, "usd": 0.0, "usd_at_most": 0.0}
    later_usd = 0.0
    hyde_done: set[tuple[str, str]] = set()
    for cell in cells:
        bench, ref = loaded[cell.benchmark], benches[cell.benchmark]
        n_queries = bench.n_queries
        row: dict[str, Any] = {
            "cell": f"{cell.benchmark.name} · {cell.model} · {cell.judge.label} · lr {cell.lr:g} · k {cell.k} · "
            f"r {cell.rounds}",
            "paid": cell.judge.paid,
            "judgments_to_pay": 0,
            "judgments_in_ledger": 0,
            "later_rounds_at_most": 0,
            "hyde_to_pay": 0,
            "usd": 0.0,
            "usd_at_most": 0.0,
        }
        if cell.judge.paid:
            key = cell.judge.model_dump_json()
            if key not in judges:
                judges[key] = build_judge(cell.judge, bench)
            judge = judges[key]
            docs, queries = shared[(cell.benchmark, cell.model)]
            idx = load_arrays(select_feedback_task(ref, queries, docs, cell.k).path)["idx"]
            texts, qtexts = bench.document_texts(), bench.query_texts()
            batch = cell.judge.registered.batches
            per_request = judge.documents_per_request  # type: ignore[attr-defined]
            model = judge.identity.model  # type: ignore[attr-defined]
            jkey = judge.identity.key  # type: ignore[attr-defined]
            for i, line in enumerate(idx):
                qh = query_hash(qtexts[i], ref.judge_instruction)
                wanted = [texts[j] for j in line if j >= 0]
                stored = ledger.lookup(jkey, [(qh, doc_hash(d)) for d in wanted])
                missing = [d for d in dict.fromkeys(wanted) if (qh, doc_hash(d)) not in stored]
                row["judgments_in_ledger"] += len(wanted) - len(missing)
                fresh = [d for d in missing if (jkey, qh, doc_hash(d)) not in seen_pairs]
                seen_pairs.update((jkey, qh, doc_hash(d)) for d in missing)
                row["judgments_to_pay"] += len(missing)
                cost = _call_estimate(model, qtexts[i], ref.judge_instruction, missing, per_request, batch)
                row["usd"] += cost
                total["judgments_to_pay"] += len(fresh)
                total["usd"] += _call_estimate(model, qtexts[i], ref.judge_instruction, fresh, per_request, batch)
            later = n_queries * cell.k * ((cell.rounds - 1) + (1 if cell.hyde is not None else 0))
            mean_doc = sum(len(t) for t in texts) / max(len(texts), 1)
            mean_query = sum(len(q) for q in qtexts) / max(len(qtexts), 1)
            per_query = _call_estimate(
                model, "x" * int(mean_query), ref.judge_instruction, ["x" * int(mean_doc)] * cell.k, per_request, batch
            )
            row["later_rounds_at_most"] = later
            row["later_usd_at_most"] = per_query * n_queries * (later // max(cell.k * n_queries, 1))
            total["judgments_at_most"] += later
            later_usd += row["later_usd_at_most"]
        if cell.hyde is not None and cell.hyde.paid:
            generator = build_generator(cell.hyde)
            prompts = [hyde_prompt(q, ref.embed_instruction) for q in bench.query_texts()]
            generated = GenerationStore(ledger_url()).lookup(generator.identity.key, prompts, cell.hyde.seed)
            missing = [p for p in prompts if prompt_hash(p) not in generated]
            row["hyde_to_pay"] = len(missing)
            cost = sum(
                estimate_cost(generator.identity.model, estimate_usage(len(p), 1, cell.hyde.max_tokens))
                for p in missing
            )
            row["usd"] += cost
            hkey = (generator.identity.key, ref.hash)
            if hkey not in hyde_done:
                hyde_done.add(hkey)
                total["hyde_to_pay"] += len(missing)
                total["usd"] += cost
        row["usd_at_most"] = row["usd"] + row.pop("later_usd_at_most", 0.0)
        rows.append(row)
    total["judgments_at_most"] += total["judgments_to_pay"]
    total["usd_at_most"] = total["usd"] + later_usd
    return {
        "cells": rows,
        "total": total,
        "budget": {"max_judgments": config.budget.max_judgments, "max_cost_usd": config.budget.max_cost_usd},
    }
