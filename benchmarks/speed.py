"""Speed of each stage, cold and warm, beside the paper's Table 2 figures.

Stages on CLINC150 with the bundled MiniLM: corpus embedding (texts/s; cold = empty embedding
cache and model load, warm = the same texts again from the cache), query embedding (ms per
query, one at a time as a user's query arrives, and batched), initial ranking (cosine over the
corpus + top K, ms per query), the judge (Claude listwise through the real SDK against the fake
Messages API at a realistic 800 ms per call), refinement (ms per query at d = 384 and, on
synthetic vectors, d = 4096; cold includes the kernel compilation) and scoring + every metric.
Prints the peak resident memory of the run.

    REFINE_DATA_DIR=... python benchmarks/speed.py [--documents 3000] [--judge-latency 0.8] [--json]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake Messages API of the tests
import numpy as np  # noqa: E402

from benchmarks._common import emit_json, machine_info, print_table  # noqa: E402

# The paper's Table 2 (A100, Qwen3-Embedding-8B, d = 4096), per query.
PAPER_MS = {"query embedding": 86.0, "initial ranking": 1.4, "refinement, d=384": 79.0, "refinement, d=4096": 79.0}


def timed(fn):
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=3000, help="CLINC150 documents for the embedding stage")
    parser.add_argument("--judge-queries", type=int, default=16)
    parser.add_argument("--judge-latency", type=float, default=0.8, help="seconds per fake Messages API call")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def _refine_4096(scores: np.ndarray) -> tuple[float, float]:
    """Seconds (cold, warm) to refine 200 synthetic queries of d=4096 (the paper's dimension)
    against 20,000 documents, with ``scores`` (one query's) for each."""
    from refine_core import refine

    rng = np.random.default_rng(0)
    big_docs = rng.standard_normal((20_000, 4096), dtype=np.float32)
    big_q = rng.standard_normal((200, 4096), dtype=np.float32)
    big_fb = rng.integers(0, big_docs.shape[0], size=(200, 20))
    cold, _ = timed(lambda: refine(big_q, big_fb, scores.repeat(200, axis=0), documents=big_docs))
    warm, _ = timed(lambda: refine(big_q, big_fb, scores.repeat(200, axis=0), documents=big_docs))
    return cold, warm


def main() -> None:
    args = _arguments()

    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations import load_benchmark
    from refine_core import refine
    from refine_core.feedback import select_feedback
    from refine_core.metrics import cosine_scores, evaluate_rankings
    from tasks.storage import embedding_cache_dir

    info = machine_info()
    bench = load_benchmark("clinc150")
    texts = bench.document_texts()[: args.documents]
    rows: list[list[object]] = []
    out: dict[str, dict[str, Any]] = {}

    def record(stage: str, unit: str, cold: float, warm: float) -> None:
        paper = PAPER_MS.get(stage)
        out[stage] = {"cold": cold, "warm": warm, "unit": unit, "paper_ms": paper}
        rows.append([stage, unit, f"{cold:,.2f}", f"{warm:,.2f}", "" if paper is None else f"{paper:g} ms"])

    with tempfile.TemporaryDirectory() as tmp:
        embedder = SentenceTransformerEmbedder("all-MiniLM-L6-v2", threads=2)
        cache = EmbeddingCache(Path(tmp) / "emb")
        cold, _ = timed(lambda: embedder.embed_documents(texts, cache=cache))  # includes the model load
        warm, _ = timed(lambda: embedder.embed_documents(texts, cache=cache))
        record("corpus embedding", "texts/s", len(texts) / cold, len(texts) / warm)

    queries = bench.query_texts()
    single = [
        timed(lambda q=q: embedder.embed_queries([q], instruction=bench.embed_instruction))[0] for q in queries[:30]
    ]
    record("query embedding", "ms/query (one at a time)", 1000 * single[0], 1000 * float(np.median(single[1:])))
    batch, q_vectors = timed(lambda: embedder.embed_queries(queries, instruction=bench.embed_instruction))
    record("query embedding, batched", "ms/query", 1000 * batch / len(queries), 1000 * batch / len(queries))

    d_vectors = embedder.embed_documents(bench.document_texts(), cache=EmbeddingCache(embedding_cache_dir()))
    labels, _ = bench.label_matrix()

    def ranking() -> np.ndarray:
        return select_feedback(cosine_scores(q_vectors, d_vectors), k=20)

    cold, fb = timed(ranking)
    warm, _ = timed(ranking)
    record(
        "initial ranking",
        f"ms/query ({d_vectors.shape[0]:,} documents)",
        1000 * cold / len(queries),
        1000 * warm / len(queries),
    )

    judged = judge_stage(bench, fb, args.judge_queries, args.judge_latency)
    record(
        "judge (Claude listwise, fake API)",
        f"s/query at {args.judge_latency:g} s/call, concurrency 8",
        judged["cold"],
        judged["warm"],
    )

    scores = (np.take_along_axis(labels, fb, axis=1) > 0).astype(np.float32)
    cold, _ = timed(lambda: refine(q_vectors, fb, scores, documents=d_vectors))
    warm, refined = timed(lambda: refine(q_vectors, fb, scores, documents=d_vectors))
    record("refinement, d=384", "ms/query", 1000 * cold / len(queries), 1000 * warm / len(queries))
    cold, warm = _refine_4096(scores[:1])
    record("refinement, d=4096", "ms/query (synthetic vectors)", 1000 * cold / 200, 1000 * warm / 200)

    def scoring() -> float:
        return evaluate_rankings(cosine_scores(refined.vectors, d_vectors), labels).means["map"]

    cold, _ = timed(scoring)
    warm, _ = timed(scoring)
    record("scoring + all metrics", f"s for {len(queries)} x {d_vectors.shape[0]:,}", cold, warm)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"machine: {info}")
    print_table(["stage", "unit", "cold", "warm", "paper (A100, d=4096)"], rows)
    print(f"peak resident memory: {peak_mb:,.0f} MB")
    if args.json:
        emit_json({"machine": info, "stages": out, "peak_rss_mb": peak_mb})


def judge_stage(bench, fb: np.ndarray, n: int, latency: float) -> dict[str, float]:
    from fakes.anthropic_server import FakeAnthropic

    from judging import JudgeRequest, JudgmentLedger, run_judge
    from judging.anthropic_judge import AnthropicJudge

    relevant = bench.relevant_texts()
    texts, queries = bench.document_texts(), bench.query_texts()
    requests = [
        JudgeRequest(
            query=queries[i], documents=tuple(texts[j] for j in fb[i]), task_instruction=bench.judge_instruction
        )
        for i in range(n)
    ]
    key = "sk-speed-benchmark-fake"
    os.environ["ANTHROPIC_API_KEY"] = key
    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeAnthropic(lambda q, d: d in relevant.get(q, set()), api_key=key, latency=latency) as server,
    ):
        judge = AnthropicJudge(base_url=server.base_url, scheme="listwise")
        ledger = JudgmentLedger(Path(tmp) / "ledger.sqlite")
        cold, _ = timed(lambda: run_judge(judge, requests, ledger=ledger, concurrency=8))
        warm, _ = timed(lambda: run_judge(judge, requests, ledger=ledger, concurrency=8))  # every pair from the ledger
    return {"cold": cold / n, "warm": warm / n}


if __name__ == "__main__":
    main()
