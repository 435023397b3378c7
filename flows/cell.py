"""The ``evaluate-cell`` flow: one (benchmark, model, judge, hyperparameters) combination.

Composes the cached tasks — load, embed corpus, embed queries, then per round select
feedback → judge → refine — and scores baseline, rerank-only, Rocchio and refined (and
multi-round) rankings. Logs one MLflow child run with params, metrics, the benchmark as a
dataset input, a per-query parquet file and plots.
"""

# No ``from __future__ import annotations``: Prefect validates flow parameters from the
# annotations, and a flow loaded from a pickle (served deployments, workers) cannot resolve
# string annotations.
import hashlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow, get_run_logger, runtime

from evaluations.config import BudgetSpec, CellSpec, ExecutionSpec
from flows import plots
from flows.execution import fan_out, fan_out_states, with_runner
from flows.tracking import Tracker, prefect_run_url
from refine_core.evaluation import shard_bounds
from refine_core.refinement import RefineConfig
from refine_core.rounds import run_rounds
from refine_core.statistics import win_tie_loss
from tasks.core import (
    ArrayRef,
    BenchmarkRef,
    JudgmentsRef,
    corpus_chunks,
    corpus_digest,
    embed_corpus_chunk_task,
    embed_hyde_task,
    embed_queries_task,
    evaluate_shard_task,
    evaluate_task,
    generate_hyde_task,
    hyde_cache_key,
    join_corpus_chunks_task,
    join_refined_blocks_task,
    judge_cache_key,
    judge_task,
    load_benchmark_task,
    query_blocks,
    recommended_task,
    refine_block_task,
    refine_extras,
    refined_digest,
    rocchio_start_task,
    select_feedback_task,
    select_shard_task,
    shard_inputs_task,
)
from tasks.judging import answers_fingerprint
from tasks.storage import atomic_write, code_version, digest, load_arrays, state_dir

# What a cached judge result reports as paid in this run: nothing.
PAID_METRICS = (
    "judge_requests",
    "judge_input_tokens",
    "judge_output_tokens",
    "judge_cache_read_tokens",
    "judge_cost_usd",
    "judgments_paid",
    "judgments_from_ledger",
    "judgments_failed",
    "judgments_not_submitted",
)


def invalidate_task_cache(key: str) -> bool:
    """Drop a persisted task result so the next run recomputes it.

    Works with Prefect's default result storage: the local path, or a ``RemoteFileSystem``
    block (any fsspec URL, e.g. the team's S3 bucket) configured as the default storage block.
    """
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem
    from prefect.results import get_default_result_storage

    storage = get_default_result_storage()
    if isinstance(storage, RemoteFileSystem):
        remote = storage._resolve_path(key)
        if storage.filesystem.exists(remote):
            storage.filesystem.rm(remote)
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
    parts = fan_out(
        embed_corpus_chunk_task, [{"bench": bench, "model": model, "start": a, "stop": b} for a, b in chunks]
    )
    return join_corpus_chunks_task(corpus_digest(bench, model, chunks), parts)


def refine_queries(
    start: ArrayRef,
    docs: ArrayRef,
    feedback: list[ArrayRef],
    judgments: list[JudgmentsRef],
    config: RefineConfig,
    n_queries: int,
    execution: ExecutionSpec,
) -> ArrayRef:
    """Refined vectors of every query, computed in cached query blocks (in parallel on Dask)."""
    blocks = query_blocks(n_queries, execution.query_block)
    parts = fan_out(
        refine_block_task,
        [
            {"start": start, "docs": docs, "feedback": feedback, "judgments": judgments, "config": config, "rows": rows}
            for rows in blocks
        ],
    )
    return join_refined_blocks_task(refined_digest(start, docs, feedback, judgments, config), parts)


def corpus_shards(bench: BenchmarkRef, execution: ExecutionSpec) -> list[tuple[int, int]] | None:
    """The corpus shards of this benchmark, or None when the corpus is scored in one task."""
    size, n = execution.corpus_shard, bench.counts["documents"]
    return None if size is None or n <= size else shard_bounds(n, size)


def select_feedback(
    bench: BenchmarkRef, vectors: ArrayRef, docs: ArrayRef, k: int, exclude: list[ArrayRef], execution: ExecutionSpec
) -> ArrayRef:
    """Top-K feedback documents; with corpus shards, each shard's best (on the Dask workers) merged."""
    shards = corpus_shards(bench, execution)
    parts = (
        None
        if shards is None
        else fan_out(
            select_shard_task,
            [
                {"bench": bench, "vectors": vectors, "docs": docs, "k": k, "exclude": exclude, "shard": s}
                for s in shards
            ],
        )
    )
    return select_feedback_task(bench, vectors, docs, k, exclude=exclude, shards=parts)


def evaluate(
    bench: BenchmarkRef,
    queries: ArrayRef,
    docs: ArrayRef,
    feedback: ArrayRef,
    judged: JudgmentsRef,
    refined: list[ArrayRef],
    cell: CellSpec,
    extra: dict[str, ArrayRef] | None,
    execution: ExecutionSpec,
):
    """The evaluate task's final state; with corpus shards, the shards' counts (on the Dask workers) merged."""
    shards = corpus_shards(bench, execution)
    inputs = parts = None
    if shards is not None:
        inputs = shard_inputs_task(bench, queries, docs, feedback, judged, refined, extra)
        parts = fan_out(
            evaluate_shard_task, [{"bench": bench, "inputs": inputs, "docs": docs, "shard": s} for s in shards]
        )
    return evaluate_task(
        bench, queries, docs, feedback, judged, refined, cell, extra, inputs=inputs, shards=parts, return_state=True
    )


def judge_feedback(
    bench: BenchmarkRef, feedback: ArrayRef, cell: CellSpec, budget: BudgetSpec | None, account: str | None = None
) -> tuple[JudgmentsRef, bool]:
    """The judge task (on a Dask worker when the runner is Dask) and whether its result came
    from the task cache. When some judgments failed, the paid ones stay in the ledger but this
    result is not cached, so a re-run retries exactly the failures."""
    state = fan_out_states(
        judge_task, [{"bench": bench, "feedback": feedback, "judge": cell.judge, "budget": budget, "account": account}]
    )[0]
    judged: JudgmentsRef = state.result()
    if judged.failed_queries:
        invalidate_task_cache(judge_cache_key(None, {"judge": cell.judge, "bench": bench, "feedback": feedback}))
    return judged, state.name == "Cached"


def cell_label(cell: CellSpec) -> str:
    """Every coordinate of the cell, for logs and files (MLflow run names lead with what varies)."""
    rocchio = "" if cell.smart_rocchio else f" · Rocchio β {cell.rocchio_beta:g} γ {cell.rocchio_gamma:g}"
    return (
        f"{short_benchmark(cell.benchmark.name)} · {cell.model} · {cell.judge.label} · lr {cell.lr:g} · k {cell.k}"
        f" · r {cell.rounds}{rocchio}"
    )


def short_benchmark(name: str) -> str:
    """``files:/long/path/mydata`` -> ``files:mydata``; registry names unchanged."""
    kind, sep, folder = name.partition(":")
    return f"{kind}:{Path(folder).name}" if sep else name


def _cell_flow_run_name() -> str:
    cell = runtime.flow_run.parameters.get("cell")
    if isinstance(cell, dict):
        cell = CellSpec.model_validate(cell)
    if not isinstance(cell, CellSpec):
        return "evaluate-cell"
    return f"{short_benchmark(cell.benchmark.name)} · {cell.judge.label} · lr {cell.lr:g} · r {cell.rounds}"


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("refine")


def cell_params(cell: CellSpec, bench: BenchmarkRef) -> dict[str, object]:
    params: dict[str, object] = {**cell.hyperparameters(), "model": cell.model, "code_version": code_version()}
    params.update({f"judge.{k}": v for k, v in cell.judge.model_dump().items() if v is not None})
    if cell.query_template is not None:
        params["query_template"] = cell.query_template
    if cell.hyde is not None:
        params.update({f"hyde.{k}": v for k, v in cell.hyde.model_dump().items() if v is not None})
    if cell.methods:
        params["methods"] = ",".join(cell.methods)
    if "recommended" in cell.methods:
        from refine_core.recommended import RECOMMENDED

        params.update({f"recommended.{k}": v for k, v in RECOMMENDED.params().items()})
    params.update(
        {
            "benchmark.name": bench.name,
            "benchmark.hash": bench.hash,
            "benchmark.version": bench.counts["version"],
            "benchmark.queries": bench.counts["queries"],
            "benchmark.documents": bench.counts["documents"],
            "benchmark.subset": bench.counts["subset"] or "full",
        }
    )
    return params


def cell_tags(cell: CellSpec, prefect_url: str | None) -> dict[str, str]:
    """The tags a cell's MLflow run starts with."""
    return {
        "refine.kind": "cell",
        "refine.judge": cell.judge.label,
        "refine.cell": cell_label(cell),
        "mlflow.note.content": f"Cell {cell_label(cell)} (benchmark · model · judge · lr · k · rounds). "
        "`*.p_raw`: one-sided paired t-test vs baseline; "
        "`*.p_bh`: Benjamini–Hochberg corrected over the sweep.",
        **({"refine.prefect_flow_run_url": prefect_url} if prefect_url else {}),
    }


class Clock(dict[str, float]):
    """Seconds per stage of a cell (``time.<stage>_s`` metrics); a stage met twice adds up."""

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self[name] = self.get(name, 0.0) + time.perf_counter() - start


@dataclass
class JudgedRounds:
    """The cell's rounds as cached task results: what each round chose, the judge's answer (and
    whether it came from the task cache) and the refined vectors after it; HyDE-refined's
    judgments are appended to ``verdicts`` when the cell has HyDE."""

    chosen: list[ArrayRef]
    verdicts: list[JudgmentsRef]
    cached: list[bool]
    states: list[ArrayRef]


def _judged_rounds(
    cell: CellSpec,
    bench: BenchmarkRef,
    queries: ArrayRef,
    docs: ArrayRef,
    budget: BudgetSpec | None,
    account: str | None,
    execution: ExecutionSpec,
    clock: Clock,
) -> JudgedRounds:
    """The library's round loop (:func:`refine_core.rounds.run_rounds`) with the cached tasks as
    its steps: select the top ``k`` not judged yet, judge them, refine from the last round's
    vectors on every judgment so far."""
    config = cell.refine_config()
    cached: list[bool] = []

    def select(current: ArrayRef, earlier: Sequence[ArrayRef]) -> ArrayRef:
        with clock.stage("select"):
            return select_feedback(bench, current, docs, cell.k, list(earlier), execution)

    def judge(chosen: ArrayRef) -> JudgmentsRef:
        with clock.stage("judge"):
            judged, from_cache = judge_feedback(bench, chosen, cell, budget, account)
        cached.append(from_cache)
        return judged

    def update(current: ArrayRef, chosen: Sequence[ArrayRef], verdicts: Sequence[JudgmentsRef]) -> ArrayRef:
        with clock.stage("refine"):
            return refine_queries(
                current, docs, list(chosen), list(verdicts), config, bench.counts["queries"], execution
            )

    went = run_rounds(queries, cell.rounds, select=select, judge=judge, update=update)
    return JudgedRounds(went.chosen, went.verdicts, cached, went.states)


def _extra_methods(
    cell: CellSpec,
    bench: BenchmarkRef,
    queries: ArrayRef,
    docs: ArrayRef,
    went: JudgedRounds,
    budget: BudgetSpec | None,
    account: str | None,
    execution: ExecutionSpec,
    clock: Clock,
) -> tuple[dict[str, ArrayRef], dict[str, float]]:
    """The vectors of the cell's methods beyond the rounds (HyDE and HyDE-refined, ``recommended``,
    Rocchio with the cell's weights, ``rocchio_kl``) and HyDE's usage metrics."""
    extra: dict[str, ArrayRef] = {}
    hyde_metrics: dict[str, float] = {}
    config = cell.refine_config()
    n = bench.counts["queries"]
    first = (went.chosen[0], went.verdicts[0])
    if cell.hyde is not None:
        with clock.stage("hyde_generate"):
            passages = generate_hyde_task(bench, cell.hyde, budget, account)
            if passages.failed:
                # Stored passages stay stored; a re-run asks only for the failed ones.
                invalidate_task_cache(hyde_cache_key(None, {"spec": cell.hyde, "bench": bench}))
            hyde_metrics = dict(passages.metrics)
            extra["hyde"] = embed_hyde_task(bench, cell.model, passages, cell.query_template)
        with clock.stage("hyde_refine"):
            # HyDE-refined: feedback from the HyDE ranking, judged against the original query.
            fb = select_feedback(bench, extra["hyde"], docs, cell.k, [], execution)
            judged, cached = judge_feedback(bench, fb, cell, budget, account)
            went.verdicts.append(judged)
            went.cached.append(cached)
            extra["hyde_refined"] = refine_queries(extra["hyde"], docs, [fb], [judged], config, n, execution)
    if "recommended" in cell.methods:
        # what `refine search` runs by default, on the first round's judgments, with its own settings
        with clock.stage("recommended"):
            extra["recommended"] = recommended_task(queries, docs, *first)
    start = None
    if not cell.smart_rocchio:
        # Rocchio with the cell's weights (grid rocchio_beta / rocchio_gamma) replaces the SMART one
        with clock.stage("rocchio"):
            start = rocchio_start_task(queries, docs, *first, cell.rocchio_beta, cell.rocchio_gamma)
            extra["rocchio"] = start
    if "rocchio_kl" in cell.methods:
        # Rocchio -> KL: the refinement started from the Rocchio vector, on the first round's judgments
        with clock.stage("rocchio_kl"):
            start = start or rocchio_start_task(queries, docs, *first)
            extra["rocchio_kl"] = refine_queries(start, docs, [first[0]], [first[1]], config, n, execution)
    return extra, hyde_metrics


@dataclass
class ComputedCell:
    """A cell's inputs and results as cached task results, before anything is logged."""

    bench: BenchmarkRef
    docs: ArrayRef
    queries: ArrayRef
    rounds: JudgedRounds
    hyde_metrics: dict[str, float]
    state: Any  # the evaluate task's final state (its name says whether it came from the cache)
    evaluation: Any


def _compute_cell(
    cell: CellSpec,
    bench: BenchmarkRef | None,
    docs: ArrayRef | None,
    queries: ArrayRef | None,
    budget: BudgetSpec | None,
    account: str | None,
    execution: ExecutionSpec,
    clock: Clock,
) -> ComputedCell:
    """Load and embed what the sweep did not pass, run the rounds and the other methods, evaluate."""
    if bench is None:
        with clock.stage("load"):
            bench = load_benchmark_task(cell.benchmark)
    min_pool = bench.counts["documents"] if bench.counts["pool"] == "corpus" else None
    if min_pool is not None and cell.k * cell.rounds > min_pool:
        raise ValueError(f"k={cell.k} x rounds={cell.rounds} exceeds the pool of {min_pool} documents")
    # A sweep embeds once for all its cells and logs those timings on its parent run.
    if docs is None:
        with clock.stage("embed_corpus"):
            docs = embed_corpus(bench, cell.model, execution)
    if queries is None:
        with clock.stage("embed_queries"):
            queries = embed_queries_task(bench, cell.model, cell.query_template)
    went = _judged_rounds(cell, bench, queries, docs, budget, account, execution, clock)
    extra, hyde_metrics = _extra_methods(cell, bench, queries, docs, went, budget, account, execution, clock)
    with clock.stage("evaluate"):
        first = (went.chosen[0], went.verdicts[0])
        state = evaluate(bench, queries, docs, *first, went.states, cell, extra or None, execution)
        evaluation = state.result()
    return ComputedCell(bench, docs, queries, went, hyde_metrics, state, evaluation)


@flow(name="evaluate-cell", flow_run_name=_cell_flow_run_name, log_prints=False)
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
    run_name: str | None = None,
    account: str | None = None,
) -> dict:
    """Run one cell end to end and log it; returns its params and metrics.

    ``run_name`` names the MLflow run (a sweep passes one that leads with what differs
    between its cells). ``account`` is the sweep's spend account; a cell run on its own with a
    ``budget`` opens its own (``cell-<flow run id>``). Use :func:`run_cell` to choose the runner; called directly this runs
    with Prefect's default (thread) runner.
    """
    execution = execution or ExecutionSpec()
    log = run_logger()
    tracker = Tracker(tracking_uri)
    prefect_url = prefect_run_url()
    run_id = tracker.start(
        experiment_id, run_name or cell_label(cell), parent=parent_run_id, tags=cell_tags(cell, prefect_url)
    )
    log.info("cell %s: MLflow run %s", cell_label(cell), run_id)
    if account is None and budget is not None and (budget.max_judgments or budget.max_cost_usd):
        account = f"cell-{runtime.flow_run.id or run_id}"
    clock = Clock()
    with tracker.ends_run_on_error(run_id):
        done = _compute_cell(cell, bench, docs, queries, budget, account, execution, clock)
        logged = _log_cell(tracker, experiment_id, run_id, cell, done, clock)
        tracker.finish(run_id, "FINISHED")
    link_mlflow_run(tracker, experiment_id, run_id, cell_label(cell))
    if logged.errors:
        log.warning(
            "cell %s: %d judgments failed (%s); a re-run asks only for those",
            cell_label(cell),
            sum(logged.errors.values()),
            ", ".join(f"{k} x{v}" for k, v in sorted(logged.errors.items(), key=lambda kv: -kv[1])),
        )
    metrics = done.evaluation.metrics
    log.info(
        "cell %s: MAP baseline %.4f, refined %.4f",
        cell_label(cell),
        metrics["baseline"]["map"],
        metrics["refined"]["map"],
    )
    result = _cell_result(cell, done, logged, clock)
    hyde = done.hyde_metrics
    if not logged.errors and not hyde.get("hyde_generations_failed") and not hyde.get("hyde_generations_not_submitted"):
        _store_outcome(tracker, done, logged, result)  # an identical cell of a later sweep is logged from it
    return result


@dataclass
class LoggedCell:
    """What :func:`_log_cell` wrote to the cell's MLflow run."""

    run_id: str
    content_key: str
    original: str | None  # the earlier run with the same content (a cached re-run), if any
    params: dict[str, object]
    flat: dict[str, float]
    outcomes: dict[str, tuple[int, int, int]]
    judge_metrics: dict[str, float]
    judged_counts: list[int]
    series: dict[str, list[float]]
    outcome: str
    artifacts: list[tuple[str, str | None]]
    tags: dict[str, str]
    failed_queries: int
    errors: dict[str, int]


def _log_cell(
    tracker: Tracker, experiment_id: str, run_id: str, cell: CellSpec, done: ComputedCell, clock: Clock
) -> LoggedCell:
    """Params, metrics, the benchmark, the loss curve, the files and the tags of the cell's run."""
    import polars as pl

    bench, evaluation, judgments = done.bench, done.evaluation, done.rounds.verdicts
    # The same inputs, code and settings give the same numbers: the key links re-runs.
    content_key = digest("cell", cell.model_dump(mode="json"), code_version(), evaluation.per_query_path)
    cached = done.state.name == "Cached"
    original = tracker.find_cell(experiment_id, content_key, exclude=run_id) if cached else None
    mlflow_start = time.perf_counter()
    params = cell_params(cell, bench)
    params["prefect.flow_run_id"] = str(runtime.flow_run.id or "")
    tracker.log_params(run_id, params)
    per_query = pl.read_parquet(evaluation.per_query_path)
    flat, outcomes = _method_metrics(evaluation, per_query)
    judged_counts = [int(np.asarray(load_arrays(j.path)["mask"]).sum()) for j in judgments]
    judge_metrics = _judge_usage(judgments, judged_counts, done.rounds.cached)
    flat.update(judge_metrics)
    flat.update(done.hyde_metrics)
    flat["queries_without_positives"] = evaluation.n_without_positives
    flat.update({f"time.{stage}_s": seconds for stage, seconds in clock.items()})
    tracker.log_metrics(run_id, flat)
    tracker.log_benchmark(run_id, bench.counts, bench.source or bench.folder)
    extras = refine_extras(done.rounds.states[0])
    finite = extras["losses"][np.isfinite(extras["losses"]).all(axis=1)]
    series = {"refine.mean_loss": finite.mean(axis=0).tolist()} if finite.size else {}
    tracker.log_batch(run_id, series=series)
    # The files a re-run logs again without computing anything (see replay_cell).
    outcome = outcome_key(cell, bench, done.docs, done.queries)
    artifacts = _cell_files(cell, bench, evaluation, per_query, judgments[0].judge_key, outcome_folder(outcome))
    for path, where in artifacts:
        tracker.log_artifact(run_id, path, where)
    clock["mlflow"] = time.perf_counter() - mlflow_start
    tracker.log_metrics(run_id, {"time.mlflow_s": clock["mlflow"]})
    failed_queries, errors = _judge_failures(judgments)
    tags = {
        "refine.failed_queries": str(failed_queries),
        "refine.content_key": content_key,
        "refine.cached": str(cached).lower(),
    }
    if original is not None:
        tags["refine.original_run_id"] = original
    tracker.set_tags(run_id, tags)
    return LoggedCell(
        run_id,
        content_key,
        original,
        params,
        flat,
        outcomes,
        judge_metrics,
        judged_counts,
        series,
        outcome,
        artifacts,
        tags,
        failed_queries,
        errors,
    )


def _cell_result(cell: CellSpec, done: ComputedCell, logged: LoggedCell, clock: Clock) -> dict:
    """What :func:`evaluate_cell` returns (and a sweep reports)."""
    evaluation = done.evaluation
    return {
        "run_id": logged.run_id,
        "benchmark": done.bench.name,
        "model": cell.model,
        "judge": cell.judge.label,
        "params": {k: v for k, v in logged.params.items() if not k.startswith("prefect.")},
        "metrics": {m: evaluation.metrics[m] for m in evaluation.metrics},
        "tests": evaluation.tests,
        "judge_usage": logged.judge_metrics,
        "hyde_usage": done.hyde_metrics,
        "failed_queries": logged.failed_queries,
        "fallback_queries": sum(j.fallback_queries for j in done.rounds.verdicts),
        "judgments_failed": sum(logged.errors.values()),
        "judge_errors": logged.errors,
        "win_tie_loss": logged.outcomes,
        "cached": done.state.name == "Cached",
        "original_run_id": logged.original,
        "timings": dict(clock),
    }


def _store_outcome(tracker: Tracker, done: ComputedCell, logged: LoggedCell, result: dict) -> None:
    """Keep the cell's outcome, so an identical cell of a later sweep is logged without running."""
    judgments = done.rounds.verdicts
    usage = _judge_usage(judgments, logged.judged_counts, [True] * len(judgments))
    bench = done.bench
    record = _outcome_record(
        tracker,
        logged.original or logged.run_id,
        logged.content_key,
        logged.params,
        logged.flat,
        usage,
        done.hyde_metrics,
    )
    save_outcome(
        logged.outcome,
        record
        | {
            "series": logged.series,
            "tags": {k: v for k, v in logged.tags.items() if k != "refine.original_run_id"},
            "benchmark": {"counts": bench.counts, "source": bench.source or bench.folder},
            "artifacts": logged.artifacts,
            "result": {k: v for k, v in result.items() if k not in ("run_id", "timings", "original_run_id", "cached")}
            | {"judge_usage": usage},
        },
    )


def _method_metrics(evaluation, per_query) -> tuple[dict[str, float], dict[str, tuple[int, int, int]]]:
    """Each method's mean measures, its test against the baseline and its win / tie / loss counts,
    as flat MLflow metrics (``<method>.<name>``), and the counts by method."""
    flat: dict[str, float] = {}
    for method, means in evaluation.metrics.items():
        for name, value in means.items():
            flat[f"{method}.{name}"] = value
    outcomes: dict[str, tuple[int, int, int]] = {}
    for method, test in evaluation.tests.items():
        flat[f"{method}.delta_map"] = test["delta_map"]
        flat[f"{method}.relative_gain"] = test["relative_gain"]
        flat[f"{method}.p_raw"] = test["pvalue"]
        if f"ap_{method}" in per_query.columns:
            outcomes[method] = win_tie_loss(per_query["ap_baseline"].to_numpy(), per_query[f"ap_{method}"].to_numpy())
            for label, count in zip(("queries_improved", "queries_unchanged", "queries_hurt"), outcomes[method]):
                flat[f"{method}.{label}"] = count
    return flat, outcomes


def _cell_files(
    cell: CellSpec, bench: BenchmarkRef, evaluation, per_query, judge_key: str, folder: Path
) -> list[tuple[str, str | None]]:
    """The cell's files for MLflow, (path, artifact folder): the per-query table as parquet and as
    CSV (which the MLflow UI previews; lists joined with ';'), the plots and cell.json."""
    import polars as pl

    flat_table = per_query.with_columns(
        [
            pl.col(c).cast(pl.List(pl.String)).list.join(";")
            for c, dtype in per_query.schema.items()
            if isinstance(dtype, pl.List)
        ]
    )
    csv_path = folder / (Path(evaluation.per_query_path).stem + ".csv")
    atomic_write(csv_path, flat_table.write_csv().encode())
    cell_json = folder / "cell.json"
    record = {
        "cell": cell.model_dump(mode="json"),
        "benchmark": bench.counts,
        "tests": evaluation.tests,
        "judge_key": judge_key,
    }
    atomic_write(cell_json, json.dumps(record, indent=2, default=_plain).encode())
    return [
        (str(evaluation.per_query_path), "per_query"),
        (str(csv_path), "per_query"),
        *((str(png), "plots") for png in _plots(cell, per_query, evaluation.arrays_path)),
        (str(cell_json), None),
    ]


def _judge_failures(judgments: list[JudgmentsRef]) -> tuple[int, dict[str, int]]:
    """Queries with a failed judgment (distinct: the rounds of a cell judge the same queries again)
    and the failed judgments by reason."""
    failed_queries = len({row for j in judgments for row in j.failed_rows})
    errors: dict[str, int] = {}
    for j in judgments:
        for reason, count in j.errors.items():
            errors[reason] = errors.get(reason, 0) + count
    return failed_queries, errors


def _outcome_record(
    tracker: Tracker,
    original_run_id: str,
    content_key: str,
    params: dict[str, object],
    flat: dict[str, float],
    usage: dict[str, float],
    hyde_metrics: dict[str, float],
) -> dict:
    """What a stored outcome says about the run it came from (see :func:`replay_cell`)."""
    return {
        # the store's digest, not its URI: a URI may carry a password, and records are plain files
        "tracking": digest("tracking", tracker.uri),
        "original_run_id": original_run_id,
        "content_key": content_key,
        "params": {k: v for k, v in params.items() if not k.startswith("prefect.")},
        "metrics": {k: v for k, v in flat.items() if not k.startswith("time.")} | usage | _hyde_as_stored(hyde_metrics),
    }


# ---- cell outcomes: an unchanged cell is logged again without running its flow ----------------
# A cell's numbers are a function of its settings, the benchmark, the document and query vectors
# and the code (the judges' answers come from the ledger, and a cell with failed judgments
# stores no outcome). When a sweep meets a cell whose outcome is stored, it logs a new MLflow run
# from the record — the same params, metrics and files, tagged ``refine.cached = true`` and
# linked to the run that computed them — instead of starting the cell's sub-flow and its cached
# tasks (about 1.5 s of Prefect and MLflow calls per cell on this machine).
OUTCOME_VERSION = 1
_THIS_MODULE = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:12]  # the code that is running


def outcome_key(cell: CellSpec, bench: BenchmarkRef, docs: ArrayRef, queries: ArrayRef) -> str:
    """What a cell's outcome depends on: its settings, the inputs' digests, the cached code and
    this module (which decides what a cell logs)."""
    models = [
        answers_fingerprint(cell.judge.kind, cell.judge.model),
        answers_fingerprint(cell.hyde.kind, cell.hyde.model) if cell.hyde is not None else None,
    ]
    return digest(
        "cell-outcome",
        OUTCOME_VERSION,
        cell.model_dump(mode="json"),
        models,
        bench.hash,
        docs.digest,
        queries.digest,
        code_version(),
        _THIS_MODULE,
    )


def outcome_folder(key: str) -> Path:
    return state_dir() / "cells" / key


def save_outcome(key: str, record: dict) -> None:
    atomic_write(outcome_folder(key) / "record.json", json.dumps(record, default=_plain).encode())


def _plain(value: object) -> object:
    """numpy scalars as numbers, anything else as its text (the record is JSON)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def load_outcome(key: str) -> dict | None:
    """The stored outcome of ``key`` when it and every file it logs are present, else None."""
    try:
        record = json.loads((outcome_folder(key) / "record.json").read_text())
    except (OSError, ValueError):
        return None
    if not all(Path(path).is_file() for path, _ in record.get("artifacts", [])):
        return None
    return record


def _judge_usage(judgments: list[JudgmentsRef], judged: list[int], cached: list[bool]) -> dict[str, float]:
    """The judge metrics of a cell, summed over its judge results; one served from the task cache
    (or from a stored outcome) reports nothing paid and its ``judged`` verdicts as cached."""
    usage: dict[str, float] = {"judgments_cached": 0.0}
    for j, count, from_cache in zip(judgments, judged, cached):
        metrics = dict(j.metrics)
        if from_cache:  # this run paid and asked nothing
            metrics |= {name: 0.0 for name in PAID_METRICS} | {"judgments_cached": float(count)}
        for name, value in metrics.items():
            usage[name] = usage.get(name, 0.0) + value
    return usage


def _hyde_as_stored(hyde_metrics: dict[str, float]) -> dict[str, float]:
    """HyDE metrics of a run that generated nothing: every passage read from the store."""
    if not hyde_metrics:
        return {}
    stored = hyde_metrics.get("hyde_generations_paid", 0.0) + hyde_metrics.get("hyde_generations_from_store", 0.0)
    return {name: 0.0 for name in hyde_metrics} | {"hyde_generations_from_store": stored}


def replay_cell(
    record: dict,
    cell: CellSpec,
    tracker: Tracker,
    experiment_id: str,
    *,
    parent_run_id: str | None,
    run_name: str,
    prefect_url: str | None = None,
) -> dict:
    """Log a stored cell outcome as a new run of ``experiment_id`` (five MLflow calls and the
    files); returns the cell's result as :func:`evaluate_cell` would."""
    start = time.perf_counter()
    original = record["original_run_id"] if record.get("tracking") == digest("tracking", tracker.uri) else None
    tags = cell_tags(cell, prefect_url) | record["tags"] | {"refine.cached": "true"}
    if original:
        tags["refine.original_run_id"] = original
    run_id = tracker.start(experiment_id, run_name, parent=parent_run_id, tags=tags)
    with tracker.ends_run_on_error(run_id):
        tracker.log_benchmark(run_id, record["benchmark"]["counts"], record["benchmark"]["source"])
        for path, where in record["artifacts"]:
            tracker.log_artifact(run_id, path, where)
        seconds = time.perf_counter() - start
        tracker.log_batch(
            run_id,
            params=record["params"] | {"prefect.flow_run_id": str(runtime.flow_run.id or "")},
            metrics=record["metrics"] | {"time.mlflow_s": seconds},
            series=record["series"],
        )
        tracker.finish(run_id, "FINISHED")
    return record["result"] | {
        "run_id": run_id,
        "cached": True,
        "original_run_id": original,
        "timings": {"mlflow": time.perf_counter() - start},
        "win_tie_loss": {m: tuple(v) for m, v in record["result"]["win_tie_loss"].items()},
    }


PLOT_NAMES = ("ap_before_after.png", "score_separation.png", "loss_curves.png")


def _plots(cell: CellSpec, per_query, arrays_path: str) -> list[Path]:
    """The cell's three plots, drawn once per content (a cached re-run logs the stored files
    instead of drawing them again: the separation histogram alone takes about a second)."""
    import shutil

    title = cell_label(cell)
    folder = state_dir() / "plots" / digest("plots", Path(arrays_path).name, title)
    if not all((folder / name).is_file() for name in PLOT_NAMES):
        staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        data = load_arrays(arrays_path)
        plots.ap_scatter(
            per_query["ap_baseline"].to_numpy(),
            per_query["ap_refined"].to_numpy(),
            staging / "ap_before_after.png",
            title=title,
        )
        plots.separation(
            data["base_pos"],
            data["base_neg"],
            data["ref_pos"],
            data["ref_neg"],
            staging / "score_separation.png",
            title=title,
        )
        plots.loss_curves(data["losses"], staging / "loss_curves.png", title=title)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another process stored the same plots first
            shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in PLOT_NAMES]


def link_mlflow_run(tracker: Tracker, experiment_id: str, run_id: str, description: str) -> None:
    """A link artifact on the Prefect flow run pointing at its MLflow run (best effort: an
    artifact is a convenience, never a reason to fail a cell that is already logged)."""
    if runtime.flow_run.id is None:
        return
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(
            tracker.run_url(experiment_id, run_id),
            link_text=f"MLflow run {run_id}",
            description=f"MLflow run of {description}",
            key="mlflow-run",
        )
    except Exception as exc:
        run_logger().warning("could not attach the MLflow link to the flow run: %s", exc)


def run_cell(cell: CellSpec, experiment_id: str, *, address: str | None = None, **kwargs: object) -> dict:
    """:func:`evaluate_cell` on the Dask scheduler at ``address`` (None: the thread runner)."""
    return with_runner(evaluate_cell, address)(cell, experiment_id, **kwargs)
