"""What the quality benchmarks share: the data (embedded once, cached), the judges as array
functions and the refinement scored by MAP. Imported by every benchmark script; imports none."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from evaluations import load_benchmark
from judging.oracle import noisy_oracle_scores
from refine_core.feedback import select_feedback
from refine_core.metrics import cosine_scores, evaluate_rankings
from refine_core.refinement import RefineConfig, refine

DATASETS = ("clinc150", "clinc150-names", "banking77", "nfcorpus", "snips")
MODEL = "all-MiniLM-L6-v2"
LR_GRID = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
LR_ACCURACIES = (0.6, 0.7, 0.8, 0.9, 1.0)


# ---- judges as array functions -------------------------------------------------------------------
def judge_of(labels: np.ndarray, texts: tuple[list[str], list[str]], accuracy: float = 1.0, seed: int = 0):
    """The project's noisy oracle (judging.oracle, as `refine run` uses it) at this
    accuracy: each (query, document) verdict flipped with probability 1 - accuracy."""
    query_texts, document_texts = texts

    def judge(rows: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return noisy_oracle_scores(
            labels[rows],
            idx,
            flip_rate=1.0 - accuracy,
            seed=seed,
            query_texts=[query_texts[r] for r in rows],
            document_texts=document_texts,
        )

    return judge


# ---- data -------------------------------------------------------------------------------------------
def embed(bench, cache_root: Path) -> tuple[np.ndarray, np.ndarray]:
    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder(MODEL, threads=2)
    cache = EmbeddingCache(cache_root)
    docs = embedder.embed_documents(bench.document_texts(), cache=cache)
    queries = embedder.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache)
    return queries, docs


def pooled_scores(vectors: np.ndarray, d: np.ndarray, pool: np.ndarray | None) -> np.ndarray:
    """Cosine scores with documents outside a query's pool ranked last."""
    s = cosine_scores(vectors, d)
    return s if pool is None else np.where(pool, s, -np.inf)


def map_of(vectors: np.ndarray, d: np.ndarray, labels: np.ndarray, pool: np.ndarray | None) -> float:
    return evaluate_rankings(pooled_scores(vectors, d, pool), labels, pool=pool, ks=(10,)).means["map"]


def refined_map(q, d, labels, pool, fb, scores, mask, lr: float, steps: int = 100, pull: float = 0.0) -> float:
    config = RefineConfig(lr=lr, steps=steps, pull=pull)
    vectors = refine(q, np.maximum(fb, 0), scores, mask=mask, documents=d, config=config).vectors
    return map_of(vectors, d, labels, pool)


def first_feedback(q, d, pool, k: int) -> np.ndarray:
    return select_feedback(pooled_scores(q, d, pool), k=k)


def load_data(names: tuple[str, ...], started: float | None = None) -> tuple[dict, dict]:
    """Each benchmark's embedded queries and documents, labels, pool, mean document tokens and
    texts (``data``), and the benchmark objects beside the arrays (``raw``)."""
    from tasks.storage import embedding_cache_dir

    started = time.perf_counter() if started is None else started
    data, raw = {}, {}
    for name in names:
        bench = load_benchmark(name)
        q, d = embed(bench, embedding_cache_dir())
        labels, pool = bench.label_matrix()
        doc_tokens = int(np.mean([len(t) for t in bench.document_texts()]) / 4)
        data[name] = (q, d, labels, pool, doc_tokens, (bench.query_texts(), bench.document_texts()))
        raw[name] = (bench, q, d, labels, pool)
        print(
            f"{name}: {q.shape[0]} queries x {d.shape[0]} documents ({time.perf_counter() - started:.0f} s)", flush=True
        )
    return data, raw


# ---- quality.py's grids and the paper's figures it sets beside its own -------------------------------
MEASURES = (("map", "MAP"), ("ndcg@10", "nDCG@10"), ("recall@50", "R@50"), ("roc_auc", "ROC-AUC"))
ACCURACIES = (0.55, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0)
K_GRID = (5, 10, 20, 50, 100)
STEPS_GRID = (50, 100, 200)
# The paper's MAP, Qwen3-Embedding-0.6B with Mistral-Small-3.2-24B as judge: original, refined, rerank-only.
PAPER = {"clinc150": (0.59, 0.74, 0.60), "banking77": (0.53, 0.60, 0.53), "nfcorpus": (0.20, 0.23, 0.21)}
PAPER_E5 = {"clinc150": (0.69, 0.78), "banking77": (0.55, 0.58), "nfcorpus": (0.21, 0.24)}
