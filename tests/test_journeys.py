"""Retry and compare, as a user meets them, against real servers (schedule: test_journeys_schedule.py).

* retry from the CLI: a judge answering 401 makes ``refine run`` exit 3 with one line per cell
  and the command to retry; the retry pays only for what failed; an identical re-run pays nothing;
  a killed run leaves no process behind and the next run marks its flow runs crashed.
* compare: ``refine compare`` on a grid (varying columns, every method, stored p (BH)),
  ``--layout paper`` with ``--where``, ``refine experiments``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fakes.anthropic_server import FakeAnthropic
from journeys import SENTINEL_KEY, USERDATA, claude_config, gold, port_closed
from servers import BIN, base_env, free_port, wait_for
from typer.testing import CliRunner

pytestmark = pytest.mark.integration  # every journey runs real servers or the refine command


# ---------------------------------------------------------------------------------------------
# retry from the command line
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_a_wrong_key_exits_3_names_the_cause_and_the_retry_pays_only_what_failed(
    platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.cli import app

    relevant, queries = gold()
    runner = CliRunner()
    with FakeAnthropic(lambda q, d: d in relevant.get(q, set()), api_key=SENTINEL_KEY) as claude:
        config = claude_config(tmp_path / "claude.yaml", claude.base_url, "journey-retry", lrs="[0.01]")
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-wrong-key")
        failed = runner.invoke(app, ["run", str(config), "--json"])
        assert failed.exit_code == 3, failed.output
        # the breaker: the first calls go one at a time, and two refused in a row stop the run asking
        assert claude.stats.requests == 2 and claude.stats.status[401] == 2
        stderr = failed.stderr
        lines = [line for line in stderr.splitlines() if line.startswith("judgments failed:")]
        assert len(lines) == 2, stderr
        stopped, cell_line = lines
        assert "stopped: the service refused 2 calls in a row" in stopped and "HTTP 401" in stopped
        assert "ANTHROPIC_API_KEY" in stopped
        assert "20 judgments failed in 4 queries" in cell_line and "HTTP 401 authentication_error" in cell_line
        assert "10 not asked once the judge was stopped" in cell_line and "ANTHROPIC_API_KEY" in cell_line
        assert f"refine run {config}" in stderr
        out = json.loads(failed.stdout.strip().splitlines()[-1])
        assert out["judgment_failures"] == [line.removeprefix("judgments failed: ") for line in lines]
        errors = out["cells"][0]["judge_errors"]
        assert errors.pop("AuthenticationError: HTTP 401 authentication_error") == 10
        ((not_asked, count),) = errors.items()
        assert not_asked.startswith("CircuitOpen: the service refused 2 calls in a row") and count == 10

        monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL_KEY)
        claude.reset_stats()
        healed = runner.invoke(app, ["run", str(config), "--json"])
        assert healed.exit_code == 0, healed.output
        assert claude.stats.message_requests == len(queries)  # one listwise call per query, nothing more
        cell = json.loads(healed.stdout.strip().splitlines()[-1])["cells"][0]
        assert cell["failed_queries"] == 0 and cell["metrics"]["refined"]["map"] > 0

        claude.reset_stats()
        again = runner.invoke(app, ["run", str(config), "--json"])
        assert again.exit_code == 0 and claude.stats.message_requests == 0
        same = json.loads(again.stdout.strip().splitlines()[-1])["cells"][0]
        assert same["metrics"] == cell["metrics"] and same["cached"] is True
        assert same["original_run_id"] == cell["run_id"]
        assert (
            "judgments in this run: 0 paid, 0 free (local judges), 0 failed; 0 requests sent to paid judges, "
            "estimated $0.00" in again.stdout
        )

    from mlflow import MlflowClient

    from flows.tracking import tracking_uri

    run = MlflowClient(tracking_uri()).get_run(same["run_id"])
    assert run.data.metrics["judgments_paid"] == 0 and run.data.metrics["judgments_cached"] == 20
    assert run.data.tags["refine.cached"] == "true" and run.data.tags["refine.original_run_id"] == cell["run_id"]


@pytest.mark.slow
@pytest.mark.integration
def _kill_and_expect_no_process_left(proc: subprocess.Popen) -> None:
    """``kill -9`` a running command whose Prefect server (uvicorn) is among its descendants; every
    process it started must end within 30 s."""
    import psutil

    started = psutil.Process(proc.pid).children(recursive=True)
    servers = [p for p in started if "uvicorn" in " ".join(p.cmdline())]
    assert servers, [p.cmdline() for p in started]  # the command's Prefect server, a child of it
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    _, alive = psutil.wait_procs(started, timeout=30)
    assert alive == [], [p.cmdline() for p in alive]


def test_a_killed_run_leaves_no_process_and_the_next_run_marks_its_flow_runs_crashed(
    tmp_path: Path, data_root: Path
) -> None:
    import sqlite3

    from mlflow import MlflowClient

    config = tmp_path / "kill.yaml"
    config.write_text(
        "name: kill\nbenchmarks:\n  - {name: clinc150, queries: 40, max_documents: 4000}\n"
        "judges:\n  - kind: oracle\ngrid:\n  lr: [0.0001, 0.001]\n"
    )
    env = base_env(tmp_path) | {"REFINE_DATA_DIR": str(data_root)}
    mlflow_db = tmp_path / "refine" / "mlflow.db"
    proc = subprocess.Popen(
        [str(BIN / "refine"), "run", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def running_sweep() -> bool:  # read the file directly: a client would race the CLI's table creation
            try:
                with sqlite3.connect(f"file:{mlflow_db}?mode=ro", uri=True, timeout=1) as db:
                    return bool(db.execute("select 1 from runs where status = 'RUNNING'").fetchall())
            except sqlite3.Error:
                return False

        wait_for(running_sweep, 240, "the sweep to start")
        _kill_and_expect_no_process_left(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    # By id: the re-run names its sub-flows as the killed run did, so names would mix the two.
    with sqlite3.connect(tmp_path / "refine" / "prefect" / "prefect.db") as db:
        left = [row[0] for row in db.execute("select id from flow_run where state_type = 'RUNNING'")]
    assert left, "the killed command's flow runs are still RUNNING in the database"

    began = time.time()
    again = subprocess.run(
        [str(BIN / "refine"), "run", str(config)], env=env, capture_output=True, text=True, timeout=600
    )
    ended = time.time()
    assert again.returncode == 0, again.stderr[-2000:]
    # benchmarks/first_run.py's breakdown of a run, read from this home's Prefect database
    from benchmarks.first_run import stages

    spent = stages(tmp_path / "refine", began, ended)
    assert spent["total (wall)"] == pytest.approx(ended - began)
    assert all(seconds >= -0.01 for seconds in spent.values()), spent  # UTC read as UTC: no stage is negative
    assert 0 < spent["start-up (imports, config, server, stores)"] < spent["total (wall)"]
    assert spent["cells: their tasks (select, judge, refine, evaluate)"] > 0
    with sqlite3.connect(tmp_path / "refine" / "prefect" / "prefect.db") as db:
        states = dict(db.execute("select id, state_type from flow_run").fetchall())
        marks = ",".join("?" * len(left))
        tasks_left = db.execute(
            f"select name from task_run where flow_run_id in ({marks}) and state_type in ('RUNNING', 'PENDING')", left
        ).fetchall()
    assert all(states[run] == "CRASHED" for run in left), states
    assert not tasks_left, f"task runs of the killed flow runs still unfinished: {tasks_left}"
    runs = MlflowClient(f"sqlite:///{mlflow_db}").search_runs(
        [e.experiment_id for e in MlflowClient(f"sqlite:///{mlflow_db}").search_experiments()], ""
    )
    assert "RUNNING" not in {r.info.status for r in runs}  # the killed sweep's MLflow runs are closed too


def test_a_killed_classification_evaluation_leaves_no_process(tmp_path: Path, data_root: Path) -> None:
    """`refine evaluate-classification` runs a Prefect flow too: killed while it runs, it leaves no
    Prefect server behind (its own server, under the same watchdog as `refine run`'s)."""
    import sqlite3

    env = base_env(tmp_path) | {"REFINE_DATA_DIR": str(data_root)}
    proc = subprocess.Popen(
        [str(BIN / "refine"), "evaluate-classification", "clinc150", "--queries", "30", "--max-documents", "3000"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:

        def running_flow() -> bool:
            try:
                with sqlite3.connect(f"file:{tmp_path / 'refine' / 'prefect' / 'prefect.db'}?mode=ro", uri=True) as db:
                    return bool(db.execute("select 1 from flow_run where state_type = 'RUNNING'").fetchall())
            except sqlite3.Error:
                return False

        wait_for(running_flow, 240, "the evaluation's flow run to start")
        _kill_and_expect_no_process_left(proc)
    finally:
        if proc.poll() is None:
            proc.kill()


@pytest.mark.parametrize(
    "judge,message",
    [
        ("{kind: local-lm, model: /no/such/model.gguf}", "local judge model '/no/such/model.gguf': no such folder"),
        (
            "{kind: cross-encoder, model: /no/such/cross-encoder}",
            "cross-encoder '/no/such/cross-encoder': no such folder",
        ),
        ("{kind: cross-encoder, model: nobody/not-a-cached-model}", "not in the local Hugging Face cache"),
    ],
)
def test_missing_local_judge_models_fail_before_anything_is_embedded(
    tmp_path: Path, data_root: Path, judge: str, message: str
) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: x\nbenchmarks: [{{name: 'files:{USERDATA}'}}]\njudges: [{judge}]\n")
    env = base_env(tmp_path) | {"REFINE_DATA_DIR": str(data_root), "REFINE_EMBEDDING_CACHE": ""}  # the home's cache
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "refine"), "run", str(config)], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "refine" / "embeddings").exists()  # nothing was embedded
    assert time.perf_counter() - started < 60


def test_an_embedding_model_that_is_not_here_fails_in_preflight(data_root: Path) -> None:
    from embedders.models import EmbeddingModelError
    from evaluations.config import parse_config
    from flows.cli import preflight

    config = parse_config(
        {"name": "x", "benchmarks": [{"name": f"files:{USERDATA}"}], "models": ["nobody/no-such-model"]}
    )
    with pytest.raises(
        EmbeddingModelError, match="'nobody/no-such-model': not a folder and not in the local Hugging Face"
    ):
        preflight(config)


def test_an_unreachable_tracking_server_is_reported_within_seconds(tmp_path: Path, data_root: Path) -> None:
    config = tmp_path / "sweep.yaml"
    config.write_text(f"name: x\nbenchmarks: [{{name: 'files:{USERDATA}'}}]\n")
    env = base_env(tmp_path) | {
        "REFINE_DATA_DIR": str(data_root),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
    }
    started = time.perf_counter()
    result = subprocess.run(
        [str(BIN / "refine"), "run", str(config)], env=env, capture_output=True, text=True, timeout=120
    )
    elapsed = time.perf_counter() - started
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "MLflow tracking store http://127.0.0.1:" in result.stderr and "unreachable" in result.stderr
    assert elapsed < 45, f"took {elapsed:.0f} s (process start and imports included)"


# ---------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_compare_a_grid_shows_what_varies_and_the_stored_bh_p(platform: Path, tmp_path: Path) -> None:
    from flows.cli import app

    config = tmp_path / "grid.yaml"
    config.write_text(
        "name: journey-grid\n"
        f"benchmarks:\n  - name: files:{USERDATA}\n"
        "judges:\n  - kind: oracle\n  - {kind: noisy-oracle, flip_rate: 0.3, seed: 1}\n"
        "grid:\n  lr: [0.01, 0.001]\n  k: [5]\n  rounds: [1, 2]\n"
    )
    runner = CliRunner()
    ran = runner.invoke(app, ["run", str(config), "--json"])
    assert ran.exit_code == 0, ran.output
    cells = json.loads(ran.stdout.strip().splitlines()[-1])["cells"]
    assert len(cells) == 8 and all("refined_r2" in c["metrics"] for c in cells if c["params"]["rounds"] == 2)
    table = ran.stdout
    assert "rounds" in table and "refined_r2" in table and "+/=/−" in table

    shown = runner.invoke(
        app,
        [
            "compare",
            "--experiment",
            "journey-grid",
            "--format",
            "markdown",
            "--benchmark",
            "toy-intents",
            "--judge",
            "oracle",
        ],
    )
    assert shown.exit_code == 0, shown.output
    header = shown.stdout.splitlines()[0]
    assert all(col in header for col in ("judge", "lr", "rounds", "MAP refined_r2", "p (BH)", "improved/same/hurt"))
    stored = {c["run_id"]: c["tests"]["refined"]["pvalue_bh"] for c in cells}
    filtered = runner.invoke(app, ["compare", "--experiment", "journey-grid", "--where", "lr=0.01", "--json"])
    kept = json.loads(filtered.stdout.strip().splitlines()[-1])["cells"]
    assert len(kept) == 4 and all(c["params"]["lr"] == 0.01 for c in kept)
    # p (BH) is the sweep's, as stored: filtering never recomputes it
    assert all(c["tests"]["refined"]["pvalue_bh"] == pytest.approx(stored[c["run_id"]]) for c in kept)

    ambiguous = runner.invoke(app, ["compare", "--experiment", "journey-grid", "--layout", "paper"])
    assert ambiguous.exit_code == 2
    # every axis to fix, with the values present, in one message
    assert "differ in judge, lr, rounds (judge: oracle, noisy-oracle-0.3; lr: 0.01, 0.001; rounds: 1, 2)" in (
        ambiguous.output
    ), ambiguous.output
    assert "fix every one of them, e.g. --where judge=oracle lr=0.01 rounds=1" in ambiguous.output
    paper = runner.invoke(
        app,
        [
            "compare",
            "--experiment",
            "journey-grid",
            "--layout",
            "paper",
            "--format",
            "markdown",
            "--where",
            "judge=oracle",
            "lr=0.01",
            "rounds=1",
        ],
    )
    assert paper.exit_code == 0, paper.output
    assert "| all-MiniLM-L6-v2 | Refined |" in paper.stdout

    listed = runner.invoke(app, ["experiments", "--json"])
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.stdout)["experiments"] if r["name"] == "journey-grid"]
    assert row["cells"] == 8 and row["sweeps"] == 1
    assert row["best_refined_map"] == pytest.approx(max(c["metrics"]["refined"]["map"] for c in cells))
    assert row["url"].endswith("/runs?viewStateShareKey=refine-cells&workflowType=machine_learning")


def test_refine_ui_stops_its_server_when_stopped(tmp_path: Path) -> None:
    port = free_port()
    env = base_env(tmp_path) | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    proc = subprocess.Popen(
        [str(BIN / "refine"), "ui", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_for(
            lambda: httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200, 90, "the MLflow UI"
        )
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=10).status_code == 200
        # one server process (MLflow's default is four uvicorn workers) besides the mlflow command
        servers = subprocess.run(["pgrep", "-f", f"uvicorn.*{port}"], capture_output=True, text=True).stdout.split()
        assert len(servers) == 1, servers
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        wait_for(lambda: port_closed(port), 20, "the UI's port to close")
        leftover = subprocess.run(["pgrep", "-f", f"mlflow.*{port}"], capture_output=True, text=True).stdout.split()
        assert [pid for pid in leftover if int(pid) != os.getpid()] == []
    finally:
        if proc.poll() is None:
            proc.kill()
    shown = proc.stdout.read()
    assert f"MLflow UI: http://127.0.0.1:{port}" in shown
    # the user's shell shows the URL, not the server's start-up warnings or access log (issue 32)
    assert "Deprecation" not in shown and "GET /" not in shown and "Uvicorn running" not in shown, shown
    log = (tmp_path / "refine" / "mlflow-ui.log").read_text()
    assert "Application startup complete" in log and "GET /" not in log and "DeprecationWarning" not in log, log[-2000:]


def test_metric_keys_sort_as_numbers_and_read_back() -> None:
    from flows.tracking import measure_name, metric_key

    keys = [metric_key(f"refined.precision@{k}") for k in (5, 10, 20, 50)]
    assert (
        keys
        == sorted(keys)
        == ["refined.precision_at_05", "refined.precision_at_10", "refined.precision_at_20", "refined.precision_at_50"]
    )
    assert [measure_name(k.split(".", 1)[1]) for k in keys] == [
        "precision@5",
        "precision@10",
        "precision@20",
        "precision@50",
    ]


def test_win_tie_loss_counts() -> None:
    import numpy as np

    from refine_core.statistics import win_tie_loss

    assert win_tie_loss(np.array([0.1, 0.5, 0.5, np.nan]), np.array([0.3, 0.5, 0.2, 0.9])) == (1, 1, 1)


def test_failure_hints_name_the_cause() -> None:
    from flows.sweep import hint

    assert "ANTHROPIC_API_KEY" in hint("AuthenticationError: HTTP 401 authentication_error")
    assert "rate limited" in hint("RateLimitError: HTTP 429 rate_limit_error")
    assert "budget" in hint("BudgetExceeded")
    assert "retry later" in hint("InternalServerError: HTTP 500 api_error")


if sys.platform != "linux":  # pragma: no cover
    pytest.skip("process groups and pgrep: Linux only", allow_module_level=True)
