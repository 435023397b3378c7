"""Reliability: a fault-injection soak of a real sweep against the fake Claude server, the
judge's document truncation, and an unreachable tracking store (RELIABILITY.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fakes.anthropic_server import FakeAnthropic, FaultPlan

from evaluations.config import BenchmarkSpec, Grid, JudgeSpec, SweepConfig

KEY = "sk-ant-soak-test-key"
SOAK_FAULTS = {"429": 0.20, "529": 0.05, "500": 0.05, "slow": 0.02, "malformed_body": 0.03}


def _per_query(result: dict) -> dict[str, pl.DataFrame]:
    from mlflow import MlflowClient

    from flows.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    out = {}
    for cell in result["cells"]:
        (artifact,) = [a for a in client.list_artifacts(cell["run_id"], "per_query") if a.path.endswith(".parquet")]
        out[cell["params"]["benchmark.hash"]] = pl.read_parquet(
            client.download_artifacts(cell["run_id"], artifact.path)
        )
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_fault_soak(platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluations.registry import load_benchmark
    from flows.sweep import run_sweep, sweep
    from judging import JudgmentLedger

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    # Three cells over three different random sets of 30 queries: each cell's failures stay
    # failed until the healed re-run (no later cell asks for the same pairs).
    specs = [BenchmarkSpec(name="clinc150", queries=30, query_seed=seed, max_documents=3100) for seed in (1, 2, 3)]
    relevant: dict[str, set[str]] = {}
    for spec in specs:
        relevant.update(
            load_benchmark("clinc150", queries=30, query_seed=spec.query_seed, max_documents=3100).relevant_texts()
        )

    def gold(q: str, d: str) -> bool:
        return d in relevant.get(q, set())

    def config(server: FakeAnthropic, name: str) -> SweepConfig:
        judge = JudgeSpec(
            kind="anthropic", scheme="pointwise", base_url=server.base_url, max_retries=3, timeout_s=3.0, concurrency=16
        )
        return SweepConfig(name=name, benchmarks=specs, judges=[judge], grid=Grid(k=[10]))

    # Fault-free reference, with its own ledger.
    monkeypatch.setenv("REFINE_LEDGER_URL", str(tmp_path / "clean.sqlite"))
    with FakeAnthropic(gold, api_key=KEY) as clean:
        reference = sweep(config(clean, "soak-clean"))
    ref_pq = _per_query(reference)
    assert len(reference["cells"]) == 3 and all(c["failed_queries"] == 0 for c in reference["cells"])

    # The same sweep against a server that fails at random (seeded), with a fresh ledger.
    ledger_path = tmp_path / "faulty.sqlite"
    monkeypatch.setenv("REFINE_LEDGER_URL", str(ledger_path))
    faults = FaultPlan(rates=SOAK_FAULTS, seed=7, retry_after="0", slow_seconds=4.0)
    with FakeAnthropic(gold, api_key=KEY, faults=faults) as server:
        faulty = run_sweep(config(server, "soak-faulty"))
        assert faulty["failures"] == [] and len(faulty["cells"]) == 3  # the sweep completes
        assert len(faulty["judgment_failures"]) == sum(c["judgments_failed"] > 0 for c in faulty["cells"]) > 0
        ledger = JudgmentLedger(ledger_path)
        failures = ledger.failures()
        assert failures, "the seeded faults should exhaust some retries"
        assert all(f["error"] for f in failures)  # every failure has its reason
        faulty_pq = _per_query(faulty)
        assert sum(c["failed_queries"] for c in faulty["cells"]) > 0
        for bench_hash, table in faulty_pq.items():
            ok = ~table["judge_failed"].to_numpy()
            complete = np.array([all(s is not None for s in row) for row in table["judge_scores"].to_list()])
            same = ok & complete
            assert same.sum() >= 10
            for method in ("baseline", "rerank_only", "rocchio", "refined"):
                np.testing.assert_array_equal(
                    table[f"ap_{method}"].to_numpy()[same], ref_pq[bench_hash][f"ap_{method}"].to_numpy()[same]
                )
        faulty_stats = (server.stats.message_requests, dict(server.stats.faults))

        # Faults off: a re-run completes the rest and equals the fault-free run exactly.
        server.faults = FaultPlan()
        healed = sweep(config(server, "soak-faulty"))
        assert all(c["failed_queries"] == 0 for c in healed["cells"])
        assert server.stats.message_requests > faulty_stats[0]  # the failed pairs were asked again
        for ref_cell, cell in zip(reference["cells"], healed["cells"]):
            assert cell["metrics"] == ref_cell["metrics"]
        paid_twice = sum(1 for count in server.stats.pairs_answered.values() if count > 1)
        assert paid_twice == 0
        assert ledger.count() == len({(q, d) for (q, d) in server.stats.pairs_answered})  # each pair stored once
    print(
        f"\nsoak: {faulty_stats[0]} requests in the faulty run, injected {faulty_stats[1]}, "
        f"{len(failures)} judgments recorded as failed, {server.stats.message_requests} requests in total, "
        f"paid twice: {paid_twice}, answers the client gave up on: {sum(server.stats.late_answers.values())}"
    )


def test_long_documents_are_truncated_for_the_judge_and_counted(tmp_path: Path) -> None:
    from judging import JudgeRequest, JudgmentLedger, run_judge
    from judging.anthropic_judge import AnthropicJudge

    os.environ.setdefault("ANTHROPIC_API_KEY", KEY)
    huge = "card " * 200_000  # 1 MB
    with FakeAnthropic(lambda q, d: "card" in d, api_key=os.environ["ANTHROPIC_API_KEY"], keep_bodies=True) as server:
        judge = AnthropicJudge(scheme="pointwise", base_url=server.base_url)
        report = run_judge(
            judge,
            [JudgeRequest("lost card", (huge, "short"))],
            ledger=JudgmentLedger(tmp_path / "l.sqlite"),
            max_document_chars=20_000,
        )
        assert report.truncated_documents == 1 and report.judged == 2
        sent = max(len(json_text(b)) for b in server.stats.bodies)
        assert sent < 30_000  # never sent whole
        assert report.as_metrics()["documents_truncated_for_judge"] == 1.0


def json_text(body: dict) -> str:
    import json

    return json.dumps(body)


@pytest.mark.integration
def test_unreachable_tracking_uri_is_a_one_line_error(tmp_path: Path, data_root: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text("name: x\nbenchmarks: [{name: clinc150, queries: 2}]\n")
    env = {
        **os.environ,
        "REFINE_HOME": str(tmp_path / ".refine"),
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9/",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "2",
    }
    res = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 2, res.stderr
    assert "MLflow tracking store http://127.0.0.1:9/ is unreachable" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
