"""Crash-resume: kill -9 `refine run` at random points, then check that nothing was lost.

A sweep (CLINC150 subset, the Claude judge against the fake server on 127.0.0.1 plus the
oracle) is started as a real `refine run` process and killed with SIGKILL after a random delay,
several times (seeded), so the kills land during embedding, judging or MLflow logging. After
each kill: every SQLite store (judgment ledger, embedding index, MLflow) passes
`PRAGMA integrity_check`. Finally a run completes, and the script reports: runs left RUNNING
(must be 0: the next sweep marks a dead process's runs KILLED), judgments paid twice (only calls
in flight at a kill may repeat), and whether the final results equal a clean run's.

    REFINE_DATA_DIR=... python benchmarks/crash_resume.py [--kills 5] [--seed 0] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake Messages API of the tests
from fakes.anthropic_server import FakeAnthropic  # noqa: E402

from benchmarks._common import emit_json, machine_info, print_table  # noqa: E402

KEY = "sk-ant-crash-resume-key"


def integrity(path: Path) -> str:
    if not path.exists():
        return "absent"
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


def stores(home: Path) -> dict[str, str]:
    out = {"ledger": integrity(home / "judgments.sqlite"), "mlflow": integrity(home / "mlflow.db")}
    for index in (home / "embeddings").glob("*/index.sqlite"):
        out[f"embeddings/{index.parent.name[:20]}"] = integrity(index)
    return out


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-delay", type=float, default=60.0, help="latest kill, seconds after start")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def _runs_by_status(db: Path) -> dict[str, int]:
    """The crash-resume experiment's MLflow runs counted by status (none may be left RUNNING)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("crash-resume")
    runs = client.search_runs([experiment.experiment_id], max_results=1000) if experiment else []
    by_status: dict[str, int] = {}
    for run in runs:
        by_status[run.info.status] = by_status.get(run.info.status, 0) + 1
    return by_status


def main() -> None:
    args = _arguments()

    from evaluations.registry import load_benchmark

    bench = load_benchmark("clinc150", queries=20, max_documents=2500)
    relevant = bench.relevant_texts()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="refine-crash-"))
    rows, problems = [], []
    with FakeAnthropic(lambda q, d: d in relevant.get(q, set()), api_key=KEY, latency=0.05) as server:
        config = home / "sweep.yaml"
        config.write_text(
            "name: crash-resume\n"
            "benchmarks: [{name: clinc150, queries: 20, max_documents: 2500}]\n"
            f"judges: [{{kind: oracle}}, {{kind: anthropic, scheme: pointwise, base_url: '{server.base_url}', concurrency: 4}}]\n"
            "grid: {lr: [1.0e-4, 1.0e-3]}\n"
        )
        env = {**os.environ, "REFINE_HOME": str(home / ".refine"), "ANTHROPIC_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-m", "flows.cli", "run", str(config), "--json"]
        for attempt in range(args.kills):
            delay = rng.uniform(8.0, args.max_delay)
            start = time.perf_counter()
            proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                proc.wait(timeout=delay)
                outcome = f"finished before the kill ({time.perf_counter() - start:.0f} s)"
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                outcome = f"killed at {delay:.1f} s"
            time.sleep(0.5)
            checks = stores(home / ".refine")
            bad = {k: v for k, v in checks.items() if v not in ("ok", "absent")}
            if bad:
                problems.append(f"attempt {attempt + 1}: corrupt {bad}")
            rows.append(
                [
                    attempt + 1,
                    outcome,
                    sum(server.stats.pairs_answered.values()),
                    ", ".join(f"{k}={v}" for k, v in checks.items()),
                ]
            )
        final = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=900)
        paid_twice = sum(1 for c in server.stats.pairs_answered.values() if c > 1)
    if final.returncode != 0:
        problems.append(f"final run failed: {final.stderr[-500:]}")
        result = {}
    else:
        result = json.loads(final.stdout.strip().splitlines()[-1])
    by_status = _runs_by_status(home / ".refine" / "mlflow.db")
    if by_status.get("RUNNING"):
        problems.append(f"{by_status['RUNNING']} runs left RUNNING")
    info = machine_info()
    print(f"machine: {info}")
    print_table(["attempt", "outcome", "judge answers so far", "store integrity"], rows)
    print(
        f"final run: exit {final.returncode}; {len(result.get('cells', []))} cells; MLflow runs by status: {by_status}"
    )
    print(
        f"judgments paid twice: {paid_twice} (only calls in flight at a kill can repeat: at most "
        f"{args.kills} kills x concurrency 4)"
    )
    print("problems: " + ("; ".join(problems) if problems else "none"))
    if args.json:
        emit_json(
            {
                "benchmark": "crash_resume",
                "machine": info,
                "kills": args.kills,
                "final_exit": final.returncode,
                "runs_by_status": by_status,
                "paid_twice": paid_twice,
                "problems": problems,
            }
        )
    if problems:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
