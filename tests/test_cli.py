"""The refine CLI as a user runs it: a subprocess, exit codes, one-line errors, JSON shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES

REFINE = [sys.executable, "-m", "flows.cli"]


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "REFINE_HOME": str(tmp_path / ".refine"), "COLUMNS": "200", **env}
    return subprocess.run(
        [*REFINE, *args],
        capture_output=True,
        text=True,
        env=environ,
        timeout=600,
        cwd=Path(__file__).resolve().parents[1],
    )


@pytest.mark.data
def test_datasets_show_json(tmp_path: Path, data_root: Path) -> None:
    res = run(["datasets", "show", "clinc150", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"name", "queries", "documents", "pairs", "positives", "mean_positives_per_query", "hash"} <= out.keys()
    assert (out["queries"], out["documents"], out["positives"], out["pairs"]) == (150, 15000, 15000, 2250000)
    assert out["mean_positives_per_query"] == 100.0


@pytest.mark.data
def test_datasets_list_reports_presence(tmp_path: Path, data_root: Path) -> None:
    res = run(["datasets", "--json"], tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)["datasets"]}
    assert rows["clinc150"]["present"] and rows["banking77"]["present"] and not rows["argkp21"]["present"]


@pytest.mark.parametrize(
    "args,message",
    [
        (["datasets", "show", "nope"], "unknown dataset 'nope'"),
        (["demo", "--dataset", "nope"], "unknown dataset 'nope'"),
        (["demo", "--dataset", f"files:{FIXTURES / 'userdata'}", "--lr", "-1"], "lr must be a positive finite number"),
        (["demo", "--dataset", f"files:{FIXTURES / 'userdata'}", "--steps", "0"], "steps must be an integer >= 1"),
        (["demo", "--dataset", f"files:{FIXTURES / 'userdata'}", "--k", "30"], "exceeds the smallest query pool"),
        (["demo", "--dataset", f"files:{FIXTURES / 'userdata'}", "--model", "/no/such/model"], "no such folder"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(tmp_path: Path, args: list[str], message: str) -> None:
    res = run(args, tmp_path)
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_missing_files_exit_2_and_say_where(tmp_path: Path) -> None:
    res = run(["datasets", "show", "banking77"], tmp_path, REFINE_DATA_DIR=str(tmp_path / "empty"), HF_HUB_OFFLINE="1")
    assert res.returncode == 2
    assert str(tmp_path / "empty" / "banking77") in res.stderr and "Traceback" not in res.stderr


@pytest.mark.model
def test_demo_runs_end_to_end_on_a_user_dataset(tmp_path: Path) -> None:
    demo = ["demo", "--dataset", f"files:{FIXTURES / 'userdata'}", "--k", "5", "--lr", "0.01", "--json"]
    res = run(demo, tmp_path, REFINE_EMBEDDING_CACHE="")  # the home's own cache, not the session's
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out["metrics"]) == {"baseline", "rerank_only", "rocchio", "refined"}
    assert out["params"]["lr"] == 0.01 and out["params"]["k"] == 5
    for method in out["metrics"].values():
        assert 0.0 < method["map"] <= 1.0
    # the oracle can only help on this toy set
    assert out["metrics"]["refined"]["map"] >= out["metrics"]["baseline"]["map"]
    assert (tmp_path / ".refine" / "embeddings").is_dir()


def test_tables_piped_to_a_file_are_not_wrapped() -> None:
    """Issue 32: piped output was cut at 160 columns, wrapping wide tables mid-word; piped, a table is
    as wide as its content (a 300-character cell stays on one line) and so is every message."""
    import subprocess
    import sys

    script = (
        "from rich.table import Table\n"
        "from flows.console import console\n"
        "t = Table(title='wide')\n"
        "t.add_column('cell'); t.add_column('MAP')\n"
        "t.add_row('x' * 300, '0.5')\n"
        "console.print(t)\n"
        "console.print('y' * 400)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60).stdout
    assert any("x" * 300 in line and "0.5" in line for line in out.splitlines()), out
    assert "y" * 400 in out.splitlines()


def test_a_validation_error_reads_as_one_line_of_fields_and_reasons() -> None:
    """pydantic's ValidationError is a ValueError, so the CLI reports it as a user error; its own
    text is three lines ending in "For further information visit https://errors.pydantic.dev/..."
    (`refine search --judge local-lm` printed only that last line)."""
    from evaluations.config import JudgeSpec
    from flows.console import describe

    with pytest.raises(ValueError) as missing:
        JudgeSpec(kind="local-lm")
    assert describe(missing.value) == "JudgeSpec: local-lm needs model"
    with pytest.raises(ValueError) as two:
        JudgeSpec(kind="oracle", flip_rate="x", concurrency=0)
    text = describe(two.value)
    assert "\n" not in text and "pydantic.dev" not in text
    assert (
        text.startswith("JudgeSpec: flip_rate: ")
        and "; concurrency: Input should be greater than or equal to 1" in text
    )
    assert describe(ValueError("lr must be positive")) == "lr must be positive"
