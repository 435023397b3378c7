"""Stage-time breakdown of a sweep, cold and warm, and the orchestration overhead.

Runs the sweep twice in one process against a fresh state directory: cold (nothing cached
except, optionally, the embedding cache) and warm (every cell logged from its stored outcome). For each
run it prints the wall time, the sum of stage times recorded per cell (load, embed, select,
judge, refine, evaluate, MLflow logging) and the difference: what Prefect and the flow
machinery cost on top of the work. The Prefect ephemeral server's start is measured apart.

    REFINE_DATA_DIR=... python benchmarks/pipeline.py [--queries N] [--reuse-embeddings DIR] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit_json, machine_info, print_table


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=None, help="subset of CLINC150 queries (default: all 150)")
    parser.add_argument(
        "--reuse-embeddings",
        type=Path,
        default=None,
        help="copy this embedding cache in first (measures the pipeline without the model)",
    )
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


STAGE_COLUMNS = ("embed_corpus", "embed_queries", "judge", "refine", "evaluate", "mlflow")


def _timed_sweep(sweep, config) -> tuple[dict[str, Any], list[object]]:
    """One sweep: its wall time and the stages' seconds as the flow saw them (summed over cells),
    and the table row of it."""
    start = time.perf_counter()
    out = sweep(config)
    wall = time.perf_counter() - start
    stages: dict[str, float] = dict(out["shared_timings"])
    for cell in out["cells"]:
        for stage, seconds in cell["timings"].items():
            stages[stage] = stages.get(stage, 0.0) + seconds
    work = sum(stages.values())
    result = {
        "wall_s": wall,
        "stages_s": stages,
        "stage_sum_s": work,
        "overhead_s": wall - work,
        "cells": len(out["cells"]),
    }
    row = [len(out["cells"]), f"{wall:.1f}", f"{work:.1f}", f"{wall - work:.1f}"]
    return result, row + [f"{stages.get(s, 0.0):.2f}" for s in STAGE_COLUMNS]


def main() -> None:
    args = _arguments()

    home = Path(tempfile.mkdtemp(prefix="refine-pipeline-"))
    if args.reuse_embeddings:
        shutil.copytree(args.reuse_embeddings, home / "embeddings")
    os.environ["REFINE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from flows.environment import configure_environment

    configure_environment(home)
    from evaluations.config import BenchmarkSpec, default_config
    from flows.sweep import sweep

    config = default_config()
    if args.queries:
        config = config.model_copy(update={"benchmarks": [BenchmarkSpec(name="clinc150", queries=args.queries)]})
    config = config.model_copy(update={"name": "pipeline-benchmark"})

    t0 = time.perf_counter()
    from prefect.testing.utilities import prefect_test_harness  # noqa: F401 - import cost counted below

    rows: list[list[object]] = []
    results: dict[str, dict[str, Any]] = {}
    for label in ("cold", "warm"):
        results[label], row = _timed_sweep(sweep, config)
        rows.append([label, *row])
    info = machine_info()
    print(f"machine: {info}")
    print(f"sweep: {len(config.cells())} cells on clinc150 ({args.queries or 150} queries); state in {home}")
    print(
        "stage columns: seconds as the flow saw them, summed over cells (embedding runs once per sweep; "
        "a cached task costs its lookup)"
    )
    print_table(
        [
            "run",
            "cells",
            "wall s",
            "stages s",
            "overhead s",
            "embed corpus",
            "embed queries",
            "judge",
            "refine",
            "evaluate",
            "mlflow",
        ],
        rows,
    )
    print(
        f"first sweep includes the Prefect ephemeral server start; setup before it: {time.perf_counter() - t0 - sum(r['wall_s'] for r in results.values()):.1f} s"
    )
    print(
        f"warm re-run: {results['warm']['wall_s']:.1f} s in the process (cells logged from their stored outcomes: "
        f"{results['warm']['cells']} cells, MLflow logging {results['warm']['stages_s'].get('mlflow', 0):.1f} s), of which "
        f"Prefect + flow overhead {results['warm']['overhead_s']:.1f} s; `benchmarks/rerun.py` measures the command"
    )
    if args.json:
        emit_json({"benchmark": "pipeline", "machine": info, "queries": args.queries or 150, "results": results})
    shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
