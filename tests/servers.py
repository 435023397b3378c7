"""Real servers for the journey tests: ``prefect server start`` and processes that talk to it.

Everything listens on 127.0.0.1 and keeps its state in a temporary folder; each helper stops
what it started (the whole process group) when its context ends.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(home: Path) -> dict[str, str]:
    """The test process's environment without anything that points at another Prefect/MLflow."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_TRACKING"))}
    env.update(
        {
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "HF_HUB_OFFLINE": "1",
            "PYTHONUNBUFFERED": "1",
            "REFINE_HOME": str(home / "refine"),
            "PREFECT_HOME": str(home / "prefect-client"),
        }
    )
    return env


@contextmanager
def process(command: list[str], env: dict[str, str], log: Path, cwd: Path | None = None) -> Iterator[subprocess.Popen]:
    """A process in its own group, output to ``log``; the group is terminated (then killed) at exit."""
    handle = log.open("ab")
    proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True, cwd=cwd)
    try:
        yield proc
    finally:
        stop_group(proc)
        handle.close()


def stop_group(proc: subprocess.Popen, timeout: float = 15) -> None:
    from flows.watchdog import stop_process_group

    stop_process_group(proc, timeout)


def wait_for(check, timeout: float, what: str, interval: float = 0.5):
    """Call ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


@contextmanager
def prefect_server(home: Path) -> Iterator[str]:
    """``prefect server start`` on a free port with its own SQLite database; yields the API URL."""
    port = free_port()
    env = base_env(home)
    env.update(
        {
            "PREFECT_HOME": str(home / "prefect-server"),
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect-server.db'}",
            "PREFECT_UI_ENABLED": "false",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
    )
    api = f"http://127.0.0.1:{port}/api"
    with process(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env,
        home / "prefect-server.log",
    ):
        wait_for(lambda: httpx.get(f"{api}/health", timeout=2).status_code == 200, 120, "the Prefect server")
        yield api


class _RetryingClient(httpx.Client):
    """Retries 429 and 503 (a busy SQLite database behind the server) with backoff, as
    Prefect's own client does."""

    def request(self, *args, **kwargs) -> httpx.Response:
        for attempt in range(8):
            response = super().request(*args, **kwargs)
            if response.status_code not in (429, 503):
                return response
            time.sleep(min(0.5 * 2**attempt, 8))
        return response


class PrefectAPI:
    """The few REST calls the tests make, as a user's script or the UI would."""

    def __init__(self, api: str) -> None:
        self.api = api
        self.http = _RetryingClient(base_url=api, timeout=30)

    def deployment(self, flow: str, name: str) -> dict | None:
        response = self.http.get(f"/deployments/name/{flow}/{name}")
        return response.json() if response.status_code == 200 else None

    def run_deployment(self, deployment_id: str, parameters: dict | None = None) -> str:
        body = {"parameters": parameters} if parameters else {}
        response = self.http.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
        response.raise_for_status()
        return response.json()["id"]

    def flow_run(self, run_id: str) -> dict:
        response = self.http.get(f"/flow_runs/{run_id}")
        response.raise_for_status()
        return response.json()

    def wait_final(self, run_id: str, timeout: float) -> dict:
        final = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
        return wait_for(
            lambda: (r := self.flow_run(run_id))["state_type"] in final and r, timeout, f"flow run {run_id}"
        )

    def flow_runs(self, **flow_runs_filter: object) -> list[dict]:
        response = self.http.post("/flow_runs/filter", json={"flow_runs": flow_runs_filter, "limit": 200})
        response.raise_for_status()
        return response.json()

    def logs(self, run_id: str) -> list[dict]:
        response = self.http.post("/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200})
        response.raise_for_status()
        return response.json()

    def artifacts(self, run_id: str) -> list[dict]:
        response = self.http.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [run_id]}}})
        response.raise_for_status()
        return response.json()

    def retry(self, run_id: str) -> None:
        """What the UI's Retry button does: schedule the finished run again."""
        response = self.http.post(
            f"/flow_runs/{run_id}/set_state",
            json={
                "state": {"type": "SCHEDULED", "name": "AwaitingRetry", "message": "Retry from the test"},
                "force": True,
            },
        )
        response.raise_for_status()


# ---- PostgreSQL ---------------------------------------------------------------------------------
@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on 127.0.0.1 (deploy/rehearse.py's, loopback trusted); yields
    its SQLAlchemy URL."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "rehearse", Path(__file__).resolve().parents[1] / "deploy" / "rehearse.py"
    )
    rehearse = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rehearse)
    if rehearse.postgres_bindir() is None:
        import pytest

        pytest.skip("PostgreSQL is not installed (Debian's postgresql package; .ci/run installs it)")
    with rehearse.postgres() as address:
        yield f"postgresql+psycopg2://refine@{address}/postgres"


def task_runs_since(t0: float, timeout: float = 60.0) -> list:
    """The task runs (Prefect's ``TaskRun``) whose state changed since ``t0``, once final.

    Prefect's server records a task run's states from the events its client sends, a moment
    after the run moved on: right after a sweep, its last task can still read Running (a cached
    task goes Pending, Running, Cached). So this waits until every state it reads is final."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import TaskRunSort

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(sort=TaskRunSort.EXPECTED_START_TIME_DESC, limit=200)
            recent = [r for r in runs if r.state is not None and r.state.timestamp.timestamp() >= t0]
            if all(r.state.is_final() for r in recent) or time.monotonic() > deadline:
                return recent
            time.sleep(0.5)


def task_states_since(t0: float, timeout: float = 60.0) -> list[tuple[str, str]]:
    """(task name, final state name) of :func:`task_runs_since`."""
    return [(r.name.rsplit("-", 1)[0], r.state.name) for r in task_runs_since(t0, timeout)]


def flow_run_log(flow_run_id: str, timeout: float = 60.0) -> list[str]:
    """The messages of a finished flow run's log, once its last line ("Finished in state ...")
    has reached the server (a client sends its logs in batches, a moment later)."""
    from uuid import UUID

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    query = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(flow_run_id)]))

    def finished() -> list[str] | None:
        with get_client(sync_client=True) as client:
            logs = client.read_logs(query, limit=200)
        # the flow run's own last line, not one of its task runs' (they log the same words)
        done = any(log.task_run_id is None and log.message.startswith("Finished in state") for log in logs)
        return [log.message for log in logs] if done else None

    return wait_for(finished, timeout, f"the last log line of flow run {flow_run_id}")


def flow_run_events(flow_run_id: str, timeout: float = 60.0) -> list[str]:
    """The names of the events about a flow run (``prefect.flow-run.<id>``), once the event of its
    final state has been stored: a client sends its events in batches, and the server stores them
    a moment later, in the order they were sent."""
    from prefect.settings import PREFECT_API_URL

    api = PrefectAPI(str(PREFECT_API_URL.value()))
    body = {"filter": {"resource": {"id": [f"prefect.flow-run.{flow_run_id}"]}}, "limit": 50}
    final = {f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Crashed", "Cancelled")}

    def stored() -> list[str] | None:
        response = api.http.post("/events/filter", json=body)
        response.raise_for_status()
        names = [event["event"] for event in response.json()["events"]]
        return names if final & set(names) else None

    return wait_for(stored, timeout, f"the final state event of flow run {flow_run_id}")
