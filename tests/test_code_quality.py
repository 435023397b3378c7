"""The code's own checks, run with the suite: lint and format (ruff), the layers (import-linter)
and strict types on the numeric core (mypy). Their settings live in pyproject.toml."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("refine_core", "evaluations", "tasks", "flows")


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def _lint_imports() -> str:
    return str(Path(sys.executable).with_name("lint-imports"))


def test_ruff_finds_nothing_to_lint() -> None:
    result = _run(sys.executable, "-m", "ruff", "check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_code_is_formatted_by_ruff() -> None:
    result = _run(sys.executable, "-m", "ruff", "format", "--check", "--no-cache", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_numeric_core() -> None:
    result = _run(sys.executable, "-m", "mypy", "--cache-dir", str(ROOT / ".mypy_cache"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues found in" in result.stdout


@pytest.mark.parametrize("violation", [None, "refine_core/metrics.py", "evaluations/config.py"])
def test_the_layers_hold_and_a_crossing_import_breaks_them(tmp_path: Path, violation: str | None) -> None:
    """The contracts are kept by the code, and a copy with one forbidden import is caught: the
    numeric core reaching for a judge, or the data layer reaching up into the tasks."""
    if violation is None:
        result = _run(_lint_imports(), "--no-cache")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 broken" in result.stdout
        return
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / violation
    crossing = "import refine_core.judges\n" if violation.startswith("refine_core") else "import tasks.core\n"
    target.write_text(target.read_text() + "\n" + crossing)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = _run(_lint_imports(), "--no-cache", cwd=tmp_path, env=env)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and violation.replace("/", ".").removesuffix(".py") in result.stdout


def test_no_private_name_is_imported_from_another_module() -> None:
    """``from m import _name`` reaches into another module's internals; a private submodule of a
    package (``from refine_core import _parallel``) is the package's own business and allowed."""
    import ast

    found = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module:
                    for alias in node.names:
                        private = alias.name.startswith("_") and not alias.name.startswith("__")
                        submodule = (ROOT / node.module.replace(".", "/") / f"{alias.name}.py").is_file()
                        if private and not submodule:
                            found.append(f"{path.relative_to(ROOT)}: from {node.module} import {alias.name}")
    assert not found, found
