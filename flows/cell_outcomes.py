"""Stored cell outcomes: a cell whose settings, inputs and code are unchanged is logged again
from its record, without running its flow (:func:`replay_cell`)."""

# No ``from __future__ import annotations``: Prefect validates flow parameters from the
# annotations, and a flow loaded from a pickle (served deployments, workers) cannot resolve
# string annotations.
import hashlib
import json
import time
from pathlib import Path

from prefect import runtime

from evaluations.config import CellSpec
from flows.cell_logging import as_json_value, cell_tags
from flows.tracking import Tracker
from tasks.core import (
    ArrayRef,
    BenchmarkRef,
    JudgmentsRef,
)
from tasks.judging import answers_fingerprint
from tasks.storage import atomic_write, code_version, digest, state_dir

# What a cached judge result reports as paid in this run: nothing.
PAID_METRICS = (
    "judge_requests",
    "judge_input_tokens",
    "judge_output_tokens",
    "judge_cache_read_tokens",
    "judge_cost_usd",
    "judgments_paid",
    "judgments_free",
    "judgments_from_ledger",
    "judgments_failed",
    "judgments_not_submitted",
)


def outcome_record(
    tracker: Tracker,
    original_run_id: str,
    content_key: str,
    params: dict[str, object],
    flat: dict[str, float],
    usage: dict[str, float],
    hyde_metrics: dict[str, float],
) -> dict:
    """What a stored outcome says about the run it came from (see :func:`replay_cell`)."""
    return {
        # the store's digest, not its URI: a URI may carry a password, and records are plain files
        "tracking": digest("tracking", tracker.uri),
        "original_run_id": original_run_id,
        "content_key": content_key,
        "params": {k: v for k, v in params.items() if not k.startswith("prefect.")},
        "metrics": {k: v for k, v in flat.items() if not k.startswith("time.")} | usage | hyde_as_stored(hyde_metrics),
    }


# ---- cell outcomes: an unchanged cell is logged again without running its flow ----------------
# A cell's numbers are a function of its settings, the benchmark, the document and query vectors
# and the code (the judges' answers come from the ledger, and a cell with failed judgments
# stores no outcome). When a sweep meets a cell whose outcome is stored, it logs a new MLflow run
# from the record — the same params, metrics and files, tagged ``refine.cached = true`` and
# linked to the run that computed them — instead of starting the cell's sub-flow and its cached
# tasks (about 1.5 s of Prefect and MLflow calls per cell on this machine).
OUTCOME_VERSION = 1
# the code that decides what a cell computes and logs: the cell flow, its stages, its logging and this module
_THIS_MODULE = hashlib.sha256(
    b"".join(
        (Path(__file__).parent / name).read_bytes()
        for name in ("cell.py", "cell_stages.py", "cell_logging.py", "cell_outcomes.py")
    )
).hexdigest()[:12]


def outcome_key(cell: CellSpec, bench: BenchmarkRef, docs: ArrayRef, queries: ArrayRef) -> str:
    """What a cell's outcome depends on: its settings, the inputs' digests, the cached code and
    the modules that decide what a cell logs."""
    models = [
        answers_fingerprint(cell.judge.kind, cell.judge.model),
        answers_fingerprint(cell.hyde.kind, cell.hyde.model) if cell.hyde is not None else None,
    ]
    return digest(
        "cell-outcome",
        OUTCOME_VERSION,
        cell.model_dump(mode="json"),
        models,
        bench.hash,
        docs.digest,
        queries.digest,
        code_version(),
        _THIS_MODULE,
    )


def outcome_folder(key: str) -> Path:
    return state_dir() / "cells" / key


def save_outcome(key: str, record: dict) -> None:
    atomic_write(outcome_folder(key) / "record.json", json.dumps(record, default=as_json_value).encode())


def load_outcome(key: str) -> dict | None:
    """The stored outcome of ``key`` when it and every file it logs are present, else None."""
    try:
        record = json.loads((outcome_folder(key) / "record.json").read_text())
    except (OSError, ValueError):
        return None
    if not all(Path(path).is_file() for path, _ in record.get("artifacts", [])):
        return None
    return record


def judge_usage(judgments: list[JudgmentsRef], judged: list[int], cached: list[bool]) -> dict[str, float]:
    """The judge metrics of a cell, summed over its judge results; one served from the task cache
    (or from a stored outcome) reports nothing paid and its ``judged`` verdicts as cached."""
    usage: dict[str, float] = {"judgments_cached": 0.0}
    for j, count, from_cache in zip(judgments, judged, cached):
        metrics = dict(j.metrics)
        if from_cache:  # this run paid and asked nothing
            metrics |= {name: 0.0 for name in PAID_METRICS} | {"judgments_cached": float(count)}
        for name, value in metrics.items():
            usage[name] = usage.get(name, 0.0) + value
    return usage


def hyde_as_stored(hyde_metrics: dict[str, float]) -> dict[str, float]:
    """HyDE metrics of a run that generated nothing: every passage read from the store."""
    if not hyde_metrics:
        return {}
    stored = hyde_metrics.get("hyde_generations_paid", 0.0) + hyde_metrics.get("hyde_generations_from_store", 0.0)
    return {name: 0.0 for name in hyde_metrics} | {"hyde_generations_from_store": stored}


def replay_cell(
    record: dict,
    cell: CellSpec,
    tracker: Tracker,
    experiment_id: str,
    *,
    parent_run_id: str | None,
    run_name: str,
    prefect_url: str | None = None,
) -> dict:
    """Log a stored cell outcome as a new run of ``experiment_id`` (five MLflow calls and the
    files); returns the cell's result as :func:`evaluate_cell` would."""
    start = time.perf_counter()
    original = record["original_run_id"] if record.get("tracking") == digest("tracking", tracker.uri) else None
    tags = cell_tags(cell, prefect_url) | record["tags"] | {"refine.cached": "true"}
    if original:
        tags["refine.original_run_id"] = original
    run_id = tracker.start(experiment_id, run_name, parent=parent_run_id, tags=tags)
    with tracker.ends_run_on_error(run_id):
        tracker.log_benchmark(run_id, record["benchmark"]["counts"], record["benchmark"]["source"])
        for path, where in record["artifacts"]:
            tracker.log_artifact(run_id, path, where)
        seconds = time.perf_counter() - start
        tracker.log_batch(
            run_id,
            params=record["params"] | {"prefect.flow_run_id": str(runtime.flow_run.id or "")},
            metrics=record["metrics"] | {"time.mlflow_s": seconds},
            series=record["series"],
        )
        tracker.finish(run_id, "FINISHED")
    return record["result"] | {
        "run_id": run_id,
        "cached": True,
        "original_run_id": original,
        "timings": {"mlflow": time.perf_counter() - start},
        "win_tie_loss": {m: tuple(v) for m, v in record["result"]["win_tie_loss"].items()},
    }
