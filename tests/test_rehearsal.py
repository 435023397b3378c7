"""The team topology rehearsed natively (deploy/rehearse.py), and compose describing the same stack."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.integration
def test_the_team_topology_runs_a_sweep_twice_and_the_second_run_pays_nothing(tmp_path: Path) -> None:
    """PostgreSQL, S3 (moto), Prefect server, MLflow server, Dask (2 workers), a work pool with two
    Prefect workers: a sweep triggered through the Prefect API runs; again on the other worker, free."""
    # Its temporary folders (and so every command line of its processes) under a folder of this
    # test's own: the leftover check below must not see another rehearsal running on the machine.
    # Short, under /tmp: PostgreSQL's socket path has a length limit.
    own = Path(tempfile.mkdtemp(prefix="rh-", dir="/tmp"))
    own.chmod(0o755)  # as root, PostgreSQL runs as the postgres user, which must reach its folder
    try:
        res = subprocess.run(
            [sys.executable, str(ROOT / "deploy" / "rehearse.py"), "--json", "--keep-logs", str(tmp_path)],
            capture_output=True,
            text=True,
            timeout=1200,
            cwd=ROOT,
            env=os.environ | {"TMPDIR": str(own)},
        )
    finally:
        shutil.rmtree(own, ignore_errors=True)
    report = json.loads(res.stdout.strip().splitlines()[-1])
    failed = [check for check, held in report["checks"].items() if not held]
    assert res.returncode == 0 and not failed, (failed, res.stdout[-3000:], res.stderr[-3000:])
    measured = report["measured"]
    assert measured["judgments_in_ledger"] == 4 * 5  # the toy set: 4 queries x k 5, shared by both cells, in PostgreSQL
    assert [s["judgments_asked"] for s in measured["sweeps"]] == [measured["judgments_in_ledger"], 0]
    assert report["first_run"]["worker"] != report["second_run"]["worker"]
    # every process it started is gone
    leftovers = subprocess.run(["pgrep", "-f", f"{own}/refine-(rehearsal|pg)-"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", leftovers.stdout
