"""Embedding throughput of the bundled model on CLINC150 utterances, cold and warm cache.

Cold: an empty cache, every text goes through the model. Warm: the same texts again, all
served from the content-addressed cache (memory-mapped .npy). Also prints the cache size.

``--openmp`` instead compares OpenMP's wait policies (a new process per measurement: the policy
is read when torch loads): the texts embedded alone and beside a process that keeps one core
busy, with idle OpenMP threads spinning (ACTIVE) or sleeping (PASSIVE, what ``refine`` sets).

    REFINE_DATA_DIR=... python benchmarks/embed_speed.py [--texts 3000] [--threads 2] [--openmp] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from benchmarks._common import emit_json, machine_info, print_table
from embedders.cache import EmbeddingCache
from embedders.models import SentenceTransformerEmbedder
from evaluations import load_benchmark


def _encode_once(texts: list[str], threads: int, batch_size: int) -> dict[str, float]:
    """Wall and CPU seconds (this process) of one uncached pass, the model loaded and warm."""
    embedder = SentenceTransformerEmbedder(threads=threads, batch_size=batch_size)
    embedder.encode(texts[:batch_size])
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    embedder.encode(texts)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": time.perf_counter() - start, "cpu_s": cpu}


def _openmp_policies(args: argparse.Namespace) -> None:
    rows, results = [], []
    for busy in (False, True):
        for policy in ("ACTIVE", "PASSIVE"):
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if busy else None
            try:
                child = subprocess.run(
                    [sys.executable, "-m", "benchmarks.embed_speed", "--measure-once", "--texts", str(args.texts)]
                    + ["--threads", str(args.threads), "--batch-size", str(args.batch_size)],
                    env=os.environ | {"OMP_WAIT_POLICY": policy},
                    capture_output=True,
                    text=True,
                    check=True,
                )
            finally:
                if hog is not None:
                    hog.kill()
                    hog.wait()
            got = json.loads(child.stdout.strip().splitlines()[-1])
            results.append({"policy": policy, "busy_core": busy, **got})
            where = "beside a busy core" if busy else "alone"
            rows.append(
                [where, policy, f"{got['wall_s']:.1f}", f"{got['cpu_s']:.1f}", f"{args.texts / got['wall_s']:.0f}"]
            )
    print(f"machine: {machine_info()}")
    print(f"{args.texts} CLINC150 utterances, {args.threads} torch threads, batch {args.batch_size}")
    print_table(["embedding", "OMP_WAIT_POLICY", "wall s", "CPU s", "texts/s"], rows)
    if args.json:
        emit_json({"benchmark": "embed_speed_openmp", "texts": args.texts, "results": results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000, help="CLINC150 utterances to embed (max 15000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--openmp", action="store_true", help="compare OpenMP wait policies, alone and beside a busy core"
    )
    parser.add_argument("--measure-once", action="store_true", help=argparse.SUPPRESS)  # --openmp's child
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.openmp:
        _openmp_policies(args)
        return
    texts = load_benchmark("clinc150").document_texts()[: args.texts]
    if args.measure_once:
        print(json.dumps(_encode_once(texts, args.threads, args.batch_size)))
        return

    embedder = SentenceTransformerEmbedder(threads=args.threads, batch_size=args.batch_size)
    embedder.encode(["warm-up"])  # model load is not part of throughput
    embedder.forward_calls = 0
    with tempfile.TemporaryDirectory() as root:
        cache = EmbeddingCache(root)
        t0 = time.perf_counter()
        embedder.embed_documents(texts, cache=cache)
        cold = time.perf_counter() - t0
        calls_cold = embedder.forward_calls
        t1 = time.perf_counter()
        embedder.embed_documents(texts, cache=cache)
        warm = time.perf_counter() - t1
        calls_warm = embedder.forward_calls - calls_cold
        size = cache.size_bytes()
    info = machine_info()
    print(f"machine: {info}")
    print(f"model: {embedder.model_id}; {len(texts)} CLINC150 utterances; batch {args.batch_size}")
    print_table(
        ["pass", "seconds", "texts/s", "texts through the model"],
        [
            ["cold", f"{cold:.2f}", f"{len(texts) / cold:.0f}", calls_cold],
            ["warm", f"{warm:.3f}", f"{len(texts) / warm:.0f}", calls_warm],
        ],
    )
    print(
        f"warm/cold speed-up: {cold / warm:.0f}x; cache on disk: {size / 2**20:.1f} MiB "
        f"({size / len(texts):.0f} bytes per text)"
    )
    if args.json:
        emit_json(
            {
                "benchmark": "embed_speed",
                "machine": info,
                "texts": len(texts),
                "cold_seconds": cold,
                "warm_seconds": warm,
                "cold_texts_per_s": len(texts) / cold,
                "warm_texts_per_s": len(texts) / warm,
                "model_calls_warm": calls_warm,
                "cache_bytes": size,
            }
        )


if __name__ == "__main__":
    main()
