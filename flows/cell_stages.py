"""The stages of a cell as compositions of cached tasks, fanned out over the runner (query
blocks, corpus chunks and shards on Dask), and dropping a task's cached result."""

# No ``from __future__ import annotations``: Prefect validates flow parameters from the
# annotations, and a flow loaded from a pickle (served deployments, workers) cannot resolve
# string annotations.
from pathlib import Path

from evaluations.config import BudgetSpec, CellSpec, ExecutionSpec
from flows.execution import fan_out, fan_out_states
from refine_core.evaluation import shard_bounds
from refine_core.refinement import RefineConfig
from tasks.core import (
    ArrayRef,
    BenchmarkRef,
    JudgmentsRef,
    corpus_chunks,
    corpus_digest,
    embed_corpus_chunk_task,
    evaluate_shard_task,
    evaluate_task,
    join_corpus_chunks_task,
    join_refined_blocks_task,
    judge_cache_key,
    judge_task,
    query_blocks,
    refine_block_task,
    refined_digest,
    select_feedback_task,
    select_shard_task,
    shard_inputs_task,
)


def invalidate_task_cache(key: str) -> bool:
    """Drop a persisted task result so the next run recomputes it.

    Works with Prefect's default result storage: the local path, or a ``RemoteFileSystem``
    block (any fsspec URL, e.g. the team's S3 bucket) configured as the default storage block.
    """
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem
    from prefect.results import get_default_result_storage

    storage = get_default_result_storage()
    if isinstance(storage, RemoteFileSystem):
        remote = storage._resolve_path(key)
        if storage.filesystem.exists(remote):
            storage.filesystem.rm(remote)
            return True
        return False
    if isinstance(storage, LocalFileSystem):
        path = Path(storage._resolve_path(key))
    else:  # pragma: no cover - other block types: fall back to the local setting
        from prefect.settings import get_current_settings

        path = Path(get_current_settings().results.local_storage_path) / key
    if path.exists():
        path.unlink()
        return True
    return False


def embed_corpus(bench: BenchmarkRef, model: str, execution: ExecutionSpec) -> ArrayRef:
    """Document vectors, embedded in cached chunks (in parallel on a Dask runner)."""
    chunks = corpus_chunks(bench.counts["documents"], execution.chunk_size)
    parts = fan_out(
        embed_corpus_chunk_task, [{"bench": bench, "model": model, "start": a, "stop": b} for a, b in chunks]
    )
    return join_corpus_chunks_task(corpus_digest(bench, model, chunks), parts)


def refine_queries(
    start: ArrayRef,
    docs: ArrayRef,
    feedback: list[ArrayRef],
    judgments: list[JudgmentsRef],
    config: RefineConfig,
    n_queries: int,
    execution: ExecutionSpec,
) -> ArrayRef:
    """Refined vectors of every query, computed in cached query blocks (in parallel on Dask)."""
    blocks = query_blocks(n_queries, execution.query_block)
    parts = fan_out(
        refine_block_task,
        [
            {"start": start, "docs": docs, "feedback": feedback, "judgments": judgments, "config": config, "rows": rows}
            for rows in blocks
        ],
    )
    return join_refined_blocks_task(refined_digest(start, docs, feedback, judgments, config), parts)


def corpus_shards(bench: BenchmarkRef, execution: ExecutionSpec) -> list[tuple[int, int]] | None:
    """The corpus shards of this benchmark, or None when the corpus is scored in one task."""
    size, n = execution.corpus_shard, bench.counts["documents"]
    return None if size is None or n <= size else shard_bounds(n, size)


def select_feedback(
    bench: BenchmarkRef, vectors: ArrayRef, docs: ArrayRef, k: int, exclude: list[ArrayRef], execution: ExecutionSpec
) -> ArrayRef:
    """Top-K feedback documents; with corpus shards, each shard's best (on the Dask workers) merged."""
    shards = corpus_shards(bench, execution)
    parts = (
        None
        if shards is None
        else fan_out(
            select_shard_task,
            [
                {"bench": bench, "vectors": vectors, "docs": docs, "k": k, "exclude": exclude, "shard": s}
                for s in shards
            ],
        )
    )
    return select_feedback_task(bench, vectors, docs, k, exclude=exclude, shards=parts)


def evaluate(
    bench: BenchmarkRef,
    queries: ArrayRef,
    docs: ArrayRef,
    feedback: ArrayRef,
    judged: JudgmentsRef,
    refined: list[ArrayRef],
    cell: CellSpec,
    extra: dict[str, ArrayRef] | None,
    execution: ExecutionSpec,
):
    """The evaluate task's final state; with corpus shards, the shards' counts (on the Dask workers) merged."""
    shards = corpus_shards(bench, execution)
    inputs = parts = None
    if shards is not None:
        inputs = shard_inputs_task(bench, queries, docs, feedback, judged, refined, extra)
        parts = fan_out(
            evaluate_shard_task, [{"bench": bench, "inputs": inputs, "docs": docs, "shard": s} for s in shards]
        )
    return evaluate_task(
        bench, queries, docs, feedback, judged, refined, cell, extra, inputs=inputs, shards=parts, return_state=True
    )


def judge_feedback(
    bench: BenchmarkRef, feedback: ArrayRef, cell: CellSpec, budget: BudgetSpec | None, account: str | None = None
) -> tuple[JudgmentsRef, bool]:
    """The judge task (on a Dask worker when the runner is Dask) and whether its result came
    from the task cache. When some judgments failed, the paid ones stay in the ledger but this
    result is not cached, so a re-run retries exactly the failures."""
    state = fan_out_states(
        judge_task, [{"bench": bench, "feedback": feedback, "judge": cell.judge, "budget": budget, "account": account}]
    )[0]
    judged: JudgmentsRef = state.result()
    if judged.failed_queries:
        invalidate_task_cache(judge_cache_key(None, {"judge": cell.judge, "bench": bench, "feedback": feedback}))
    return judged, state.name == "Cached"
