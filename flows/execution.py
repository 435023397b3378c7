"""Where tasks run: threads in this process (the default) or the workers of a Dask cluster.

``runner: local`` keeps Prefect's thread pool and runs chunked work one piece after the
other (the model already uses every core). ``runner: dask`` starts a local cluster of
``execution.workers`` processes for the sweep; ``dask://host:port`` connects to a running
scheduler. With Dask, corpus chunks, judging and refinement blocks are submitted to the
cluster; loading, feedback selection, scoring and MLflow logging stay in the flow's process.

Workers of a remote cluster must see the same state as the flow: a shared ``REFINE_HOME``
(or the same paths), the Prefect API (``PREFECT_API_URL``), the result storage, the ledger
(``REFINE_LEDGER_URL``) and the data folder.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from evaluations.config import ConfigError, check_runner


def dask_address(runner: str) -> str | None:
    """The scheduler address of a ``dask://`` runner, as Dask spells it (``tcp://``)."""
    check_runner(runner)
    if runner in ("local", "dask"):
        return None
    scheme, rest = runner.split("://", 1)
    return f"{'tcp' if scheme == 'dask' else scheme}://{rest}"


def check_scheduler(runner: str, timeout: float = 5.0) -> None:
    """Fail early, with the address in the message, when a ``dask://`` scheduler is not listening."""
    address = dask_address(runner)
    if address is None:
        return
    host, _, port = address.split("://", 1)[1].rpartition(":")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ConfigError(
            f"runner {runner!r}: no Dask scheduler answers at {host}:{port} ({exc.strerror or exc})"
        ) from None


def require_prefect_dask() -> None:
    """The Dask runner's packages are installed (found, not imported: importing them imports Prefect,
    whose settings must not be read before the command has chosen its Prefect server)."""
    from importlib.util import find_spec

    if find_spec("prefect_dask") is None or find_spec("distributed") is None:
        raise ConfigError("the Dask runner needs the 'dask' extra: pip install 'refine-eval[dask]'")


@contextmanager
def dask_cluster(runner: str, workers: int = 2) -> Iterator[str | None]:
    """Yield the scheduler address to submit to, or None for the local runner.

    For ``runner == "dask"`` a ``LocalCluster`` of ``workers`` single-threaded processes lives
    as long as the context; each worker embeds with one torch thread.
    """
    if runner == "local":
        yield None
        return
    require_prefect_dask()
    address = dask_address(runner)
    if address is not None:
        check_scheduler(runner)
        yield address
        return
    from distributed import LocalCluster

    previous = os.environ.get("REFINE_TORCH_THREADS")
    os.environ["REFINE_TORCH_THREADS"] = "1"  # inherited by the worker processes
    try:
        cluster = LocalCluster(
            n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1"
        )
    finally:
        if previous is None:
            os.environ.pop("REFINE_TORCH_THREADS", None)
        else:
            os.environ["REFINE_TORCH_THREADS"] = previous
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


def task_runner(address: str | None) -> Any:
    """A Prefect task runner for flows: Dask's for an address, else None (Prefect's default)."""
    if address is None:
        return None
    from prefect_dask import DaskTaskRunner

    return DaskTaskRunner(address=address)


def with_runner(flow_fn: Any, address: str | None) -> Any:
    """The Prefect flow ``flow_fn`` with the Dask task runner for ``address`` (unchanged for None)."""
    runner = task_runner(address)
    return flow_fn if runner is None else flow_fn.with_options(task_runner=runner)


def _runs_in_threads() -> bool:
    from prefect.context import FlowRunContext
    from prefect.task_runners import ThreadPoolTaskRunner

    context = FlowRunContext.get()
    return context is None or context.task_runner is None or isinstance(context.task_runner, ThreadPoolTaskRunner)


def fan_out(task: Any, calls: Sequence[dict[str, Any]]) -> list[Any]:
    """Run ``task`` once per keyword set and return the results in order.

    On a Dask runner every call is submitted at once and the cluster spreads them over its
    workers; on the thread runner they run one after the other in this process.
    """
    if _runs_in_threads():
        return [task(**kwargs) for kwargs in calls]
    return [state.result() for state in fan_out_states(task, calls)]


def fan_out_states(task: Any, calls: Sequence[dict[str, Any]]) -> list[Any]:
    """:func:`fan_out`, returning the final Prefect states (``state.name == "Cached"`` tells
    a result served from the task cache from one computed now)."""
    if _runs_in_threads():
        return [task(**kwargs, return_state=True) for kwargs in calls]
    futures = [task.submit(**kwargs) for kwargs in calls]
    for future in futures:
        future.wait()
    return [future.state for future in futures]
