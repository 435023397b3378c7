"""Full-pool scoring plus every metric, at CLINC150's shape.

150 queries x 15,000 documents x 384 dimensions (CLINC150 with MiniLM): cosine scores of
the query vectors against the whole corpus, then AP, nDCG/recall/precision at
5..50, R-precision, ROC-AUC and separation for every query. Target: under 1 s.

    python benchmarks/score_speed.py [--queries 150] [--docs 15000] [--dim 384] [--json]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks._common import emit_json, machine_info, print_table
from refine_core import cosine_scores, evaluate_rankings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=150)
    parser.add_argument("--docs", type=int, default=15000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--positives", type=int, default=100, help="positives per query")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(args.queries, args.dim)).astype(np.float32)
    docs = rng.normal(size=(args.docs, args.dim)).astype(np.float32)
    labels = np.zeros((args.queries, args.docs), dtype=np.int8)
    for i in range(args.queries):
        labels[i, rng.choice(args.docs, size=args.positives, replace=False)] = 1

    timings: dict[str, list[float]] = {"scoring": [], "metrics": [], "total": []}
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        scores = cosine_scores(vectors, docs)
        t1 = time.perf_counter()
        result = evaluate_rankings(scores, labels)
        t2 = time.perf_counter()
        timings["scoring"].append(t1 - t0)
        timings["metrics"].append(t2 - t1)
        timings["total"].append(t2 - t0)

    info = machine_info()
    print(f"machine: {info}")
    print(
        f"shape: {args.queries} queries x {args.docs} documents x {args.dim}-d; "
        f"{len(result.per_query)} measures per query; best and median of {args.repeats}"
    )
    rows = [[stage, f"{min(v) * 1000:.1f}", f"{float(np.median(v)) * 1000:.1f}"] for stage, v in timings.items()]
    print_table(["stage", "best ms", "median ms"], rows)
    verdict = "meets" if min(timings["total"]) < 1.0 else "misses"
    print(f"target: total under 1000 ms -> {verdict}")
    if args.json:
        emit_json(
            {
                "benchmark": "score_speed",
                "machine": info,
                "shape": [args.queries, args.docs, args.dim],
                "best_seconds": {k: min(v) for k, v in timings.items()},
                "median_seconds": {k: float(np.median(v)) for k, v in timings.items()},
            }
        )


if __name__ == "__main__":
    main()
