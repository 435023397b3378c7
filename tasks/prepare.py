"""The free stages of a cell: load the benchmark, embed the corpus (in cached chunks) and the
queries, select each round's feedback documents (over corpus shards on Dask)."""

from __future__ import annotations

import hashlib
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
from prefect import task

from embedders.cache import EmbeddingCache
from embedders.models import SentenceTransformerEmbedder
from evaluations.config import BenchmarkSpec, VectorsSpec
from evaluations.errors import DatasetError
from evaluations.registry import load_benchmark
from refine_core.feedback import select_feedback_blocks, top_k_shard
from refine_core.shards import merge_top_k
from tasks import progress
from tasks.refs import CACHE_EXPIRATION, ArrayRef, BenchmarkRef, task_key
from tasks.storage import (
    digest,
    embedding_cache_dir,
    load_array,
    load_arrays,
    save_array,
    save_arrays,
    save_stacked,
    state_dir,
    torch_threads,
)


# ---- load ------------------------------------------------------------------------------------
@task(name="load-benchmark", retries=0)
def load_benchmark_task(spec: BenchmarkSpec) -> BenchmarkRef:
    """Read the raw files, apply the subset, store the tables as parquet by content hash."""
    bench = load_benchmark(
        spec.name,
        queries=spec.queries,
        query_seed=spec.query_seed,
        max_documents=spec.max_documents,
        corpus_seed=spec.corpus_seed,
    )
    folder = state_dir() / "benchmarks" / bench.content_hash
    if not (folder / "benchmark.json").exists():
        bench.save(folder)
    return BenchmarkRef(
        name=bench.name,
        hash=bench.content_hash,
        documents_hash=bench.documents_hash,
        folder=str(folder),
        counts=bench.counts(),
        embed_instruction=bench.embed_instruction,
        judge_instruction=bench.judge_instruction,
        source=bench.source,
    )


# ---- embed -------------------------------------------------------------------------------------
@lru_cache(maxsize=4)
def embedder_for(model: str, query_template: str | None = None) -> SentenceTransformerEmbedder:
    """One loaded model per process, name and query template (Dask workers keep theirs between chunks)."""
    return SentenceTransformerEmbedder(model, threads=torch_threads(), query_template=query_template)


def corpus_chunks(n_documents: int, chunk_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` row ranges of ``chunk_size`` documents covering the corpus."""
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    return [(start, min(start + chunk_size, n_documents)) for start in range(0, n_documents, chunk_size)]


def _chunk_key(context, parameters) -> str:
    b: BenchmarkRef = parameters["bench"]
    return task_key(
        "embed-chunk",
        b.documents_hash,
        embedder_for(parameters["model"]).cache_key,
        parameters["start"],
        parameters["stop"],
    )


@task(
    name="embed-corpus-chunk",
    task_run_name="embed {bench.name} documents {start}-{stop}",
    cache_key_fn=_chunk_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
    retries=1,
)
def embed_corpus_chunk_task(bench: BenchmarkRef, model: str, start: int, stop: int) -> ArrayRef:
    """Document vectors of rows ``start:stop`` of a benchmark's corpus (through the embedding cache)."""
    t0 = time.perf_counter()
    embedder = embedder_for(model)
    texts = bench.load().document_texts()[start:stop]
    vectors = embedder.embed_documents(
        texts,
        cache=EmbeddingCache(embedding_cache_dir()),
        progress=progress.callback(f"embedding {bench.name} documents {start}-{stop}"),
    )
    name = digest("docs-chunk", bench.documents_hash, embedder.cache_key, start, stop)
    return ArrayRef(save_array(f"docs-chunk-{name}", vectors), name, time.perf_counter() - t0)


def join_key(context, parameters) -> str:
    return task_key("join", parameters["name"], [p.digest for p in parameters["parts"]])


@task(name="embed-corpus", cache_key_fn=join_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def join_corpus_chunks_task(name: str, parts: list[ArrayRef]) -> ArrayRef:
    """One document matrix from the chunks, in corpus order; ``name`` is the digest it gets."""
    t0 = time.perf_counter()
    path = save_stacked(f"docs-{name}", [p.path for p in parts])  # streamed: the corpus need not fit in memory
    return ArrayRef(path, name, sum(p.seconds for p in parts) + time.perf_counter() - t0)


def provided_corpus(bench: BenchmarkRef, vectors: VectorsSpec) -> ArrayRef:
    """A benchmark's document vectors computed elsewhere, checked and named by their content.

    ``.npy`` (documents in the benchmark's order) is used where it lies, memory-mapped;
    ``.parquet`` (``doc_id`` + list column ``vector``) is put in the benchmark's order once and
    stored. Checked: the file exists and reads, one finite, non-zero row per document, and the
    dimension of ``vectors.model`` (the model that embeds the queries)."""
    from embedders.vector_files import VectorFileError, check_vectors, read_vectors

    t0 = time.perf_counter()
    path = Path(vectors.path).expanduser()
    where = f"benchmark {bench.name}: document_vectors {path}"
    try:
        ids = [str(d) for d in bench.load().documents["doc_id"].to_list()] if path.suffix == ".parquet" else []
        matrix = read_vectors(path, ids, id_column="doc_id")
        check_vectors(matrix, int(bench.counts["documents"]), embedder_for(vectors.model).dimension, vectors.model)
    except VectorFileError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            h.update(block)
    name = digest("provided-docs", h.hexdigest()[:16], bench.documents_hash, vectors.model)
    if path.suffix == ".npy" and matrix.dtype == np.float32:
        return ArrayRef(str(path.resolve()), name, time.perf_counter() - t0)  # used where it lies
    target = state_dir() / "arrays" / f"docs-provided-{name}.npy"
    if not target.is_file():
        save_array(f"docs-provided-{name}", np.asarray(matrix, dtype=np.float32))
    return ArrayRef(str(target), name, time.perf_counter() - t0)


def corpus_digest(bench: BenchmarkRef, model: str, chunks: list[tuple[int, int]]) -> str:
    return digest("docs", bench.documents_hash, embedder_for(model).cache_key, chunks)


def _queries_key(context, parameters) -> str:
    b: BenchmarkRef = parameters["bench"]
    e = embedder_for(parameters["model"], parameters.get("query_template"))
    return task_key("embed-queries", b.hash, e.cache_key, e.query_template, b.embed_instruction)


@task(name="embed-queries", cache_key_fn=_queries_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def embed_queries_task(bench: BenchmarkRef, model: str, query_template: str | None = None) -> ArrayRef:
    """Query vectors with the query template (default: the model's) and the benchmark's instruction."""
    start = time.perf_counter()
    embedder = embedder_for(model, query_template)
    vectors = embedder.embed_queries(
        bench.load().query_texts(),
        instruction=bench.embed_instruction,
        cache=EmbeddingCache(embedding_cache_dir()),
        progress=progress.callback(f"embedding {bench.name} queries"),
    )
    name = digest("queries", bench.hash, embedder.cache_key, embedder.query_template)
    return ArrayRef(save_array(f"queries-{name}", vectors), name, time.perf_counter() - start)


# ---- select feedback ------------------------------------------------------------------------------
def _select_key(context, parameters) -> str:
    return task_key(
        "select",
        parameters["bench"].hash,
        parameters["vectors"].digest,
        parameters["docs"].digest,
        parameters["k"],
        [e.digest for e in parameters["exclude"]],
    )


def _exclude_idx(exclude: list[ArrayRef] | None) -> np.ndarray | None:
    return np.concatenate([load_arrays(ref.path)["idx"] for ref in exclude], axis=1) if exclude else None


def _select_shard_key(context, parameters) -> str:
    return task_key(_select_key(context, parameters), "shard", list(parameters["shard"]))


@task(
    name="select-feedback-shard",
    task_run_name="select feedback in documents {shard[0]}-{shard[1]}",
    cache_key_fn=_select_shard_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
)
def select_shard_task(
    bench: BenchmarkRef,
    vectors: ArrayRef,
    docs: ArrayRef,
    k: int,
    exclude: list[ArrayRef] | None,
    shard: tuple[int, int],
) -> ArrayRef:
    """Top-K of one corpus shard (documents ``shard[0]:shard[1]``) for every query, with the scores."""
    qrels = bench.load().qrels()
    lo, hi = shard
    idx, scores = top_k_shard(
        load_array(vectors.path),
        np.asarray(load_array(docs.path)[lo:hi]),
        lo,
        k=k,
        pool=qrels if qrels.pooled else None,
        exclude_idx=_exclude_idx(exclude),
    )
    name = digest(
        "feedback-shard", bench.hash, vectors.digest, docs.digest, k, [e.digest for e in exclude or []], lo, hi
    )
    return ArrayRef(save_arrays(f"feedback-shard-{name}", idx=idx, scores=scores), name)


@task(name="select-feedback", cache_key_fn=_select_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def select_feedback_task(
    bench: BenchmarkRef,
    vectors: ArrayRef,
    docs: ArrayRef,
    k: int,
    exclude: list[ArrayRef] | None = None,
    shards: list[ArrayRef] | None = None,
) -> ArrayRef:
    """Top-K documents of each query's current ranking, skipping documents judged before.

    Scored one query block at a time: memory grows with the corpus, not queries × corpus. With
    ``shards`` (:func:`select_shard_task` of every corpus shard) the shards' best are merged instead."""
    if shards:
        parts = [load_arrays(ref.path) for ref in shards]
        idx = merge_top_k([(p["idx"], p["scores"]) for p in parts], k)
    else:
        qrels = bench.load().qrels()
        idx = select_feedback_blocks(
            load_array(vectors.path),
            load_array(docs.path),
            k=k,
            pool=qrels if qrels.pooled else None,
            exclude_idx=_exclude_idx(exclude),
        )
    name = digest("feedback", bench.hash, vectors.digest, docs.digest, k, [e.digest for e in exclude or []])
    return ArrayRef(save_arrays(f"feedback-{name}", idx=idx), name)
