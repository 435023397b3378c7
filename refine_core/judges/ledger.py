"""The judgment ledger: every paid judgment is stored durably before it is used.

Keyed by (judge identity key, query hash, document hash), where the query hash covers the
query text and the task instruction. SQLite (WAL journal) by default; any SQLAlchemy URL
(e.g. ``postgresql+psycopg://...``) for a team. One transaction per judge response, so a
process killed mid-run loses nothing that was answered.

Failures go to a separate append-only table with their error class: they are visible and
counted but never served as a cached answer, so a retry asks again.
"""

from __future__ import annotations

import hashlib
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
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from refine_core.judges.base import Judgment

_metadata = MetaData()
judgments_table = Table(
    "judgments",
    _metadata,
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
    _metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("judge_key", String(64), nullable=False, index=True),
    Column("query_hash", String(64), nullable=False),
    Column("doc_hash", String(64), nullable=False),
    Column("error", Text, nullable=False),
    Column("raw", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)
batches_table = Table(
    "batches",
    _metadata,
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
    try:
        _metadata.create_all(engine)
    except OperationalError as exc:
        # Another process created the tables between the check and the CREATE: check again.
        if "already exists" not in str(exc):
            raise
        _metadata.create_all(engine)
    return engine


def query_hash(query: str, task_instruction: str | None) -> str:
    return hashlib.sha256(f"{query}\x00{task_instruction or ''}".encode()).hexdigest()


def doc_hash(document: str) -> str:
    return hashlib.sha256(document.encode()).hexdigest()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # noqa: ANN001
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=60000")
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

    def record(self, judge_key: str, items: Iterable[tuple[str, str, Judgment]], *, cost_each: float = 0.0) -> None:
        """Store one response's verdicts in one transaction (successes and failures)."""
        now = time.time()
        ok, failed = [], []
        for qh, dh, judgment in items:
            if judgment.ok:
                ok.append({"judge_key": judge_key, "query_hash": qh, "doc_hash": dh, "score": judgment.score,
                           "raw": judgment.raw[:2000], "cost": cost_each, "created_at": now})
            else:
                failed.append({"judge_key": judge_key, "query_hash": qh, "doc_hash": dh,
                               "error": judgment.error or "unknown", "raw": judgment.raw[:2000], "created_at": now})
        with self.engine.begin() as conn:
            if ok:
                existing = {
                    (r.query_hash, r.doc_hash)
                    for r in conn.execute(
                        select(judgments_table.c.query_hash, judgments_table.c.doc_hash).where(
                            and_(judgments_table.c.judge_key == judge_key,
                                 tuple_(judgments_table.c.query_hash, judgments_table.c.doc_hash).in_(
                                     [(row["query_hash"], row["doc_hash"]) for row in ok]))
                        )
                    )
                }
                fresh = [row for row in ok if (row["query_hash"], row["doc_hash"]) not in existing]
                if fresh:
                    conn.execute(insert(judgments_table), fresh)
            if failed:
                conn.execute(insert(failures_table), failed)

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
            conn.execute(insert(batches_table), [{"batch_id": batch_id, "judge_key": judge_key, "payload": payload,
                                                  "status": "submitted", "created_at": time.time()}])

    def open_batches(self, judge_key: str) -> list[tuple[str, str]]:
        t = batches_table
        with self.engine.connect() as conn:
            rows = conn.execute(select(t.c.batch_id, t.c.payload).where(
                and_(t.c.judge_key == judge_key, t.c.status == "submitted")).order_by(t.c.created_at))
            return [(r.batch_id, r.payload) for r in rows]

    def close_batch(self, batch_id: str, status: str = "collected") -> None:
        with self.engine.begin() as conn:
            conn.execute(batches_table.update().where(batches_table.c.batch_id == batch_id).values(status=status))
