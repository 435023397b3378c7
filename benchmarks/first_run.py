"""Where the time of a first ``refine run`` goes, stage by stage, and of its fully cached re-run.

The built-in default sweep (4 cells on CLINC150), run as a user runs it: ``refine run`` in a new
process, with its own Prefect server, in a new home with a new embedding cache; then the same
command again in the same home (everything cached). The stages come from the run's own records:
the flow and task runs (start, end) that Prefect stored in the home's database, and the process's
start and exit as seen from here. ``--floor`` also times the embedding model alone on the same
texts in this process (no cache, no Prefect): what the corpus stage cannot go below on this CPU.

    REFINE_DATA_DIR=... python -m benchmarks.first_run [--cached-runs 2] [--floor] [--json]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from benchmarks._common import emit_json, machine_info, print_table

REFINE = Path(sys.executable).parent / "refine"


def _epoch(stamp: str | None) -> float:
    if stamp is None:
        return float("nan")
    return datetime.fromisoformat(stamp).replace(tzinfo=UTC).timestamp()


def _run(home: Path) -> tuple[float, float]:
    """(start, end) epoch seconds of one ``refine run`` in ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "REFINE_EMBEDDING_CACHE")}
    env["REFINE_HOME"] = str(home)
    start = time.time()
    subprocess.run([str(REFINE), "run"], env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return start, time.time()


def stages(home: Path, start: float, end: float) -> dict[str, float]:
    """Seconds per stage of the last sweep recorded in ``home`` (started at ``start``, exited at ``end``)."""
    with sqlite3.connect(home / "prefect" / "prefect.db") as db:
        s0, s1 = db.execute(
            "select r.start_time, r.end_time from flow_run r join flow f on f.id = r.flow_id "
            "where f.name = 'refine-sweep' order by r.start_time desc limit 1"
        ).fetchone()
        children = db.execute(
            "select r.id, f.name, r.start_time, r.end_time from flow_run r join flow f on f.id = r.flow_id "
            "where r.start_time >= ? and f.name != 'refine-sweep'",
            (s0,),
        ).fetchall()
        tasks = db.execute(
            "select flow_run_id, task_key, start_time, end_time from task_run where start_time >= ? and end_time is not null",
            (s0,),
        ).fetchall()
    out = {"start-up (imports, config, server, stores)": _epoch(s0) - start}

    def task_seconds(prefix: str, flow_ids: set[str] | None = None) -> float:
        return sum(
            _epoch(b) - _epoch(a)
            for flow, key, a, b in tasks
            if key.startswith(prefix) and (flow_ids is None or flow in flow_ids)
        )

    embed = [c for c in children if c[1] == "corpus-embedding"]
    cells = [c for c in children if c[1] == "evaluate-cell"]
    embed_s = sum(_epoch(c[3]) - _epoch(c[2]) for c in embed)
    chunks = task_seconds("embed_corpus_chunk_task")
    out["load benchmark"] = task_seconds("load_benchmark_task")
    out["embed corpus: chunk tasks (model load + model)"] = chunks
    out["embed corpus: between chunk tasks"] = embed_s - chunks
    out["embed queries"] = task_seconds("embed_queries_task")
    inside = first = last = 0.0
    if cells:  # none when every cell is logged from its stored outcome
        first, last = min(_epoch(c[2]) for c in cells), max(_epoch(c[3]) for c in cells)
        inside = task_seconds("", {c[0] for c in cells})
    out["cells: their tasks (select, judge, refine, evaluate)"] = inside
    out["cells: the rest (MLflow logging, plots, orchestration)"] = last - first - inside
    out["sweep summary (parent run, summary plot)"] = _epoch(s1) - last if cells else 0.0
    accounted = sum(out.values())
    out["other in the sweep (stored cells logged, Prefect calls)"] = (_epoch(s1) - start) - accounted
    out["exit (server stop, process end)"] = end - _epoch(s1)
    out["total (wall)"] = end - start
    return out


def model_floor() -> dict[str, float]:
    """Seconds to load the bundled model and to embed the default sweep's texts with it, alone."""
    from embedders.models import SentenceTransformerEmbedder
    from evaluations import load_benchmark

    bench = load_benchmark("clinc150")
    start = time.perf_counter()
    embedder = SentenceTransformerEmbedder()
    embedder.encode(["warm-up"])
    loaded = time.perf_counter()
    embedder.embed_documents(bench.document_texts())
    embedder.embed_queries(bench.query_texts(), instruction=bench.embed_instruction)
    return {"model load (imports + weights)": loaded - start, "model on 15,150 texts": time.perf_counter() - loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cached-runs", type=int, default=2, help="cached re-runs after the first (median shown)")
    parser.add_argument("--floor", action="store_true", help="also time the model alone on the same texts")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="refine-first-run-") as folder:
        home = Path(folder) / "home"
        cold = stages(home, *_run(home))
        # a new home's Prefect database: migrated by its server (the machine's first new home) or
        # copied from the machine's template (REFINE_CACHE_DIR), about 6 s of one core apart
        database = (home / "prefect" / "database.ready").read_text().strip()
        cached_runs = [stages(home, *_run(home)) for _ in range(args.cached_runs)]
    cached = {name: statistics.median(run[name] for run in cached_runs) for name in cold} if cached_runs else {}
    floor = model_floor() if args.floor else {}

    print(f"machine: {machine_info()}")
    print(f"`refine run` (the default sweep), a new home; cached: median of {len(cached_runs)} re-runs in it")
    print(f"the new home's Prefect database: {database}")
    rows = [[name, f"{seconds:.1f}", f"{cached[name]:.1f}" if cached else "-"] for name, seconds in cold.items()]
    print_table(["stage", "first run s", "cached re-run s"], rows)
    if floor:
        print("the model alone, in one process, no cache:")
        print_table(["step", "s"], [[name, f"{seconds:.1f}"] for name, seconds in floor.items()])
    if args.json:
        emit_json(
            {
                "benchmark": "first_run",
                "machine": machine_info(),
                "database": database,
                "cold": cold,
                "cached": cached,
                "floor": floor,
            }
        )


if __name__ == "__main__":
    main()
