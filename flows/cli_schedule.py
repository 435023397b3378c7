"""``refine serve``, ``refine deploy`` and ``refine server``: scheduled sweeps and the kept Prefect server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, fail, user_errors

# The settings a flow run needs to find the same state as the CLI; a deployment passes them on.
# The task cache is shared through PREFECT_LOCAL_STORAGE_PATH: every worker must read the same one.
SHARED_SETTINGS = (
    "REFINE_HOME",
    "REFINE_DATA_DIR",
    "REFINE_LEDGER_URL",
    "REFINE_LEDGER_PASSWORD_FILE",
    "REFINE_EMBEDDING_CACHE",
    "OMP_WAIT_POLICY",
    "MLFLOW_TRACKING_URI",
    "REFINE_MLFLOW_UI_URL",
    "HF_HUB_OFFLINE",
    "REFINE_TORCH_THREADS",
    "PREFECT_LOCAL_STORAGE_PATH",
    "PREFECT_DEFAULT_RESULT_STORAGE_BLOCK",
    "MLFLOW_DISABLE_TELEMETRY",
    "DO_NOT_TRACK",
)


def _deployment_inputs(
    config_path: Path | None, cron: str | None, runner: str | None, *, runs_here: bool = False
) -> tuple[dict, str]:
    """(flow parameters, cron) for serve and deploy; fails with one line on bad input.

    ``runs_here`` (``refine serve``: this process runs the scheduled sweeps) also checks the
    config's data, models, judges and pool sizes as ``refine run`` does, so a sweep that cannot
    run fails now, not at its first scheduled time. ``refine deploy`` does not: its workers may
    see data and models this machine does not."""
    from evaluations.config import ConfigError, default_config, load_config, parse_config
    from flows.execution import dask_address
    from flows.preflight import check_inputs
    from flows.schedule import ScheduleError, check_cron

    try:
        config = load_config(config_path) if config_path else default_config()
        if runner:
            config = parse_config({**config.model_dump(mode="json"), "runner": runner}, source="--runner")
        if config.runner == "dask":
            raise ConfigError("a scheduled sweep cannot start its own Dask cluster: give runner: dask://host:port")
        address = dask_address(config.runner)
        chosen = check_cron(cron or config.schedule or "0 3 * * *")
        if runs_here:
            check_inputs(config)
    except (ConfigError, ScheduleError, *user_errors()) as exc:  # type: ignore[misc]  # a tuple built at run time
        fail(exc)
    return {"config": config.model_dump(mode="json"), "address": address}, chosen


def _require_prefect_server(command: str) -> None:
    if not os.environ.get("PREFECT_API_URL"):
        fail(
            f"refine {command} needs a Prefect server: start one with `refine server start` (kept for this "
            "REFINE_HOME and found by every later command), or set PREFECT_API_URL to a team server's API"
        )


def serve(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[CONFIG]", help="sweep YAML (default: the built-in sweep)")
    ] = None,
    cron: Annotated[
        str | None, typer.Option(help="cron schedule (default: the config's schedule, else '0 3 * * *')")
    ] = None,
    name: Annotated[str | None, typer.Option(help="deployment name (default: the config's name)")] = None,
    runner: Annotated[
        str | None,
        typer.Option(
            help="'dask://host:port': run the scheduled sweeps' embedding and "
            "cells on that Dask scheduler (overrides the config)"
        ),
    ] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="take over a deployment of this name that runs another config")
    ] = False,
) -> None:
    """Serve the sweep flow as a Prefect deployment on a cron schedule (needs a Prefect server).

    This process runs the scheduled sweeps itself until stopped; for runs picked up by workers
    use `refine deploy --pool`.
    """
    from flows.environment import ANNOUNCE, configure_environment

    # each run's start, end (with the reason of a failure) and MLflow link, as they happen (set
    # before flows.sweep is imported: its state hooks are attached only where runs are announced);
    # Prefect's own console lines, tracebacks included, stay in the flow run's log and UI
    os.environ[ANNOUNCE] = "1"
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    configure_environment()
    parameters, chosen = _deployment_inputs(config_path, cron, runner, runs_here=True)
    _require_prefect_server("serve")
    name = _free_name(name, parameters, replace)
    from flows.sweep import sweep

    console.print(
        f"serving deployment refine-sweep/{name} of sweep {parameters['config']['name']!r}, cron {chosen!r}"
        + (f", Dask scheduler {parameters['address']}" if parameters["address"] else "")
        + f"; run it now from another shell with: refine trigger {name}",
        highlight=False,
        soft_wrap=True,
    )
    # Prefect's own banner would print `prefect deployment run ...`, which needs PREFECT_API_URL
    # in the user's shell; the line above says `refine trigger`, which finds the server itself
    sweep.serve(name=name, cron=chosen, parameters=parameters, print_starting_message=False)


def deploy(
    config_path: Annotated[
        Path | None, typer.Argument(metavar="[CONFIG]", help="sweep YAML (default: the built-in sweep)")
    ] = None,
    pool: Annotated[str, typer.Option(help="Prefect work pool (type process; created when missing)")] = "refine",
    cron: Annotated[
        str | None, typer.Option(help="cron schedule (default: the config's schedule, else '0 3 * * *')")
    ] = None,
    name: Annotated[str | None, typer.Option(help="deployment name (default: the config's name)")] = None,
    runner: Annotated[str | None, typer.Option(help="'dask://host:port' for the sweeps' embedding and cells")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="take over a deployment of this name that runs another config")
    ] = False,
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
    name = _free_name(name, parameters, replace)
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
        f"workers with: refine worker --pool {pool}; run it now with: refine trigger {name}",
        highlight=False,
        soft_wrap=True,
    )


def _free_name(name: str | None, parameters: dict, replace: bool) -> str:
    """The deployment's name (default: the config's), never one that runs another config unless
    ``replace``; fails with one line otherwise."""
    from flows.schedule import ScheduleError, check_deployment_free, deployment_name

    config_name = parameters["config"]["name"]
    chosen = name or deployment_name(config_name)
    try:
        check_deployment_free(chosen, config_name, replace=replace)
    except ScheduleError as exc:
        fail(exc)
    return chosen


def trigger(
    name: Annotated[str, typer.Argument(help="deployment name (`refine serve`/`deploy` printed it), or FLOW/NAME")],
) -> None:
    """Run a deployment now, on the Prefect server of this REFINE_HOME (`refine server start`) or
    PREFECT_API_URL; the server (or a worker) runs it."""
    from flows.environment import configure_environment

    configure_environment()
    _require_prefect_server("trigger")
    from flows.schedule import ScheduleError, trigger

    try:
        run_id, run_name = trigger(name)
    except ScheduleError as exc:
        fail(exc)
    console.print(f"flow run {run_name} ({run_id}) of {name} scheduled now", highlight=False)


def worker(
    pool: Annotated[str, typer.Option(help="the work pool `refine deploy --pool` registered")] = "refine",
    name: Annotated[str | None, typer.Option(help="the worker's name (default: Prefect's)")] = None,
) -> None:
    """Start a Prefect worker for a work pool, on the Prefect server of this REFINE_HOME or
    PREFECT_API_URL, with this shell's shared settings: `prefect worker start --pool POOL` as it
    would need to be started by hand."""
    from flows.environment import configure_environment

    configure_environment()
    _require_prefect_server("worker")
    import subprocess
    import sys

    console.print(f"worker for pool {pool!r} on {os.environ['PREFECT_API_URL']} (Ctrl-C stops it)", highlight=False)
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, *(["--name", name] if name else [])]
    try:
        code = subprocess.call(command, env=os.environ.copy())
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code=code)


# ---------------------------------------------------------------------------------------
# refine server start / stop / status
# ---------------------------------------------------------------------------------------
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
        fail(exc)
    verb = "started" if record["started"] else "already running"
    console.print(
        f"Prefect server {verb}: UI {record['ui']}, API {record['api']} (pid {record['pid']}); "
        "`refine server stop` ends it"
    )


def server_stop() -> None:
    """Stop the server `refine server start` started."""
    from flows.environment import configure_environment

    configure_environment()
    from flows import local_server

    console.print("Prefect server stopped" if local_server.stop() else "no Prefect server was recorded")


def server_status() -> None:
    """Say whether a kept Prefect server is running for this REFINE_HOME."""
    from flows import local_server

    record = local_server.running()
    console.print(
        f"running: UI {record['ui']}, API {record['api']} (pid {record['pid']})"
        if record
        else "not running: each command starts Prefect's ephemeral server"
    )
