"""The ``evaluate-cell`` flow: one (benchmark, model, judge, hyperparameters) combination.

Composes the cached tasks — load, embed corpus, embed queries, then per round select
feedback → judge → refine — and scores baseline, rerank-only, Rocchio and refined (and
multi-round) rankings. Logs one MLflow child run with params, metrics, the benchmark as a
dataset input, a per-query parquet file and plots.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
from prefect import flow, runtime

from evaluations.config import BudgetSpec, CellSpec, ExecutionSpec
from flows import plots
from flows.execution import fan_out, with_runner
from flows.tracking import Tracker
from tasks.core import (
    ArrayRef,
    BenchmarkRef,
    JudgmentsRef,
    corpus_chunks,
    corpus_digest,
    embed_corpus_chunk_task,
    embed_hyde_task,
    embed_queries_task,
    evaluate_task,
    generate_hyde_task,
    hyde_cache_key,
    join_corpus_chunks_task,
    join_refined_blocks_task,
    judge_cache_key,
    judge_task,
    load_benchmark_task,
    query_blocks,
    refine_block_task,
    refine_extras,
    refined_digest,
    select_feedback_task,
)
from tasks.storage import code_version, load_arrays

METHODS_REPORTED = ("baseline", "rerank_only", "rocchio", "refined")


def invalidate_task_cache(key: str) -> bool:
    """Drop a persisted task result so the next run recomputes it.

    Works with Prefect's default result storage: the local path, or a ``RemoteFileSystem``
    block (any fsspec URL, e.g. the team's S3 bucket) configured as the default storage block.
    """
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem
    from prefect.results import get_default_result_storage

    storage = get_default_result_storage()
    if isinstance(storage, RemoteFileSystem):
        path = storage._resolve_path(key)
        if storage.filesystem.exists(path):
            storage.filesystem.rm(path)
            return True
        return False
    if isinstance(storage, LocalFileSystem):
        path = Path(storage._resolve_path(key))
    else:  # pragma: no cover - other block types: fall back to the local setting
        from prefect.settings import get_current_settings

        path = Path(get_current_settings().results.local_storage_path) / key
    if path.exists():
        path.unlink()
        return True
    return False


def embed_corpus(bench: BenchmarkRef, model: str, execution: ExecutionSpec) -> ArrayRef:
    """Document vectors, embedded in cached chunks (in parallel on a Dask runner)."""
    chunks = corpus_chunks(bench.counts["documents"], execution.chunk_size)
    parts = fan_out(embed_corpus_chunk_task, [{"bench": bench, "model": model, "start": a, "stop": b} for a, b in chunks])
    return join_corpus_chunks_task(corpus_digest(bench, model, chunks), parts)


def refine_queries(start: ArrayRef, docs: ArrayRef, feedback: list[ArrayRef], judgments: list[JudgmentsRef],
                   config: dict, n_queries: int, execution: ExecutionSpec) -> ArrayRef:
    """Refined vectors of every query, computed in cached query blocks (in parallel on Dask)."""
    blocks = query_blocks(n_queries, execution.query_block)
    parts = fan_out(refine_block_task, [{"start": start, "docs": docs, "feedback": feedback, "judgments": judgments,
                                         "config": config, "rows": rows} for rows in blocks])
    return join_refined_blocks_task(refined_digest(start, docs, feedback, judgments, config), parts)


def judge_feedback(bench: BenchmarkRef, feedback: ArrayRef, cell: CellSpec, budget: BudgetSpec | None) -> JudgmentsRef:
    """The judge task (on a Dask worker when the runner is Dask). When some judgments failed, the
    paid ones stay in the ledger but this result is not cached, so a re-run retries the failures."""
    judged = fan_out(judge_task, [{"bench": bench, "feedback": feedback, "judge": cell.judge, "budget": budget}])[0]
    if judged.failed_queries:
        invalidate_task_cache(judge_cache_key(None, {"judge": cell.judge, "bench": bench, "feedback": feedback}))
    return judged


def cell_label(cell: CellSpec) -> str:
    return f"{cell.benchmark.name} | {cell.model} | {cell.judge.label} | lr={cell.lr:g} k={cell.k} r={cell.rounds}"


def cell_params(cell: CellSpec, bench: BenchmarkRef) -> dict[str, object]:
    params: dict[str, object] = {**cell.hyperparameters(), "model": cell.model, "code_version": code_version()}
    params.update({f"judge.{k}": v for k, v in cell.judge.model_dump().items() if v is not None})
    if cell.query_template is not None:
        params["query_template"] = cell.query_template
    if cell.hyde is not None:
        params.update({f"hyde.{k}": v for k, v in cell.hyde.model_dump().items() if v is not None})
    params.update({"benchmark.name": bench.name, "benchmark.hash": bench.hash, "benchmark.version": bench.counts["version"],
                   "benchmark.queries": bench.counts["queries"], "benchmark.documents": bench.counts["documents"],
                   "benchmark.subset": bench.counts["subset"] or "full"})
    return params


@flow(name="evaluate-cell", flow_run_name="{cell.benchmark.name}-{cell.judge.kind}-lr{cell.lr}", log_prints=False)
def evaluate_cell(
    cell: CellSpec,
    experiment_id: str,
    parent_run_id: str | None = None,
    tracking_uri: str | None = None,
    budget: BudgetSpec | None = None,
    bench: BenchmarkRef | None = None,
    docs: ArrayRef | None = None,
    queries: ArrayRef | None = None,
    execution: ExecutionSpec | None = None,
) -> dict:
    """Run one cell end to end and log it; returns its params and metrics.

    Use :func:`run_cell` to choose the runner; called directly this runs with Prefect's
    default (thread) runner.
    """
    execution = execution or ExecutionSpec()
    tracker = Tracker(tracking_uri)
    run_id = tracker.start(experiment_id, cell_label(cell), parent=parent_run_id,
                           tags={"refine.kind": "cell", "refine.judge": cell.judge.label})
    timings: dict[str, float] = {}
    with tracker.ends_run_on_error(run_id):
        t = time.perf_counter()
        bench = bench or load_benchmark_task(cell.benchmark)
        timings["load"] = time.perf_counter() - t
        min_pool = bench.counts["documents"] if bench.counts["pool"] == "corpus" else None
        if min_pool is not None and cell.k * cell.rounds > min_pool:
            raise ValueError(f"k={cell.k} x rounds={cell.rounds} exceeds the pool of {min_pool} documents")
        t = time.perf_counter()
        docs = docs or embed_corpus(bench, cell.model, execution)
        timings["embed_corpus"] = time.perf_counter() - t
        t = time.perf_counter()
        queries = queries or embed_queries_task(bench, cell.model, cell.query_template)
        timings["embed_queries"] = time.perf_counter() - t
        feedback: list[ArrayRef] = []
        judgments: list[JudgmentsRef] = []
        refined: list[ArrayRef] = []
        current = queries
        config = {"lr": cell.lr, "steps": cell.steps, "optimizer": cell.optimizer,
                  "score_temperature": cell.score_temperature, "similarity_temperature": cell.similarity_temperature,
                  "normalize": cell.normalize}
        for _ in range(cell.rounds):
            t = time.perf_counter()
            fb = select_feedback_task(bench, current, docs, cell.k, exclude=list(feedback))
            timings["select"] = timings.get("select", 0.0) + time.perf_counter() - t
            t = time.perf_counter()
            judged = judge_feedback(bench, fb, cell, budget)
            timings["judge"] = timings.get("judge", 0.0) + time.perf_counter() - t
            feedback.append(fb)
            judgments.append(judged)
            t = time.perf_counter()
            current = refine_queries(current, docs, list(feedback), list(judgments), config,
                                     bench.counts["queries"], execution)
            timings["refine"] = timings.get("refine", 0.0) + time.perf_counter() - t
            refined.append(current)
        extra: dict[str, ArrayRef] = {}
        hyde_metrics: dict[str, float] = {}
        if cell.hyde is not None:
            t = time.perf_counter()
            passages = generate_hyde_task(bench, cell.hyde)
            if passages.failed:
                # Stored passages stay stored; a re-run asks only for the failed ones.
                invalidate_task_cache(hyde_cache_key(None, {"spec": cell.hyde, "bench": bench}))
            hyde_metrics = dict(passages.metrics)
            extra["hyde"] = embed_hyde_task(bench, cell.model, passages, cell.query_template)
            timings["hyde_generate"] = time.perf_counter() - t
            t = time.perf_counter()
            # HyDE-refined: feedback from the HyDE ranking, judged against the original query.
            fb = select_feedback_task(bench, extra["hyde"], docs, cell.k)
            judged = judge_feedback(bench, fb, cell, budget)
            judgments.append(judged)
            extra["hyde_refined"] = refine_queries(extra["hyde"], docs, [fb], [judged], config, bench.counts["queries"],
                                                   execution)
            timings["hyde_refine"] = time.perf_counter() - t
        t = time.perf_counter()
        evaluation = evaluate_task(bench, queries, docs, feedback[0], judgments[0], refined, cell, extra or None)
        timings["evaluate"] = time.perf_counter() - t

        t = time.perf_counter()
        params = cell_params(cell, bench)
        params["prefect.flow_run_id"] = str(runtime.flow_run.id or "")
        tracker.log_params(run_id, params)
        flat: dict[str, float] = {}
        for method, means in evaluation.metrics.items():
            for name, value in means.items():
                flat[f"{method}.{name}"] = value
        for method, test in evaluation.tests.items():
            flat[f"{method}.delta_map"] = test["delta_map"]
            flat[f"{method}.relative_gain"] = test["relative_gain"]
            flat[f"{method}.pvalue"] = test["pvalue"]
        judge_metrics: dict[str, float] = {}
        for j in judgments:
            for name, value in j.metrics.items():
                judge_metrics[name] = judge_metrics.get(name, 0.0) + value
        flat.update(judge_metrics)
        flat.update(hyde_metrics)
        flat["queries_without_positives"] = evaluation.n_without_positives
        flat.update({f"time.{stage}_s": seconds for stage, seconds in timings.items()})
        tracker.log_metrics(run_id, flat)
        tracker.log_benchmark(run_id, bench.counts, bench.folder)
        extras = refine_extras(refined[0])
        finite = extras["losses"][np.isfinite(extras["losses"]).all(axis=1)]
        if finite.size:
            tracker.log_series(run_id, "refine.mean_loss", finite.mean(axis=0).tolist())
        tracker.log_artifact(run_id, evaluation.per_query_path, "per_query")
        plot_data = load_arrays(evaluation.arrays_path)
        import polars as pl

        per_query = pl.read_parquet(evaluation.per_query_path)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            title = cell_label(cell)
            plots.ap_scatter(per_query["ap_baseline"].to_numpy(), per_query["ap_refined"].to_numpy(),
                             folder / "ap_before_after.png", title=title[:60])
            plots.separation(plot_data["base_pos"], plot_data["base_neg"], plot_data["ref_pos"], plot_data["ref_neg"],
                             folder / "score_separation.png", title=title[:80])
            plots.loss_curves(plot_data["losses"], folder / "loss_curves.png", title=title[:60])
            for png in folder.glob("*.png"):
                tracker.log_artifact(run_id, png, "plots")
        tracker.log_json(run_id, "cell.json", {"cell": cell.model_dump(), "benchmark": bench.counts,
                                               "tests": evaluation.tests, "judge_key": judgments[0].judge_key})
        timings["mlflow"] = time.perf_counter() - t
        tracker.log_metrics(run_id, {"time.mlflow_s": timings["mlflow"]})
        failed_queries = sum(j.failed_queries for j in judgments)
        tracker.set_tags(run_id, {"refine.failed_queries": str(failed_queries)})
        tracker.finish(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "benchmark": bench.name,
        "model": cell.model,
        "judge": cell.judge.label,
        "params": {k: v for k, v in params.items() if not k.startswith("prefect.")},
        "metrics": {m: evaluation.metrics[m] for m in evaluation.metrics},
        "tests": evaluation.tests,
        "judge_usage": judge_metrics,
        "failed_queries": failed_queries,
        "timings": timings,
    }


def run_cell(cell: CellSpec, experiment_id: str, *, address: str | None = None, **kwargs: object) -> dict:
    """:func:`evaluate_cell` on the Dask scheduler at ``address`` (None: the thread runner)."""
    return with_runner(evaluate_cell, address)(cell, experiment_id, **kwargs)
