"""The stores a run needs, checked before any work, and created once when several commands start together.

:func:`check_stores` asks each store the command will use — the MLflow tracking store, the
judgment ledger, a Prefect API of the user's and an S3 artifact endpoint — with a connect timeout,
and raises one :class:`StoreUnreachable` line naming the first that does not answer (its URI
redacted) and why. Nothing has been computed or paid for at that point.

:func:`ensure_tracking_store` creates MLflow's schema under a lock: MLflow migrates a new
database when a client first opens it, and two commands doing that at once on one new store
raced ("duplicate column name: step", "table _alembic_tmp_params already exists"). SQLite stores
take a file lock beside the database, PostgreSQL stores an advisory lock in the database itself,
others a lock in the state folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tasks.redaction import redact
from tasks.storage import file_lock, ledger_url, state_dir

CONNECT_TIMEOUT_S = 5.0
ANSWER_TIMEOUT_S = 30.0
# pg_advisory_lock key of MLflow's schema creation (any constant the project owns).
_MLFLOW_SCHEMA_LOCK = 7_303_117_281
_READY: set[str] = set()


class StoreUnreachable(ValueError):
    """A store the run needs does not answer; the message names it (redacted) and the cause."""


def _sqlite_path(uri: str) -> Path | None:
    """The file of a ``sqlite:///`` URI (None for in-memory or non-SQLite URIs)."""
    if not uri.startswith("sqlite:"):
        return None
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        return None
    return Path(database).expanduser().resolve()


def _is_database(uri: str) -> bool:
    return "://" in uri and not uri.startswith(("http://", "https://", "file:", "sqlite:", "databricks"))


def _cause(exc: BaseException) -> str:
    """A short, redacted cause: the exception's class and the first line of its text."""
    inner = getattr(exc, "orig", None) or exc
    text = str(inner).strip().splitlines()[0][:200] if str(inner).strip() else ""
    return redact(f"{type(inner).__name__}{': ' + text if text else ''}")


def database_engine(uri: str, timeout: float = CONNECT_TIMEOUT_S):
    """A SQLAlchemy engine whose connections give up after ``timeout`` seconds (no pool kept)."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    url = make_url(uri)
    args: dict[str, object] = {}
    backend, driver = url.get_backend_name(), url.get_driver_name()
    if backend == "postgresql":
        args = {"timeout": int(timeout)} if driver == "pg8000" else {"connect_timeout": max(1, int(timeout))}
    elif backend in ("mysql", "mariadb"):
        args = {"connect_timeout": max(1, int(timeout))}
    return create_engine(url, poolclass=NullPool, connect_args=args)


def check_database(name: str, uri: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Connect to the database at ``uri`` and run ``select 1``, or raise :class:`StoreUnreachable`."""
    from sqlalchemy import text

    try:
        engine = database_engine(uri, timeout)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
    except ModuleNotFoundError as exc:
        raise StoreUnreachable(
            f"{name} {redact(uri)} needs the database driver {exc.name!r}, which is not installed"
        ) from None
    except Exception as exc:
        raise StoreUnreachable(f"{name} {redact(uri)} is unreachable: {_cause(exc)}") from None


def check_http(
    name: str, url: str, path: str = "", timeout: float = CONNECT_TIMEOUT_S, any_status: bool = False
) -> None:
    """GET ``url + path``: the connection must open within ``timeout`` seconds (a closed port or a
    host that does not answer fails fast); a server that accepted it may take up to
    :data:`ANSWER_TIMEOUT_S` to answer (a loaded server is slow, not gone). HTTP 200 (any status
    with ``any_status``)."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + path, timeout=httpx.Timeout(ANSWER_TIMEOUT_S, connect=timeout))
    except httpx.ConnectTimeout:
        raise StoreUnreachable(f"{name} {redact(url)} does not answer within {timeout:g} s") from None
    except httpx.TimeoutException:
        raise StoreUnreachable(
            f"{name} {redact(url)} accepted the connection but did not answer within {ANSWER_TIMEOUT_S:g} s"
        ) from None
    except httpx.HTTPError as exc:
        raise StoreUnreachable(f"{name} {redact(url)} is unreachable: {_cause(exc)}") from None
    if not any_status and response.status_code != 200:
        raise StoreUnreachable(
            f"{name} {redact(url)} is unreachable: {path or '/'} answered HTTP {response.status_code}"
        )


def _check_sqlite_folder(name: str, path: Path) -> None:
    folder = path.parent
    if folder.exists() and not folder.is_dir():
        raise StoreUnreachable(f"{name} {path}: {folder} is not a folder")
    if not folder.exists():
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreUnreachable(f"{name} {path}: its folder cannot be created ({exc.strerror})") from None
    if not os.access(folder, os.W_OK):
        raise StoreUnreachable(f"{name} {path}: its folder {folder} is not writable")


class NothingLogged(ValueError):
    """A command that only reads found no tracking store yet (and created none)."""


def check_tracking(uri: str, timeout: float = CONNECT_TIMEOUT_S, *, create: bool = True) -> None:
    """The MLflow tracking store answers (and its schema exists), or :class:`StoreUnreachable`.
    ``create=False`` (commands that only read): a SQLite store that does not exist yet is
    :class:`NothingLogged`, and no file is made."""
    name = "MLflow tracking store"
    if uri.startswith(("http://", "https://")):
        check_http(name, uri, "/health", timeout)
        return
    sqlite = _sqlite_path(uri)
    if sqlite is not None and not create and not sqlite.exists():
        raise NothingLogged(f"nothing is logged yet: no MLflow store at {sqlite} (run `refine run` first)")
    if sqlite is not None:
        _check_sqlite_folder(name, sqlite)
    elif _is_database(uri):
        check_database(name, uri, timeout)
    try:
        ensure_tracking_store(uri)
    except StoreUnreachable:
        raise
    except Exception as exc:
        raise StoreUnreachable(f"{name} {redact(uri)} cannot be opened: {_cause(exc)}") from None


@contextmanager
def _schema_lock(uri: str) -> Iterator[None]:
    sqlite = _sqlite_path(uri)
    if sqlite is not None:
        with file_lock(sqlite.with_name(sqlite.name + ".init.lock")):
            yield
        return
    if _is_database(uri) and uri.startswith("postgresql"):
        from sqlalchemy import text

        engine = database_engine(uri)
        with engine.connect() as conn:
            conn.execute(text("select pg_advisory_lock(:k)"), {"k": _MLFLOW_SCHEMA_LOCK})
            try:
                yield
            finally:
                conn.execute(text("select pg_advisory_unlock(:k)"), {"k": _MLFLOW_SCHEMA_LOCK})
                conn.commit()
        engine.dispose()
        return
    if _is_database(uri):
        import hashlib

        with file_lock(state_dir() / "locks" / f"mlflow-{hashlib.sha256(uri.encode()).hexdigest()[:16]}.lock"):
            yield
        return
    yield  # an HTTP server or a file store: nothing to migrate here


def ensure_tracking_store(uri: str) -> None:
    """Open the tracking store once in this process, creating or migrating its schema under a
    lock shared with every other ``refine`` process (see the module's docstring)."""
    if uri in _READY:
        return
    import logging

    from mlflow import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)  # "Creating initial MLflow database tables..."
    with _schema_lock(uri):
        MlflowClient(uri).search_experiments(max_results=1)
    _READY.add(uri)


def check_ledger(url: str | None = None, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """The judgment ledger's database answers (a SQLite file's folder is writable)."""
    url = url or ledger_url()
    name = "judgment ledger (REFINE_LEDGER_URL)" if os.environ.get("REFINE_LEDGER_URL") else "judgment ledger"
    if "://" not in url:
        _check_sqlite_folder(name, Path(url).expanduser())
        return
    sqlite = _sqlite_path(url)
    if sqlite is not None:
        _check_sqlite_folder(name, sqlite)
        return
    check_database(name, url, timeout)


def check_prefect_api(timeout: float = CONNECT_TIMEOUT_S) -> None:
    """A Prefect API of the user's (``PREFECT_API_URL``) answers; the command's own server is
    started (and waited for) by the command itself."""
    api = os.environ.get("PREFECT_API_URL")
    if not api or api == os.environ.get("REFINE_EPHEMERAL_API_URL"):
        return
    check_http("Prefect API (PREFECT_API_URL)", api, "/health", timeout)


def check_artifact_store(timeout: float = CONNECT_TIMEOUT_S) -> None:
    """The S3 endpoint MLflow writes artifacts to (``MLFLOW_S3_ENDPOINT_URL``) answers at all."""
    endpoint = os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    if endpoint:
        check_http("artifact store (MLFLOW_S3_ENDPOINT_URL)", endpoint, "", timeout, any_status=True)


def check_stores(tracking: str | None, *, ledger: bool = True, prefect: bool = True, artifacts: bool = True) -> None:
    """Every store the command needs answers, each within :data:`CONNECT_TIMEOUT_S`; else one
    :class:`StoreUnreachable` naming the first that does not. ``tracking``: the MLflow tracking
    URI (None: not needed)."""
    if prefect:
        check_prefect_api()
    if ledger:
        check_ledger()
    if artifacts:
        check_artifact_store()
    if tracking:
        check_tracking(tracking, create=ledger or prefect or artifacts)
