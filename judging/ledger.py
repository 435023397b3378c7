"""The judgment ledger: every paid judgment is stored durably before it is used.

Keyed by (judge identity key, query hash, document hash), where the query hash covers the
query text and the task instruction. SQLite (WAL journal) by default; any SQLAlchemy URL
(e.g. ``postgresql+psycopg://...``) for a team. One transaction per judge response, so a
process killed mid-run loses nothing that was answered; rows go in with ``INSERT … ON CONFLICT
DO NOTHING``, so workers writing the same pairs at once never fail (the first answer stays).

Failures go to a separate append-only table with their error class: they are visible and
counted but never served as a cached answer, so a retry asks again.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from sqlalchemy import (
    Column,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    event,
    func,
    insert,
    select,
    tuple_,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.schema import CreateIndex, CreateTable

from judging.base import Judgment

METADATA = MetaData()
judgments_table = Table(
    "judgments",
    METADATA,
    Column("judge_key", String(64), primary_key=True),
    Column("query_hash", String(64), primary_key=True),
    Column("doc_hash", String(64), primary_key=True),
    Column("score", Float, nullable=False),
    Column("raw", Text, nullable=False, default=""),
    Column("cost", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
)
failures_table = Table(
    "failures",
    METADATA,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("judge_key", String(64), nullable=False, index=True),
    Column("query_hash", String(64), nullable=False),
    Column("doc_hash", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("raw", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)
# Pairs a process is paying for right now: another process sharing the ledger waits for the
# answer instead of paying again. A claim expires (its process may have died) after its TTL.
claims_table = Table(
    "claims",
    METADATA,
    Column("judge_key", String(64), primary_key=True),
    Column("query_hash", String(64), primary_key=True),
    Column("doc_hash", String(64), primary_key=True),
    Column("owner", String(200), nullable=False),
    Column("expires_at", Float, nullable=False),
)
batches_table = Table(
    "batches",
    METADATA,
    Column("batch_id", String(128), primary_key=True),
    Column("judge_key", String(64), nullable=False),
    Column("payload", Text, nullable=False),
    Column("status", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)


def open_engine(url: str | Path) -> Engine:
    """An engine for a SQLAlchemy URL or a plain path (SQLite, WAL), with every table created."""
    url = str(url)
    if "://" not in url:
        Path(url).expanduser().parent.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(url).expanduser()}"
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    create_tables(engine)
    return engine


def create_tables(engine: Engine, attempts: int = 5) -> None:
    """Create every missing table and index, safe when several processes open a new ledger at once.

    ``CREATE … IF NOT EXISTS`` in one transaction: no check-then-create window in which another
    process's table appears (``MetaData.create_all`` checks first, so two processes starting
    together on a fresh SQLite file failed with "table … already exists"). PostgreSQL can still
    refuse a concurrent ``IF NOT EXISTS`` on its catalog's unique index; that attempt is rolled
    back whole and tried again."""
    for attempt in range(attempts):
        try:
            with engine.begin() as conn:
                for table in METADATA.sorted_tables:
                    conn.execute(CreateTable(table, if_not_exists=True))
                    for index in sorted(table.indexes, key=lambda i: str(i.name)):
                        conn.execute(CreateIndex(index, if_not_exists=True))
            return
        except (OperationalError, ProgrammingError, IntegrityError) as exc:
            text = str(exc).lower()
            concurrent = "already exists" in text or "duplicate key" in text or "locked" in text
            if not concurrent or attempt == attempts - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def insert_new(conn: Connection, table: Table, rows: list[dict]) -> int:
    """Insert ``rows``, skipping any whose primary key is already stored; returns how many went in
    (see :func:`inserted_keys`)."""
    return len(inserted_keys(conn, table, rows))


def inserted_keys(conn: Connection, table: Table, rows: list[dict]) -> set[tuple]:
    """Insert ``rows``, skipping any whose primary key is already stored, without losing a race;
    returns the primary keys of the rows that went in.

    SQLite (3.35+) and PostgreSQL: multi-row ``INSERT … ON CONFLICT DO NOTHING RETURNING`` (one
    statement per few hundred rows, not one per row: a cold sweep stores thousands of answers
    and claims). Other databases: each row in a savepoint, a duplicate's IntegrityError rolled
    back alone."""
    if not rows:
        return set()
    # The same order in every transaction: two writers inserting overlapping keys wait for each
    # other instead of deadlocking (PostgreSQL locks each new key until commit, row by row in
    # the statement's order).
    keys = [c.name for c in table.primary_key.columns]
    rows = sorted(rows, key=lambda r: tuple(str(r[k]) for k in keys))
    dialect = conn.dialect.name
    if dialect == "postgresql" or (dialect == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)):
        insert_fn = postgresql.insert if dialect == "postgresql" else sqlite.insert
        per_statement = max(1, 900 // len(rows[0]))  # bound parameters per statement (SQLite's old limit: 999)
        got: set[tuple] = set()
        for start in range(0, len(rows), per_statement):
            stmt = (
                insert_fn(table)
                .values(rows[start : start + per_statement])
                .on_conflict_do_nothing()
                .returning(*(table.c[k] for k in keys))
            )
            got.update(tuple(row) for row in conn.execute(stmt))
        return got
    got = set()
    for row in rows:
        try:
            with conn.begin_nested():
                conn.execute(insert(table), [row])
            got.add(tuple(row[k] for k in keys))
        except IntegrityError:
            pass
    return got


def _owner_is_gone(owner: str) -> bool:
    """A claim's owner (``host:pid:token``) is a process on this host that no longer runs."""
    import os
    import socket

    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def query_hash(query: str, task_instruction: str | None) -> str:
    return hashlib.sha256(f"{query}\x00{task_instruction or ''}".encode()).hexdigest()


def doc_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching a new file to WAL takes a lock that a second process
    # opening the same ledger must wait for rather than fail on ("database is locked").
    cursor.execute("PRAGMA busy_timeout=60000")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class JudgmentLedger:
    """Durable store of judgments.

    Args:
        url: SQLAlchemy URL, or a filesystem path for SQLite.

    Example:
        >>> import tempfile, os
        >>> ledger = JudgmentLedger(os.path.join(tempfile.mkdtemp(), "j.sqlite"))
        >>> ledger.record("judge", [("q", "d", Judgment(score=0.9))])
        >>> ledger.lookup("judge", [("q", "d"), ("q", "other")])
        {('q', 'd'): 0.9}
    """

    def __init__(self, url: str | Path) -> None:
        self.engine: Engine = open_engine(url)
        self.url = self.engine.url.render_as_string(hide_password=False)

    def __repr__(self) -> str:
        return f"JudgmentLedger({self.engine.url.render_as_string(hide_password=True)!r})"

    def lookup(self, judge_key: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]:
        """Stored scores for (query hash, doc hash) pairs; absent pairs are left out."""
        found: dict[tuple[str, str], float] = {}
        unique = list(dict.fromkeys(pairs))
        t = judgments_table
        with self.engine.connect() as conn:
            for start in range(0, len(unique), 400):
                part = unique[start : start + 400]
                rows = conn.execute(
                    select(t.c.query_hash, t.c.doc_hash, t.c.score).where(
                        and_(t.c.judge_key == judge_key, tuple_(t.c.query_hash, t.c.doc_hash).in_(part))
                    )
                )
                for qh, dh, score in rows:
                    found[(qh, dh)] = float(score)
        return found

    def record(self, judge_key: str, items: Iterable[tuple[str, str, Judgment]], *, cost_each: float = 0.0) -> int:
        """Store one response's verdicts in one transaction (successes and failures). Returns how
        many verdicts were already stored: pairs another process paid for at the same time."""
        now = time.time()
        ok, failed = [], []
        for qh, dh, judgment in items:
            if judgment.ok:
                ok.append(
                    {
                        "judge_key": judge_key,
                        "query_hash": qh,
                        "doc_hash": dh,
                        "score": judgment.score,
                        "raw": judgment.raw[:2000],
                        "cost": cost_each,
                        "created_at": now,
                    }
                )
            else:
                failed.append(
                    {
                        "judge_key": judge_key,
                        "query_hash": qh,
                        "doc_hash": dh,
                        "error": judgment.error or "unknown",
                        "raw": judgment.raw[:2000],
                        "created_at": now,
                    }
                )
        with self.engine.begin() as conn:
            # Another process may store the same pair at the same instant (two workers judging
            # overlapping feedback): the first answer stays, nothing raises, nothing is lost.
            duplicates = len(ok) - insert_new(conn, judgments_table, ok)
            if failed:
                conn.execute(insert(failures_table), failed)
        return duplicates

    # ---- claims: one process pays for a pair, the others wait for its answer ----------------
    def claim(self, judge_key: str, pairs: Sequence[tuple[str, str]], owner: str, ttl: float) -> set[tuple[str, str]]:
        """Claim the pairs no live claim holds (new, or expired); returns those now held by ``owner``."""
        now = time.time()
        got: set[tuple[str, str]] = set()
        t = claims_table
        wanted = sorted(dict.fromkeys(pairs))  # one lock order for every process
        with self.engine.begin() as conn:
            new = inserted_keys(
                conn,
                t,
                [
                    {"judge_key": judge_key, "query_hash": qh, "doc_hash": dh, "owner": owner, "expires_at": now + ttl}
                    for qh, dh in wanted
                ],
            )
            got.update((qh, dh) for _, qh, dh in new)
            for qh, dh in wanted:  # held already: take over a lapsed claim, or one of a dead process
                if (qh, dh) in got:
                    continue
                where = and_(t.c.judge_key == judge_key, t.c.query_hash == qh, t.c.doc_hash == dh)
                holder = conn.execute(select(t.c.owner).where(where)).scalar_one_or_none()
                lapsed = (t.c.expires_at < now) | (t.c.owner == owner)
                if holder is not None and _owner_is_gone(holder):
                    lapsed = lapsed | (t.c.owner == holder)  # its process died on this host: take over now
                taken = conn.execute(
                    t.update().where(and_(where, lapsed)).values(owner=owner, expires_at=now + ttl)
                ).rowcount
                if taken:
                    got.add((qh, dh))
        return got

    def release(self, judge_key: str, pairs: Sequence[tuple[str, str]], owner: str) -> None:
        """Drop ``owner``'s claims on the pairs (after their answers are stored, or on failure)."""
        t = claims_table
        unique = sorted(dict.fromkeys(pairs))
        with self.engine.begin() as conn:
            for start in range(0, len(unique), 400):
                conn.execute(
                    t.delete().where(
                        and_(
                            t.c.judge_key == judge_key,
                            t.c.owner == owner,
                            tuple_(t.c.query_hash, t.c.doc_hash).in_(unique[start : start + 400]),
                        )
                    )
                )

    def count(self, judge_key: str | None = None) -> int:
        stmt = select(func.count()).select_from(judgments_table)
        if judge_key is not None:
            stmt = stmt.where(judgments_table.c.judge_key == judge_key)
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar_one())

    def failures(self, judge_key: str | None = None) -> list[dict[str, object]]:
        stmt = select(failures_table).order_by(failures_table.c.id)
        if judge_key is not None:
            stmt = stmt.where(failures_table.c.judge_key == judge_key)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def total_cost(self, judge_key: str | None = None) -> float:
        stmt = select(func.coalesce(func.sum(judgments_table.c.cost), 0.0))
        if judge_key is not None:
            stmt = stmt.where(judgments_table.c.judge_key == judge_key)
        with self.engine.connect() as conn:
            return float(conn.execute(stmt).scalar_one())

    # ---- message batches (resumable by id) -----------------------------------------------
    def save_batch(self, batch_id: str, judge_key: str, payload: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                insert(batches_table),
                [
                    {
                        "batch_id": batch_id,
                        "judge_key": judge_key,
                        "payload": payload,
                        "status": "submitted",
                        "created_at": time.time(),
                    }
                ],
            )

    def open_batches(self, judge_key: str) -> list[tuple[str, str]]:
        t = batches_table
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(t.c.batch_id, t.c.payload)
                .where(and_(t.c.judge_key == judge_key, t.c.status == "submitted"))
                .order_by(t.c.created_at)
            )
            return [(r.batch_id, r.payload) for r in rows]

    def close_batch(self, batch_id: str, status: str = "collected") -> None:
        with self.engine.begin() as conn:
            conn.execute(batches_table.update().where(batches_table.c.batch_id == batch_id).values(status=status))
