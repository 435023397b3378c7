"""Prefect tasks: thin wrappers that give the library's functions caching, retries and
persisted results. No algorithm lives here.

Every expensive task has an explicit content-based cache key (benchmark hash, model
fingerprint, template, judge identity, hyperparameters, code version) and persists its
result; results are small references (:class:`ArrayRef` and friends) to ``.npy``/``.npz``
files, never the arrays themselves.

The tasks live by stage: :mod:`tasks.refs` (the references they pass and the cache-key helper),
:mod:`tasks.prepare` (load, embed, select), :mod:`tasks.asking` (judge, HyDE),
:mod:`tasks.refining` and :mod:`tasks.scoring`. This module names them all, as it did when it
held them.
"""

from tasks.asking import (  # noqa: F401
    PassagesRef,
    embed_hyde_task,
    generate_hyde_task,
    hyde_cache_key,
    judge_cache_key,
    judge_task,
    retry_unless_judge_bug,
    spend_account,
)
from tasks.prepare import (  # noqa: F401
    corpus_chunks,
    corpus_digest,
    embed_corpus_chunk_task,
    embed_queries_task,
    embedder_for,
    join_corpus_chunks_task,
    join_key,
    load_benchmark_task,
    provided_corpus,
    select_feedback_task,
    select_shard_task,
)
from tasks.refining import (  # noqa: F401
    join_refined_blocks_task,
    query_blocks,
    recommended_task,
    refine_block_task,
    refine_extras,
    refined_digest,
    rocchio_start_task,
)
from tasks.refs import (  # noqa: F401
    CACHE_EXPIRATION,
    ArrayRef,
    BenchmarkRef,
    JudgmentsRef,
    task_key,
)
from tasks.scoring import (  # noqa: F401
    CellEvaluation,
    evaluate_shard_task,
    evaluate_task,
    shard_inputs_task,
)
