"""The code's own checks that are tests: the layer contracts catch a crossing import, no private
name crosses a module, the old import paths of the services still work. Lint, format, types and
the contracts themselves run in `make lint` (first in CI); their settings live in pyproject.toml."""

from __future__ import annotations

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
