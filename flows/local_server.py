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
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path
from typing import IO, cast

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
    _seed_database()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env["PREFECT_UI_ENABLED"] = "true"
    env["PREFECT_UI_API_URL"] = f"http://127.0.0.1:{port}/api"
    with log.open("ab") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
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


# ---- the per-command server, started early -------------------------------------------------
# Prefect starts its ephemeral API server on a command's first API call: it imports the server
# application in the calling process first (about 6 s here) and then waits for a uvicorn child
# doing the same (another 8 s), all after the command's own imports. ``refine run`` instead starts
# the same uvicorn child before importing anything heavy, so the child's start-up overlaps the
# command's imports on the second core, and waits for it (:func:`ready`) just before the first
# API call. Same server, same database, same end: it stops when the command exits (the watchdog
# ends it when the command is killed).
_EPHEMERAL: dict[str, object] = {}


def start_ephemeral() -> str | None:
    """Start this command's Prefect API server in the background and point this process at it;
    returns its API URL. None (nothing started) when ``PREFECT_API_URL`` is set (a kept or team
    server), one was started already, or Prefect is imported already (its settings are read at
    import: the command is running inside another program, e.g. a test, whose Prefect it uses)."""
    if os.environ.get("PREFECT_API_URL") or _EPHEMERAL or "prefect" in sys.modules:
        return None
    import atexit

    # The command binds the port and hands the socket to uvicorn (--fd): no other process can
    # take the port between choosing it and the server's start.
    _wait_for_first_start()
    if "first_start_lock" in _EPHEMERAL:  # this command starts the home's Prefect database
        _EPHEMERAL["seeded"] = _seed_database()
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    log = state_dir() / "prefect" / "ephemeral-server.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    env = NO_BLOCK_REGISTRATION | os.environ
    env |= {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    with log.open("wb") as handle:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--factory",
                "prefect.server.api.server:create_app",
                "--fd",
                str(sock.fileno()),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=(sock.fileno(),),
            start_new_session=True,
        )  # Ctrl-C reaches the command, which then stops it
    sock.close()  # the server holds its own copy
    api = f"http://127.0.0.1:{port}/api"
    _EPHEMERAL.update(proc=proc, api=api, log=log)
    os.environ["PREFECT_API_URL"] = api
    os.environ["REFINE_EPHEMERAL_API_URL"] = api  # no UI behind it: no flow-run links to print
    atexit.register(stop_ephemeral)
    return api


# A command's server registers no block types: nothing a command runs reads them, and registering
# them imports every installed Prefect collection first (about 1.5 s of CPU per start here, 2 s on a
# new database). The kept server (`refine server start`), whose UI lists them, still does. Both
# settings: with memoisation on, Prefect would record the skipped registration as done.
NO_BLOCK_REGISTRATION = {
    "PREFECT_API_BLOCKS_REGISTER_ON_START": "false",
    "PREFECT_MEMOIZE_BLOCK_AUTO_REGISTRATION": "false",
}


def _database_ready_marker() -> Path:
    return state_dir() / "prefect" / "database.ready"


# ---- a new home's database: migrated once per machine and Prefect version --------------------
# Prefect migrates a new SQLite database as its server starts: about 6 s of CPU here, in every new
# home, before the server answers. The first command on a machine whose server migrated a new
# database keeps a copy of it, taken when the server first answers (nothing in it yet but the
# schema and its alembic version), in $REFINE_CACHE_DIR (default ~/.cache/refine-eval), one per
# Prefect version; every later new home starts from a copy of that file. It is only a cache: when
# it is missing, unreadable or not empty, the server migrates the new database as before.


def cache_dir() -> Path:
    """This machine's cache for what does not belong to one home: ``$REFINE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/refine-eval`` (``~/.cache/refine-eval``)."""
    configured = os.environ.get("REFINE_CACHE_DIR")
    if configured:
        return Path(configured).expanduser().resolve()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "refine-eval"


def database_template() -> Path:
    """The migrated, empty Prefect database of the installed Prefect version (maybe not made yet)."""
    from importlib.metadata import version

    return cache_dir() / f"prefect-{version('prefect')}-empty.db"


def home_database() -> Path | None:
    """The home's Prefect SQLite file; None when Prefect's database is elsewhere (PostgreSQL)."""
    url = os.environ.get("PREFECT_SERVER_DATABASE_CONNECTION_URL") or os.environ.get(
        "PREFECT_API_DATABASE_CONNECTION_URL"
    )
    prefix = "sqlite+aiosqlite:///"
    if not url or not url.startswith(prefix) or "?" in url or ":memory:" in url:
        return None
    return Path(url[len(prefix) :])


def _empty_schema(db: sqlite3.Connection) -> bool:
    """The database is sound and holds a migrated schema only: one alembic version, no other row.
    Checked when the template is kept and again before a new home copies it."""
    if db.execute("PRAGMA quick_check").fetchone()[0] != "ok":
        return False
    tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    if "alembic_version" not in tables or db.execute("SELECT count(*) FROM alembic_version").fetchone()[0] != 1:
        return False
    return not any(db.execute(f'SELECT 1 FROM "{t}"').fetchone() for t in tables if t != "alembic_version")


def _usable_template(template: Path) -> bool:
    """The template is usable (a damaged one is removed, so that the next new home's server
    migrates and keeps a new one)."""
    if not template.is_file():
        return False
    try:
        with closing(sqlite3.connect(f"file:{template}?mode=ro", uri=True)) as db:
            sound = _empty_schema(db)
    except sqlite3.Error:
        sound = False
    if not sound:
        template.unlink(missing_ok=True)
    return sound


def _seed_database() -> bool:
    """Start a new home's database as a copy of the template; True when it did."""
    database = home_database()
    if database is None or database.exists():
        return False
    try:
        template = database_template()
        if not _usable_template(template):
            return False
        database.parent.mkdir(parents=True, exist_ok=True)
        copy = database.with_name(f".{database.name}.{os.getpid()}.seed")
        shutil.copyfile(template, copy)
        try:
            os.link(copy, database)  # never over a database a server has begun meanwhile
        finally:
            copy.unlink(missing_ok=True)
    except (OSError, RuntimeError):  # RuntimeError: Path.home() without a home directory
        return False
    return True


def _keep_template(database: Path) -> None:
    """Copy a database its server has just migrated (and nothing else) to the template."""
    try:
        template = database_template()
    except RuntimeError:  # Path.home() without a home directory: no machine cache
        return
    if template.exists():
        return
    copy = template.with_name(f".{template.name}.{os.getpid()}.tmp")
    try:
        template.parent.mkdir(parents=True, exist_ok=True)
        with closing(sqlite3.connect(database)) as source, closing(sqlite3.connect(copy)) as target:
            source.backup(target)
            target.execute("PRAGMA journal_mode=DELETE")  # read without -wal/-shm files (Prefect sets WAL)
            empty = _empty_schema(target)
        if not empty:
            copy.unlink()
            return
        os.replace(copy, template)
    except (OSError, sqlite3.Error):
        copy.unlink(missing_ok=True)


def _wait_for_first_start() -> None:
    """On a home whose Prefect database was never migrated, take the home's start lock (waiting
    while another command holds it) until this command's server answers: Prefect migrates the
    database as its server starts, and two servers migrating one new SQLite file at once fail
    ("the local Prefect server exited with status 3"). Once one server has answered, the marker
    file says the database is ready and later commands start without the lock."""
    import fcntl

    marker = _database_ready_marker()
    if marker.exists():
        return
    marker.parent.mkdir(parents=True, exist_ok=True)
    handle = open(marker.with_name("database.lock"), "a+b")  # held until ready() or stop_ephemeral()
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    if marker.exists():  # another command finished the first start while this one waited
        handle.close()
        return
    _EPHEMERAL["first_start_lock"] = handle


def _release_first_start(succeeded: bool) -> None:
    handle = cast("IO[bytes] | None", _EPHEMERAL.pop("first_start_lock", None))
    if handle is None:
        return
    if succeeded:
        if _EPHEMERAL.get("seeded"):
            how = f"copied from {database_template()}"
        else:
            how = "migrated by its first server"
            database = home_database()
            if database is not None:
                _keep_template(database)
        _database_ready_marker().write_text(how + "\n")
    handle.close()  # closing the file ends the lock


def ready(timeout: float | None = None) -> None:
    """Wait until the server :func:`start_ephemeral` started answers (no-op without one).

    Raises:
        RuntimeError: it exited or did not answer within ``timeout`` seconds (default
            ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS``); the message quotes its log.
    """
    if not _EPHEMERAL or _EPHEMERAL.get("ready"):
        return
    proc: subprocess.Popen = _EPHEMERAL["proc"]  # type: ignore[assignment]
    api = str(_EPHEMERAL["api"])
    limit = (
        timeout
        if timeout is not None
        else float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", 90))
    )
    deadline = time.monotonic() + limit
    while not _healthy(api, timeout=2.0):
        if proc.poll() is not None or time.monotonic() > deadline:
            log = Path(str(_EPHEMERAL["log"]))
            tail = log.read_text(errors="replace").strip().splitlines()[-3:] if log.exists() else []
            why = (
                f"exited with status {proc.returncode}"
                if proc.poll() is not None
                else f"did not answer in {limit:.0f} s"
            )
            _release_first_start(False)
            raise RuntimeError(f"the local Prefect server {why} (log {log}){': ' + ' | '.join(tail) if tail else ''}")
        time.sleep(0.1)
    _release_first_start(True)
    _EPHEMERAL["ready"] = True


def stop_ephemeral() -> None:
    """Stop the server :func:`start_ephemeral` started (no-op without one)."""
    _release_first_start(False)
    proc = _EPHEMERAL.get("proc")
    if isinstance(proc, subprocess.Popen):
        from flows.watchdog import stop_process_group

        stop_process_group(proc, timeout=5.0)
    if _EPHEMERAL.get("api") and os.environ.get("PREFECT_API_URL") == _EPHEMERAL["api"]:
        os.environ.pop("PREFECT_API_URL", None)
        os.environ.pop("REFINE_EPHEMERAL_API_URL", None)
    _EPHEMERAL.clear()
