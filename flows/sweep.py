"""The ``refine-sweep`` flow: every cell of a sweep config, shared work computed once.

One MLflow experiment per config name, a parent run per sweep (named ``<config> <time>``) and a
child run per cell (named by what differs between the cells). Each benchmark is loaded once and
each (benchmark, model) corpus and query set embedded once, and those timings go on the parent;
judgments are shared through the ledger. When the cells are done the sweep applies its one
Benjamini–Hochberg family (see :mod:`flows.report`) and stores ``<method>.p_bh`` on every child.

A sweep in which judgments failed still logs every cell, then ends its Prefect flow run
FAILED (:class:`JudgmentsFailed`), so the Prefect UI shows it and Prefect's Retry re-runs it:
everything but the failed judgments comes from the task cache and the ledger.
"""

# No ``from __future__ import annotations``: a served or worker-run flow is loaded from a
# pickle, and Prefect must resolve its parameter annotations (SweepConfig) at run time.
import os
import tempfile
import time
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
from prefect import flow, runtime
from prefect.states import Failed, State

from evaluations.config import CellSpec, ExecutionSpec, SweepConfig
from flows.cell import (
    Clock,
    embed_corpus,
    link_mlflow_run,
    load_outcome,
    outcome_key,
    replay_cell,
    run_cell,
    run_logger,
)
from flows.cell_logging import mlflow_run_name, varying
from flows.environment import ANNOUNCE
from flows.execution import dask_cluster, with_runner
from flows.failures import budget_line, failure_lines, hint, judgment_counts  # noqa: F401 - hint: its old home
from flows.plots import sweep_map
from flows.report import BH_FAMILY, adjust_sweep_pvalues, cell_rows, summary_markdown, summary_markdown_by_cell
from flows.tracking import Tracker, prefect_run_url, tracking_uri
from flows.watchdog import untagged_tasks
from judging.spend import SpendAccount
from tasks.core import (
    ArrayRef,
    BenchmarkRef,
    corpus_chunks,
    corpus_digest,
    embed_queries_task,
    load_benchmark_task,
    provided_corpus,
)
from tasks.storage import arrays_dir, code_version, digest, ledger_url, state_dir


class JudgmentsFailed(RuntimeError):
    """Some judgments of the sweep failed; ``result`` holds the sweep's full result (every cell
    is logged). The message names each affected cell and the error."""

    def __init__(self, message: str, result: dict | None = None) -> None:
        super().__init__(message)
        self.result = result


def summary_table(cells: list[dict]) -> tuple[list[dict], str]:
    """Rows (one per cell: coordinates, MAP per method, ΔMAP, stored p (BH), improved / unchanged /
    hurt queries) and the same as markdown with its caption."""
    rows = []
    for c in cells:
        row = {
            "run_id": c["run_id"],
            "benchmark": c["benchmark"],
            "model": c["model"],
            "judge": c["judge"],
            **{k: v for k, v in c["params"].items() if not k.startswith(("benchmark.", "judge.", "hyde.", "code_"))},
        }
        for m, values in c["metrics"].items():
            row[f"map_{m}"] = values["map"]
            test = c.get("tests", {}).get(m)
            if test:
                row[f"delta_{m}"] = test.get("delta_map")
                row[f"p_raw_{m}"] = test.get("pvalue")
        for m, test in c.get("tests", {}).items():
            if test.get("pvalue_bh") is not None:
                row[f"p_bh_{m}"] = test["pvalue_bh"]
        for m, (won, tied, lost) in c.get("win_tie_loss", {}).items():
            row[f"improved_{m}"], row[f"unchanged_{m}"], row[f"hurt_{m}"] = won, tied, lost
        row["failed_queries"] = c.get("failed_queries", 0)
        rows.append(row)
    return rows, summary_markdown(cells)


def _sweep_flow_run_name() -> str:
    config = runtime.flow_run.parameters.get("config")
    name = config.get("name") if isinstance(config, dict) else getattr(config, "name", "sweep")
    return f"{name} {time.strftime('%Y-%m-%d %H:%M:%S')}"


def _embedding_flow_run_name() -> str:
    params = runtime.flow_run.parameters
    bench = params.get("bench")
    name = bench.get("name") if isinstance(bench, dict) else getattr(bench, "name", "corpus")
    return f"embed {name} with {params.get('model', '?')}"


def stored_corpus(bench: BenchmarkRef, model: str, execution: ExecutionSpec) -> ArrayRef | None:
    """The corpus matrix a former run joined from its chunks, when present (None: embed it).

    Its name is the digest of the documents, the model's cache key and the chunking, and it is
    written atomically, so a present file is the finished embedding; reading it skips the
    embedding sub-flow and its chunk-task lookups (over a second per sweep)."""
    name = corpus_digest(bench, model, corpus_chunks(bench.counts["documents"], execution.chunk_size))
    path = arrays_dir() / f"docs-{name}.npy"
    return ArrayRef(str(path), name) if path.is_file() else None


@flow(name="corpus-embedding", flow_run_name=_embedding_flow_run_name, log_prints=False)
def embed_corpus_flow(bench: BenchmarkRef, model: str, execution: ExecutionSpec) -> ArrayRef:
    """The corpus embedding a sweep shares between its cells, as a flow so it can run on Dask."""
    with untagged_tasks():
        return embed_corpus(bench, model, execution)


def _description(config: SweepConfig, cells: list[CellSpec], differing: list[str]) -> str:
    benches = sorted({c.benchmark.name for c in cells})
    judges = list(dict.fromkeys(c.judge.label for c in cells))
    return (
        f"Sweep **{config.name}**: {len(cells)} cells; benchmarks {', '.join(benches)}; models "
        f"{', '.join(config.models)}; judges {', '.join(judges)}; cells differ in "
        f"{', '.join(differing) or 'nothing'}. Child runs are named by what differs. "
        f"`<method>.p_bh`: Benjamini–Hochberg over {BH_FAMILY}; `*.p_raw`: uncorrected one-sided paired t-test."
    )


def _parent_params(config: SweepConfig, cells: list[CellSpec], differing: list[str]) -> dict[str, object]:
    return {
        "config.name": config.name,
        "cells": len(cells),
        "code_version": code_version(),
        "runner": config.runner,
        "execution.chunk_size": config.execution.chunk_size,
        "execution.query_block": config.execution.query_block,
        "cells_differ_in": ",".join(differing) or "-",
        "prefect.flow_run_id": str(runtime.flow_run.id or ""),
    }


def _parent_metrics(
    results: list[dict], failures: list[str], counts: dict[str, float], clock: Clock, started: float
) -> dict[str, float]:
    """The sweep's totals on its parent run: cells, judgments (paid, free, failed, held back,
    asked), requests to paid judges, cost, the mean refined delta MAP and the shared timings."""
    refined = [r["metrics"]["refined"]["map"] - r["metrics"]["baseline"]["map"] for r in results]
    return {
        "cells_completed": len(results),
        "cells_failed": len(failures),
        "cells_with_failed_judgments": sum(1 for r in results if r.get("judgments_failed")),
        "cells_cached": sum(bool(r.get("cached")) for r in results),
        **{f"judgments_{k}": v for k, v in counts.items() if k in ("paid", "free", "failed", "held_back")},
        "judgments_asked": counts["paid"] + counts["free"],  # answered by a judge in this run
        "judge_requests_paid": counts["requests"],
        "judge_cost_usd": counts["cost_usd"],
        "mean_delta_map_refined": float(np.mean(refined)) if refined else float("nan"),
        **{f"time.{k}_s": v for k, v in clock.items()},
        "time.sweep_s": time.perf_counter() - started,
    }


def _shared_inputs(config: SweepConfig, cells: list[CellSpec], address: str | None, clock: Clock) -> tuple[dict, dict]:
    """Each benchmark loaded once, each (benchmark, model) corpus and query set embedded once
    (a corpus stored by an earlier sweep, or given as vectors, is not embedded)."""
    log = run_logger()
    with clock.stage("load"), untagged_tasks():
        benches = {spec: load_benchmark_task(spec) for spec in {c.benchmark for c in cells}}
    shared = {}
    for spec, model in {(c.benchmark, c.model) for c in cells}:
        with clock.stage("embed_corpus"):
            if spec.document_vectors:
                docs = provided_corpus(benches[spec], spec.document_vectors)
                log.info(
                    "corpus of %s: the vectors of %s (model %s), not embedded",
                    spec.name,
                    spec.document_vectors.path,
                    model,
                )
            else:
                stored = stored_corpus(benches[spec], model, config.execution)
                if stored is None:
                    docs = with_runner(embed_corpus_flow, address)(benches[spec], model, config.execution)
                else:
                    docs = stored
                    log.info(
                        "corpus of %s embedded with %s: stored (%s), not embedded again", spec.name, model, docs.path
                    )
        with clock.stage("embed_queries"), untagged_tasks():  # a sub-flow (above) keeps the tags
            shared[(spec, model)] = (docs, embed_queries_task(benches[spec], model, config.query_templates.get(model)))
    return benches, shared


class _CellRunner:
    """Runs a sweep's cells as child runs of its parent: a cell whose outcome is stored is logged
    from it, any other runs as an ``evaluate-cell`` subflow; a cell that fails is reported, the
    others go on."""

    def __init__(
        self,
        config: SweepConfig,
        tracker: Tracker,
        experiment_id: str,
        parent: str,
        prefect_url: str | None,
        account: str,
        address: str | None,
    ) -> None:
        self.config, self.tracker, self.experiment_id, self.parent = config, tracker, experiment_id, parent
        self.prefect_url, self.account, self.address = prefect_url, account, address
        self.log = run_logger()

    def every(self, cells: list[CellSpec], differing: list[str], benches: dict, shared: dict) -> tuple[list, list]:
        results: list[dict] = []
        failures: list[str] = []
        for cell in cells:
            docs, queries = shared[(cell.benchmark, cell.model)]
            name = mlflow_run_name(cell, differing)
            bench = benches[cell.benchmark]
            replayed = self.replay(cell, name, bench, docs, queries)
            if replayed is not None:
                results.append(replayed)
                continue
            try:
                results.append(self.run(cell, name, bench, docs, queries))
            except Exception as exc:
                failures.append(f"{cell.benchmark.name}/{cell.judge.label}/lr={cell.lr:g}: {type(exc).__name__}: {exc}")
                self.log.error("cell %s failed: %s: %s", name, type(exc).__name__, exc)
        return results, failures

    def replay(self, cell: CellSpec, name: str, bench, docs, queries) -> dict | None:
        """The cell logged from its stored outcome, or None (none stored, or not usable)."""
        try:
            record = load_outcome(outcome_key(cell, bench, docs, queries))
        except Exception as exc:
            self.log.warning("cell %s: no stored outcome looked up (%s: %s)", name, type(exc).__name__, exc)
            return None
        if record is None:
            return None
        try:
            result = replay_cell(
                record,
                cell,
                self.tracker,
                self.experiment_id,
                parent_run_id=self.parent,
                run_name=name,
                prefect_url=self.prefect_url,
            )
        except Exception as exc:
            self.log.warning(
                "cell %s: stored outcome not usable (%s: %s); running the cell", name, type(exc).__name__, exc
            )
            return None
        self.log.info(
            "cell %s: unchanged since MLflow run %s; logged from its stored outcome", name, record["original_run_id"]
        )
        return result

    def run(self, cell: CellSpec, name: str, bench, docs, queries) -> dict:
        return run_cell(
            cell,
            self.experiment_id,
            address=self.address,
            parent_run_id=self.parent,
            tracking_uri=self.tracker.uri,
            budget=self.config.budget,
            account=self.account,
            bench=bench,
            docs=docs,
            queries=queries,
            execution=self.config.execution,
            run_name=name,
        )


def _summary_plot(name: str, results: list[dict], differing: list[str]) -> Path:
    """The parent run's ``summary_map.png``, drawn once per content: a re-run whose cells are all
    unchanged logs the stored file (drawing imports matplotlib: a second of a cached re-run)."""
    title = f"{name}: MAP per method"
    content = [
        (r.get("label"), r["judge"], r["params"], {m: v.get("map") for m, v in r["metrics"].items()}) for r in results
    ]
    path = state_dir() / "plots" / digest("sweep-map", title, differing, content) / "summary_map.png"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f"summary_map.{os.getpid()}.png")
        sweep_map(results, differing, staging, title=title)
        staging.replace(path)
    return path


def _report(
    config: SweepConfig, tracker: Tracker, parent: str, results: list, failures: list, differing: list, account
):
    """The sweep's one Benjamini-Hochberg family (``<method>.p_bh`` on every child), the summary
    table on the parent (json, markdown, csv) and the budget's metrics."""
    log = run_logger()
    adjusted = adjust_sweep_pvalues(results)
    for cell_result in results:
        stored = {f"{m}.p_bh": t["pvalue_bh"] for m, t in cell_result.get("tests", {}).items() if "pvalue_bh" in t}
        if stored:
            tracker.log_metrics(cell_result["run_id"], stored)
    rows, markdown = summary_table(results)
    caption = (
        f"**{config.name}** — {len(results)} cells"
        + (f", {len(failures)} failed" if failures else "")
        + f"; cells differ in {', '.join(differing) or 'nothing'}.\n\n"
    )
    tracker.log_json(parent, "summary.json", rows)
    tracker.log_text(parent, "summary.md", summary_markdown_by_cell(results, caption=caption))
    if rows:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "summary.csv"
            pl.DataFrame(rows).write_csv(path)
            tracker.log_artifact(parent, path)
            tracker.log_artifact(parent, _summary_plot(config.name, results, differing))
    spend = account.status()
    log.info("budget: %s", spend.line())
    budget = spend.as_dict().items()
    tracker.log_metrics(
        parent, {f"budget.{k}": float(v) for k, v in budget if isinstance(v, (int, float)) and not isinstance(v, bool)}
    )
    return adjusted, rows, markdown, spend


def announce(line: str) -> None:
    if os.environ.get(ANNOUNCE) == "1":
        print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}", flush=True)


def _announce_state(flow, flow_run, state) -> None:
    why, where = "", None
    if state.is_failed() or state.is_crashed():
        from prefect.utilities.urls import url_for

        why, where = f": {state.message}", url_for("flow-run", obj_id=flow_run.id)
    link = f"; its log and traceback: {where}" if where else ""
    announce(f"flow run {flow_run.name!r} ({flow_run.id}): {state.type.value}{why}{link}")


# The hooks are attached only in a process that announces (``refine serve`` sets the variable
# before its flow runs import this module): Prefect logs two lines per hook call to the flow
# run's log, which every other sweep would carry for nothing.
_HOOKS: list[Any] = [_announce_state] if os.environ.get(ANNOUNCE) == "1" else []


@flow(
    name="refine-sweep",
    flow_run_name=_sweep_flow_run_name,
    log_prints=False,
    on_running=_HOOKS,
    on_completion=_HOOKS,
    on_failure=_HOOKS,
    on_crashed=_HOOKS,
    on_cancellation=_HOOKS,
)
def sweep(config: SweepConfig, tracking: str | None = None, address: str | None = None) -> dict | State:
    """Run every cell of ``config``; returns experiment id, parent run id and per-cell results.

    ``address`` is a Dask scheduler: the corpus embedding and every cell run as subflows with
    the Dask task runner there (a deployment can pass it as a parameter; :func:`run_sweep`
    starts or connects to one from the config). None runs everything in this process.

    When some judgments failed, after everything is logged, the flow returns a Failed state
    whose data is a :class:`JudgmentsFailed` (so calling the flow raises it; the Prefect flow
    run ends FAILED, and a retry or re-run asks only for the failed judgments).
    """
    log = run_logger()
    tracker = Tracker(tracking or tracking_uri())
    experiment_id = tracker.experiment(config.name)
    tracker.close_stale_runs(experiment_id)
    cells = config.cells()
    differing = varying(cells)
    tracker.share_cells_view(experiment_id, differing, ["baseline", "rerank_only", "refined", *config.methods])
    prefect_url = prefect_run_url()
    parent = tracker.start(
        experiment_id,
        f"{config.name} {time.strftime('%Y-%m-%d %H:%M:%S')}",
        tags={
            "refine.kind": "sweep",
            "mlflow.note.content": _description(config, cells, differing),
            **({"refine.prefect_flow_run_url": prefect_url} if prefect_url else {}),
        },
    )
    log.info("sweep %s: %d cells, MLflow parent run %s", config.name, len(cells), parent)
    # One spend account per sweep run (a Prefect retry of this flow run keeps spending from it).
    account = SpendAccount(
        ledger_url(),
        f"sweep-{runtime.flow_run.id or parent}",
        max_items=config.budget.max_judgments,
        max_cost=config.budget.max_cost_usd,
    )
    account.start_run()  # a retried run asks again for what an earlier attempt found failing
    started = time.perf_counter()
    clock = Clock()
    with tracker.ends_run_on_error(parent):
        tracker.log_params(parent, _parent_params(config, cells, differing))
        tracker.log_text(parent, "config.yaml", _yaml(config))
        benches, shared = _shared_inputs(config, cells, address, clock)
        with clock.stage("cells"):
            run = _CellRunner(config, tracker, experiment_id, parent, prefect_url, account.account, address)
            results, failures = run.every(cells, differing, benches, shared)
        with clock.stage("report"):
            adjusted, rows, markdown, spend = _report(config, tracker, parent, results, failures, differing, account)
        judgment_failures = [r for r in results if r.get("judgments_failed")]
        counts = judgment_counts(results)
        tracker.log_metrics(parent, _parent_metrics(results, failures, counts, clock, started))
        if failures:
            tracker.log_text(parent, "failures.txt", "\n".join(failures))
        if judgment_failures:
            tracker.log_text(parent, "judge_failures.txt", "\n".join(failure_lines(results)))
        # FAILED when a cell failed or judgments failed: the sweep's results are not complete (its
        # complete cells stay FINISHED and usable; `refine experiments` and `compare` leave the rest out)
        tracker.finish(parent, "FAILED" if failures or judgment_failures else "FINISHED")
    link_mlflow_run(tracker, experiment_id, parent, f"sweep {config.name}")
    announce(f"sweep {config.name}: {len(results)} cells logged; MLflow {tracker.run_url(experiment_id, parent)}")
    result = {
        "experiment_id": experiment_id,
        "parent_run_id": parent,
        "cells": results,
        "failures": failures,
        "summary_markdown": markdown,
        "shared_timings": dict(clock),
        "bh_adjusted": adjusted,
        "budget": spend.as_dict(),
        "budget_line": budget_line(spend, results),
        "columns": cell_rows(results)[0] if results else [],
    }
    if judgment_failures:
        lines = failure_lines(results)
        for line in lines:
            log.error("%s", line)
        failed = JudgmentsFailed("judgments failed in " + "; ".join(lines), result)
        # Returned, not raised: the flow run ends FAILED with this message (Prefect's Retry asks
        # only the failed judgments again), and the flow engine logs no "Encountered exception"
        # traceback for an outcome the lines above explain (a worker's flow-run process still
        # logs one when its entry point raises the failed run's result). Calling the flow
        # without return_state still raises it.
        return Failed(message=f"{type(failed).__name__}: {failed}", data=failed)
    return result


def run_sweep(config: SweepConfig, tracking: str | None = None) -> dict:
    """Run ``sweep`` with the runner the config names (``local``, ``dask`` or ``dask://host:port``).

    Returns the sweep's result also when judgments failed (then ``result["judgment_failures"]``
    lists one line per affected cell); other errors propagate.
    """
    from prefect import tags

    from flows.local_server import ready
    from flows.watchdog import crash_orphaned_flow_runs, run_tags, without_heartbeats

    ready()  # the CLI's own Prefect server, started early (a no-op otherwise)
    for name in crash_orphaned_flow_runs():
        run_logger().warning("flow run %r was left running by a killed process: marked CRASHED", name)
    with dask_cluster(config.runner, config.execution.workers) as address, tags(*run_tags()), without_heartbeats():
        state = sweep(config, tracking, address, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, JudgmentsFailed) and outcome.result is not None:
        result = outcome.result
        result["judgment_failures"] = failure_lines(result["cells"])
        return result
    if isinstance(outcome, BaseException):
        raise outcome
    completed = cast(dict, outcome)  # a completed sweep returns its result, never a state
    completed["judgment_failures"] = []
    return completed


def _yaml(config: SweepConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
