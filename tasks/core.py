"""Prefect tasks: thin wrappers that give the library's functions caching, retries and
persisted results. No algorithm lives here.

Every expensive task has an explicit content-based cache key (benchmark hash, model
fingerprint, template, judge identity, hyperparameters, code version) and persists its
result; results are small references (:class:`ArrayRef` and friends) to ``.npy``/``.npz``
files, never the arrays themselves.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

import numpy as np
from prefect import task
from prefect.tasks import exponential_backoff

from embedders.cache import EmbeddingCache
from embedders.models import SentenceTransformerEmbedder
from evaluations.benchmark import Benchmark
from evaluations.config import BenchmarkSpec, BudgetSpec, CellSpec, HydeSpec, JudgeSpec, VectorsSpec
from evaluations.errors import DatasetError
from evaluations.registry import load_benchmark
from judging import Budget, JudgeCrashed, JudgeRequest, JudgmentLedger, run_judge
from judging.spend import SpendAccount
from refine_core.baselines import RocchioParams
from refine_core.evaluation import (
    ScoreSamples,
    ShardInputs,
    ShardScores,
    finish_shards,
    per_query_columns,
    score_methods,
    score_shard,
    shard_inputs,
)
from refine_core.feedback import select_feedback_blocks, top_k_shard
from refine_core.refinement import RefineConfig, refine
from refine_core.rocchio_kl import rocchio_start
from refine_core.shards import merge_top_k
from tasks import progress
from tasks.judging import answers_fingerprint, build_judge
from tasks.storage import (
    code_version,
    digest,
    embedding_cache_dir,
    ledger_url,
    load_array,
    load_arrays,
    save_array,
    save_arrays,
    save_stacked,
    state_dir,
    torch_threads,
)

CACHE_EXPIRATION = timedelta(days=30)


@dataclass(frozen=True)
class BenchmarkRef:
    name: str
    hash: str
    documents_hash: str
    folder: str
    counts: dict
    embed_instruction: str
    judge_instruction: str | None
    source: str = ""  # where the raw data came from (files or Hub ids)

    def load(self) -> Benchmark:
        return Benchmark.load(self.folder)


@dataclass(frozen=True)
class ArrayRef:
    """A path to an .npy/.npz file and the digest that names its content."""

    path: str
    digest: str
    seconds: float = 0.0


@dataclass(frozen=True)
class JudgmentsRef:
    path: str
    digest: str
    judge_key: str
    metrics: dict = field(default_factory=dict)
    failed_queries: int = 0  # queries with at least one failed judgment
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)  # failure reason -> how many judgments
    fallback_queries: int = 0  # queries with no judgment at all (they keep the baseline ranking)
    failed_rows: tuple[int, ...] = ()  # the benchmark rows of those queries (rounds of a cell share rows)
    stopped: str | None = None  # why the run stopped asking the judge (its breaker opened), if it did

    @property
    def failed_judgments(self) -> int:
        return int(sum(self.errors.values()))


def task_key(*parts: object) -> str:
    return f"refine-{digest(*parts, code_version())}"


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


def _join_key(context, parameters) -> str:
    return task_key("join", parameters["name"], [p.digest for p in parameters["parts"]])


@task(name="embed-corpus", cache_key_fn=_join_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
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


# ---- judge (the LLM stage) --------------------------------------------------------------------------
def judge_cache_key(context, parameters) -> str:
    spec: JudgeSpec = parameters["judge"]
    return task_key(
        "judge",
        spec.model_dump(),
        answers_fingerprint(spec.kind, spec.model),
        parameters["bench"].hash,
        parameters["feedback"].digest,
    )


def spend_account(account: str | None, budget: BudgetSpec | None) -> SpendAccount | None:
    """The run's spend account in the ledger database (None without an account id)."""
    if account is None:
        return None
    return SpendAccount(
        ledger_url(),
        account,
        max_items=budget.max_judgments if budget else None,
        max_cost=budget.max_cost_usd if budget else None,
    )


def retry_unless_judge_bug(task, task_run, state) -> bool:
    """Retry a judge task after transient errors, never after a judge bug (it would only repeat)."""
    return not isinstance(state.data, JudgeCrashed)


@task(
    name="judge",
    cache_key_fn=judge_cache_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_judge_bug,
)
def judge_task(
    bench: BenchmarkRef,
    feedback: ArrayRef,
    judge: JudgeSpec,
    budget: BudgetSpec | None = None,
    account: str | None = None,
) -> JudgmentsRef:
    """Scores for every feedback document; failures are recorded, never raised.

    The ledger makes a re-run free for every pair already judged; the flow drops this
    task's cache entry when some judgments failed, so a re-run retries exactly those.
    ``account`` names the run's spend account (created with ``budget``'s limits if missing):
    every paid call reserves from it first. Without one, ``budget`` applies to this call alone.
    """
    start = time.perf_counter()
    b = bench.load()
    idx = load_arrays(feedback.path)["idx"]
    queries = b.query_texts()
    docs = b.document_texts()
    judge_obj = build_judge(judge, b)
    requests = [
        JudgeRequest(
            query=queries[i], documents=tuple(docs[j] for j in row if j >= 0), task_instruction=bench.judge_instruction
        )
        for i, row in enumerate(idx)
    ]
    ledger = JudgmentLedger(ledger_url())
    if judge.registered.batches:
        from judging.batches import run_judge_batches

        report = run_judge_batches(
            judge_obj,  # type: ignore[arg-type]  # an AnthropicJudge: build_judge makes one for this kind
            requests,
            ledger=ledger,
            account=spend_account(account, budget),
        )
    else:
        report = run_judge(
            judge_obj,
            requests,
            ledger=ledger,
            concurrency=judge.concurrency,
            budget=Budget(max_judgments=budget.max_judgments, max_cost=budget.max_cost_usd)
            if budget and not account and judge.paid
            else None,
            progress=progress.callback(f"judging with {judge.label}"),
            account=spend_account(account, budget) if judge.paid else None,  # local judges are free
        )
    scores = np.full(idx.shape, np.nan, dtype=np.float32)
    for i, row in enumerate(idx):
        positions = np.flatnonzero(row >= 0)
        for p, verdict in zip(positions, report.judgments[i]):
            if verdict.ok:
                scores[i, p] = verdict.score
    mask = np.isfinite(scores)
    missing = (~mask) & (idx >= 0)
    failed_queries = int(missing.any(axis=1).sum())
    fallback_queries = int((missing.any(axis=1) & ~(mask & (idx >= 0)).any(axis=1)).sum())
    errors: dict[str, int] = {}
    for verdicts in report.judgments:
        for verdict in verdicts:
            if not verdict.ok:
                errors[verdict.error or "unknown"] = errors.get(verdict.error or "unknown", 0) + 1
    content = hashlib.sha256(np.nan_to_num(scores, nan=-1.0).tobytes() + mask.tobytes()).hexdigest()
    name = digest("judgments", judge_obj.identity.key, bench.hash, feedback.digest, content)
    path = save_arrays(f"judgments-{name}", scores=np.nan_to_num(scores, nan=0.0), mask=mask)
    metrics = report.as_metrics()
    metrics["judge_failed_queries"] = float(failed_queries)
    metrics["judge_fallback_queries"] = float(fallback_queries)
    return JudgmentsRef(
        path=path,
        digest=name,
        judge_key=judge_obj.identity.key,
        metrics=metrics,
        failed_queries=failed_queries,
        seconds=time.perf_counter() - start,
        errors=errors,
        fallback_queries=fallback_queries,
        failed_rows=tuple(int(r) for r in np.flatnonzero(missing.any(axis=1))),
        stopped=report.stopped,
    )


# ---- HyDE ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassagesRef:
    """HyDE passages of a benchmark's queries (parquet: query_id, passage or null)."""

    path: str
    digest: str
    generator_key: str
    metrics: dict = field(default_factory=dict)
    failed: int = 0


def hyde_cache_key(context, parameters) -> str:
    spec: HydeSpec = parameters["spec"]
    return task_key("hyde", spec.model_dump(), answers_fingerprint(spec.kind, spec.model), parameters["bench"].hash)


@task(
    name="generate-hyde",
    cache_key_fn=hyde_cache_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
    retries=1,
    retry_delay_seconds=10,
)
def generate_hyde_task(
    bench: BenchmarkRef, spec: HydeSpec, budget: BudgetSpec | None = None, account: str | None = None
) -> PassagesRef:
    """A hypothetical document per query; paid once (the generation store), failures left null.
    Each paid generation reserves from the run's spend ``account`` first (see :func:`judge_task`)."""
    import polars as pl

    from generators.hyde import GenerationStore, run_generator
    from tasks.judging import build_generator

    b = bench.load()
    generator = build_generator(spec)
    report = run_generator(
        generator,
        b.query_texts(),
        instruction=bench.embed_instruction,
        store=GenerationStore(ledger_url()),
        seed=spec.seed,
        concurrency=spec.concurrency,
        progress=progress.callback(f"HyDE passages with {spec.label}"),
        account=spend_account(account, budget) if spec.paid else None,
    )
    content = digest("hyde", generator.identity.key, bench.hash, spec.seed, report.texts)
    path = state_dir() / "arrays" / f"hyde-{content}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"query_id": b.queries["query_id"].to_list(), "passage": pl.Series(report.texts, dtype=pl.String)}
    ).write_parquet(path)
    return PassagesRef(str(path), content, generator.identity.key, report.as_metrics(), report.failed)


def _hyde_embed_key(context, parameters) -> str:
    e = embedder_for(parameters["model"], parameters.get("query_template"))
    return task_key(
        "embed-hyde",
        parameters["passages"].digest,
        parameters["bench"].hash,
        e.cache_key,
        e.query_template,
        parameters["bench"].embed_instruction,
    )


@task(name="embed-hyde", cache_key_fn=_hyde_embed_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def embed_hyde_task(
    bench: BenchmarkRef, model: str, passages: PassagesRef, query_template: str | None = None
) -> ArrayRef:
    """HyDE vectors: each passage embedded with the query template (the query itself where generation failed)."""
    import polars as pl

    start = time.perf_counter()
    texts = pl.read_parquet(passages.path)["passage"].to_list()
    queries = bench.load().query_texts()
    embedder = embedder_for(model, query_template)
    vectors = embedder.embed_queries(
        [t if t is not None else q for t, q in zip(texts, queries)],
        instruction=bench.embed_instruction,
        cache=EmbeddingCache(embedding_cache_dir()),
    )
    name = digest("hyde-vectors", passages.digest, embedder.cache_key, embedder.query_template)
    return ArrayRef(save_array(f"hyde-{name}", vectors), name, time.perf_counter() - start)


# ---- refine ----------------------------------------------------------------------------------------
def query_blocks(n_queries: int, block: int) -> list[tuple[int, int]]:
    """``[start, stop)`` query ranges of at most ``block`` queries."""
    if block < 1:
        raise ValueError(f"query_block must be >= 1, got {block}")
    return [(start, min(start + block, n_queries)) for start in range(0, n_queries, block)]


def refined_digest(
    start: ArrayRef, docs: ArrayRef, feedback: list[ArrayRef], judgments: list, config: RefineConfig
) -> str:
    """Names refined vectors by their inputs, not by how the queries were split into blocks."""
    return digest(
        "refined",
        start.digest,
        docs.digest,
        [f.digest for f in feedback],
        [j.digest for j in judgments],
        config.as_params(),
    )


def _refine_key(context, parameters) -> str:
    return task_key(
        "refine",
        parameters["start"].digest,
        parameters["docs"].digest,
        [f.digest for f in parameters["feedback"]],
        [j.digest for j in parameters["judgments"]],
        parameters["config"].as_params(),
        parameters["rows"],
    )


@task(name="refine-block", cache_key_fn=_refine_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def refine_block_task(
    start: ArrayRef,
    docs: ArrayRef,
    feedback: list[ArrayRef],
    judgments: list[ArrayRef | JudgmentsRef],
    config: RefineConfig,
    rows: tuple[int, int],
) -> ArrayRef:
    """Refine queries ``rows[0]:rows[1]`` from ``start`` using every round's judgments so far."""
    t0 = time.perf_counter()
    lo, hi = rows
    idx = np.concatenate([load_arrays(f.path)["idx"][lo:hi] for f in feedback], axis=1)
    parts = [load_arrays(j.path) for j in judgments]
    scores = np.concatenate([p["scores"][lo:hi] for p in parts], axis=1)
    mask = np.concatenate([p["mask"][lo:hi] for p in parts], axis=1) & (idx >= 0)
    # only the judged documents' rows are read from the (memory-mapped) corpus
    judged_rows, local = np.unique(np.maximum(idx, 0), return_inverse=True)
    result = refine(
        np.asarray(load_array(start.path)[lo:hi]),
        local.reshape(idx.shape),
        scores,
        mask=mask,
        documents=np.asarray(load_array(docs.path)[judged_rows]),
        config=config,
        query_ids=[f"#{i} of the benchmark" for i in range(lo, hi)],
    )
    name = digest(refined_digest(start, docs, feedback, judgments, config), lo, hi)
    save_arrays(f"refined-block-{name}-extra", losses=result.losses, skipped=result.skipped)
    return ArrayRef(save_array(f"refined-block-{name}", result.vectors), name, time.perf_counter() - t0)


def _rocchio_key(context, parameters) -> str:
    weights = (parameters.get("beta", 0.75), parameters.get("gamma", 0.15))
    return task_key(
        "rocchio-start",
        parameters["queries"].digest,
        parameters["docs"].digest,
        parameters["feedback"].digest,
        parameters["judgments"].digest,
        *(() if weights == (0.75, 0.15) else weights),  # SMART keeps its old key
    )


@task(name="rocchio-start", cache_key_fn=_rocchio_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def rocchio_start_task(
    queries: ArrayRef,
    docs: ArrayRef,
    feedback: ArrayRef,
    judgments: JudgmentsRef,
    beta: float = 0.75,
    gamma: float = 0.15,
) -> ArrayRef:
    """The Rocchio vectors (weights ``beta``, ``gamma``; SMART by default) of the first round's
    judgments: the ``rocchio`` method of a cell with other weights, and the start of ``rocchio_kl``."""
    t0 = time.perf_counter()
    idx = load_arrays(feedback.path)["idx"]
    judged = load_arrays(judgments.path)
    rows, local = np.unique(np.maximum(idx, 0), return_inverse=True)  # only the judged rows are read
    vectors = rocchio_start(
        np.asarray(load_array(queries.path)),
        np.asarray(load_array(docs.path)[rows]),
        local.reshape(idx.shape),
        judged["scores"],
        judged["mask"] & (idx >= 0),
        RocchioParams(beta=beta, gamma=gamma),
    )
    weights = () if (beta, gamma) == (0.75, 0.15) else (beta, gamma)  # SMART keeps its old name
    name = digest("rocchio-start", queries.digest, docs.digest, feedback.digest, judgments.digest, *weights)
    return ArrayRef(save_array(f"rocchio-{name}", vectors), name, time.perf_counter() - t0)


def _recommended_key(context, parameters) -> str:
    from refine_core.recommended import RECOMMENDED

    return task_key(
        "recommended",
        RECOMMENDED.params(),
        parameters["queries"].digest,
        parameters["docs"].digest,
        parameters["feedback"].digest,
        parameters["judgments"].digest,
    )


@task(name="recommended", cache_key_fn=_recommended_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def recommended_task(queries: ArrayRef, docs: ArrayRef, feedback: ArrayRef, judgments: JudgmentsRef) -> ArrayRef:
    """The query vectors of the ``recommended`` method (:data:`refine_core.recommended.RECOMMENDED`,
    what ``refine search`` runs by default) from the first round's judgments."""
    from refine_core.recommended import recommended_vectors

    t0 = time.perf_counter()
    idx = load_arrays(feedback.path)["idx"]
    judged = load_arrays(judgments.path)
    rows, local = np.unique(np.maximum(idx, 0), return_inverse=True)  # only the judged rows are read
    vectors = recommended_vectors(
        np.asarray(load_array(queries.path)),
        np.asarray(load_array(docs.path)[rows]),
        np.where(idx >= 0, local.reshape(idx.shape), -1),
        judged["scores"],
        judged["mask"] & (idx >= 0),
    )
    name = digest(
        _recommended_key(None, {"queries": queries, "docs": docs, "feedback": feedback, "judgments": judgments})
    )
    return ArrayRef(save_array(f"recommended-{name}", vectors), name, time.perf_counter() - t0)


@task(name="refine", cache_key_fn=_join_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def join_refined_blocks_task(name: str, parts: list[ArrayRef]) -> ArrayRef:
    """Refined vectors of every query (and their loss curves) from the blocks, in query order."""
    t0 = time.perf_counter()
    vectors = np.concatenate([np.asarray(load_array(p.path)) for p in parts], axis=0)
    extras = [refine_extras(p) for p in parts]
    save_arrays(
        f"refined-{name}-extra",
        losses=np.concatenate([e["losses"] for e in extras], axis=0),
        skipped=np.concatenate([e["skipped"] for e in extras], axis=0),
    )
    return ArrayRef(
        save_array(f"refined-{name}", vectors), name, sum(p.seconds for p in parts) + time.perf_counter() - t0
    )


def refine_extras(ref: ArrayRef) -> dict[str, np.ndarray]:
    """Loss curves and skipped flags saved beside a refined-vectors file."""
    return load_arrays(ref.path.removesuffix(".npy") + "-extra.npz")


# ---- score + evaluate --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CellEvaluation:
    metrics: dict[str, dict[str, float]]
    tests: dict[str, dict[str, float]]
    per_query_path: str
    arrays_path: str
    n_without_positives: int
    seconds: float


def _evaluate_key(context, parameters) -> str:
    extra = parameters.get("extra") or {}
    return task_key(
        "evaluate",
        parameters["bench"].hash,
        parameters["queries"].digest,
        parameters["docs"].digest,
        parameters["feedback"].digest,
        parameters["judgments"].digest,
        [r.digest for r in parameters["refined"]],
        {name: ref.digest for name, ref in sorted(extra.items())},
    )


def _evaluation_inputs(
    queries: ArrayRef,
    feedback: ArrayRef,
    judgments: JudgmentsRef,
    refined: list[ArrayRef],
    extra: dict[str, ArrayRef] | None,
) -> dict:
    idx = load_arrays(feedback.path)["idx"]
    judged = load_arrays(judgments.path)
    return {
        "query_vectors": np.asarray(load_array(queries.path)),
        "feedback_idx": idx,
        "judge_scores": judged["scores"],
        "judge_mask": judged["mask"] & (idx >= 0),
        "round_vectors": [np.asarray(load_array(r.path)) for r in refined],
        "extra_vectors": {name: np.asarray(load_array(ref.path)) for name, ref in (extra or {}).items()},
    }


def _inputs_key(context, parameters) -> str:
    return task_key("evaluate-inputs", _evaluate_key(context, parameters))


def _evaluate_shard_key(context, parameters) -> str:
    return task_key("evaluate-shard", parameters["inputs"].digest, parameters["docs"].digest, list(parameters["shard"]))


@task(name="evaluate-inputs", cache_key_fn=_inputs_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def shard_inputs_task(
    bench: BenchmarkRef,
    queries: ArrayRef,
    docs: ArrayRef,
    feedback: ArrayRef,
    judgments: JudgmentsRef,
    refined: list[ArrayRef],
    extra: dict[str, ArrayRef] | None = None,
) -> ArrayRef:
    """What every corpus shard of the evaluation needs: each method's query vectors and the
    scores of its relevant (and, for rerank-only, judged) documents. Reads only those rows of the corpus."""
    inputs = _evaluation_inputs(queries, feedback, judgments, refined, extra)
    prepared = shard_inputs(inputs.pop("query_vectors"), load_array(docs.path), bench.load().qrels(), **inputs)
    name = digest(
        "evaluate-inputs",
        _inputs_key(
            None,
            {
                "bench": bench,
                "queries": queries,
                "docs": docs,
                "feedback": feedback,
                "judgments": judgments,
                "refined": refined,
                "extra": extra,
            },
        ),
    )
    return ArrayRef(save_arrays(f"evaluate-inputs-{name}", **prepared.arrays()), name)


@task(
    name="evaluate-shard",
    task_run_name="evaluate documents {shard[0]}-{shard[1]}",
    cache_key_fn=_evaluate_shard_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
)
def evaluate_shard_task(bench: BenchmarkRef, inputs: ArrayRef, docs: ArrayRef, shard: tuple[int, int]) -> ArrayRef:
    """Every method's rank counts and score summaries over one corpus shard (documents ``shard[0]:shard[1]``)."""
    lo, hi = shard
    result = score_shard(
        ShardInputs.from_arrays(load_arrays(inputs.path)),
        np.asarray(load_array(docs.path)[lo:hi]),
        lo,
        bench.load().qrels(),
    )
    name = digest("evaluate-shard", inputs.digest, docs.digest, lo, hi)
    return ArrayRef(save_arrays(f"evaluate-shard-{name}", **result.arrays()), name)


@task(name="evaluate", cache_key_fn=_evaluate_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def evaluate_task(
    bench: BenchmarkRef,
    queries: ArrayRef,
    docs: ArrayRef,
    feedback: ArrayRef,
    judgments: JudgmentsRef,
    refined: list[ArrayRef],
    cell: CellSpec,
    extra: dict[str, ArrayRef] | None = None,
    inputs: ArrayRef | None = None,
    shards: list[ArrayRef] | None = None,
) -> CellEvaluation:
    """Score every method on the full pool and compare each with the baseline.

    ``extra`` adds methods given as query vectors (``hyde``, ``hyde_refined``). With ``inputs``
    and ``shards`` (:func:`shard_inputs_task`, :func:`evaluate_shard_task` of every corpus shard)
    the shards' counts are merged here and the corpus is never loaded in this process.
    """
    import polars as pl

    t0 = time.perf_counter()
    b = bench.load()
    qrels = b.qrels()
    arrays = _evaluation_inputs(queries, feedback, judgments, refined, extra)
    if shards:
        if inputs is None:
            raise ValueError("evaluating corpus shards needs their inputs (shard_inputs_task)")
        metrics, tests, sample_arrays = finish_shards(
            ShardInputs.from_arrays(load_arrays(inputs.path)),
            [ShardScores.from_arrays(load_arrays(s.path)) for s in shards],
            qrels,
        )
        plot_arrays = {
            f"{short}_{kind}": sample_arrays[f"{method}_{kind}"]
            for method, short in (("baseline", "base"), ("refined", "ref"))
            for kind in ("pos", "neg")
        }
    else:
        samples = ScoreSamples(qrels, methods=("baseline", "refined"))
        metrics, tests = score_methods(
            arrays.pop("query_vectors"), np.asarray(load_array(docs.path)), qrels, visit=samples, **arrays
        )
        plot_arrays = samples.arrays(prefixes={"baseline": "base", "refined": "ref"})
    per_query = per_query_columns(
        metrics,
        feedback_idx=arrays["feedback_idx"],
        judge_scores=arrays["judge_scores"],
        judge_mask=arrays["judge_mask"],  # already limited to asked entries: the same counts
        query_ids=b.queries["query_id"].to_list(),
        doc_ids=b.documents["doc_id"].to_list(),
    )
    name = digest(
        "evaluation",
        cell.model_dump(),
        judgments.digest,
        [r.digest for r in refined],
        {n: r.digest for n, r in sorted((extra or {}).items())},
    )
    per_query_path = str(Path(state_dir() / "arrays" / f"per-query-{name}.parquet"))
    pl.DataFrame(per_query).write_parquet(per_query_path)
    # Score distributions for the separation plots: baseline and refined similarities.
    arrays_path = save_arrays(f"plots-{name}", **plot_arrays, losses=refine_extras(refined[0])["losses"])
    return CellEvaluation(
        metrics={m: r.means for m, r in metrics.items()},
        tests={
            m: {"pvalue": t.pvalue, "delta_map": t.delta, "relative_gain": t.relative_gain, "n": t.n}
            for m, t in tests.items()
        },
        per_query_path=per_query_path,
        arrays_path=arrays_path,
        n_without_positives=metrics["baseline"].n_without_positives,
        seconds=time.perf_counter() - t0,
    )
