"""Refinement as tasks: per query block from the last round's vectors on every judgment so far,
the Rocchio start, and the ``recommended`` default."""

from __future__ import annotations

import time

import numpy as np
from prefect import task

from refine_core.baselines import RocchioParams
from refine_core.refinement import RefineConfig, refine
from refine_core.rocchio_kl import rocchio_start
from tasks.prepare import join_key
from tasks.refs import CACHE_EXPIRATION, ArrayRef, JudgmentsRef, task_key
from tasks.storage import digest, load_array, load_arrays, save_array, save_arrays


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


@task(name="refine", cache_key_fn=join_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
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
