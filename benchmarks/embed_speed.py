"""Embedding throughput of the bundled model on CLINC150 utterances, cold and warm cache.

Cold: an empty cache, every text goes through the model. Warm: the same texts again, all
served from the content-addressed cache (memory-mapped .npy). Also prints the cache size.

    REFINE_DATA_DIR=... python benchmarks/embed_speed.py [--texts 3000] [--threads 2] [--json]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from benchmarks._common import emit_json, machine_info, print_table
from embedders.cache import EmbeddingCache
from embedders.models import SentenceTransformerEmbedder
from evaluations import load_benchmark


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=3000, help="CLINC150 utterances to embed (max 15000)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    texts = load_benchmark("clinc150").document_texts()[: args.texts]
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
