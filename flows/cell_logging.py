"""What a cell's MLflow run shows: its label and run name, params and tags, metrics per
method, the per-query files and plots, the link from its Prefect flow run."""

# No ``from __future__ import annotations``: Prefect validates flow parameters from the
# annotations, and a flow loaded from a pickle (served deployments, workers) cannot resolve
# string annotations.
import json
import logging
import os
from collections.abc import Callable
from operator import attrgetter
from pathlib import Path

from prefect import get_run_logger, runtime

from evaluations.config import GRID_AXES, CellSpec
from flows import plots
from flows.tracking import Tracker
from refine_core.statistics import win_tie_loss
from tasks.core import (
    BenchmarkRef,
    JudgmentsRef,
)
from tasks.storage import atomic_write, code_version, digest, load_arrays, state_dir


def cell_label(cell: CellSpec) -> str:
    """Every coordinate of the cell, for logs, tags, plot titles, flow-run names and the dry run:
    benchmark (with its subset), model, judge, lr, k, rounds, then every other grid axis that is
    not the paper's default (``pull 0.1``, ``steps 50``, ``Rocchio β 1.5 γ 0.5``, ...), so two
    cells of one sweep never read the same (MLflow run names lead with what varies)."""
    parts = [benchmark_label(cell.benchmark), cell.model, cell.judge.label, f"lr {cell.lr:g}", f"k {cell.k}"]
    parts.append(f"r {cell.rounds}")
    parts += [f"{AXIS_SHORT[axis]} {value}" for axis, value in off_default(cell)]
    if not cell.smart_rocchio:
        parts.append(f"Rocchio β {cell.rocchio_beta:g} γ {cell.rocchio_gamma:g}")
    return " · ".join(parts)


AXIS_SHORT = {
    "steps": "steps",
    "optimizer": "optimizer",
    "normalize": "normalize",
    "score_temperature": "τs",
    "similarity_temperature": "τc",
    "pull": "pull",
}
"""The grid axes beyond lr, k, rounds and Rocchio's weights, as labels name them."""


def off_default(cell: CellSpec) -> list[tuple[str, str]]:
    """The axes of :data:`AXIS_SHORT` whose value is not the paper's, formatted."""
    defaults = CellSpec.model_fields
    return [
        (axis, f"{value:g}" if isinstance(value, float) else str(value))
        for axis in AXIS_SHORT
        if (value := getattr(cell, axis)) != defaults[axis].default
    ]


def benchmark_label(spec) -> str:
    """The benchmark's short name with its subset: ``clinc150 (30 queries, seed 1, 3100 documents)``."""
    subset = []
    if spec.queries is not None:
        subset.append(f"{spec.queries} queries" + (f", seed {spec.query_seed}" if spec.query_seed is not None else ""))
    if spec.max_documents is not None:
        subset.append(
            f"{spec.max_documents} documents" + (f", seed {spec.corpus_seed}" if spec.corpus_seed != 42 else "")
        )
    return short_benchmark(spec.name) + (f" ({', '.join(subset)})" if subset else "")


def short_benchmark(name: str) -> str:
    """``files:/long/path/mydata`` -> ``files:mydata``; registry names unchanged."""
    kind, sep, folder = name.partition(":")
    return f"{kind}:{Path(folder).name}" if sep else name


def cell_flow_run_name() -> str:
    cell = runtime.flow_run.parameters.get("cell")
    if isinstance(cell, dict):
        cell = CellSpec.model_validate(cell)
    if not isinstance(cell, CellSpec):
        return "evaluate-cell"
    return cell_label(cell)


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:
        return logging.getLogger("refine")


def cell_params(cell: CellSpec, bench: BenchmarkRef) -> dict[str, object]:
    params: dict[str, object] = {**cell.hyperparameters(), "model": cell.model, "code_version": code_version()}
    params.update({f"judge.{k}": v for k, v in cell.judge.model_dump().items() if v is not None})
    if cell.query_template is not None:
        params["query_template"] = cell.query_template
    if cell.hyde is not None:
        params.update({f"hyde.{k}": v for k, v in cell.hyde.model_dump().items() if v is not None})
    if cell.methods:
        params["methods"] = ",".join(cell.methods)
    if "recommended" in cell.methods:
        from refine_core.recommended import RECOMMENDED

        params.update({f"recommended.{k}": v for k, v in RECOMMENDED.params().items()})
    params.update(
        {
            "benchmark.name": bench.name,
            "benchmark.hash": bench.hash,
            "benchmark.version": bench.counts["version"],
            "benchmark.queries": bench.counts["queries"],
            "benchmark.documents": bench.counts["documents"],
            "benchmark.subset": bench.counts["subset"] or "full",
        }
    )
    return params


def cell_note(cell: CellSpec, flat: dict[str, float]) -> str:
    """The run's description (shown above its metrics in the MLflow UI): what the cell is and its
    key figures, so MAP per method, delta MAP and p need no search among the run's metrics."""
    methods = [m for m in ("baseline", "rerank_only", "rocchio", "refined") if f"{m}.map" in flat]
    methods += sorted({k.split(".", 1)[0] for k in flat if k.endswith(".map")} - set(methods))
    rows = ["| method | MAP | ΔMAP | p (one-sided t-test) |", "|---|---|---|---|"]
    for m in methods:
        delta, p = flat.get(f"{m}.delta_map"), flat.get(f"{m}.p_raw")
        rows.append(
            f"| {m} | {flat[f'{m}.map']:.4f} | {'' if delta is None else f'{delta:+.4f}'} | {'' if p is None else f'{p:.2g}'} |"
        )
    failed = int(flat.get("judgments_failed", 0))
    return (
        cell_tags(cell, None)["mlflow.note.content"]
        + "\n\n"
        + "\n".join(rows)
        + f"\n\nFailed judgments: {failed}"
        + (" (not a result until a re-run completes them)" if failed else "")
        + ". p (BH) per method: the metric `<method>.p_bh`, set when the sweep ends."
    )


def cell_tags(cell: CellSpec, prefect_url: str | None) -> dict[str, str]:
    """The tags a cell's MLflow run starts with."""
    return {
        "refine.kind": "cell",
        "refine.judge": cell.judge.label,
        "refine.cell": cell_label(cell),
        "mlflow.note.content": f"Cell {cell_label(cell)} (benchmark · model · judge · lr · k · rounds, then "
        "every other setting that is not the paper's). "
        "`*.p_raw`: one-sided paired t-test vs baseline; "
        "`*.p_bh`: Benjamini–Hochberg corrected over the sweep.",
        **({"refine.prefect_flow_run_url": prefect_url} if prefect_url else {}),
    }


def method_metrics(evaluation, per_query) -> tuple[dict[str, float], dict[str, tuple[int, int, int]]]:
    """Each method's mean measures, its test against the baseline and its win / tie / loss counts,
    as flat MLflow metrics (``<method>.<name>``), and the counts by method."""
    flat: dict[str, float] = {}
    for method, means in evaluation.metrics.items():
        for name, value in means.items():
            flat[f"{method}.{name}"] = value
    outcomes: dict[str, tuple[int, int, int]] = {}
    for method, test in evaluation.tests.items():
        flat[f"{method}.delta_map"] = test["delta_map"]
        flat[f"{method}.relative_gain"] = test["relative_gain"]
        flat[f"{method}.p_raw"] = test["pvalue"]
        if f"ap_{method}" in per_query.columns:
            outcomes[method] = win_tie_loss(per_query["ap_baseline"].to_numpy(), per_query[f"ap_{method}"].to_numpy())
            for label, count in zip(("queries_improved", "queries_unchanged", "queries_hurt"), outcomes[method]):
                flat[f"{method}.{label}"] = count
    return flat, outcomes


def cell_files(
    cell: CellSpec, bench: BenchmarkRef, evaluation, per_query, judge_key: str, folder: Path
) -> list[tuple[str, str | None]]:
    """The cell's files for MLflow, (path, artifact folder): the per-query table as parquet and as
    CSV (which the MLflow UI previews; lists joined with ';'), the plots and cell.json."""
    import polars as pl

    flat_table = per_query.with_columns(
        [
            pl.col(c).cast(pl.List(pl.String)).list.join(";")
            for c, dtype in per_query.schema.items()
            if isinstance(dtype, pl.List)
        ]
    )
    csv_path = folder / (Path(evaluation.per_query_path).stem + ".csv")
    atomic_write(csv_path, flat_table.write_csv().encode())
    cell_json = folder / "cell.json"
    record = {
        "cell": cell.model_dump(mode="json"),
        "benchmark": bench.counts,
        "tests": evaluation.tests,
        "judge_key": judge_key,
    }
    atomic_write(cell_json, json.dumps(record, indent=2, default=as_json_value).encode())
    return [
        (str(evaluation.per_query_path), "per_query"),
        (str(csv_path), "per_query"),
        *((str(png), "plots") for png in _plots(cell, per_query, evaluation.arrays_path)),
        (str(cell_json), None),
    ]


def judge_failures(judgments: list[JudgmentsRef]) -> tuple[int, dict[str, int]]:
    """Queries with a failed judgment (distinct: the rounds of a cell judge the same queries again)
    and the failed judgments by reason."""
    failed_queries = len({row for j in judgments for row in j.failed_rows})
    errors: dict[str, int] = {}
    for j in judgments:
        for reason, count in j.errors.items():
            errors[reason] = errors.get(reason, 0) + count
    return failed_queries, errors


PLOT_NAMES = ("ap_before_after.png", "score_separation.png", "loss_curves.png")


def _plots(cell: CellSpec, per_query, arrays_path: str) -> list[Path]:
    """The cell's three plots, drawn once per content (a cached re-run logs the stored files
    instead of drawing them again: the separation histogram alone takes about a second)."""
    import shutil

    title = cell_label(cell)
    folder = state_dir() / "plots" / digest("plots", Path(arrays_path).name, title)
    if not all((folder / name).is_file() for name in PLOT_NAMES):
        staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
        staging.mkdir(parents=True, exist_ok=True)
        data = load_arrays(arrays_path)
        plots.ap_scatter(
            per_query["ap_baseline"].to_numpy(),
            per_query["ap_refined"].to_numpy(),
            staging / "ap_before_after.png",
            title=title,
        )
        plots.separation(
            data["base_pos"],
            data["base_neg"],
            data["ref_pos"],
            data["ref_neg"],
            staging / "score_separation.png",
            title=title,
        )
        plots.loss_curves(data["losses"], staging / "loss_curves.png", title=title)
        shutil.rmtree(folder, ignore_errors=True)
        try:
            staging.rename(folder)
        except OSError:  # another process stored the same plots first
            shutil.rmtree(staging, ignore_errors=True)
    return [folder / name for name in PLOT_NAMES]


def link_mlflow_run(tracker: Tracker, experiment_id: str, run_id: str, description: str) -> None:
    """A link artifact on the Prefect flow run pointing at its MLflow run (best effort: an
    artifact is a convenience, never a reason to fail a cell that is already logged)."""
    if runtime.flow_run.id is None:
        return
    try:
        from prefect.artifacts import create_link_artifact

        create_link_artifact(
            tracker.run_url(experiment_id, run_id),
            link_text=f"MLflow run {run_id}",
            description=f"MLflow run of {description}",
            key="mlflow-run",
        )
    except Exception as exc:
        run_logger().warning("could not attach the MLflow link to the flow run: %s", exc)


def as_json_value(value: object) -> object:
    """numpy scalars as numbers, anything else as its text (the record is JSON)."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return str(value)


def varying(cells: list[CellSpec]) -> list[str]:
    """The coordinates that differ between a sweep's cells (benchmark with its subset, model,
    judge and every grid axis), in the order run names show them."""
    coords: dict[str, Callable[[CellSpec], object]] = {
        "benchmark": lambda c: c.benchmark.model_dump_json(),
        "model": attrgetter("model"),
        "judge": lambda c: c.judge.label,
        **{axis: attrgetter(axis) for axis in GRID_AXES},
    }
    return [name for name, get in coords.items() if len({str(get(c)) for c in cells}) > 1]


def mlflow_run_name(cell: CellSpec, differing: list[str]) -> str:
    """``lr=0.001 · noisy-oracle-0.2 · clinc150 · all-MiniLM-L6-v2``: what differs between the
    sweep's cells first, then judge, lr, benchmark and model where they do not differ."""
    short = {
        "benchmark": benchmark_label(cell.benchmark),
        "model": cell.model.rsplit("/", 1)[-1],
        "judge": cell.judge.label,
        "lr": f"lr={cell.lr:g}",
        "k": f"k={cell.k}",
        "rounds": f"r={cell.rounds}",
        "steps": f"steps={cell.steps}",
        "optimizer": cell.optimizer,
        "normalize": f"norm={cell.normalize}",
        "score_temperature": f"τs={cell.score_temperature:g}",
        "similarity_temperature": f"τc={cell.similarity_temperature:g}",
        "pull": f"pull={cell.pull:g}",
        "rocchio_beta": f"β={cell.rocchio_beta:g}",
        "rocchio_gamma": f"γ={cell.rocchio_gamma:g}",
    }
    lead = [short[n] for n in differing]
    rest = [short[n] for n in ("judge", "lr", "benchmark", "model") if n not in differing]
    return " · ".join(lead + rest)
