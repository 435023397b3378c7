"""The suite's CI policy: under CI=true a skipped test (or module) fails the run."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SKIPPING = """
import pytest

def test_needs_data():
    pytest.skip("REFINE_DATA_DIR is not set")

def test_fine():
    assert 1 + 1 == 2
"""


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(Path(__file__).with_name("conftest.py"), tmp_path / "conftest.py")
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    "ci,code,counts",
    [
        (None, 0, "refine-eval tests: 1 passed, 0 failed, 0 error, 1 skipped"),
        ("true", 1, "refine-eval tests: 1 passed, 1 failed, 0 error, 0 skipped"),
    ],
)
def test_a_skip_fails_only_in_ci(tmp_path: Path, ci: str | None, code: int, counts: str) -> None:
    result = _run(tmp_path, ci)
    assert result.returncode == code, result.stdout + result.stderr
    assert counts in result.stdout, result.stdout
    if ci:
        assert "skipped in CI (CI=true), which counts as a failure: REFINE_DATA_DIR is not set" in result.stdout
