"""The ``refine`` command line.

User errors (unknown dataset, missing files, bad options, a model that does not exist) print
one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.table import Table

from flows.console import console, err_console, fail
from flows.console import user_errors as _user_errors
from tasks.storage import embedding_cache_dir, state_dir

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="LLM-guided test-time query refinement: evaluate and use it."
)
datasets_app = typer.Typer(help="List the registered benchmarks, or show one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")
server_app = typer.Typer(
    help="A local Prefect server kept between commands (faster runs, the Prefect UI).", no_args_is_help=True
)
app.add_typer(server_app, name="server")


def _check_vectors_file(name: str, path: str, n_documents: int) -> None:
    """A benchmark's own document vectors: the file is there, in a known format, one row per
    document (a header is read, not the matrix; the dimension is checked when the sweep runs)."""
    from embedders.vector_files import VectorFileError, vector_rows
    from evaluations.errors import DatasetError

    where = f"benchmark {name}: document_vectors {path}"
    try:
        rows = vector_rows(path, id_column="doc_id")
    except VectorFileError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    if Path(path).suffix == ".npy" and rows != n_documents:
        raise DatasetError(f"{where}: {rows} rows for the benchmark's {n_documents} documents")


def _preflight(config) -> None:
    """Fail fast, before anything is paid: the stores first (seconds), then datasets, models, judges."""
    from embedders.models import check_model
    from evaluations.registry import load_benchmark
    from judging.kinds import judge_kind

    check_tracking_store()
    benches = {}
    for spec in {c.benchmark for c in config.cells()}:
        benches[spec] = load_benchmark(
            spec.name,
            queries=spec.queries,
            query_seed=spec.query_seed,
            max_documents=spec.max_documents,
            corpus_seed=spec.corpus_seed,
        )
    for spec, bench in benches.items():
        if spec.document_vectors is not None:
            _check_vectors_file(spec.name, spec.document_vectors.path, bench.n_documents)
    for model in config.models:
        check_model(model)  # without loading it: a cached run never needs the weights
    first = next(iter(benches.values()))
    for judge in config.judges:  # local models are checked without loading the weights (that happens when judging)
        judge_kind(judge.kind).preflight(judge, first)
    if config.hyde is not None and config.hyde.kind == "local-lm":
        from judging.local_lm import check_local_model

        check_local_model(config.hyde.model or "")
    for spec, bench in benches.items():
        smallest = (
            bench.n_documents
            if bench.pool == "corpus"
            else int(bench.labels.group_by("query_id").len()["len"].to_numpy().min())
        )
        for k in config.grid.k:
            for rounds in config.grid.rounds:
                if k * rounds > smallest:
                    raise ValueError(
                        f"k={k} x rounds={rounds} is larger than the smallest pool of "
                        f"{spec.name} ({smallest} documents)"
                    )
    if config.runner != "local":
        from flows.execution import check_scheduler, require_prefect_dask

        require_prefect_dask()
        check_scheduler(config.runner)


def check_tracking_store(*, run: bool = True) -> None:
    """Every store the command needs (tracking, ledger, a Prefect API of the user's, an S3
    artifact endpoint) answers within a few seconds, or one ValueError naming the first that
    does not, its URI redacted (see :mod:`flows.stores`)."""
    from flows.stores import check_stores
    from flows.tracking import tracking_uri

    check_stores(tracking_uri(), ledger=run, prefect=run, artifacts=run)


def _results_table(title: str, cells: list[dict]) -> Table:
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


def _public(cells: list[dict]) -> list[dict]:
    keys = ("run_id", "benchmark", "model", "judge", "params", "metrics")
    extra = ("judgments_failed", "judge_errors", "win_tie_loss", "cached", "original_run_id")
    return [
        {k: c[k] for k in keys}
        | {"tests": c.get("tests", {}), "failed_queries": c.get("failed_queries", 0)}
        | {k: c[k] for k in extra if k in c}
        for c in cells
    ]


EXIT_JUDGMENTS_FAILED = 3


# ---------------------------------------------------------------------------------------
# refine datasets
# ---------------------------------------------------------------------------------------
@datasets_app.callback()
def datasets_list(
    ctx: typer.Context, as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False
) -> None:
    """List the registered benchmarks and whether their files are present."""
    if ctx.invoked_subcommand is not None:
        return
    from evaluations.registry import PARAMETRIC, REGISTRY, data_dir, missing_files

    root = data_dir()
    rows = []
    for name, spec in REGISTRY.items():
        missing = missing_files(name, root)
        rows.append(
            {
                "name": name,
                "present": not missing,
                "folder": str(spec.path(root)),
                "hub": spec.hub_loader is not None,
                "description": spec.description,
                "licence": spec.licence,
            }
        )
    if as_json:
        print(
            json.dumps({"data_dir": str(root), "datasets": rows, "parametric": [f"{k}:<folder>" for k in PARAMETRIC]})
        )
        return
    table = Table(title=f"datasets (data dir: {root})")
    for column in ("name", "files", "hub", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            str(row["name"]),
            "[green]present[/]" if row["present"] else "[yellow]missing[/]",
            "yes" if row["hub"] else "-",
            str(row["description"]),
        )
    console.print(table)
    console.print("Also: " + ", ".join(f"{k}:<folder>" for k in PARAMETRIC) + "  (see docs/datasets.md)")


@datasets_app.command("show")
def datasets_show(
    name: Annotated[str, typer.Argument(help="registry name or kind:<folder>")],
    queries: Annotated[int | None, typer.Option(help="keep the first N queries (or random with --seed)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for a random query subset")] = None,
    max_documents: Annotated[int | None, typer.Option(help="subsample the corpus, keeping every positive")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Print a benchmark's counts and content hash."""
    from evaluations.registry import load_benchmark

    try:
        benchmark = load_benchmark(name, queries=queries, query_seed=seed, max_documents=max_documents)
    except _user_errors() as exc:
        fail(str(exc))
    counts = benchmark.counts()
    if as_json:
        print(json.dumps(counts))
        return
    table = Table(title=f"{name}")
    table.add_column("field")
    table.add_column("value")
    for key, value in counts.items():
        table.add_row(key, str(value))
    console.print(table)


# ---------------------------------------------------------------------------------------
# refine demo
# ---------------------------------------------------------------------------------------
@app.command()
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
        fail(str(exc))

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
@app.command()
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
    from flows.local_server import start_ephemeral
    from flows.watchdog import guard

    if start_ephemeral():  # its start-up overlaps the imports and checks below
        guard()  # ends that server if this process is killed from now on
    import logging

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    from evaluations.config import ConfigError, default_config, load_config, parse_config

    try:
        config = load_config(config_path) if config_path else default_config()
        if runner:
            config = parse_config({**config.model_dump(mode="json"), "runner": runner}, source="--runner")
        _preflight(config)
    except (ConfigError, *_user_errors()) as exc:  # type: ignore[misc]  # a tuple built at run time
        fail(str(exc))
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
            fail(str(exc))
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
        _results_table(
            f"{name}: MAP per method; p (BH): one-sided paired t-test of refined vs "
            f"baseline, Benjamini-Hochberg corrected over {BH_FAMILY}",
            result["cells"],
        )
    )
    tracker = Tracker()
    cached = sum(bool(c.get("cached")) for c in result["cells"])
    paid = sum(c.get("judge_usage", {}).get("judgments_paid", 0) for c in result["cells"])
    cost = sum(c.get("judge_usage", {}).get("judge_cost_usd", 0) for c in result["cells"])
    console.print(
        f"{len(result['cells'])} cells in {elapsed:.1f} s ({cached} from cache; {int(paid)} judgments asked "
        f"of the judges in this run, estimated ${cost:.2f})"
    )
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
            "cells": _public(result["cells"]),
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
        fail(str(exc))
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


@app.command()
def compare(
    filters: Annotated[list[str] | None, typer.Argument(metavar="[NAME=VALUE]...", help="more --where filters")] = None,
    experiment: Annotated[str, typer.Option(help="experiment (sweep config name)")] = "default-sweep",
    parent: Annotated[str | None, typer.Option(help="parent run id (default: the latest sweep)")] = None,
    all_sweeps: Annotated[bool, typer.Option("--all", help="every finished cell of the experiment")] = False,
    benchmark: Annotated[str | None, typer.Option(help="only this benchmark")] = None,
    judge: Annotated[str | None, typer.Option(help="only judges whose label contains this")] = None,
    where: Annotated[
        list[str] | None, typer.Option(help="keep cells with this coordinate, e.g. lr=1e-4 rounds=1 (repeatable)")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", help="table, csv or markdown (--layout paper: markdown or latex; default both)")
    ] = "table",
    layout: Annotated[
        str,
        typer.Option(
            help="'cells' (one row per cell) or 'paper' (model x method rows, one "
            "column per benchmark, as in the paper)"
        ),
    ] = "cells",
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Compare cells from MLflow: MAP per method, ΔMAP and significance as stored by the sweep.

    p (BH) is the value the sweep stored (its one Benjamini–Hochberg family); filtering the
    cells shown never changes it.
    """
    from flows.environment import configure_environment

    configure_environment()
    from flows.report import ReportError, cells_from_mlflow
    from flows.tracking import Tracker

    if layout not in ("cells", "paper"):
        fail(f"--layout must be cells or paper, got {layout!r}")
    if layout == "cells" and fmt not in ("table", "csv", "markdown"):
        fail(f"--format must be table, csv or markdown, got {fmt!r}")
    if layout == "paper" and fmt not in ("table", "markdown", "latex"):
        fail(f"--format with --layout paper must be markdown or latex, got {fmt!r}")
    try:
        check_tracking_store(run=False)
    except ValueError as exc:
        fail(str(exc))
    try:
        experiment_id, parent, cells = cells_from_mlflow(
            Tracker(),
            experiment,
            parent=parent,
            all_sweeps=all_sweeps,
            benchmark=benchmark,
            judge=judge,
            where=[*(where or []), *(filters or [])],
        )
    except ReportError as exc:
        fail(str(exc))
    if layout == "paper":
        from flows.report import paper_table

        try:
            table = paper_table(cells)
        except ReportError as exc:
            fail(str(exc))
        if fmt in ("table", "markdown"):
            print(table.markdown())
        if fmt == "table":
            print()
        if fmt in ("table", "latex"):
            print(table.latex())
    elif fmt == "table":
        console.print(
            _results_table(f"{experiment}: {len(cells)} cells" + (f" of sweep {parent}" if parent else ""), cells)
        )
    else:
        from flows.sweep import summary_table

        rows, markdown = summary_table(cells)
        if fmt == "markdown":
            print(markdown)
        else:
            import polars as pl

            print(pl.DataFrame(rows).write_csv() if rows else "")
    if as_json:
        print(
            json.dumps(
                {"experiment_id": experiment_id, "parent_run_id": parent, "cells": _public(cells)}, default=float
            )
        )


@app.command()
def experiments(
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """List the experiments: sweeps and cells logged, the last run, the best refined MAP."""
    from flows.environment import configure_environment

    configure_environment()
    from flows.stores import NothingLogged
    from flows.tracking import Tracker

    try:
        check_tracking_store(run=False)
    except NothingLogged as exc:  # a new home: an empty list, not an error
        if as_json:
            from flows.tracking import tracking_uri
            from tasks.redaction import redact

            print(json.dumps({"tracking_uri": redact(tracking_uri()), "experiments": []}))
        else:
            console.print(str(exc), highlight=False)
        return
    except ValueError as exc:
        fail(str(exc))
    tracker = Tracker()
    rows = []
    for exp in tracker.client.search_experiments(order_by=["last_update_time DESC"]):
        runs = tracker.client.search_runs(
            [exp.experiment_id],
            "attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=5000,
        )
        cells = [r for r in runs if r.data.tags.get("refine.kind") == "cell"]
        sweeps = [r for r in runs if r.data.tags.get("refine.kind") == "sweep"]
        if not cells and not sweeps:
            continue
        best = max(cells, key=lambda r: r.data.metrics.get("refined.map", float("-inf")), default=None)
        rows.append(
            {
                "name": exp.name,
                "experiment_id": exp.experiment_id,
                "sweeps": len(sweeps),
                "cells": len(cells),
                "last_run": time.strftime("%Y-%m-%d %H:%M", time.localtime(runs[0].info.start_time / 1000)),
                "best_refined_map": None if best is None else best.data.metrics.get("refined.map"),
                "best_run": None if best is None else best.info.run_name,
                "url": tracker.runs_table_url(exp.experiment_id),
            }
        )
    if as_json:
        from tasks.redaction import redact

        print(json.dumps({"tracking_uri": redact(tracker.uri), "experiments": rows}))
        return
    table = Table(title=f"experiments in {tracker.uri}")
    for column in ("experiment", "sweeps", "cells", "last run", "best refined MAP", "best cell"):
        table.add_column(column, justify="right" if column in ("sweeps", "cells", "best refined MAP") else "left")
    for r in rows:
        table.add_row(
            str(r["name"]),
            str(r["sweeps"]),
            str(r["cells"]),
            str(r["last_run"]),
            "–" if r["best_refined_map"] is None else f"{r['best_refined_map']:.4f}",
            str(r["best_run"] or "–"),
        )
    console.print(table)
    if not rows:
        console.print("no sweeps logged yet: `refine run` runs the default sweep")


@app.command()
def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the same tracking store and print its URL.

    The server runs in its own process group and is stopped with everything it started when
    this command ends (Ctrl-C or a termination signal).
    """
    import signal
    import subprocess

    from flows.environment import configure_environment

    configure_environment()
    from flows.tracking import Tracker, tracking_uri

    uri = tracking_uri()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    os.environ["REFINE_MLFLOW_UI_URL"] = f"http://127.0.0.1:{port}"
    tracker = Tracker(uri)
    found = tracker.client.search_experiments(order_by=["last_update_time DESC"], max_results=1)
    where = tracker.runs_table_url(found[0].experiment_id) if found else f"http://127.0.0.1:{port}"
    console.print(f"MLflow UI: {where}  (store: {uri}; Ctrl-C stops it)", soft_wrap=True)
    server = subprocess.Popen(command, start_new_session=True)

    def stop(*_: object) -> NoReturn:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    code = 0
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        from flows.watchdog import stop_process_group

        stop_process_group(server, timeout=10)
    raise typer.Exit(code=code)


# The settings a flow run needs to find the same state as the CLI; a deployment passes them on.
# The task cache is shared through PREFECT_LOCAL_STORAGE_PATH: every worker must read the same one.
SHARED_SETTINGS = (
    "REFINE_HOME",
    "REFINE_DATA_DIR",
    "REFINE_LEDGER_URL",
    "REFINE_LEDGER_PASSWORD_FILE",
    "REFINE_EMBEDDING_CACHE",
    "MLFLOW_TRACKING_URI",
    "REFINE_MLFLOW_UI_URL",
    "HF_HUB_OFFLINE",
    "REFINE_TORCH_THREADS",
    "PREFECT_LOCAL_STORAGE_PATH",
    "PREFECT_DEFAULT_RESULT_STORAGE_BLOCK",
    "MLFLOW_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
)


def _deployment_inputs(config_path: Path | None, cron: str | None, runner: str | None) -> tuple[dict, str]:
    """(flow parameters, cron) for serve and deploy; fails with one line on bad input."""
    from evaluations.config import ConfigError, default_config, load_config, parse_config
    from flows.execution import dask_address
    from flows.schedule import ScheduleError, check_cron

    try:
        config = load_config(config_path) if config_path else default_config()
        if runner:
            config = parse_config({**config.model_dump(mode="json"), "runner": runner}, source="--runner")
        if config.runner == "dask":
            raise ConfigError("a scheduled sweep cannot start its own Dask cluster: give runner: dask://host:port")
        address = dask_address(config.runner)
        chosen = check_cron(cron or config.schedule or "0 3 * * *")
    except (ConfigError, ScheduleError) as exc:
        fail(str(exc))
    return {"config": config.model_dump(mode="json"), "address": address}, chosen


def _require_prefect_server(command: str) -> None:
    if not os.environ.get("PREFECT_API_URL"):
        fail(
            f"refine {command} needs a Prefect server: start one with `prefect server start` (or the compose stack) "
            "and set PREFECT_API_URL, e.g. http://127.0.0.1:4200/api"
        )


@app.command()
def serve(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[CONFIG]", help="sweep YAML (default: the built-in sweep)")
    ] = None,
    cron: Annotated[
        str | None, typer.Option(help="cron schedule (default: the config's schedule, else '0 3 * * *')")
    ] = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "refine-sweep",
    runner: Annotated[
        str | None,
        typer.Option(
            help="'dask://host:port': run the scheduled sweeps' embedding and "
            "cells on that Dask scheduler (overrides the config)"
        ),
    ] = None,
) -> None:
    """Serve the sweep flow as a Prefect deployment on a cron schedule (needs a Prefect server).

    This process runs the scheduled sweeps itself until stopped; for runs picked up by workers
    use `refine deploy --pool`.
    """
    from flows.environment import configure_environment

    configure_environment()
    parameters, chosen = _deployment_inputs(config_path, cron, runner)
    _require_prefect_server("serve")
    from flows.sweep import sweep

    console.print(
        f"serving deployment {name!r} of flow refine-sweep, cron {chosen!r}, sweep "
        f"{parameters['config']['name']!r}"
        + (f", Dask scheduler {parameters['address']}" if parameters["address"] else "")
    )
    sweep.serve(name=name, cron=chosen, parameters=parameters)


@app.command()
def deploy(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[CONFIG]", help="sweep YAML (default: the built-in sweep)")
    ] = None,
    pool: Annotated[str, typer.Option(help="Prefect work pool (type process; created when missing)")] = "refine",
    cron: Annotated[
        str | None, typer.Option(help="cron schedule (default: the config's schedule, else '0 3 * * *')")
    ] = None,
    name: Annotated[str, typer.Option(help="deployment name")] = "refine-sweep",
    runner: Annotated[str | None, typer.Option(help="'dask://host:port' for the sweeps' embedding and cells")] = None,
) -> None:
    """Register the sweep as a deployment of a work pool: `prefect worker start --pool POOL`
    processes (on any machine that has this checkout and the shared state) run its sweeps.

    The flow runs get this shell's REFINE_HOME, REFINE_DATA_DIR, REFINE_LEDGER_URL,
    MLFLOW_TRACKING_URI and Prefect result storage, so every worker shares one task cache and
    one ledger (never an API key: workers read secrets from their own environment).
    """
    from flows.environment import configure_environment

    configure_environment()
    parameters, chosen = _deployment_inputs(config_path, cron, runner)
    _require_prefect_server("deploy")
    from flows.schedule import deploy_to_pool

    env = {key: os.environ[key] for key in SHARED_SETTINGS if os.environ.get(key)}
    if "REFINE_LEDGER_URL" in env:  # a deployment's settings are stored in Prefect: never a password
        from sqlalchemy.engine import make_url

        if "://" in env["REFINE_LEDGER_URL"] and make_url(env["REFINE_LEDGER_URL"]).password:
            fail(
                "REFINE_LEDGER_URL holds a password, which the deployment would store in Prefect: put the "
                "password in a file and set REFINE_LEDGER_PASSWORD_FILE to it"
            )
    try:
        deployment_id = deploy_to_pool(parameters, name=name, pool=pool, cron=chosen, env=env)
    except Exception as exc:
        fail(f"could not register the deployment with {os.environ['PREFECT_API_URL']}: {type(exc).__name__}: {exc}")
    console.print(
        f"deployment refine-sweep/{name} ({deployment_id}) in work pool {pool!r}, cron {chosen!r}; start "
        f"workers with: prefect worker start --pool {pool}"
    )


# ---------------------------------------------------------------------------------------
# refine server start / stop / status
# ---------------------------------------------------------------------------------------
@server_app.command("start")
def server_start(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1 (another is taken if busy)")] = 4200,
) -> None:
    """Start a Prefect server (with its UI) that every later command of this REFINE_HOME uses."""
    from flows.environment import configure_environment

    configure_environment()
    from flows import local_server

    try:
        record = local_server.start(port)
    except RuntimeError as exc:
        fail(str(exc))
    verb = "started" if record["started"] else "already running"
    console.print(
        f"Prefect server {verb}: UI {record['ui']}, API {record['api']} (pid {record['pid']}); "
        "`refine server stop` ends it"
    )


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server `refine server start` started."""
    from flows.environment import configure_environment

    configure_environment()
    from flows import local_server

    console.print("Prefect server stopped" if local_server.stop() else "no Prefect server was recorded")


@server_app.command("status")
def server_status() -> None:
    """Say whether a kept Prefect server is running for this REFINE_HOME."""
    from flows import local_server

    record = local_server.running()
    console.print(
        f"running: UI {record['ui']}, API {record['api']} (pid {record['pid']})"
        if record
        else "not running: each command starts Prefect's ephemeral server"
    )


def _register_corpus_commands() -> None:
    from flows import corpus_cli

    corpus_cli.register(app)


_register_corpus_commands()


def main() -> None:
    """The ``refine`` command: the Typer app, then a prompt exit.

    Once the command is done and every exit handler has run (Prefect's log and event workers
    drained, the local server stopped, logging flushed, temporary folders removed), tearing down
    the interpreter's modules still takes about 2 s here (Prefect, MLflow, pandas and friends);
    the last exit handler flushes stdout and stderr and ends the process with the command's
    status instead. Everything a command writes is committed or closed before that point."""
    import atexit

    outcome = {"code": 1}  # an exception that escapes the app: Python prints it, status 1

    def exit_now() -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(outcome["code"])

    atexit.register(exit_now)  # registered first, so it runs last
    from tasks.redaction import install_log_redaction, install_stream_redaction

    install_stream_redaction()  # print(), tracebacks and warnings: no secret reaches the terminal
    install_log_redaction()
    outcome["code"] = _run_app()
    sys.exit(outcome["code"])


def _run_app() -> int:
    """Run the Typer app and return the exit status. A usage error (an unknown option, a missing
    argument) is one line naming the command, not Typer's box; an exception that escapes a
    command prints its traceback with every secret redacted (status 1)."""
    import traceback

    try:  # Typer 0.29 carries its own copy of click
        from typer._click import exceptions as click_errors
    except ImportError:  # pragma: no cover - older Typer uses click itself
        from click import exceptions as click_errors  # type: ignore[no-redef]

    try:
        value = app(standalone_mode=False)
    except click_errors.NoArgsIsHelpError as exc:
        from typer import rich_utils

        rich_utils.rich_format_error(exc)
        return exc.exit_code
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "refine"
        err_console.print(
            f"[bold red]error:[/] {where}: {exc.format_message()} (see `{where} --help`)",
            highlight=False,
            soft_wrap=True,
        )
        return 2
    except typer.Abort:
        err_console.print("aborted", highlight=False)
        return 1
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except Exception as exc:  # a bug: its traceback, but never a secret from its message
        from tasks.redaction import redact

        sys.stderr.write(redact("".join(traceback.format_exception(exc))))
        return 1
    return value if isinstance(value, int) else 0


if __name__ == "__main__":  # pragma: no cover
    main()
