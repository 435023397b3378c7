"""Schedule, as a user meets it, against real servers: ``prefect server start`` / ``refine server
start``, ``refine serve`` with a cron schedule, a run triggered through the Prefect API completes,
its cells are in MLflow with links both ways and its INFO logs are in Prefect; a run whose
judgments failed ends FAILED, and Prefect's Retry (what the UI's button sends) re-asks only the
failed judgments; a work pool's workers; the kept and the per-command Prefect servers.
(Split from test_journeys.py, which keeps retry and compare, so the two run in parallel.)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fakes.anthropic_server import FakeAnthropic, FaultPlan
from journeys import SENTINEL_KEY, USERDATA, claude_config, gold, port_closed
from servers import BIN, PrefectAPI, base_env, free_port, prefect_server, process, wait_for
from typer.testing import CliRunner

pytestmark = pytest.mark.integration  # every journey runs real servers or the refine command


# ---------------------------------------------------------------------------------------------
# schedule
# ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.integration
def test_a_served_sweep_runs_on_a_real_prefect_server_and_prefect_retry_reasks_only_failures(
    tmp_path: Path, data_root: Path
) -> None:
    from mlflow import MlflowClient

    relevant, queries = gold()
    broken = queries[1]
    with (
        FakeAnthropic(
            lambda q, d: d in relevant.get(q, set()), api_key=SENTINEL_KEY, faults=FaultPlan(fail_queries={broken})
        ) as claude,
        prefect_server(tmp_path) as api,
    ):
        config = claude_config(tmp_path / "nightly.yaml", claude.base_url, "nightly")
        env = base_env(tmp_path) | {
            "PREFECT_API_URL": api,
            "ANTHROPIC_API_KEY": SENTINEL_KEY,
            "REFINE_DATA_DIR": str(data_root),
        }
        prefect = PrefectAPI(api)
        with process(
            [str(BIN / "refine"), "serve", str(config), "--cron", "0 3 * * *", "--name", "nightly"],
            env,
            tmp_path / "serve.log",
        ):
            # the deployment and its schedule are registered one after the other: wait for both
            deployment = wait_for(
                lambda: (d := prefect.deployment("refine-sweep", "nightly")) and d["schedules"] and d,
                120,
                "the deployment and its schedule",
            )
            assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 3 * * *"]

            run_id = prefect.run_deployment(deployment["id"])
            first = prefect.wait_final(run_id, 300)
            log = (tmp_path / "serve.log").read_text(errors="replace")
            assert first["state_type"] == "FAILED", log[-3000:]
            assert first["name"].startswith("nightly 20")  # <config> <time>, not a random name
            # the serving process says when each run starts and ends, with its MLflow link
            said = wait_for(
                lambda: (
                    (t := (tmp_path / "serve.log").read_text(errors="replace")) and f"({run_id}): FAILED" in t and t
                ),
                30,
                "the serve process's line for the failed run",
            )
            assert f"({run_id}): RUNNING" in said and "sweep nightly: 2 cells logged; MLflow http" in said, said[-2000:]
            assert "run it now from another shell with: refine trigger nightly" in said
            # a failed run's line says why and where its traceback is; the terminal shows no
            # traceback and no `prefect deployment run` (Prefect's banner: it fails in a shell
            # without PREFECT_API_URL)
            failed = next(line for line in said.splitlines() if f"({run_id}): FAILED" in line)
            assert "JudgmentsFailed" in failed and f"its log and traceback: {api[: -len('/api')]}" in failed, failed
            assert "Traceback" not in said and "prefect deployment run" not in said, said[-3000:]
            # INFO logs reach Prefect (the API handler sends them in batches: give it a few seconds)
            messages = wait_for(
                lambda: (
                    (m := [entry["message"] for entry in prefect.logs(run_id)])
                    and any("judgments failed" in x and "HTTP 500" in x for x in m)
                    and m
                ),
                60,
                "the failure line in the flow run's Prefect logs",
            )
            assert any("sweep nightly: 2 cells" in m for m in messages), messages

            mlflow = MlflowClient(f"sqlite:///{tmp_path / 'refine' / 'mlflow.db'}")
            (experiment,) = [e for e in mlflow.search_experiments() if e.name == "nightly"]
            cells = mlflow.search_runs([experiment.experiment_id], "tags.`refine.kind` = 'cell'")
            assert len(cells) == 2 and all(c.info.status == "FINISHED" for c in cells)
            assert {c.info.run_name for c in cells} == {
                "lr=0.01 · anthropic:default/listwise · files:userdata · all-MiniLM-L6-v2",
                "lr=0.001 · anthropic:default/listwise · files:userdata · all-MiniLM-L6-v2",
            }
            assert all(c.data.metrics["judge_failed_queries"] == 1 for c in cells)
            assert all(c.data.tags["refine.prefect_flow_run_url"].startswith("http://127.0.0.1:") for c in cells)
            cell_runs = prefect.flow_runs(parent_flow_run_id={"any_": [run_id]}) or prefect.flow_runs()
            linked = [a for r in cell_runs for a in prefect.artifacts(r["id"]) if a["key"] == "mlflow-run"]
            assert any(c.info.run_id in a["data"] for c in cells for a in linked)

            # The UI's Retry: only the failed query is asked again, everything else is cached.
            claude.faults = FaultPlan()
            claude.reset_stats()
            prefect.retry(run_id)
            time.sleep(1)
            second = prefect.wait_final(run_id, 300)
            assert second["state_type"] == "COMPLETED", (tmp_path / "serve.log").read_text(errors="replace")[-3000:]
            wait_for(
                lambda: f"({run_id}): COMPLETED" in (tmp_path / "serve.log").read_text(errors="replace"),
                30,
                "the serve process's line for the retried run",
            )
            assert {q for (q, _) in claude.stats.pairs_requested} == {broken}
            assert claude.stats.message_requests == 1  # both cells share the judged feedback
            latest = mlflow.search_runs(
                [experiment.experiment_id],
                "tags.`refine.kind` = 'sweep'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )[0]
            healed = mlflow.search_runs(
                [experiment.experiment_id], f"tags.`mlflow.parentRunId` = '{latest.info.run_id}'"
            )
            assert len(healed) == 2 and all(c.data.metrics["judge_failed_queries"] == 0 for c in healed)
            assert sum(c.data.metrics["judgments_paid"] for c in healed) == 5  # the broken query's top 5, once
    leaked = subprocess.run(["grep", "-rl", SENTINEL_KEY, str(tmp_path)], capture_output=True, text=True).stdout
    assert leaked == "", f"the API key reached: {leaked}"


@pytest.mark.slow
@pytest.mark.integration
def test_a_work_pool_deployment_runs_on_workers_and_a_second_run_pays_nothing(tmp_path: Path, data_root: Path) -> None:
    from mlflow import MlflowClient

    config = tmp_path / "team.yaml"
    config.write_text(
        f"name: team\nbenchmarks:\n  - name: files:{USERDATA}\njudges:\n  - kind: oracle\n"
        "grid:\n  lr: [0.01]\n  k: [5]\nschedule: '30 2 * * 1-5'\nmethods: [rocchio_kl]\n"
    )
    with prefect_server(tmp_path) as api:
        env = base_env(tmp_path) | {"PREFECT_API_URL": api, "REFINE_DATA_DIR": str(data_root)}
        deployed = subprocess.run(
            [str(BIN / "refine"), "deploy", str(config), "--pool", "team", "--name", "nightly"],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert deployed.returncode == 0, deployed.stderr
        # our line names the next commands; Prefect's advice to use `.serve` instead is not shown
        assert "start workers with: refine worker --pool team" in deployed.stdout, deployed.stdout
        assert "Looks like you're deploying" not in deployed.stdout + deployed.stderr
        prefect = PrefectAPI(api)
        deployment = wait_for(
            lambda: (d := prefect.deployment("refine-sweep", "nightly")) and d["schedules"] and d,
            60,
            "the deployment and its schedule",
        )
        assert deployment["work_pool_name"] == "team"
        assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["30 2 * * 1-5"]  # the config's schedule
        workers = [
            process(
                [str(BIN / "refine"), "worker", "--pool", "team", "--name", f"w{i}"],  # what `refine deploy` prints
                env | {"PREFECT_HOME": str(tmp_path / f"worker{i}")},
                tmp_path / f"worker{i}.log",
            )
            for i in (1, 2)
        ]
        with workers[0], workers[1]:
            runs = []
            for _ in range(2):
                run_id = prefect.run_deployment(deployment["id"])
                final = prefect.wait_final(run_id, 300)
                logs = "".join((tmp_path / f"worker{i}.log").read_text(errors="replace")[-2000:] for i in (1, 2))
                assert final["state_type"] == "COMPLETED", logs
                runs.append(final)
    mlflow = MlflowClient(f"sqlite:///{tmp_path / 'refine' / 'mlflow.db'}")
    (experiment,) = [e for e in mlflow.search_experiments() if e.name == "team"]
    sweeps = mlflow.search_runs(
        [experiment.experiment_id], "tags.`refine.kind` = 'sweep'", order_by=["attributes.start_time ASC"]
    )
    assert len(sweeps) == 2 and all(s.info.status == "FINISHED" for s in sweeps)
    # the oracle is free: its 20 verdicts are judgments_free, nothing paid; the second run asks nothing
    assert sweeps[0].data.metrics["judgments_free"] == 20 and sweeps[0].data.metrics["judgments_paid"] == 0
    assert sweeps[1].data.metrics["judgments_asked"] == 0
    assert sweeps[1].data.metrics["cells_cached"] == 1
    # the config's extra method ran on the workers, on the refinement's own judgments (20 paid above)
    cells = mlflow.search_runs([experiment.experiment_id], "tags.`refine.kind` = 'cell'")
    assert len(cells) == 2 and all("rocchio_kl.map" in c.data.metrics for c in cells)


@pytest.mark.slow
@pytest.mark.integration
def test_a_kept_local_server_serves_later_runs_and_stops(tmp_path: Path, data_root: Path) -> None:
    port = free_port()
    env = base_env(tmp_path) | {"REFINE_DATA_DIR": str(data_root)}
    started = subprocess.run(
        [str(BIN / "refine"), "server", "start", "--port", str(port)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert started.returncode == 0, started.stderr
    api = f"http://127.0.0.1:{port}/api"
    try:
        assert f"UI http://127.0.0.1:{port}" in started.stdout
        config = tmp_path / "kept.yaml"
        config.write_text(
            f"name: kept\nbenchmarks:\n  - name: files:{USERDATA}\njudges:\n  - kind: oracle\n"
            "grid:\n  lr: [0.01]\n  k: [5]\n"
        )
        ran = subprocess.run(
            [str(BIN / "refine"), "run", str(config)], env=env, capture_output=True, text=True, timeout=600
        )
        assert ran.returncode == 0, ran.stderr[-2000:]
        runs = PrefectAPI(api).flow_runs()
        assert any(r["name"].startswith("kept 20") and r["state_type"] == "COMPLETED" for r in runs), runs
        status = subprocess.run([str(BIN / "refine"), "server", "status"], env=env, capture_output=True, text=True)
        assert f"running: UI http://127.0.0.1:{port}" in status.stdout
    finally:
        stopped = subprocess.run(
            [str(BIN / "refine"), "server", "stop"], env=env, capture_output=True, text=True, timeout=60
        )
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    wait_for(lambda: port_closed(port), 30, "the kept server to stop")
    assert not (tmp_path / "refine" / "prefect" / "server.json").exists()


def _filled_tables(database: Path) -> dict[str, int]:
    with sqlite3.connect(database) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {t: db.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables}
    return {t: n for t, n in counts.items() if n}


def _alembic_version(database: Path) -> str:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT version_num FROM alembic_version").fetchone()[0]


_EPHEMERAL_SCRIPT = """
import json, os, sys
from flows.environment import configure_environment
configure_environment()
from flows import local_server
api = local_server.start_ephemeral()
proc = local_server._EPHEMERAL["proc"]
assert os.environ["PREFECT_API_URL"] == api and local_server.start_ephemeral() is None  # one per command
try:
    local_server.ready(timeout=float(sys.argv[1]))
    import httpx
    out = {"health": httpx.get(api + "/health").status_code}
    out["flows"] = httpx.post(api + "/flows/", json={"name": "probe"}).status_code // 100 * 100
    out["database"] = local_server._database_ready_marker().read_text().strip()
except RuntimeError as exc:
    out = {"error": str(exc)}
local_server.stop_ephemeral()
out |= {"exit": proc.poll(), "api_url_left": os.environ.get("PREFECT_API_URL")}
print(json.dumps(out))
"""


@pytest.mark.integration
def test_the_command_server_starts_early_answers_and_stops(tmp_path: Path) -> None:
    """``refine run``'s own Prefect server (started before the heavy imports, waited for before
    the first API call): it answers, stops with the command and leaves no URL behind; one that
    cannot start is an error that quotes its log."""
    env = base_env(tmp_path) | {"REFINE_CACHE_DIR": str(tmp_path / "machine-cache")}
    good = subprocess.run(
        [sys.executable, "-c", _EPHEMERAL_SCRIPT, "90"], env=env, capture_output=True, text=True, timeout=180
    )
    assert good.returncode == 0, good.stderr[-2000:]
    out = json.loads(good.stdout.strip().splitlines()[-1])
    assert out["health"] == 200 and out["exit"] is not None and out["api_url_left"] is None, out
    # The first new home on a machine: its server migrated the database, which is kept (schema and
    # alembic version only) as the template of later new homes; the command's server registered
    # no block types (the kept server's UI lists them, a command reads none).
    assert out["database"] == "migrated by its first server", out
    (template,) = (tmp_path / "machine-cache").glob("prefect-*-empty.db")
    assert _filled_tables(template) == {"alembic_version": 1}
    home_db = tmp_path / "refine" / "prefect" / "prefect.db"
    assert "flow" in _filled_tables(home_db) and "block_type" not in _filled_tables(home_db)  # the probe only
    # A second new home starts from a copy: same schema version, a server that answers and serves.
    second = env | {"REFINE_HOME": str(tmp_path / "second")}
    copied = subprocess.run(
        [sys.executable, "-c", _EPHEMERAL_SCRIPT, "90"], env=second, capture_output=True, text=True, timeout=180
    )
    assert copied.returncode == 0, copied.stderr[-2000:]
    out = json.loads(copied.stdout.strip().splitlines()[-1])
    assert out["health"] == 200 and out["flows"] == 200 and out["database"] == f"copied from {template}", out
    assert _alembic_version(tmp_path / "second" / "prefect" / "prefect.db") == _alembic_version(template)
    broken = env | {"PREFECT_API_DATABASE_CONNECTION_URL": "postgresql+asyncpg://nobody:x@127.0.0.1:1/none"}
    bad = subprocess.run(
        [sys.executable, "-c", _EPHEMERAL_SCRIPT, "60"], env=broken, capture_output=True, text=True, timeout=180
    )
    assert bad.returncode == 0, bad.stderr[-2000:]
    out = json.loads(bad.stdout.strip().splitlines()[-1])
    assert out["error"].startswith("the local Prefect server exited with status"), out
    assert "ephemeral-server.log" in out["error"] and out["exit"] is not None


def test_no_command_server_inside_a_process_that_imported_prefect(monkeypatch: pytest.MonkeyPatch) -> None:
    """``refine run`` invoked in-process (tests, notebooks) after Prefect is imported uses that
    Prefect's settings: it starts no server and leaves no API URL behind for later flows."""
    import prefect  # noqa: F401 - imported, as in any program that already uses Prefect

    from flows import local_server

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("REFINE_EPHEMERAL_API_URL", raising=False)
    assert local_server.start_ephemeral() is None
    assert "PREFECT_API_URL" not in os.environ and "REFINE_EPHEMERAL_API_URL" not in os.environ
    assert not local_server._EPHEMERAL


def test_a_bad_cron_is_one_line_and_exit_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from flows.cli import app
    from flows.environment import ANNOUNCE

    # serve sets these for the runs it serves: restored when the test ends
    monkeypatch.setenv(ANNOUNCE, "0")
    monkeypatch.setenv(
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", os.environ.get("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    )
    result = CliRunner().invoke(app, ["serve", "--cron", "every night"], env={"PREFECT_API_URL": ""})
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "'every night' is not a valid cron schedule" in lines[0], result.output


def test_serve_checks_the_sweep_before_serving_it(tmp_path: Path, data_root: Path) -> None:
    """`refine serve` runs the scheduled sweeps in its own process, so it checks them as `refine
    run` does: a config whose corpus cannot hold its positive documents failed at its first
    scheduled run, with two tracebacks in the serving terminal. It is now one line, exit 2,
    before any Prefect server is needed."""
    config = tmp_path / "small.yaml"
    config.write_text(
        "name: small\nbenchmarks:\n  - {name: clinc150, queries: 20, max_documents: 1000}\njudges:\n  - kind: oracle\n"
    )
    env = base_env(tmp_path) | {"REFINE_DATA_DIR": str(data_root)}
    ran = subprocess.run(
        [str(BIN / "refine"), "serve", str(config), "--cron", "0 3 * * *"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ran.returncode == 2, ran.stdout + ran.stderr
    lines = [line for line in ran.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot subsample to 1000 documents" in lines[0], ran.stderr
    assert "Prefect server" not in ran.stderr and ran.stdout.strip() == ""
