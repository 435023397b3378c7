"""Shared fixtures. Tests never download anything: the Hub is switched off for the session."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# As the CLI does (embedders.models.sleeping_openmp_threads): `make test`'s four processes share two
# cores, where spinning OpenMP threads burn the CPU time that the other tests need.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# One torch thread per process embeds (REFINE_TORCH_THREADS, inherited by every `refine` process a
# test starts): the four processes already keep both cores busy, and beside a busy core a second
# thread only adds work (`benchmarks/embed_speed.py --openmp --texts 2000`, beside a busy core:
# 9.0 CPU-s and 9.1 s with two threads, 7.8 and 7.8 s with one). The vectors are the same to the
# bit whatever the thread count.
os.environ.setdefault("REFINE_TORCH_THREADS", "1")

FIXTURES = Path(__file__).parent / "fixtures"

# --- One embedding cache for the whole session -------------------------------------------------
# Embeddings depend only on the model and the exact text, so every test of a session (and every
# `refine` process it starts: they inherit the variable) shares one cache, as a team's homes do:
# the CLINC150 corpus that the reproduction, the default sweep, the journeys and the browser test
# all embed is embedded once per session (about 40 s on 2 cores), not once per test. The folder is
# made by the first process that imports this file (pytest-xdist's workers inherit it) and removed
# by that process at the end. Tests of the cache itself give their own folder; a test that needs
# the home's own cache drops the variable (see test_journeys' "nothing was embedded").
# The machine cache (REFINE_CACHE_DIR: the migrated empty Prefect database that new homes start
# from, see flows.local_server) is the session's too, so no test writes to ~/.cache: the session's
# first new home migrates its database, every later one starts from the copy, as on a user's machine.
_SESSION_CACHES = {
    variable: tempfile.mkdtemp(prefix=prefix)
    for variable, prefix in (
        ("REFINE_EMBEDDING_CACHE", "refine-test-embeddings-"),
        ("REFINE_CACHE_DIR", "refine-test-cache-"),
    )
    if variable not in os.environ
}
os.environ.update(_SESSION_CACHES)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):
        for folder in _SESSION_CACHES.values():
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The raw datasets (REFINE_DATA_DIR); data-backed tests skip only when it is unset."""
    configured = os.environ.get("REFINE_DATA_DIR")
    if not configured:
        pytest.skip("REFINE_DATA_DIR is not set: data-backed tests need the raw datasets (see README)")
    root = Path(configured)
    assert root.is_dir(), f"REFINE_DATA_DIR={root} is not a folder"
    return root


@pytest.fixture(scope="session")
def minilm():
    """The bundled all-MiniLM-L6-v2 (offline)."""
    from embedders.models import SentenceTransformerEmbedder
    from tasks.storage import torch_threads

    return SentenceTransformerEmbedder("all-MiniLM-L6-v2", threads=torch_threads())


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory, data_root: Path):
    """REFINE_HOME in a temp dir and one Prefect test harness (ephemeral server) per session."""
    from flows.environment import configure_environment

    home = tmp_path_factory.mktemp("refine-home")
    saved = {k: os.environ.get(k) for k in ("REFINE_HOME", "MLFLOW_TRACKING_URI", "REFINE_LEDGER_URL")}
    os.environ["REFINE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.pop("REFINE_LEDGER_URL", None)
    configure_environment(home)
    from prefect.testing.utilities import prefect_test_harness

    from flows.local_server import NO_BLOCK_REGISTRATION

    # Its server, as a command's, registers no block types (read at its start only).
    saved |= {k: os.environ.get(k) for k in NO_BLOCK_REGISTRATION}
    os.environ.update(NO_BLOCK_REGISTRATION)
    with prefect_test_harness(server_startup_timeout=90):
        for key in NO_BLOCK_REGISTRATION:
            _restore(key, saved.pop(key))
        yield home
    for k, v in saved.items():
        _restore(k, v)


def _restore(key: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(key, None)
    else:
        os.environ[key] = value


# --- The fast tier ---------------------------------------------------------------------------
# `make test-fast` runs what needs no server, no model and no browser: `-m "not slow and not
# integration and not model"`. Tests that take the Prefect harness (`platform`) are integration
# tests and tests that take the embedding model (`minilm`) are model tests, whatever their own
# marks say, so a new test is placed by what it uses.
_TIER_OF_FIXTURE = {"platform": "integration", "minilm": "model"}


# --- The longest files first ---------------------------------------------------------------------
# `make test` hands whole files to its worker processes (`--dist loadfile`), in collection order
# with `--no-loadscope-reorder` (xdist's own order, most tests first, started the 143 quick tests
# of test_scale.py first and test_rehearsal.py after 9 minutes), so one worker ran on long after
# the others were done. These files start first, longest first (seconds of one full run on 2
# cores, 2026-12-05); every other file keeps its place after them.
LONGEST_FILES = (
    "test_journeys.py",  # with test_journeys_schedule.py: 454 in one file, split in two
    "test_journeys_schedule.py",
    "test_platform.py",  # 203
    "test_reproduction.py",  # 195
    "test_reliability.py",  # 121
    "test_rehearsal.py",  # 112
    "test_hardening.py",  # 110
    "test_budget.py",  # 81
    "test_examples.py",  # 81
    "test_judges_other.py",  # 69
    "test_hyde.py",  # 60
    "test_browser.py",  # 60
    "test_distributed.py",  # 53
)


def _file_rank(item: pytest.Item) -> int:
    name = item.path.name
    return LONGEST_FILES.index(name) if name in LONGEST_FILES else len(LONGEST_FILES)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in _TIER_OF_FIXTURE.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(marker)
    items.sort(key=_file_rank)  # stable: tests keep their order within a file


# --- In CI a skip is a failure -----------------------------------------------------------------
# CI (CI=true) has the datasets, the Compose schema, Chromium and Linux: a test that would skip
# there means something is missing, and a green run with untested parts would be a false claim.
_IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
_COUNTS: dict[str, int] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if _IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = (report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)).removeprefix(
            "Skipped: "
        )
        report.outcome = "failed"
        report.longrepr = f"skipped in CI (CI=true), which counts as a failure: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if _IN_CI and report.skipped:
        reason = (report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)).removeprefix(
            "Skipped: "
        )
        report.outcome = "failed"
        report.longrepr = f"{collector.nodeid} skipped in CI (CI=true), which counts as a failure: {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus: int) -> None:
    counts = {
        key: len(terminalreporter.stats.get(key, [])) for key in ("passed", "failed", "error", "skipped", "xfailed")
    }
    line = ", ".join(f"{value} {key}" for key, value in counts.items())
    terminalreporter.write_line(f"refine-eval tests: {line}" + (" (CI=true: a skip fails)" if _IN_CI else ""))
