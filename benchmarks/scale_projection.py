"""Part 2 of ``benchmarks/scale.py``: corpus embedding scale-out (threads, a Dask cluster) and the
projection of a 10M-document, 10k-query run from the rates measured here."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from benchmarks._common import best_of

# The projection's job.
CORPUS = 10_000_000
QUERIES = 10_000
K = 20


def embedding_runs(documents: int, chunk_size: int) -> list[dict[str, float | str]]:
    os.environ["PREFECT_TASKS_REFRESH_CACHE"] = "true"  # every run computes, none reads a task cache
    base = Path(tempfile.mkdtemp(prefix="refine-scale-"))
    os.environ["REFINE_HOME"] = str(base / "prefect-home")
    from flows.environment import configure_environment

    configure_environment(base / "prefect-home")
    from prefect import flow

    from evaluations.config import BenchmarkSpec, ExecutionSpec
    from flows.cell import embed_corpus
    from flows.execution import dask_cluster, with_runner
    from tasks.core import load_benchmark_task

    spec = BenchmarkSpec(name="clinc150", queries=20, max_documents=documents)  # 20 queries keep 2,000 positives
    execution = ExecutionSpec(chunk_size=chunk_size)

    @flow(name="scale-embed-corpus")
    def embed_only() -> float:
        bench = load_benchmark_task(spec)
        start = time.perf_counter()
        embed_corpus(bench, "all-MiniLM-L6-v2", execution)
        return time.perf_counter() - start

    rows: list[dict[str, float | str]] = []
    for label, runner, workers in (
        ("local runner, 2 threads", "local", 0),
        ("dask, 1 worker", "dask", 1),
        ("dask, 2 workers", "dask", 2),
    ):
        os.environ["REFINE_HOME"] = str(base / label.replace(" ", "_").replace(",", ""))
        t0 = time.perf_counter()
        with dask_cluster(runner, workers or 1) as address:
            started = time.perf_counter() - t0
            warm = _warm_up(address)
            seconds = with_runner(embed_only, address)()
        rows.append(
            {
                "run": label,
                "workers": workers,
                "cluster_start_s": round(started, 1) if address else 0.0,
                "worker_warm_up_s": round(warm, 1),
                "embed_s": round(seconds, 2),
                "texts_per_s": round(documents / seconds, 1),
            }
        )
    one = next(r for r in rows if r["workers"] == 1)
    for r in rows:
        r["speedup_vs_1_worker"] = round(float(one["embed_s"]) / float(r["embed_s"]), 2)
    return rows


def _load_model() -> int:
    from tasks.core import embedder_for

    return embedder_for("all-MiniLM-L6-v2").dimension


def _warm_up(address: str | None) -> float:
    """Import the libraries and load the model in every worker (or here), timed apart:
    a long-lived cluster pays this once, not per corpus."""
    start = time.perf_counter()
    if address is None:
        _load_model()
    else:
        from distributed import Client

        with Client(address) as client:
            client.run(_load_model)
    return time.perf_counter() - start


def per_query_costs(dim: int) -> dict[str, float]:
    """Brute-force scoring throughput (query-document pairs/s) and refinement ms/query at ``dim``."""
    import numpy as np

    from refine_core import refine

    rng = np.random.default_rng(0)
    docs = rng.standard_normal((100_000, dim), dtype=np.float32)
    queries = rng.standard_normal((256, dim), dtype=np.float32)
    scoring, _ = best_of(lambda: queries @ docs.T, 3)
    n = 500
    q = rng.standard_normal((n, dim), dtype=np.float32)
    idx = rng.integers(0, docs.shape[0], size=(n, K))
    scores = rng.random((n, K), dtype=np.float32)
    refine(q[:10], idx[:10], scores[:10], documents=docs)  # compile
    refining, _ = best_of(lambda: refine(q, idx, scores, documents=docs), 3)
    return {"pairs_per_s": queries.shape[0] * docs.shape[0] / scoring, "refine_ms_per_query": 1000 * refining / n}


def projection(
    texts_per_s: float, costs: dict[int, dict[str, float]], doc_tokens: int, prompt_tokens: int
) -> list[list[str]]:
    from judging.runner import DEFAULT_PRICES

    rows = []
    hours = CORPUS / texts_per_s / 3600
    rows.append(
        [
            "corpus embedding (once), MiniLM, this 2-core machine",
            f"{hours:,.1f} h",
            f"{hours / 32:,.1f} h on 32 such machines (Dask workers scale it out; see the measured speed-up above)",
        ]
    )
    for label, rate, device in gpu_rates():
        rows.append(
            [
                f"corpus embedding (once), MiniLM, one {device}, {label}",
                f"{CORPUS / rate / 3600:,.2f} h",
                f"{rate:,.0f} texts/s measured (benchmarks/results/gpu_embed_h100.json)",
            ]
        )
    for dim, c in costs.items():
        gb32 = CORPUS * dim * 4 / 1e9
        rows.append(
            [
                f"vectors, d={dim}",
                f"{gb32:,.1f} GB float32",
                f"{gb32 / 2:,.1f} GB float16; "
                + ("fits one machine's RAM" if gb32 < 64 else "needs an ANN index / vector database (sharded)"),
            ]
        )
        brute = 2 * QUERIES * CORPUS / c["pairs_per_s"] / 60  # initial ranking + re-ranking with refined vectors
        rows.append(
            [
                f"brute-force ranking, d={dim} (2 passes: initial + refined)",
                f"{brute:,.0f} min on this machine",
                "an ANN index (FAISS IVF/HNSW) cuts candidate retrieval to ms/query; exact scores then only for candidates",
            ]
        )
        rows.append(
            [
                f"refinement, d={dim}",
                f"{QUERIES * c['refine_ms_per_query'] / 1000:,.1f} s",
                f"{c['refine_ms_per_query']:.2f} ms/query; touches only the {K} judged vectors",
            ]
        )
    tokens_in = QUERIES * (prompt_tokens + K * doc_tokens)
    tokens_out = QUERIES * K * 8
    for model, (p_in, p_out) in DEFAULT_PRICES.items():
        cost = (tokens_in * p_in + tokens_out * p_out) / 1e6
        rows.append(
            [
                f"judge {model}, listwise, K={K}",
                f"${cost:,.0f}",
                f"{QUERIES * K:,} judgments; {tokens_in / 1e6:,.0f}M input tokens at {doc_tokens} tokens/document",
            ]
        )
    return rows


def gpu_rates() -> list[tuple[str, float, str]]:
    """Measured GPU embedding rates, if benchmarks/gpu_embed.py has been run on a GPU machine."""
    import json

    path = Path(__file__).resolve().parent / "results" / "gpu_embed_h100.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    labels = {"clinc150": "short texts (CLINC150 utterances)", "nfcorpus": "abstracts (NFCorpus, 256-token cap)"}
    best: dict[str, float] = {}
    for row in data["rows"]:
        best[row["texts"]] = max(best.get(row["texts"], 0.0), row["texts_per_s"])
    return [(labels.get(name, name), rate, data["device"]["device"]) for name, rate in best.items()]
