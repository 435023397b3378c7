"""Nothing outlives a killed ``refine`` command.

The CLI starts processes of its own: Prefect's ephemeral API server, Dask workers. When it
ends normally it stops them; when it is killed (``kill -9``, an OOM kill) they would run on.
:func:`guard` starts a small watchdog in its own session that follows the command's process
tree and, once the command is gone, terminates (then kills) whatever it had started.
:func:`crash_orphaned_flow_runs` is the other half: the next run marks the flow runs that a
killed command left RUNNING as CRASHED.

Run as ``python -m flows.watchdog PID``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

HOST_TAG = "refine-host:"
PID_TAG = "refine-pid:"


def stop_process_group(proc: subprocess.Popen, timeout: float = 15.0) -> None:
    """Stop a child started with ``start_new_session=True`` and everything it started: SIGTERM
    to its process group, SIGKILL after ``timeout`` seconds."""
    import signal

    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=timeout)


_GUARDS: dict[int, subprocess.Popen] = {}


def guard() -> subprocess.Popen | None:
    """Start the watchdog for this process, once (None where it cannot run, e.g. without psutil).
    It follows every descendant, also those started after it."""
    try:
        import psutil  # noqa: F401
    except ImportError:  # pragma: no cover - psutil is a dependency
        return None
    pid = os.getpid()
    if pid not in _GUARDS or _GUARDS[pid].poll() is not None:
        _GUARDS[pid] = subprocess.Popen(
            [sys.executable, "-m", "flows.watchdog", str(pid)],
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    return _GUARDS[pid]


def watch(pid: int, interval: float = 0.5, grace: float = 5.0) -> list[int]:
    """Follow ``pid``'s descendants until ``pid`` exits; then end those still running and
    return their pids. psutil compares start times, so a reused pid is never touched."""
    import psutil

    me = os.getpid()
    try:
        parent = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    known: dict[int, psutil.Process] = {}
    while parent.is_running() and parent.status() != psutil.STATUS_ZOMBIE:
        try:
            for child in parent.children(recursive=True):
                if child.pid != me:
                    known.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            break
        time.sleep(interval)
    left = [p for p in known.values() if p.is_running()]
    for p in left:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(left, timeout=grace)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    return [p.pid for p in left]


def run_tags() -> list[str]:
    """Tags that let a later run tell whether the process behind a flow run is still alive."""
    return [f"{HOST_TAG}{socket.gethostname()}", f"{PID_TAG}{os.getpid()}"]


@contextmanager
def without_heartbeats() -> Iterator[None]:
    """Flow runs started inside send Prefect no heartbeats.

    Prefect gives every flow run a thread that posts a heartbeat event every 180 s (for automations
    that call a silent run crashed) and joins it when the run ends, after sleeping in 1 s steps:
    up to a second at the end of each flow run, 0.8 s of the default sweep's cached re-run of
    about 9 s (py-spy). A command's flow runs run in the command's own process, where the watchdog
    (:func:`guard`, :func:`crash_orphaned_flow_runs`) marks a killed one CRASHED. Runs that workers
    or ``refine serve`` start keep Prefect's heartbeats."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    with temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield


@contextmanager
def untagged_tasks() -> Iterator[None]:
    """Task runs started inside carry none of the flow run's tags (:func:`run_tags`).

    The tags are for flow runs (:func:`crash_orphaned_flow_runs` finds a killed command's flow runs
    by them; their task runs by flow run). A tagged task run asks the Prefect server for a
    concurrency slot per tag before it starts, and while the model embeds on both cores the
    server answered that in up to 2.5 s: the default sweep's first run lost about 10 s between its
    tasks (``benchmarks/first_run.py``, "between chunk tasks"), and its cached re-run about 2 s
    in the sweep's own load and query tasks. Only task calls go inside: a sub-flow started here
    would be untagged too, and the watchdog could not find it."""
    from prefect.context import TagsContext

    with TagsContext(current_tags=set()):
        yield


def crash_orphaned_flow_runs() -> list[str]:
    """Mark CRASHED the RUNNING or PENDING flow runs tagged with this host and a pid that no
    longer exists (left by a killed command), and their task runs still RUNNING or PENDING;
    returns the flow runs' names."""
    import psutil
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
        TaskRunFilter,
        TaskRunFilterState,
        TaskRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    host = f"{HOST_TAG}{socket.gethostname()}"
    crashed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])),
                tags=FlowRunFilterTags(all_=[host]),
            ),
            limit=200,
        )
        for run in runs:
            if run.state is None or run.state.type not in (StateType.RUNNING, StateType.PENDING):
                continue
            pids = [t.removeprefix(PID_TAG) for t in run.tags if t.startswith(PID_TAG)]
            if not pids or not pids[0].isdigit() or psutil.pid_exists(int(pids[0])):
                continue
            why = f"the refine process {pids[0]} that ran it is gone"
            client.set_flow_run_state(run.id, Crashed(message=why), force=True)
            crashed.append(run.name)
            unfinished = TaskRunFilterStateType(any_=[StateType.RUNNING, StateType.PENDING])
            for task_run in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])),
                task_run_filter=TaskRunFilter(state=TaskRunFilterState(type=unfinished)),
                limit=200,
            ):
                client.set_task_run_state(task_run.id, Crashed(message=why), force=True)
    return crashed


if __name__ == "__main__":  # pragma: no cover - exercised through the CLI in tests
    watch(int(sys.argv[1]))
