"""One spend account per sweep run: every paid call reserves from it before it is sent.

Unit checks of the account (limits, reopening, many processes at once), each paid path against
the fake Messages server (judge calls, message batches, HyDE generations), and a multi-cell,
multi-round sweep with HyDE whose requests at the server never exceed the budget; then
``refine run --dry-run``, which pays nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.anthropic_server import FakeAnthropic

from judging import JudgeRequest, JudgmentLedger, run_judge
from judging.spend import SpendAccount

KEY = "sk-test-budget-key-0000"
ROOT = Path(__file__).resolve().parents[1]
DOCS = [
    "my card is missing",
    "the weather is nice",
    "card stolen yesterday",
    "play some music",
    "block my card please",
    "book a flight",
]


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_API_KEY_FILE", raising=False)


@pytest.fixture
def server():
    with FakeAnthropic(lambda q, d: "card" in d, api_key=KEY) as s:
        yield s


def _claude(server: FakeAnthropic, scheme: str = "pointwise"):
    from judging.anthropic_judge import AnthropicJudge

    return AnthropicJudge(scheme=scheme, base_url=server.base_url, max_retries=1, timeout=5.0)


def _requests(n: int) -> list[JudgeRequest]:
    return [
        JudgeRequest(query=f"query {i} about a card", documents=tuple(DOCS), task_instruction="intent")
        for i in range(n)
    ]


# ---- the account ------------------------------------------------------------------------------------
def test_an_account_reserves_within_its_limits_settles_and_keeps_its_state(tmp_path: Path) -> None:
    url = tmp_path / "ledger.sqlite"
    account = SpendAccount(url, "sweep-1", max_items=10, max_cost=1.0)
    assert account.reserve(6, 0.5) and account.reserve(4, 0.25)
    assert not account.reserve(1, 0.0)  # 11 > 10 items
    account.settle(4, 0.25, 1, 0.05)  # 3 of the 4 failed: given back; the estimate becomes the measured cost
    status = account.status()
    assert (status.items, status.cost, status.items_left) == (7, pytest.approx(0.55), 3)
    assert not account.reserve(1, 0.5)  # 0.55 + 0.5 > 1.0 USD
    assert status.refused == 1 and account.status().refused == 2
    # reopened (a Prefect retry of the same run): same limits and spending, whatever limits are passed
    again = SpendAccount(url, "sweep-1", max_items=1000)
    assert again.status().max_items == 10 and again.status().items == 7
    assert "spent 7 of 10 paid judgments/passages" in again.status().line()
    # another run has its own account
    assert SpendAccount(url, "sweep-2", max_items=5).status().items == 0


def test_many_processes_never_overspend_one_account(tmp_path: Path) -> None:
    """Four processes race for 100 items, one at a time: exactly 100 are granted (SQLite ledger)."""
    url = tmp_path / "ledger.sqlite"
    SpendAccount(url, "shared", max_items=100)
    go = tmp_path / "go"
    script = (
        "import os, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from judging.spend import SpendAccount\n"
        f"account = SpendAccount({str(url)!r}, 'shared')\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"  # start together
        "print(sum(account.reserve(1, 0.0) for _ in range(40)))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) for _ in range(4)]
    time.sleep(3)
    go.touch()
    granted = [int(p.communicate(timeout=120)[0].strip()) for p in procs]
    assert sum(granted) == 100 and SpendAccount(url, "shared").status().items == 100
    assert sum(g > 0 for g in granted) >= 2, granted  # they really raced


# ---- every paid path reserves first ----------------------------------------------------------------------
def test_judge_calls_share_one_account_across_calls(server: FakeAnthropic, tmp_path: Path) -> None:
    ledger = JudgmentLedger(tmp_path / "l.sqlite")
    account = SpendAccount(tmp_path / "l.sqlite", "run", max_items=8)
    first = run_judge(_claude(server), _requests(1), ledger=ledger, account=account, concurrency=3)
    second = run_judge(
        _claude(server),
        [JudgeRequest("another card query", tuple(DOCS), "intent")],
        ledger=ledger,
        account=account,
        concurrency=3,
    )
    assert (first.judged, second.judged, second.not_submitted) == (6, 2, 4)
    assert server.stats.message_requests == 8 and account.status().items == 8
    assert account.status().cost > 0  # claude-haiku-4-5 is in the price table
    # what the ledger holds is free: the same requests again send nothing and spend nothing
    run_judge(_claude(server), _requests(1), ledger=ledger, account=account)
    assert server.stats.message_requests == 8 and account.status().items == 8


def test_a_message_batch_holds_only_what_the_account_allows(server: FakeAnthropic, tmp_path: Path) -> None:
    from judging.batches import run_judge_batches

    ledger = JudgmentLedger(tmp_path / "l.sqlite")
    account = SpendAccount(tmp_path / "l.sqlite", "run", max_items=4)
    report = run_judge_batches(
        _claude(server), _requests(1), ledger=ledger, account=account, poll_interval=0, sleep=lambda s: None
    )
    assert report.judged == 4 and sum(v.error == "BudgetExceeded" for v in report.judgments[0]) == 2
    assert ledger.count() == 4 and account.status().items == 4


def test_hyde_generations_reserve_from_the_account(server: FakeAnthropic, tmp_path: Path) -> None:
    from generators.hyde import ClaudeGenerator, GenerationStore, run_generator

    account = SpendAccount(tmp_path / "l.sqlite", "run", max_items=2)
    report = run_generator(
        ClaudeGenerator(base_url=server.base_url),
        ["q1", "q2", "q3"],
        store=GenerationStore(tmp_path / "l.sqlite"),
        account=account,
        concurrency=1,
    )
    assert report.generated == 2 and report.not_submitted == 1 and report.texts[2] is None
    assert sum(server.stats.generations.values()) == 2 and account.status().items == 2


# ---- a whole sweep -------------------------------------------------------------------------------------
@pytest.mark.data
@pytest.mark.integration
def test_a_sweep_budget_caps_requests_across_cells_rounds_and_hyde(
    platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two cells x two rounds with HyDE would ask about 76 paid answers; a budget of 30 sends at most 30."""
    from evaluations.config import BenchmarkSpec, BudgetSpec, Grid, HydeSpec, JudgeSpec, SweepConfig
    from evaluations.registry import load_benchmark
    from flows.plan import plan_sweep
    from flows.sweep import run_sweep

    monkeypatch.setenv("REFINE_LEDGER_URL", str(tmp_path / "ledger.sqlite"))
    spec = BenchmarkSpec(name="clinc150", queries=4, max_documents=600)
    relevant = load_benchmark("clinc150", queries=4, max_documents=600).relevant_texts()
    with FakeAnthropic(lambda q, d: d in relevant.get(q, set()), api_key=KEY) as server:
        judge = JudgeSpec(kind="anthropic", scheme="pointwise", base_url=server.base_url, max_retries=1, concurrency=3)
        config = SweepConfig(
            name="budget-test",
            benchmarks=[spec],
            judges=[judge],
            grid=Grid(lr=[1e-3, 1e-2], k=[5], rounds=[2]),
            hyde=HydeSpec(kind="anthropic", base_url=server.base_url),
            budget=BudgetSpec(max_judgments=30),
        )

        plan = plan_sweep(config)  # the dry run: free stages only
        assert server.stats.requests == 0
        assert (
            plan["total"]["judgments_to_pay"] == 20 and plan["total"]["hyde_to_pay"] == 4
        )  # 4 queries x k 5; 4 passages
        assert [c["judgments_to_pay"] for c in plan["cells"]] == [20, 20]  # per cell; the pairs are shared
        assert plan["total"]["judgments_at_most"] == 20 + 2 * 4 * 5 * 2  # + round 2 and HyDE-refined, per cell

        result = run_sweep(config)
        sent = server.stats.message_requests
        assert sent <= 30, sent  # judge calls (one document each) and HyDE generations together
        assert result["budget"]["spent_items"] == sent <= 30 and result["budget"]["items_left"] == 30 - sent
        assert result["judgment_failures"] and all("BudgetExceeded" in line for line in result["judgment_failures"])
        assert "the sweep's budget is spent" in result["judgment_failures"][0]
        assert "paid judgments/passages" in result["budget_line"]
        # the dry run after it counts what the ledger holds as paid: round 1's 20 judgments are in
        # it; the HyDE passages the budget left no room for are still to pay
        after = plan_sweep(config)
        generated = sum(c["hyde_usage"]["hyde_generations_paid"] for c in result["cells"])
        assert after["total"]["judgments_to_pay"] == 0 and after["total"]["hyde_to_pay"] == 4 - generated
        assert server.stats.message_requests == sent

        # a new run has a new account: it pays for more, never for what the ledger holds
        second = run_sweep(config)
        assert (
            0 < server.stats.message_requests - sent <= 30
            and second["budget"]["account"] != result["budget"]["account"]
        )
        repeated = [pair for pair, n in server.stats.pairs_answered.items() if n > 1]
        assert repeated == [], repeated


@pytest.mark.data
@pytest.mark.integration
def test_refine_run_dry_run_prints_the_plan_and_pays_nothing(tmp_path: Path, data_root: Path) -> None:
    with FakeAnthropic(lambda q, d: False, api_key=KEY) as server:
        config = tmp_path / "sweep.yaml"
        config.write_text(
            "name: dry\nbenchmarks: [{name: clinc150, queries: 3, max_documents: 450}]\n"
            f"judges: [{{kind: anthropic, scheme: listwise, base_url: '{server.base_url}'}}, {{kind: oracle}}]\n"
            "grid: {k: [4], rounds: [2]}\nbudget: {max_judgments: 10}\n"
        )
        env = {
            **os.environ,
            "REFINE_HOME": str(tmp_path / "home"),
            "ANTHROPIC_API_KEY": KEY,
            "COLUMNS": "220",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        env.pop("PREFECT_API_URL", None)
        res = subprocess.run(
            [sys.executable, "-m", "flows.cli", "run", str(config), "--dry-run", "--json"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=600,
        )
        assert res.returncode == 0, res.stderr[-3000:]
        assert server.stats.requests == 0
    plan = json.loads(res.stdout.strip().splitlines()[-1])
    paid, free = plan["cells"]
    assert paid["paid"] and paid["judgments_to_pay"] == 12 and paid["later_rounds_at_most"] == 12
    assert not free["paid"] and free["judgments_to_pay"] == 0
    assert paid["usd"] > 0 and plan["total"]["usd_at_most"] >= plan["total"]["usd"]
    assert "the run may stop at it (BudgetExceeded)" in res.stdout
    assert "free" in res.stdout
