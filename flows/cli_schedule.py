"""``refine serve``, ``refine deploy`` and ``refine server``: scheduled sweeps and the kept Prefect server."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, fail

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
