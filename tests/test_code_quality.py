"""The code's own checks that are tests: the layer contracts catch a crossing import, no private
name crosses a module, the rooms stay small (modules, function bodies), the old import paths of
the services still work. Lint, format, types and
the contracts themselves run in `make lint` (first in CI); their settings live in pyproject.toml."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = (
    "refine_core",
    "embedders",
    "judging",
    "generators",
    "corpus",
    "evaluations",
    "tasks",
    "flows",
    "benchmarks",
)


def _run(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, timeout=600, env=env)


def _lint_imports() -> str:
    return str(Path(sys.executable).with_name("lint-imports"))


@pytest.mark.parametrize(
    "violation", [None, "refine_core/metrics.py", "evaluations/config.py", "refine_core/cosine.py"]
)
def test_the_layers_hold_and_a_crossing_import_breaks_them(tmp_path: Path, violation: str | None) -> None:
    """The contracts are kept by the code, and a copy with one forbidden import is caught: the
    numeric core reaching for a judge, the data layer reaching up into the tasks, or a cycle
    (cosine importing the metrics, which import cosine)."""
    if violation is None:
        result = _run(_lint_imports(), "--no-cache")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 broken" in result.stdout
        return
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / violation
    crossing, named = {
        "refine_core/metrics.py": ("import judging\n", "refine_core.metrics -> judging"),
        "evaluations/config.py": ("import tasks.core\n", "evaluations.config -> tasks.core"),
        "refine_core/cosine.py": ("import refine_core.metrics\n", ".cosine -> .metrics"),
    }[violation]
    target.write_text(target.read_text() + "\n" + crossing)
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    result = _run(_lint_imports(), "--no-cache", cwd=tmp_path, env=env)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and named in result.stdout, result.stdout


def test_no_private_name_is_imported_from_another_module() -> None:
    """``from m import _name`` reaches into another module's internals; a private submodule of a
    package (``from refine_core import _parallel``) is the package's own business and allowed."""
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


MAX_MODULE_LINES = 500
MAX_BODY_LINES = 80
# The compiled kernels stay one function each (the reason is beside ruff's exemption in
# pyproject.toml): numba compiles a function as one unit and LLVM vectorises its loops together.
KERNELS = {("refine_core/_kernels.py", "_refine_one"), ("refine_core/_metric_kernels.py", "special_counts")}


def _sources() -> list[Path]:
    return [path for package in (*PACKAGES, "deploy") for path in sorted((ROOT / package).rglob("*.py"))]


def test_no_module_is_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n for p in _sources() if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"split these modules (at most {MAX_MODULE_LINES} lines): {long}"


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's end."""
    body = function.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    return 0 if not body else (function.end_lineno or body[0].lineno) - body[0].lineno + 1


def test_no_function_body_is_over_80_lines() -> None:
    long = {}
    for path in _sources():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (where, node.name) not in KERNELS:
                if (n := body_lines(node)) > MAX_BODY_LINES:
                    long[f"{where}:{node.name}"] = n
    assert not long, f"split these functions (at most {MAX_BODY_LINES} lines of body): {long}"


def test_the_size_checks_count_what_they_say(tmp_path: Path) -> None:
    """A body of 81 statement lines after a docstring is too long; 80 is not."""
    for lines, too_long in ((80, False), (81, True)):
        source = 'def f():\n    """Doc."""\n' + "    x = 1\n" * lines
        (function,) = ast.parse(source).body
        assert isinstance(function, ast.FunctionDef)
        assert (body_lines(function) > MAX_BODY_LINES) is too_long


def test_the_services_old_import_paths_give_the_same_modules() -> None:
    """``refine_core.judges`` and the other moved services answer with the module at the new path
    (one object, so isinstance and monkeypatching agree) and warn where it went; the core itself
    imports none of them."""
    code = (
        "import sys, warnings\n"
        "import refine_core\n"
        "assert not any(m.split('.')[0] in {'judging', 'corpus', 'embedders', 'generators'} for m in sys.modules), "
        "sorted(m for m in sys.modules if m.split('.')[0] in {'judging', 'corpus', 'embedders', 'generators'})\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    from refine_core.judges.ledger import JudgmentLedger\n"
        "    import refine_core.corpus.index as old_index\n"
        "    from refine_core.embedding_cache import EmbeddingCache\n"
        "import judging.ledger, corpus.index, embedders.cache\n"
        "assert JudgmentLedger is judging.ledger.JudgmentLedger\n"
        "assert old_index is corpus.index and old_index.__name__ == 'corpus.index'\n"
        "assert sys.modules['refine_core.judges.ledger'] is sys.modules['judging.ledger']\n"
        "assert EmbeddingCache is embedders.cache.EmbeddingCache\n"
        "print(sorted({str(w.message) for w in caught if w.category is DeprecationWarning}))\n"
    )
    result = _run(sys.executable, "-c", code)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "refine_core.judges moved to judging" in result.stdout
    assert "refine_core.embedding_cache moved to embedders.cache" in result.stdout
