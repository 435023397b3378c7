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


def test_the_code_version_covers_every_module_that_defines_a_cached_task(tmp_path: Path) -> None:
    """Edit any file listed in CACHED_CODE and the version changes; and every module that defines
    a task with a cache key is listed (else editing it would leave stale cached results)."""
    import shutil

    from tasks.storage import CACHED_CODE, code_version

    root = Path(__file__).resolve().parents[1]
    covered = set()
    for entry in CACHED_CODE:
        path = root / entry
        covered |= {f.relative_to(root) for f in (path.rglob("*.py") if path.is_dir() else [path])}
    defining = {
        f.relative_to(root)
        for package in ("refine_core", "evaluations", "tasks", "flows")
        for f in (root / package).rglob("*.py")
        if "cache_key_fn=" in f.read_text()
    }
    assert defining and defining <= covered, sorted(defining - covered)

    for entry in CACHED_CODE:
        src = root / entry
        dst = tmp_path / entry
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dst)
    before = code_version(tmp_path)
    assert before == code_version(root)
    for edited in ("tasks/core.py", "flows/corpus.py", "refine_core/refinement.py", "evaluations/loaders.py"):
        with (tmp_path / edited).open("a") as handle:
            handle.write("\n# edited\n")
        after = code_version(tmp_path)
        assert after != before, edited
        before = after


def test_a_local_model_replaced_at_the_same_path_is_asked_again(tmp_path: Path) -> None:
    """The judge and HyDE task keys and a cell's outcome key cover the local model's files, not
    only its path: the same spec over a changed .gguf (or cross-encoder folder) is a new key."""
    from types import SimpleNamespace

    from evaluations.config import BenchmarkSpec, CellSpec, HydeSpec, JudgeSpec
    from flows.cell import outcome_key
    from tasks.core import hyde_cache_key, judge_cache_key

    gguf = tmp_path / "judge.gguf"
    gguf.write_bytes(b"GGUF" + bytes(range(256)) * 64)
    folder = tmp_path / "cross-encoder"
    folder.mkdir()
    (folder / "config.json").write_text('{"num_labels": 1}')
    bench, feedback = SimpleNamespace(hash="b" * 16), SimpleNamespace(digest="f" * 24)
    docs, queries = SimpleNamespace(digest="d" * 24), SimpleNamespace(digest="q" * 24)
    local = JudgeSpec(kind="local-lm", model=str(gguf))
    cross = JudgeSpec(kind="cross-encoder", model=str(folder))
    hyde = HydeSpec(kind="local-lm", model=str(gguf))
    cell = CellSpec(
        benchmark=BenchmarkSpec(name="clinc150"), model="all-MiniLM-L6-v2", judge=local, lr=1e-3, k=20, hyde=hyde
    )

    def keys() -> list[str]:
        return [
            judge_cache_key(None, {"judge": local, "bench": bench, "feedback": feedback}),
            judge_cache_key(None, {"judge": cross, "bench": bench, "feedback": feedback}),
            hyde_cache_key(None, {"spec": hyde, "bench": bench}),
            outcome_key(cell, bench, docs, queries),
        ]

    before = keys()
    assert keys() == before  # deterministic
    gguf.write_bytes(b"GGUF" + bytes(range(255, -1, -1)) * 64)
    (folder / "config.json").write_text('{"num_labels": 2}')
    after = keys()
    assert all(a != b for a, b in zip(before, after)), (before, after)
    # API judges: the spec names everything (the oracle has no files)
    oracle = JudgeSpec(kind="oracle")
    assert judge_cache_key(None, {"judge": oracle, "bench": bench, "feedback": feedback}) == judge_cache_key(
        None, {"judge": oracle, "bench": bench, "feedback": feedback}
    )
