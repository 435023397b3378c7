"""The ``refine-sweep`` flow: every cell of a sweep config, shared work computed once.

One MLflow experiment per config name, a parent run per sweep and a child run per cell.
Each benchmark is loaded once and each (benchmark, model) corpus and query set embedded once
(the cached tasks would make repeats free anyway, but this also saves the task overhead);
judgments are shared through the ledger. The parent run gets the summary table with
Benjamini–Hochberg corrected p-values over every comparison of the sweep.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow, runtime

from evaluations.config import ExecutionSpec, SweepConfig
from flows.cell import METHODS_REPORTED, embed_corpus, run_cell
from flows.execution import dask_cluster, with_runner
from flows.tracking import Tracker, tracking_uri
from refine_core.statistics import benjamini_hochberg
from tasks.core import ArrayRef, BenchmarkRef, embed_queries_task, load_benchmark_task
from tasks.storage import code_version


def summary_table(cells: list[dict]) -> tuple[list[dict], str]:
    """Rows (one per cell) with MAP per method, ΔMAP and BH-corrected p-values; and markdown."""
    comparisons = [(i, m) for i, c in enumerate(cells) for m in c["tests"]]
    adjusted = benjamini_hochberg([cells[i]["tests"][m]["pvalue"] for i, m in comparisons]) if comparisons else []
    p_bh = {pair: float(p) for pair, p in zip(comparisons, adjusted)}
    for (i, m), p in p_bh.items():
        cells[i]["tests"][m]["pvalue_bh"] = p
    rows = []
    for i, c in enumerate(cells):
        row = {"run_id": c["run_id"], "benchmark": c["benchmark"], "model": c["model"], "judge": c["judge"],
               "lr": c["params"]["lr"], "k": c["params"]["k"], "rounds": c["params"]["rounds"]}
        for m in c["metrics"]:
            row[f"map_{m}"] = c["metrics"][m]["map"]
            if m in c["tests"]:
                row[f"delta_{m}"] = c["tests"][m]["delta_map"]
                row[f"p_bh_{m}"] = p_bh[(i, m)]
        rows.append(row)
    header = "| benchmark | model | judge | lr | k | " + " | ".join(f"MAP {m}" for m in METHODS_REPORTED) + " | ΔMAP refined | p (BH) |"
    lines = [header, "|" + "---|" * (header.count("|") - 1)]
    for r in rows:
        marks = " | ".join(f"{r.get(f'map_{m}', float('nan')):.4f}" for m in METHODS_REPORTED)
        p = r.get("p_bh_refined", float("nan"))
        lines.append(f"| {r['benchmark']} | {r['model']} | {r['judge']} | {r['lr']:g} | {r['k']} | {marks} | "
                     f"{r.get('delta_refined', float('nan')):+.4f} | {p:.2g}{' *' if p < 0.05 else ''} |")
    return rows, "\n".join(lines)


@flow(name="corpus-embedding", log_prints=False)
def embed_corpus_flow(bench: BenchmarkRef, model: str, execution: ExecutionSpec) -> ArrayRef:
    """The corpus embedding a sweep shares between its cells, as a flow so it can run on Dask."""
    return embed_corpus(bench, model, execution)


@flow(name="refine-sweep", log_prints=False)
def sweep(config: SweepConfig, tracking: str | None = None, address: str | None = None) -> dict:
    """Run every cell of ``config``; returns experiment id, parent run id and per-cell results.

    ``address`` is a Dask scheduler: the corpus embedding and every cell run as subflows with
    the Dask task runner there (a deployment can pass it as a parameter; :func:`run_sweep`
    starts or connects to one from the config). None runs everything in this process.
    """
    tracker = Tracker(tracking or tracking_uri())
    experiment_id = tracker.experiment(config.name)
    tracker.close_stale_runs(experiment_id)
    parent = tracker.start(experiment_id, f"sweep {time.strftime('%Y-%m-%d %H:%M:%S')}",
                           tags={"refine.kind": "sweep"})
    started = time.perf_counter()
    results: list[dict] = []
    failures: list[str] = []
    timings: dict[str, float] = {}
    with tracker.ends_run_on_error(parent):
        tracker.log_params(parent, {"config.name": config.name, "cells": len(config.cells()), "code_version": code_version(),
                                    "runner": config.runner, "execution.chunk_size": config.execution.chunk_size,
                                    "execution.query_block": config.execution.query_block,
                                    "prefect.flow_run_id": str(runtime.flow_run.id or "")})
        tracker.log_text(parent, "config.yaml", _yaml(config))
        benches = {}
        shared = {}
        t = time.perf_counter()
        for spec in {c.benchmark for c in config.cells()}:
            benches[spec] = load_benchmark_task(spec)
        timings["load"] = time.perf_counter() - t
        for spec, model in {(c.benchmark, c.model) for c in config.cells()}:
            t = time.perf_counter()
            docs = with_runner(embed_corpus_flow, address)(benches[spec], model, config.execution)
            timings["embed_corpus"] = timings.get("embed_corpus", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            shared[(spec, model)] = (docs, embed_queries_task(benches[spec], model, config.query_templates.get(model)))
            timings["embed_queries"] = timings.get("embed_queries", 0.0) + time.perf_counter() - t
        for cell in config.cells():
            docs, queries = shared[(cell.benchmark, cell.model)]
            try:
                results.append(run_cell(cell, experiment_id, address=address, parent_run_id=parent,
                                        tracking_uri=tracker.uri, budget=config.budget, bench=benches[cell.benchmark],
                                        docs=docs, queries=queries, execution=config.execution))
            except Exception as exc:  # noqa: BLE001 - one failing cell must not lose the others
                failures.append(f"{cell.benchmark.name}/{cell.judge.label}/lr={cell.lr:g}: {type(exc).__name__}: {exc}")
        rows, markdown = summary_table(results)
        tracker.log_json(parent, "summary.json", rows)
        tracker.log_text(parent, "summary.md", markdown)
        if rows:
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "summary.csv"
                pl.DataFrame(rows).write_csv(path)
                tracker.log_artifact(parent, path)
        refined = [r["metrics"]["refined"]["map"] - r["metrics"]["baseline"]["map"] for r in results]
        tracker.log_metrics(parent, {"cells_completed": len(results), "cells_failed": len(failures),
                                     "mean_delta_map_refined": float(np.mean(refined)) if refined else float("nan"),
                                     "time.sweep_s": time.perf_counter() - started})
        if failures:
            tracker.log_text(parent, "failures.txt", "\n".join(failures))
        tracker.finish(parent, "FAILED" if failures and not results else "FINISHED")
    return {"experiment_id": experiment_id, "parent_run_id": parent, "cells": results, "failures": failures,
            "summary_markdown": markdown, "shared_timings": timings}


def run_sweep(config: SweepConfig, tracking: str | None = None) -> dict:
    """Run ``sweep`` with the runner the config names (``local``, ``dask`` or ``dask://host:port``)."""
    with dask_cluster(config.runner, config.execution.workers) as address:
        return sweep(config, tracking, address)


def _yaml(config: SweepConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
