"""A Prefect server kept running between ``refine`` commands (``refine server start|stop|status``).

Without it every ``refine run`` starts Prefect's ephemeral server (seconds to tens of seconds
here) and stops it at the end. ``refine server start`` runs ``prefect server start`` on
127.0.0.1 over the same database (``$REFINE_HOME/prefect/prefect.db``), with the Prefect UI, in
a session of its own, and records it in ``$REFINE_HOME/prefect/server.json``; every later
command with the same ``REFINE_HOME`` and no ``PREFECT_API_URL`` of its own uses it.
``refine server stop`` ends it. A record whose server no longer answers is ignored.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tasks.storage import state_dir


def record_path() -> Path:
    return state_dir() / "prefect" / "server.json"


def _healthy(api: str, timeout: float = 1.0) -> bool:
    try:
        return httpx.get(f"{api}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def running() -> dict | None:
    """The recorded server when it answers, else None."""
    path = record_path()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if _healthy(record.get("api", "")) else None


def use_if_running() -> str | None:
    """Point this process at the recorded server (unless ``PREFECT_API_URL`` is set already);
    returns its API URL, or None when none is running."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    record = running()
    if record is None:
        return None
    os.environ["PREFECT_API_URL"] = record["api"]
    return record["api"]


def _free_port(preferred: int) -> int:
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(port: int = 4200, timeout: float = 120.0) -> dict:
    """Start the server unless one is recorded and answering; returns its record.

    Raises:
        RuntimeError: the server did not answer within ``timeout`` seconds (its log is named).
    """
    existing = running()
    if existing is not None:
        return existing | {"started": False}
    port = _free_port(port)
    log = state_dir() / "prefect" / "server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_UI_ENABLED"] = "true"
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    with log.open("ab") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                                 str(port)], env=env, stdout=handle, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + timeout
    while not _healthy(api):
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
            raise RuntimeError(f"the Prefect server did not start (see {log})")
        time.sleep(0.5)
    record = {"pid": proc.pid, "port": port, "api": api, "ui": f"http://127.0.0.1:{port}"}
    record_path().write_text(json.dumps(record))
    return record | {"started": True}


def stop(timeout: float = 15.0) -> bool:
    """Stop the recorded server (its whole process group); returns False when none was recorded."""
    path = record_path()
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    pid = int(record.get("pid", 0))
    if pid > 0:
        try:
            os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                os.killpg(pid, 0)
                time.sleep(0.2)
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    path.unlink(missing_ok=True)
    return True
