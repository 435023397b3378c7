"""The ledger shared by many processes, on SQLite and on a real PostgreSQL server.

Several processes write overlapping judgments at the same time (one transaction per response):
no error, nothing lost, no duplicate. Several processes judge overlapping requests through the
real anthropic SDK against one fake Messages server: each pair is paid once, apart from calls in
flight when a claim lapses, and those are counted (``judgments_paid_twice``) and match the
server's own count exactly.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.anthropic_server import FakeAnthropic
from servers import postgres_server

pytestmark = pytest.mark.integration  # processes racing on a ledger, and a PostgreSQL server

ROOT = Path(__file__).resolve().parents[1]
KEY = "sk-test-ledger-race-0000"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "ledger.sqlite")
    else:
        with postgres_server() as url:
            yield url


WRITER = """
import random, sys
sys.path.insert(0, {root!r})
from judging import Judgment, JudgmentLedger
ledger = JudgmentLedger({url!r})
rng = random.Random({seed})
pairs = [("q%d" % (i // 10), "d%d" % i) for i in range(300)]
rng.shuffle(pairs)
duplicates = 0
for start in range(0, len(pairs), 6):  # one transaction per "response" of 6 verdicts
    duplicates += ledger.record("judge", [(q, d, Judgment(score=0.5, raw="w{seed}")) for q, d in pairs[start:start + 6]])
print(duplicates)
"""


def test_processes_writing_the_same_judgments_at_once_lose_nothing_and_duplicate_nothing(ledger_url: str) -> None:
    from judging import JudgmentLedger

    JudgmentLedger(ledger_url)  # tables created once, as a sweep does before its workers start
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER.format(root=str(ROOT), url=ledger_url, seed=seed)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in range(4)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
    duplicates = [int(out.strip()) for out, _ in outputs]
    ledger = JudgmentLedger(ledger_url)
    assert ledger.count("judge") == 300  # nothing lost, no duplicate row
    assert sum(duplicates) == 3 * 300  # every pair went in once; the other three writes saw it stored


OPENER = """
import sys
sys.path.insert(0, {root!r})
from judging.ledger import METADATA, open_engine
print(" ".join(sorted(METADATA.tables)), flush=True)  # the tables a process with these imports creates
for url in sys.stdin:  # one fresh ledger per line, sent to every opener at the same moment
    try:
        open_engine(url.strip()).dispose()
        print("ok", flush=True)
    except Exception as exc:
        print(type(exc).__name__, str(exc).splitlines()[0], flush=True)
"""


def test_processes_opening_a_new_ledger_at_the_same_moment_all_get_every_table(ledger_url: str, tmp_path: Path) -> None:
    """Regression: two processes creating a fresh ledger's tables at once failed with "table …
    already exists" (a check-then-create window), which made a judging process and a reader of its
    ledger fail in CI. Six openers race on each of several fresh ledgers."""
    from sqlalchemy import create_engine, inspect

    from judging.ledger import METADATA

    openers = [
        subprocess.Popen(
            [sys.executable, "-c", OPENER.format(root=str(ROOT))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(6)
    ]
    try:
        tables = {p.stdout.readline().strip() for p in openers}
        assert len(tables) == 1 and "judgments" in next(iter(tables)).split()
        tables = set(next(iter(tables)).split())
        sqlite = "://" not in ledger_url
        for round_ in range(6 if sqlite else 3):
            url = str(tmp_path / f"fresh{round_}.sqlite") if sqlite else ledger_url
            if not sqlite:  # the same server database, emptied: every opener creates from nothing
                engine = create_engine(url)
                METADATA.drop_all(engine)
                engine.dispose()
            for p in openers:
                p.stdin.write(url + "\n")
            for p in openers:
                p.stdin.flush()
            answers = [p.stdout.readline().strip() for p in openers]
            assert answers == ["ok"] * 6, (round_, answers)
            engine = create_engine(url if not sqlite else f"sqlite:///{url}")
            assert set(inspect(engine).get_table_names()) >= tables
            engine.dispose()
    finally:
        for p in openers:
            p.stdin.close()
            p.wait(timeout=60)


JUDGE_RUN = """
import json, sys
sys.path[:0] = [{root!r}]
from judging import JudgeRequest, JudgmentLedger, run_judge
from judging.anthropic_judge import AnthropicJudge
judge = AnthropicJudge(scheme="pointwise", base_url={base_url!r}, max_retries=1, timeout=10.0)
requests = [JudgeRequest("query %d about a card" % q, tuple("document %d of query %d, card %d" % (d, q, d % 2)
            for d in range(8)), "intent") for q in {queries!r}]
report = run_judge(judge, requests, ledger=JudgmentLedger({url!r}), concurrency=3)
print(json.dumps({{"judged": report.judged, "from_ledger": report.from_ledger, "paid_twice": report.paid_twice,
                  "failed": report.failed}}))
"""


def test_workers_sharing_a_ledger_pay_each_pair_once_and_count_the_calls_that_raced(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three processes judge overlapping queries (0-5, 3-8, 0-8) at once; the server counts what was paid."""
    from judging import JudgmentLedger

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    JudgmentLedger(ledger_url)
    with FakeAnthropic(lambda q, d: "card 1" in d, api_key=KEY, latency=0.02) as server:
        plans = [list(range(0, 6)), list(range(3, 9)), list(range(0, 9))]
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    JUDGE_RUN.format(root=str(ROOT), base_url=server.base_url, url=ledger_url, queries=queries),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for queries in plans
        ]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outputs]
        reports = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
        answered = server.stats.pairs_answered
    unique = 9 * 8
    assert all(r["failed"] == 0 for r in reports)
    assert len(answered) == unique and JudgmentLedger(ledger_url).count() == unique
    paid_twice_at_server = sum(n - 1 for n in answered.values())
    assert sum(r["paid_twice"] for r in reports) == paid_twice_at_server  # every repeat counted and reported
    # a pair is claimed before it is sent and the ledger read after the claim: no live claim is
    # ever overtaken, so nothing is paid twice here (only a claim older than its TTL could be)
    assert paid_twice_at_server == 0, dict(answered)
    assert sum(r["judged"] for r in reports) == unique + paid_twice_at_server
    assert sum(r["judged"] + r["from_ledger"] for r in reports) == 8 * (6 + 6 + 9)
