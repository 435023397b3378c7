"""The ``refine`` command line.

User errors (unknown dataset, missing files, bad options, a model that does not exist) print
one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer
from rich.table import Table

from flows import cli_compare, cli_run, cli_schedule
from flows.cli_run import EXIT_JUDGMENTS_FAILED  # noqa: F401 - its old home
from flows.cli_schedule import SHARED_SETTINGS  # noqa: F401 - its old home
from flows.console import console, err_console, fail
from flows.console import user_errors as _user_errors
from flows.preflight import check_tracking_store, preflight  # noqa: F401 - their old home

app = typer.Typer(
    add_completion=False, no_args_is_help=True, help="LLM-guided test-time query refinement: evaluate and use it."
)
datasets_app = typer.Typer(help="List the registered benchmarks, or show one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")
server_app = typer.Typer(
    help="A local Prefect server kept between commands (faster runs, the Prefect UI).", no_args_is_help=True
)
app.add_typer(server_app, name="server")


# ---------------------------------------------------------------------------------------
# refine datasets
# ---------------------------------------------------------------------------------------
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
        fail(exc)
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


# The commands, in the order `refine --help` lists them.
datasets_app.callback()(datasets_list)
datasets_app.command("show")(datasets_show)

app.command()(cli_run.demo)
app.command()(cli_run.run)
app.command()(cli_compare.compare)
app.command()(cli_compare.experiments)
app.command()(cli_compare.ui)
app.command()(cli_schedule.serve)
app.command()(cli_schedule.deploy)
app.command()(cli_schedule.trigger)
app.command()(cli_schedule.worker)
server_app.command("start")(cli_schedule.server_start)
server_app.command("stop")(cli_schedule.server_stop)
server_app.command("status")(cli_schedule.server_status)


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
    from embedders.models import sleeping_openmp_threads

    sleeping_openmp_threads()  # inherited by the Prefect server, workers and Dask processes it starts
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
