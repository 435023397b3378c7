"""Scoring a cell: every method's ranking over the corpus (over corpus shards on Dask), the
measures per query and the paired tests."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task

from evaluations.config import CellSpec
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
from tasks.refining import refine_extras
from tasks.refs import CACHE_EXPIRATION, ArrayRef, BenchmarkRef, JudgmentsRef, task_key
from tasks.storage import digest, load_array, load_arrays, save_arrays, state_dir


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
