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
from flows.cell_logging import cell_label
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
    cells = config.cells()
    planner = _Planner(config, cells)
    rows = []
    for cell in cells:
        row: dict[str, Any] = {
            "cell": cell_label(cell),
            "paid": cell.judge.paid,
            "judgments_to_pay": 0,
            "judgments_in_ledger": 0,
            "later_rounds_at_most": 0,
            "hyde_to_pay": 0,
            "usd": 0.0,
            "usd_at_most": 0.0,
        }
        if cell.judge.paid:
            planner.first_round(cell, row)
            planner.later_rounds(cell, row)
        if cell.hyde is not None and cell.hyde.paid:
            planner.hyde(cell, row)
        row["usd_at_most"] = row["usd"] + row.pop("later_usd_at_most", 0.0)
        rows.append(row)
    total = planner.total
    total["judgments_at_most"] += total["judgments_to_pay"]
    total["usd_at_most"] = total["usd"] + planner.later_usd
    return {
        "cells": rows,
        "total": total,
        "budget": {"max_judgments": config.budget.max_judgments, "max_cost_usd": config.budget.max_cost_usd},
    }


class _Planner:
    """What a sweep's cells would pay, with the totals counting a pair (or a HyDE passage) that
    several cells need once."""

    def __init__(self, config: SweepConfig, cells: list) -> None:
        self.ledger = JudgmentLedger(ledger_url())
        self.benches = {spec: load_benchmark_task(spec) for spec in {c.benchmark for c in cells}}
        self.loaded = {spec: ref.load() for spec, ref in self.benches.items()}
        self.shared = {}
        for spec, model in {(c.benchmark, c.model) for c in cells}:
            docs = embed_corpus(self.benches[spec], model, config.execution)
            queries = embed_queries_task(self.benches[spec], model, config.query_templates.get(model))
            self.shared[(spec, model)] = (docs, queries)
        self.judges: dict[str, Any] = {}
        self.seen_pairs: set[tuple[str, str, str]] = set()
        self.hyde_done: set[tuple[str, str]] = set()
        self.total: dict[str, Any] = {
            "judgments_to_pay": 0,
            "judgments_at_most": 0,
            "hyde_to_pay": 0,
            "usd": 0.0,
            "usd_at_most": 0.0,
        }
        self.later_usd = 0.0

    def judge(self, cell, bench) -> Any:
        from tasks.judging import build_judge

        key = cell.judge.model_dump_json()
        if key not in self.judges:
            self.judges[key] = build_judge(cell.judge, bench)
        return self.judges[key]

    def first_round(self, cell, row: dict[str, Any]) -> None:
        """The first round's pairs: those the ledger lacks are to pay (once per query and text)."""
        bench, ref = self.loaded[cell.benchmark], self.benches[cell.benchmark]
        judge = self.judge(cell, bench)
        docs, queries = self.shared[(cell.benchmark, cell.model)]
        idx = load_arrays(select_feedback_task(ref, queries, docs, cell.k).path)["idx"]
        texts, qtexts = bench.document_texts(), bench.query_texts()
        batch, per_request = cell.judge.registered.batches, judge.documents_per_request
        model, jkey = judge.identity.model, judge.identity.key
        for i, line in enumerate(idx):
            qh = query_hash(qtexts[i], ref.judge_instruction)
            wanted = list(dict.fromkeys(texts[j] for j in line if j >= 0))  # a text twice is judged once
            stored = self.ledger.lookup(jkey, [(qh, doc_hash(d)) for d in wanted])
            missing = [d for d in wanted if (qh, doc_hash(d)) not in stored]
            row["judgments_in_ledger"] += len(wanted) - len(missing)
            fresh = [d for d in missing if (jkey, qh, doc_hash(d)) not in self.seen_pairs]
            self.seen_pairs.update((jkey, qh, doc_hash(d)) for d in missing)
            row["judgments_to_pay"] += len(missing)
            row["usd"] += _call_estimate(model, qtexts[i], ref.judge_instruction, missing, per_request, batch)
            self.total["judgments_to_pay"] += len(fresh)
            self.total["usd"] += _call_estimate(model, qtexts[i], ref.judge_instruction, fresh, per_request, batch)

    def later_rounds(self, cell, row: dict[str, Any]) -> None:
        """Later rounds (and HyDE-refined's round) at their most: every query x k, not yet known."""
        bench, ref = self.loaded[cell.benchmark], self.benches[cell.benchmark]
        judge = self.judge(cell, bench)
        texts, qtexts, n_queries = bench.document_texts(), bench.query_texts(), bench.n_queries
        later = n_queries * cell.k * ((cell.rounds - 1) + (1 if cell.hyde is not None else 0))
        mean_doc = sum(len(t) for t in texts) / max(len(texts), 1)
        mean_query = sum(len(q) for q in qtexts) / max(len(qtexts), 1)
        per_query = _call_estimate(
            judge.identity.model,
            "x" * int(mean_query),
            ref.judge_instruction,
            ["x" * int(mean_doc)] * cell.k,
            judge.documents_per_request,
            cell.judge.registered.batches,
        )
        row["later_rounds_at_most"] = later
        row["later_usd_at_most"] = per_query * n_queries * (later // max(cell.k * n_queries, 1))
        self.total["judgments_at_most"] += later
        self.later_usd += row["later_usd_at_most"]

    def hyde(self, cell, row: dict[str, Any]) -> None:
        """HyDE passages the generation store lacks (the totals count a benchmark's once)."""
        from generators.hyde import GenerationStore, hyde_prompt, prompt_hash
        from tasks.judging import build_generator

        bench, ref = self.loaded[cell.benchmark], self.benches[cell.benchmark]
        generator = build_generator(cell.hyde)
        prompts = [hyde_prompt(q, ref.embed_instruction) for q in bench.query_texts()]
        generated = GenerationStore(ledger_url()).lookup(generator.identity.key, prompts, cell.hyde.seed)
        missing = [p for p in prompts if prompt_hash(p) not in generated]
        row["hyde_to_pay"] = len(missing)
        cost = sum(
            estimate_cost(generator.identity.model, estimate_usage(len(p), 1, cell.hyde.max_tokens)) for p in missing
        )
        row["usd"] += cost
        hkey = (generator.identity.key, ref.hash)
        if hkey not in self.hyde_done:
            self.hyde_done.add(hkey)
            self.total["hyde_to_pay"] += len(missing)
            self.total["usd"] += cost
