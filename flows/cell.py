"""The ``evaluate-cell`` flow: one (benchmark, model, judge, hyperparameters) combination.

Composes the cached tasks — load, embed corpus, embed queries, then per round select
feedback → judge → refine — and scores baseline, rerank-only, Rocchio and refined (and
multi-round) rankings. Logs one MLflow child run with params, metrics, the benchmark as a
dataset input, a per-query parquet file and plots.
"""

# No ``from __future__ import annotations``: Prefect validates flow parameters from the
# annotations, and a flow loaded from a pickle (served deployments, workers) cannot resolve
# string annotations.
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from prefect import flow, runtime

from evaluations.config import BudgetSpec, CellSpec, ExecutionSpec
from flows.cell_logging import (  # noqa: F401 - names the sweep and the tests import from here
    cell_files,
    cell_flow_run_name,
    cell_label,
    cell_note,
    cell_params,
    cell_tags,
    judge_failures,
    link_mlflow_run,
    method_metrics,
    run_logger,
    short_benchmark,
)
from flows.cell_outcomes import (  # noqa: F401
    PAID_METRICS,
    judge_usage,
    load_outcome,
    outcome_folder,
    outcome_key,
    outcome_record,
    replay_cell,
    save_outcome,
)
from flows.cell_stages import (  # noqa: F401 - the stages' old home
    corpus_shards,
    embed_corpus,
    evaluate,
    invalidate_task_cache,
    judge_feedback,
    refine_queries,
    select_feedback,
)
from flows.execution import with_runner
from flows.tracking import Tracker, prefect_run_url
from flows.watchdog import untagged_tasks
from refine_core.rounds import run_rounds
from tasks.core import (
    ArrayRef,
    BenchmarkRef,
    JudgmentsRef,
    embed_hyde_task,
    embed_queries_task,
    generate_hyde_task,
    hyde_cache_key,
    load_benchmark_task,
    recommended_task,
    refine_extras,
    rocchio_start_task,
)
from tasks.storage import code_version, digest, load_arrays


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


@flow(name="evaluate-cell", flow_run_name=cell_flow_run_name, log_prints=False)
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
        with untagged_tasks():
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
    flat, outcomes = method_metrics(evaluation, per_query)
    judged_counts = [int(np.asarray(load_arrays(j.path)["mask"]).sum()) for j in judgments]
    judge_metrics = judge_usage(judgments, judged_counts, done.rounds.cached)
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
    artifacts = cell_files(cell, bench, evaluation, per_query, judgments[0].judge_key, outcome_folder(outcome))
    for path, where in artifacts:
        tracker.log_artifact(run_id, path, where)
    clock["mlflow"] = time.perf_counter() - mlflow_start
    tracker.log_metrics(run_id, {"time.mlflow_s": clock["mlflow"]})
    failed_queries, errors = judge_failures(judgments)
    tags = {
        "refine.failed_queries": str(failed_queries),
        "refine.content_key": content_key,
        "refine.cached": str(cached).lower(),
        "mlflow.note.content": cell_note(cell, flat),
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
        "label": cell_label(cell),
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
    usage = judge_usage(judgments, logged.judged_counts, [True] * len(judgments))
    bench = done.bench
    record = outcome_record(
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


def run_cell(cell: CellSpec, experiment_id: str, *, address: str | None = None, **kwargs: object) -> dict:
    """:func:`evaluate_cell` on the Dask scheduler at ``address`` (None: the thread runner)."""
    return with_runner(evaluate_cell, address)(cell, experiment_id, **kwargs)
