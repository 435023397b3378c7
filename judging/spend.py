"""A spend account: one budget shared by every paid call of a run, kept in the ledger database.

A sweep opens one account (its id is the sweep's flow run, so a Prefect retry of the same run
keeps spending from it) with the config's ``budget:`` limits. Every paid call — a judge call, a
message batch, a HyDE generation, in any cell and round, in any process or worker — *reserves*
its items (judgments or passages) and its estimated cost before it is sent, with one
conditional ``UPDATE`` that succeeds only while the limits hold; after the answer it *settles*:
items that failed are given back and the estimate is replaced by the measured cost. So the
limits are never crossed by calls in flight, whatever the concurrency, because each call's
share was taken before it left.

Estimates are deliberately high (about 3 characters per input token, 16 output tokens per
document): a budget stops early rather than late. Models outside the price table cost 0.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Column, Float, Integer, String, Table, Text, and_, delete, insert, or_, select, tuple_, update
from sqlalchemy.exc import IntegrityError

from judging.base import Usage
from judging.ledger import METADATA, insert_new, open_engine
from judging.prices import estimate_cost

spend_table = Table(
    "spend_accounts",
    METADATA,
    Column("account", String(200), primary_key=True),
    Column("max_items", Integer, nullable=True),
    Column("max_cost", Float, nullable=True),
    Column("spent_items", Integer, nullable=False, default=0),
    Column("spent_cost", Float, nullable=False, default=0.0),
    Column("refused", Integer, nullable=False, default=0),
    Column("created_at", Float, nullable=False),
)

# What a run learned about its judges, shared by every cell and process of the run: the breaker
# that opened (the run stops asking that judge) and the pairs that failed (a later cell of the
# same run does not ask for them again; the next run does). Cleared when a run (re)starts.
stops_table = Table(
    "account_stops",
    METADATA,
    Column("account", String(200), primary_key=True),
    Column("judge_key", String(64), primary_key=True),
    Column("reason", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)
run_failures_table = Table(
    "account_failures",
    METADATA,
    Column("account", String(200), primary_key=True),
    Column("judge_key", String(64), primary_key=True),
    Column("query_hash", String(64), primary_key=True),
    Column("doc_hash", String(64), primary_key=True),
    Column("error", Text, nullable=False),
)

# Characters per token in the estimate (low: English averages about 4) and the prompt's own size.
CHARS_PER_TOKEN = 3.0
PROMPT_OVERHEAD_CHARS = 800
OUTPUT_TOKENS_PER_ITEM = 16


def estimate_usage(texts_chars: int, items: int, output_tokens_per_item: int = OUTPUT_TOKENS_PER_ITEM) -> Usage:
    """A high estimate of one call's tokens from the characters it sends and the items it asks for."""
    return Usage(
        requests=1,
        input_tokens=math.ceil((texts_chars + PROMPT_OVERHEAD_CHARS) / CHARS_PER_TOKEN),
        output_tokens=items * output_tokens_per_item,
    )


def estimate_call_cost(
    model: str,
    query: str,
    instruction: str | None,
    documents: Sequence[str],
    prices: dict[str, tuple[float, float]] | None = None,
) -> float:
    """High estimate of the USD of one judge call on ``documents`` for ``query`` (see the module)."""
    chars = len(query) + len(instruction or "") + sum(len(d) for d in documents)
    return estimate_cost(model, estimate_usage(chars, len(documents)), prices)


@dataclass(frozen=True)
class SpendStatus:
    """What an account has spent and has left (None: no limit)."""

    account: str
    items: int
    cost: float
    max_items: int | None
    max_cost: float | None
    refused: int

    @property
    def items_left(self) -> int | None:
        return None if self.max_items is None else max(self.max_items - self.items, 0)

    @property
    def cost_left(self) -> float | None:
        return None if self.max_cost is None else max(self.max_cost - self.cost, 0.0)

    def line(self) -> str:
        """``spent 40 of 100 paid items and $0.0123 of $5.00; left 60 and $4.99``."""
        if self.max_items is None and self.max_cost is None and self.items == 0:
            return "none set; nothing paid"
        items = f"{self.items}" + (f" of {self.max_items}" if self.max_items is not None else "")
        cost = f"${self.cost:.4f}" + (f" of ${self.max_cost:.2f}" if self.max_cost is not None else "")
        left = []
        if self.items_left is not None:
            left.append(f"{self.items_left} judgments/passages")
        if self.cost_left is not None:
            left.append(f"${self.cost_left:.4f}")
        refused = f"; {self.refused} calls held back by the budget" if self.refused else ""
        return (
            f"spent {items} paid judgments/passages and {cost}"
            + (f"; left {' and '.join(left)}" if left else "; no limit set")
            + refused
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "account": self.account,
            "spent_items": self.items,
            "spent_usd": self.cost,
            "max_items": self.max_items,
            "max_usd": self.max_cost,
            "items_left": self.items_left,
            "usd_left": self.cost_left,
            "calls_refused": self.refused,
        }


class SpendAccount:
    """One run's budget in the ledger database (SQLite or PostgreSQL), safe across processes.

    Args:
        url: the ledger's SQLAlchemy URL or SQLite path.
        account: the account id (a sweep uses ``sweep-<flow run id>``).
        max_items: the most paid items (judgments plus HyDE passages); None for no limit.
        max_cost: the most estimated USD; None for no limit.

    Opening an existing account keeps its limits and what it spent (a retried run goes on
    spending from the same account). Limits given when creating it are stored with it.
    """

    def __init__(
        self, url: str | Path, account: str, *, max_items: int | None = None, max_cost: float | None = None
    ) -> None:
        self.engine = open_engine(url)
        self.account = account
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(spend_table),
                    [
                        {
                            "account": account,
                            "max_items": max_items,
                            "max_cost": max_cost,
                            "spent_items": 0,
                            "spent_cost": 0.0,
                            "refused": 0,
                            "created_at": time.time(),
                        }
                    ],
                )
        except IntegrityError:
            pass  # it exists: keep its limits and spending

    def __repr__(self) -> str:
        return f"SpendAccount({self.account!r})"

    def reserve(self, items: int, cost: float) -> bool:
        """Take ``items`` and ``cost`` from the account if both stay within its limits."""
        t = spend_table
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t)
                .where(
                    and_(
                        t.c.account == self.account,
                        or_(t.c.max_items.is_(None), t.c.spent_items + items <= t.c.max_items),
                        or_(t.c.max_cost.is_(None), t.c.spent_cost + cost <= t.c.max_cost),
                    )
                )
                .values(spent_items=t.c.spent_items + items, spent_cost=t.c.spent_cost + cost)
            ).rowcount
            if done != 1:
                conn.execute(update(t).where(t.c.account == self.account).values(refused=t.c.refused + 1))
        return done == 1

    def settle(self, reserved_items: int, reserved_cost: float, items: int, cost: float) -> None:
        """Replace a reservation by what the call used: ``items`` answered, ``cost`` measured."""
        t = spend_table
        with self.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.account == self.account)
                .values(
                    spent_items=t.c.spent_items - reserved_items + items,
                    spent_cost=t.c.spent_cost - reserved_cost + cost,
                )
            )

    def status(self) -> SpendStatus:
        t = spend_table
        with self.engine.connect() as conn:
            row = conn.execute(select(t).where(t.c.account == self.account)).one()
        return SpendStatus(
            self.account,
            int(row.spent_items),
            float(row.spent_cost),
            row.max_items,
            None if row.max_cost is None else float(row.max_cost),
            int(row.refused),
        )

    # ---- what the run learned about its judges --------------------------------------------------
    def stop(self, judge_key: str, reason: str) -> None:
        """Record that this run stops asking the judge ``judge_key`` (its breaker opened)."""
        with self.engine.begin() as conn:
            insert_new(
                conn,
                stops_table,
                [{"account": self.account, "judge_key": judge_key, "reason": reason, "created_at": time.time()}],
            )

    def stopped(self, judge_key: str) -> str | None:
        """Why this run stopped asking ``judge_key``, or None while it may ask."""
        t = stops_table
        with self.engine.connect() as conn:
            return conn.execute(
                select(t.c.reason).where(and_(t.c.account == self.account, t.c.judge_key == judge_key))
            ).scalar()

    def note_failures(self, judge_key: str, failures: Sequence[tuple[str, str, str]]) -> None:
        """Record ``(query hash, doc hash, error)`` pairs that failed in this run."""
        rows = [
            {"account": self.account, "judge_key": judge_key, "query_hash": q, "doc_hash": d, "error": e}
            for q, d, e in failures
        ]
        if rows:
            with self.engine.begin() as conn:
                insert_new(conn, run_failures_table, rows)

    def failed_pairs(self, judge_key: str, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The pairs of ``pairs`` that failed earlier in this run, with their error."""
        t = run_failures_table
        found: dict[tuple[str, str], str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(pairs), 500):
                chunk = list(pairs[start : start + 500])
                rows = conn.execute(
                    select(t.c.query_hash, t.c.doc_hash, t.c.error).where(
                        and_(
                            t.c.account == self.account,
                            t.c.judge_key == judge_key,
                            tuple_(t.c.query_hash, t.c.doc_hash).in_(chunk),
                        )
                    )
                )
                found.update({(q, d): e for q, d, e in rows})
        return found

    def start_run(self) -> None:
        """Forget what an earlier attempt of this run learned (a retried run asks again), keep the spending."""
        with self.engine.begin() as conn:
            conn.execute(delete(stops_table).where(stops_table.c.account == self.account))
            conn.execute(delete(run_failures_table).where(run_failures_table.c.account == self.account))
