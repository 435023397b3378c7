"""``refine run`` and ``refine demo``: the checks before a sweep, the sweep with progress bars, its
report and exit status, and ``--dry-run``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from flows.console import console, err_console, fail
from flows.console import user_errors as _user_errors
from flows.failures import judgments_line
from flows.preflight import check_inputs, check_tracking_store
from tasks.storage import embedding_cache_dir, state_dir


def results_table(title: str, cells: list[dict]) -> Table:
    """The cells as a console table: the coordinates that vary, every method present, ΔMAP,
    stored p (BH), improved / unchanged / hurt queries and failed queries."""
    from flows.report import cell_rows

    columns, rows = cell_rows(cells)
    table = Table(title=title)
    for column in columns:
        table.add_column(
            column,
            justify="left" if column in ("benchmark", "judge", "model", "optimizer", "normalize") else "right",
            overflow="fold",
        )
    table.caption = "+/=/−: queries refinement improved / left unchanged / hurt (AP)"
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    return table


def public_cells(cells: list[dict]) -> list[dict]:
    keys = ("run_id", "benchmark", "model", "judge", "params", "metrics")
    extra = ("label", "judgments_failed", "judge_errors", "win_tie_loss", "cached", "original_run_id")
    return [
        {k: c[k] for k in keys}
        | {"tests": c.get("tests", {}), "failed_queries": c.get("failed_queries", 0)}
        | {k: c[k] for k in extra if k in c}
        for c in cells
    ]


EXIT_JUDGMENTS_FAILED = 3


# ---------------------------------------------------------------------------------------
# refine demo
# ---------------------------------------------------------------------------------------
def demo(
    dataset: Annotated[str, typer.Option(help="benchmark name")] = "clinc150",
    model: Annotated[str, typer.Option(help="embedding model (alias, Hub id or folder)")] = "all-MiniLM-L6-v2",
    queries: Annotated[int | None, typer.Option(help="evaluate only the first N queries")] = None,
    k: Annotated[int, typer.Option(help="documents judged per query")] = 20,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper 1e-4)")] = 1e-4,
    pull: Annotated[float, typer.Option(help="pull toward the judged-positive centroid (paper 0)")] = 0.0,
    steps: Annotated[int, typer.Option(help="optimisation steps (paper 100)")] = 100,
    rounds: Annotated[int, typer.Option(help="refinement rounds (paper 1)")] = 1,
    flip_rate: Annotated[float, typer.Option(help="noisy oracle: probability of flipping each gold judgment")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the noisy oracle")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads for embedding")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Embed a real benchmark, judge the top-K with the (noisy) oracle, and compare the methods.

    The oracle judge is the gold labels (the ceiling of what a judge can give); with
    --flip-rate it errs at random. Embeddings are cached under .refine/embeddings.
    """
    import numpy as np

    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations.registry import load_benchmark
    from flows.report import adjust_sweep_pvalues
    from judging import noisy_oracle_scores
    from refine_core import RefineConfig
    from refine_core.evaluation import evaluate_cell_arrays

    try:
        config = RefineConfig(lr=lr, steps=steps, pull=pull)
        if k < 2:
            raise ValueError(f"--k must be at least 2, got {k}")
        if rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {rounds}")
        if not 0 <= flip_rate <= 1:
            raise ValueError(f"--flip-rate must be in [0, 1], got {flip_rate}")
        benchmark = load_benchmark(dataset, queries=queries)
        embedder = SentenceTransformerEmbedder(model, threads=threads)
        cache = EmbeddingCache(embedding_cache_dir())
        t0 = time.perf_counter()
        with console.status(f"embedding {benchmark.n_documents} documents with {embedder.model_id} ..."):
            docs = embedder.embed_documents(benchmark.document_texts(), cache=cache)
            qvecs = embedder.embed_queries(
                benchmark.query_texts(), instruction=benchmark.embed_instruction, cache=cache
            )
        t_embed = time.perf_counter() - t0
        qrels = benchmark.qrels()
        query_texts, document_texts = benchmark.query_texts(), benchmark.document_texts()
        min_pool = int(np.diff(qrels.indptr).min()) if qrels.pooled else benchmark.n_documents
        if k * rounds > min_pool:
            raise ValueError(f"--k {k} x --rounds {rounds} exceeds the smallest query pool ({min_pool} documents)")

        def judge(rows, idx):
            return noisy_oracle_scores(
                qrels.take(rows),
                idx,
                flip_rate=flip_rate,
                seed=seed,
                query_texts=[query_texts[r] for r in rows],
                document_texts=document_texts,
            )

        t1 = time.perf_counter()
        outcome = evaluate_cell_arrays(qvecs, docs, qrels, judge, k=k, rounds=rounds, config=config)
        t_eval = time.perf_counter() - t1
    except _user_errors() as exc:
        fail(exc)

    methods = list(outcome.metrics)
    tests = {m: {"pvalue": outcome.tests[m].pvalue} for m in methods if m in outcome.tests}
    adjust_sweep_pvalues([{"tests": tests}])  # the project's one family: here every method of this one cell
    adjusted = {m: t["pvalue_bh"] for m, t in tests.items() if "pvalue_bh" in t}
    judge_name = "oracle" if flip_rate == 0 else f"noisy-oracle (flip {flip_rate:g})"
    title = (
        f"{benchmark.name}: {benchmark.n_queries} queries x {benchmark.n_documents} documents, "
        f"{embedder.model_id}, judge {judge_name}, K={k}, lr={lr:g}, steps={steps}"
    )
    console.print(_demo_table(title, outcome.metrics, adjusted))
    console.print(
        f"embedding {t_embed:.1f} s (cache: {embedding_cache_dir()}), judging + refinement + "
        f"scoring {t_eval:.1f} s; {int(outcome.judge_mask.sum())} judgments"
    )
    if as_json:
        print(
            json.dumps(
                {
                    "benchmark": benchmark.counts(),
                    "model": embedder.model_id,
                    "judge": judge_name,
                    "params": {"k": k, "rounds": rounds, **config.as_params()},
                    "metrics": {m: outcome.metrics[m].means for m in methods},
                    "p_values_bh": adjusted,
                },
                default=float,
            )
        )


def _demo_table(title: str, metrics: dict, adjusted: dict[str, float]) -> Table:
    """``refine demo``'s table: each method's measures, ΔMAP and BH-corrected p against the baseline."""
    table = Table(title=title)
    for column in ("method", "MAP", "nDCG@10", "R@50", "ROC-AUC", "ΔMAP", "p (BH)"):
        table.add_column(column, justify="right" if column != "method" else "left")
    base_map = metrics["baseline"].means["map"]
    for method, result in metrics.items():
        m = result.means
        p = adjusted.get(method)
        table.add_row(
            method,
            f"{m['map']:.4f}",
            f"{m['ndcg@10']:.4f}",
            f"{m['recall@50']:.4f}",
            f"{m['roc_auc']:.4f}",
            "" if method == "baseline" else f"{m['map'] - base_map:+.4f}",
            "" if p is None else f"{p:.2g}",
        )
    return table


# ---------------------------------------------------------------------------------------
# refine run / compare / ui / serve
# ---------------------------------------------------------------------------------------
def run(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[CONFIG]", help="sweep YAML (default: the built-in sweep)")
    ] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            help="task runner: 'local' (default), 'dask' (a local cluster) or "
            "'dask://host:port' (a running scheduler); overrides the config"
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="print per cell the judgments and HyDE passages still to pay and their estimated cost; pay nothing",
        ),
    ] = False,
) -> None:
    """Run a sweep: every cell through the Prefect flow, every result to MLflow.

    Exit status: 0 done; 1 a cell failed; 2 bad input (nothing run); 3 some judgments failed
    (every cell is logged; the same command again asks only for the failed judgments).
    With --dry-run: 0 after printing the plan (only free stages run: loading, embedding, the
    first round's selection).
    """
    # This command reports failures itself, one line each; Prefect's own console lines (with
    # tracebacks) stay in the Prefect database and UI.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    from flows.environment import configure_environment

    configure_environment()
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from evaluations.config import ConfigError, default_config, load_config, parse_config
    from flows.local_server import start_ephemeral
    from flows.watchdog import guard

    try:
        config = load_config(config_path) if config_path else default_config()
        if runner:
            config = parse_config({**config.model_dump(mode="json"), "runner": runner}, source="--runner")
        check_inputs(config)  # a bad config costs no Prefect server: it fails in about a second
        if start_ephemeral():  # its start-up overlaps the stores' check and the sweep's imports
            guard()  # ends that server if this process is killed from now on
        check_tracking_store()
    except (ConfigError, *_user_errors()) as exc:  # type: ignore[misc]  # a tuple built at run time
        fail(exc)
    n_cells = len(config.cells())
    console.print(f"sweep [bold]{config.name}[/]: {n_cells} cells; state in {state_dir()}")
    if dry_run:
        _dry_run(config, as_json)
        return
    started = time.perf_counter()
    console.print(f"running {n_cells} cells (the local Prefect server takes a while to start the first time) ...")
    result = _sweep_with_progress(config)
    _report_sweep(result, config.name, config_path, runner, time.perf_counter() - started, as_json)


def _sweep_with_progress(config) -> dict:
    """``run_sweep(config)`` with a progress bar per stage."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

    from evaluations.config import ConfigError
    from flows.sweep import run_sweep
    from flows.watchdog import guard
    from tasks import progress as task_progress

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bars:
        handles: dict[str, TaskID] = {}

        def show(stage: str, done: int, total: int) -> None:
            if stage not in handles:
                handles[stage] = bars.add_task(stage, total=total)
            bars.update(handles[stage], completed=done, total=total)

        task_progress.install(show)
        guard()  # ends the Prefect server and Dask workers if this process is killed
        try:
            return run_sweep(config)
        except ConfigError as exc:
            fail(exc)
        finally:
            task_progress.install(None)


def _report_sweep(
    result: dict, name: str, config_path: Path | None, runner: str | None, elapsed: float, as_json: bool
) -> None:
    """The results table, what was paid, the MLflow links, the failures and how to retry; the
    exit status (1 a cell failed, 3 judgments failed)."""
    from flows.report import BH_FAMILY
    from flows.tracking import Tracker

    console.print(
        results_table(
            f"{name}: MAP per method; p (BH): one-sided paired t-test of refined vs "
            f"baseline, Benjamini-Hochberg corrected over {BH_FAMILY}",
            result["cells"],
        )
    )
    tracker = Tracker()
    cached = sum(bool(c.get("cached")) for c in result["cells"])
    console.print(f"{len(result['cells'])} cells in {elapsed:.1f} s ({cached} from cache)")
    console.print(judgments_line(result["cells"]), highlight=False)
    if result.get("budget_line"):
        console.print(f"budget: {result['budget_line']}", highlight=False)
    console.print(f"MLflow runs table: {tracker.runs_table_url(result['experiment_id'])}", soft_wrap=True)
    console.print(
        f"MLflow sweep run:  {tracker.run_url(result['experiment_id'], result['parent_run_id'])}  "
        "(start the UI with `refine ui`)",
        soft_wrap=True,
    )
    for failure in result["failures"]:
        err_console.print(f"[bold red]cell failed:[/] {failure}", highlight=False)
    judgment_failures = result.get("judgment_failures", [])
    for line in judgment_failures:
        err_console.print(f"[bold red]judgments failed:[/] {line}", highlight=False, soft_wrap=True)
    if judgment_failures:
        again = " ".join(
            ["refine", "run", *([str(config_path)] if config_path else []), *(["--runner", runner] if runner else [])]
        )
        err_console.print(
            f"retry only the failed judgments (everything else is cached and paid for): {again}",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        public = {
            "experiment_id": result["experiment_id"],
            "parent_run_id": result["parent_run_id"],
            "cells": public_cells(result["cells"]),
            "failures": result["failures"],
            "judgment_failures": judgment_failures,
            "budget": result.get("budget"),
        }
        print(json.dumps(public, default=float))
    if result["failures"]:
        raise typer.Exit(code=1)
    if judgment_failures:
        raise typer.Exit(code=EXIT_JUDGMENTS_FAILED)


def _dry_run(config, as_json: bool) -> None:
    """Print what ``refine run`` would pay for ``config`` (see :mod:`flows.plan`)."""
    from rich.table import Table

    from flows.local_server import ready
    from flows.plan import plan_sweep

    ready()
    console.print("dry run: loading and embedding (free, cached for the real run); nothing is sent to a paid judge")
    try:
        plan = plan_sweep(config)
    except _user_errors() as exc:
        fail(exc)
    table = Table(title=f"{config.name}: still to pay (ledger and generation store are free)")
    for column in ("cell", "round 1 to pay", "in ledger", "later rounds ≤", "HyDE to pay", "est. USD", "≤ USD"):
        table.add_column(column, justify="left" if column == "cell" else "right")
    for row in plan["cells"]:
        if not row["paid"] and not row["hyde_to_pay"]:
            table.add_row(row["cell"], "free", "", "", "", "", "")
            continue
        table.add_row(
            row["cell"],
            str(row["judgments_to_pay"]),
            str(row["judgments_in_ledger"]),
            str(row["later_rounds_at_most"]),
            str(row["hyde_to_pay"]),
            f"{row['usd']:.4f}",
            f"{row['usd_at_most']:.4f}",
        )
    console.print(table)
    total, budget = plan["total"], plan["budget"]
    console.print(
        f"total (each pair counted once across cells): {total['judgments_to_pay']} judgments and "
        f"{total['hyde_to_pay']} HyDE passages to pay now, at most {total['judgments_at_most']} judgments "
        f"with later rounds; estimated ${total['usd']:.4f} (at most ${total['usd_at_most']:.4f})",
        highlight=False,
    )
    limits = [
        f"{budget['max_judgments']} judgments/passages" if budget["max_judgments"] else "",
        f"${budget['max_cost_usd']:.2f}" if budget["max_cost_usd"] else "",
    ]
    limits = [x for x in limits if x]
    if limits:
        over = (
            (budget["max_judgments"] or 0)
            and total["judgments_at_most"] + total["hyde_to_pay"] > budget["max_judgments"]
        ) or ((budget["max_cost_usd"] or 0) and total["usd_at_most"] > budget["max_cost_usd"])
        console.print(
            f"budget: {' and '.join(limits)} per run"
            + (" — the run may stop at it (BudgetExceeded)" if over else " — enough for this plan"),
            highlight=False,
        )
    else:
        console.print(
            "budget: none set (add `budget: {max_judgments: N, max_cost_usd: X}` to the config)", highlight=False
        )
    if as_json:
        print(json.dumps(plan, default=float))
