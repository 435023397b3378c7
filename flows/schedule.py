"""Scheduling checks shared by ``refine serve``: a cron string is validated the way the Prefect
server will validate it, before anything is registered."""

from __future__ import annotations

from typing import Any, cast


class ScheduleError(ValueError):
    """A schedule the Prefect server would refuse; the message names it and says why."""


def check_cron(cron: str) -> str:
    """Return ``cron`` when Prefect accepts it as a cron schedule, else raise :class:`ScheduleError`.

    Example:
        >>> check_cron("0 3 * * *")
        '0 3 * * *'
    """
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except ValidationError as exc:
        reason = exc.errors()[0].get("msg", "invalid") if exc.errors() else "invalid"
        raise ScheduleError(
            f"--cron {cron!r} is not a valid cron schedule ({reason}); "
            "expected five fields, e.g. '0 3 * * *' for 03:00 every day"
        ) from None
    return cron


def ensure_process_pool(pool: str) -> bool:
    """Create the ``process`` work pool ``pool`` on the Prefect server unless it exists;
    returns True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            return False
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
            return True


def deploy_to_pool(parameters: dict, *, name: str, pool: str, cron: str | None, env: dict[str, str]) -> str:
    """Register the sweep flow as a deployment of work pool ``pool`` (type ``process``), run from
    this checkout's source by whichever ``prefect worker start --pool POOL`` picks it up; returns
    the deployment id. ``env`` becomes the flow run's environment (job variables), for the
    settings the workers must share (state folder, tracking URI, ledger, data folder)."""
    from pathlib import Path

    from prefect import Flow

    ensure_process_pool(pool)
    root = Path(__file__).resolve().parents[1]
    # A module entrypoint, not "flows/sweep.py:sweep": loaded from a file path the flow's module
    # would be "sweep", and functions it sends to a Dask cluster would not unpickle there.
    # from_source is sync-compatible: outside an event loop it returns the Flow itself
    flow = cast("Flow[..., Any]", Flow.from_source(source=str(root), entrypoint="flows.sweep.sweep"))
    deployment_id = flow.deploy(
        name=name,
        work_pool_name=pool,
        parameters=parameters,
        cron=cron,
        build=False,
        push=False,
        print_next_steps=False,
        ignore_warnings=True,  # Prefect's advice to use .serve for local work: refine serve is that
        job_variables={"env": env} if env else None,
        description=f"refine sweep {parameters['config'].get('name')}",
    )
    return str(deployment_id)


def deployment_name(config_name: str) -> str:
    """The deployment name a sweep config gets by default: its name (``nightly``), so two configs
    never share one deployment unless told to."""
    return config_name


def check_deployment_free(name: str, config_name: str, *, replace: bool) -> None:
    """Raise :class:`ScheduleError` when ``refine-sweep/<name>`` exists and runs another sweep config
    (``replace`` allows it); the same config may be deployed again (its settings are updated)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            existing = client.read_deployment_by_name(f"refine-sweep/{name}")
        except ObjectNotFound:
            return
    other = ((existing.parameters or {}).get("config") or {}).get("name")
    if other != config_name and not replace:
        raise ScheduleError(
            f"deployment refine-sweep/{name} already runs sweep {other!r}, not {config_name!r}: give another "
            "--name, or --replace to make it run this config"
        )


def trigger(name: str) -> tuple[str, str]:
    """Start a flow run of deployment ``refine-sweep/<name>`` (or ``FLOW/NAME``) now; returns its
    (id, name). Raises :class:`ScheduleError` naming the deployments there are when none is called so."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    full = name if "/" in name else f"refine-sweep/{name}"
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(full)
        except ObjectNotFound:
            names = sorted(d.name for d in client.read_deployments())
            raise ScheduleError(
                f"no deployment {full} on this Prefect server; deployments of refine-sweep: "
                + (", ".join(names) if names else "none (`refine serve` or `refine deploy` registers one)")
            ) from None
        run = client.create_flow_run_from_deployment(deployment.id)
    return str(run.id), str(run.name)
