"""Starting the team's services natively for the rehearsal (and the tests' PostgreSQL): free ports,
waiting for health, background processes in their own session, a throwaway PostgreSQL cluster."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path

from flows.watchdog import stop_process_group


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:
            last = exc
        time.sleep(0.3)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def http_ok(url: str) -> bool:
    import httpx

    return httpx.get(url, timeout=2).status_code == 200


@contextmanager
def background(command: list[str], env: dict[str, str], log: Path):
    """A process in its own group, output to ``log``; the group is stopped at exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            stop_process_group(proc, timeout=20)


# ---- PostgreSQL -----------------------------------------------------------------------------------
def postgres_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian's postgresql package)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return found[-1].parent if found else None


@contextmanager
def postgres(databases: tuple[str, ...] = (), password_file: Path | None = None):
    """A throwaway PostgreSQL cluster on 127.0.0.1, superuser ``refine``, with ``databases``
    created; yields ``host:port``; removed at exit. With ``password_file`` TCP connections need
    that password (scram-sha-256), as in compose; without, loopback is trusted (tests)."""
    bindir = postgres_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
    root = Path(tempfile.mkdtemp(prefix="refine-pg-"))
    as_user: list[str] = []
    auth = ["--auth=trust"]
    if password_file is not None:
        shutil.copy(password_file, root / "pwfile")
        auth = ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={root / 'pwfile'}"]
    if os.geteuid() == 0:  # the server refuses to run as root
        for path in (root, *root.iterdir()):
            shutil.chown(path, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
    try:
        subprocess.run(
            [*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "refine", *auth, "-E", "UTF8"],
            check=True,
            capture_output=True,
            timeout=120,
        )
        subprocess.run(
            [
                *as_user,
                str(bindir / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "server.log"),
                "-w",
                "-t",
                "60",
                "-o",
                f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=300",
                "start",
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        for name in databases:  # over the local socket, as compose's init script does
            subprocess.run(
                [
                    *as_user,
                    "psql",
                    "-h",
                    str(root),
                    "-p",
                    str(port),
                    "-U",
                    "refine",
                    "-d",
                    "postgres",
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-c",
                    f'CREATE DATABASE "{name}"',
                ],
                check=True,
                capture_output=True,
                timeout=60,
            )
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(
            [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(root, ignore_errors=True)


# ---- the rehearsal --------------------------------------------------------------------------------
