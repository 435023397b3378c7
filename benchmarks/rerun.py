"""What a user waits for: ``refine run`` wall time, cold and fully cached, with Prefect's
ephemeral server and with a server kept by ``refine server start``, measured as the user runs
it (a new process each time, imports and preflight included).

Two sweeps: the default one (4 cells on CLINC150) and a 64-cell grid (2 judges x 4 lr x 2 K x
2 rounds x 2 normalisations) on a CLINC150 subset (30 queries, 3,000 documents). The cached
runs are repeated; the table gives min and median wall seconds and the per-cell overhead of the
grid's cached re-run (its wall time over 64). One state directory per sweep, made fresh.

    REFINE_DATA_DIR=... python benchmarks/rerun.py [--repeats 2] [--skip-default | --skip-grid] [--json]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import emit_json, machine_info, print_table

BIN = Path(sys.executable).parent
GRID = """name: rerun-grid
benchmarks:
  - {name: clinc150, queries: 30, max_documents: 3000}
judges:
  - kind: oracle
  - {kind: noisy-oracle, flip_rate: 0.2, seed: 0}
grid:
  lr: [1.0e-4, 3.0e-4, 1.0e-3, 3.0e-3]
  k: [10, 20]
  rounds: [1, 2]
  normalize: [none, minmax]
"""


def timed(command: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return wall


def measure(name: str, config: Path | None, cells: int, repeats: int, rows: list, results: dict) -> None:
    home = Path(tempfile.mkdtemp(prefix=f"refine-rerun-{name}-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")} | {"REFINE_HOME": str(home)}
    env.pop("MLFLOW_TRACKING_URI", None)
    command = [str(BIN / "refine"), "run", *([str(config)] if config else [])]
    try:
        cold = timed(command, env)
        ephemeral = [timed(command, env) for _ in range(repeats)]
        timed([str(BIN / "refine"), "server", "start", "--port", "4299"], env)
        try:
            kept = [timed(command, env) for _ in range(repeats)]
        finally:
            timed([str(BIN / "refine"), "server", "stop"], env)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    for label, times in (
        ("cold (nothing cached)", [cold]),
        ("cached, ephemeral server", ephemeral),
        ("cached, kept server", kept),
    ):
        rows.append(
            [
                name,
                cells,
                label,
                f"{min(times):.1f}",
                f"{statistics.median(times):.1f}",
                f"{statistics.median(times) / cells:.2f}",
            ]
        )
        results[f"{name}/{label}"] = times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-default", action="store_true", help="only the 64-cell grid")
    parser.add_argument("--skip-grid", action="store_true", help="only the default sweep")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    info = machine_info()
    rows: list[list[object]] = []
    results: dict[str, list[float]] = {}
    if not args.skip_default:
        measure("default sweep", None, 4, args.repeats, rows, results)
    if not args.skip_grid:
        with tempfile.TemporaryDirectory() as tmp:
            grid = Path(tmp) / "grid.yaml"
            grid.write_text(GRID)
            measure("64-cell grid", grid, 64, args.repeats, rows, results)
    info["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(f"machine: {info}")
    print_table(["sweep", "cells", "run", "min s", "median s", "median s / cell"], rows)
    if args.json:
        emit_json({"machine": info, "wall_seconds": results})


if __name__ == "__main__":
    main()
