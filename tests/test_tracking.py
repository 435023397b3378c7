"""MLflow tracking helpers: run status on errors, stale runs of dead processes, metric names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.tracking import Tracker, metric_key


@pytest.fixture
def tracker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Tracker:
    monkeypatch.setenv("REFINE_HOME", str(tmp_path))
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    return Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_runs_end_failed_or_killed_on_errors(tracker: Tracker) -> None:
    exp = tracker.experiment("t")
    failed = tracker.start(exp, "a")
    with pytest.raises(ValueError), tracker.ends_run_on_error(failed):
        raise ValueError("boom")
    killed = tracker.start(exp, "b")
    with pytest.raises(KeyboardInterrupt), tracker.ends_run_on_error(killed):
        raise KeyboardInterrupt
    ok = tracker.start(exp, "c")
    with tracker.ends_run_on_error(ok):
        pass
    status = {r: tracker.client.get_run(r).info.status for r in (failed, killed, ok)}
    assert status == {failed: "FAILED", killed: "KILLED", ok: "RUNNING"}


def test_stale_runs_of_dead_processes_are_marked_killed(tracker: Tracker) -> None:
    exp = tracker.experiment("stale")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tracker.start(exp, "dead", tags={"refine.pid": dead.stdout.strip()})
    alive = tracker.start(exp, "alive")  # this process
    assert tracker.close_stale_runs(exp) == [stale]
    assert tracker.client.get_run(stale).info.status == "KILLED"
    assert tracker.client.get_run(alive).info.status == "RUNNING"
    assert os.getpid() == int(tracker.client.get_run(alive).data.tags["refine.pid"])


def test_metric_keys_are_mlflow_safe() -> None:
    assert metric_key("refined.ndcg@10") == "refined.ndcg_at_10"
    assert metric_key("p (BH)") == "p _BH_"
