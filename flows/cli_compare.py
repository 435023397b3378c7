"""``refine compare``, ``refine experiments`` and ``refine ui``: what a sweep measured, from MLflow."""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Annotated, NoReturn

import typer
from rich.table import Table

from flows.cli_run import public_cells, results_table
from flows.console import console, err_console, fail
from flows.preflight import check_tracking_store


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
    show_degraded: Annotated[
        bool,
        typer.Option(
            "--degraded", help="also show cells whose judgments are incomplete (marked; they are not results)"
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Compare cells from MLflow: MAP per method, ΔMAP and significance as stored by the sweep.

    p (BH) is the value the sweep stored (its one Benjamini–Hochberg family); filtering the
    cells shown never changes it. A cell whose judgments are incomplete (failed, held back by the
    budget) is not a result: it is left out, and counted, unless --degraded asks for it.
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
        fail(exc)
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
        fail(exc)
    cells, left_out = _complete(cells, show_degraded)
    if layout == "paper":
        from flows.report import paper_table

        try:
            table = paper_table(cells)
        except ReportError as exc:
            fail(exc)
        if fmt in ("table", "markdown"):
            print(table.markdown())
        if fmt == "table":
            print()
        if fmt in ("table", "latex"):
            print(table.latex())
    elif fmt == "table":
        console.print(
            results_table(f"{experiment}: {len(cells)} cells" + (f" of sweep {parent}" if parent else ""), cells)
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
        out = {"experiment_id": experiment_id, "parent_run_id": parent, "cells": public_cells(cells)}
        print(json.dumps(out | {"degraded_cells": public_cells(left_out)}, default=float))


def _complete(cells: list[dict], show_degraded: bool) -> tuple[list[dict], list[dict]]:
    """(cells to show, degraded cells left out); says on stderr what was left out and why, and
    marks the degraded cells shown with --degraded."""
    from flows.report import degraded

    bad = [c for c in cells if degraded(c)]
    if not bad:
        return cells, []
    failed = sum(int(c.get("judgments_failed") or 0) for c in bad)
    if show_degraded:
        err_console.print(
            f"[bold yellow]{len(bad)} of these cells are incomplete[/] ({failed} judgments failed or held back): "
            "marked 'incomplete'; they are not results until `refine run` completes them",
            highlight=False,
            soft_wrap=True,
        )
        return [c | {"judge": f"{c['judge']} (incomplete)"} if degraded(c) else c for c in cells], []
    err_console.print(
        f"[bold yellow]{len(bad)} cells left out:[/] their judgments are incomplete ({failed} failed or held back); "
        "the same `refine run` asks only for those; --degraded shows them, marked",
        highlight=False,
        soft_wrap=True,
    )
    return [c for c in cells if not degraded(c)], bad


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
        fail(exc)
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
        complete = [r for r in cells if not _incomplete(r)]  # a cell with failed judgments is no result
        best = max(complete, key=lambda r: r.data.metrics.get("refined.map", float("-inf")), default=None)
        rows.append(
            {
                "name": exp.name,
                "experiment_id": exp.experiment_id,
                "sweeps": len(sweeps),
                "cells": len(cells),
                "incomplete_cells": len(cells) - len(complete),
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
            str(r["cells"]) + (f" ({r['incomplete_cells']} incomplete)" if r["incomplete_cells"] else ""),
            str(r["last_run"]),
            "–" if r["best_refined_map"] is None else f"{r['best_refined_map']:.4f}",
            str(r["best_run"] or "–"),
        )
    console.print(table)
    if not rows:
        console.print("no sweeps logged yet: `refine run` runs the default sweep")


def ui(
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Start the MLflow UI on 127.0.0.1 over the same tracking store and print its URL.

    The server runs in its own process group and is stopped with everything it started when
    this command ends (Ctrl-C or a termination signal). It is one uvicorn worker (a UI for one
    person; MLflow's default of four starts four processes) whose output, access log off and
    start-up warnings included, goes to ``$REFINE_HOME/mlflow-ui.log``; when it fails, the log's
    last lines are printed.
    """
    import signal
    import subprocess

    from flows.environment import configure_environment
    from tasks.storage import state_dir

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
        "--workers",
        "1",
        "--uvicorn-opts",
        "--no-access-log",
    ]
    os.environ["REFINE_MLFLOW_UI_URL"] = f"http://127.0.0.1:{port}"
    tracker = Tracker(uri)
    found = tracker.client.search_experiments(order_by=["last_update_time DESC"], max_results=1)
    where = tracker.runs_table_url(found[0].experiment_id) if found else f"http://127.0.0.1:{port}"
    log = state_dir() / "mlflow-ui.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    console.print(f"MLflow UI: {where}  (store: {uri}; server log: {log}; Ctrl-C stops it)", soft_wrap=True)
    # MLflow's server imports Starlette's deprecated WSGI middleware: a warning per process
    quiet = os.environ | {"PYTHONWARNINGS": "ignore:starlette.middleware.wsgi is deprecated"}
    with log.open("ab") as handle:
        server = subprocess.Popen(command, start_new_session=True, stdout=handle, stderr=subprocess.STDOUT, env=quiet)

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
    if code:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        err_console.print(f"the MLflow UI server exited with status {code}; the end of {log}:", soft_wrap=True)
        err_console.print("\n".join(tail), markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code=code)


def _incomplete(run) -> bool:
    """A cell run whose judgments are incomplete (see :func:`flows.report.degraded`)."""
    metrics = run.data.metrics
    return bool(metrics.get("judge_failed_queries") or metrics.get("judgments_failed"))
