"""Process environment for the platform: every piece of state under the project folder.

Called by the CLI (and the test suite) before Prefect or MLflow are imported: Prefect reads
its settings from the environment. Values already set by the user win.
"""

from __future__ import annotations

import os
from pathlib import Path

from tasks.storage import state_dir

ANNOUNCE = "REFINE_ANNOUNCE_RUNS"
"""Set (to 1) by ``refine serve``: the process that runs scheduled sweeps prints a line when each
starts and ends, with its MLflow link (a command that runs one sweep reports it itself)."""


def configure_environment(state: Path | None = None) -> Path:
    """Point Prefect and MLflow at ``state`` (default ``$REFINE_HOME`` or ``./.refine``)."""
    root = Path(state).resolve() if state else state_dir()
    os.environ["REFINE_HOME"] = str(root)
    prefect_home = root / "prefect"
    (prefect_home / "storage").mkdir(parents=True, exist_ok=True)
    defaults = {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home / 'prefect.db'}",
        "PREFECT_LOCAL_STORAGE_PATH": str(prefect_home / "storage"),
        "PREFECT_RESULTS_PERSIST_BY_DEFAULT": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        # INFO reaches the Prefect API (the UI shows every run's log); the terminal shows
        # warnings only, so the CLI's own progress and tables stay readable.
        "PREFECT_LOGGING_LEVEL": "INFO",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "PREFECT_UI_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    for key, value in defaults.items():
        os.environ.setdefault(key, value)
    from tasks.redaction import install_log_redaction

    install_log_redaction()  # no secret in any log line, here or in the Prefect API's logs
    # A server kept running by `refine server start` replaces the per-command ephemeral one.
    from flows.local_server import use_if_running

    use_if_running()
    return root
