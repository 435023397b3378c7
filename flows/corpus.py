"""Prefect flows for a user's corpus: indexing in cached chunks, classification with chunked
labelling, and the evaluation of the classification mode on labelled benchmarks.

``index-corpus`` embeds the corpus in chunks (cached tasks; parallel on a Dask runner) into
the embedding cache, then assembles the index from it. ``classify-corpus`` judges and refines
in the flow (a handful of calls), then scores and labels the corpus in chunks, each a task that
writes one parquet part. ``evaluate-classification`` runs the classification on every query of
a benchmark and logs precision / recall / F1 of the chosen threshold, of the best threshold
(the ceiling) and of the same procedure on the unrefined query, to MLflow.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
from prefect import flow, task

from corpus import (
    CorpusIndex,
    best_threshold_f1,
    binary_metrics,
    build_index,
    classify,
    corpus_scores,
    documents_hash,
    label_documents,
    read_corpus,
)
from embedders.cache import EmbeddingCache
from evaluations.config import BenchmarkSpec, JudgeSpec
from flows.execution import fan_out
from judging import JudgmentLedger
from refine_core.baselines import RocchioParams
from refine_core.refinement import RefineConfig
from tasks.core import CACHE_EXPIRATION, corpus_chunks, embedder_for, task_key
from tasks.judging import build_judge
from tasks.storage import digest, embedding_cache_dir, ledger_url, save_array, state_dir


# ---- index ------------------------------------------------------------------------------------
def _texts_chunk_key(context, parameters) -> str:
    return task_key(
        "embed-texts",
        parameters["documents"],
        embedder_for(parameters["model"]).cache_key,
        parameters["start"],
        parameters["stop"],
    )


@task(
    name="embed-texts-chunk",
    cache_key_fn=_texts_chunk_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
    retries=1,
)
def embed_texts_chunk_task(table: str, documents: str, model: str, start: int, stop: int) -> int:
    """Embed rows ``start:stop`` of a documents table into the embedding cache; returns the count."""
    texts = pl.scan_parquet(table).slice(start, stop - start).select("text").collect()["text"].to_list()
    embedder_for(model).embed_documents(texts, cache=EmbeddingCache(embedding_cache_dir()))
    return len(texts)


@flow(name="index-corpus", log_prints=False)
def index_corpus_flow(
    corpus: str,
    name: str | None = None,
    model: str = "all-MiniLM-L6-v2",
    id_column: str = "id",
    text_column: str = "text",
    chunk_size: int = 4096,
) -> dict:
    """Build (or find up to date) the index ``$REFINE_HOME/indexes/<name>`` of a corpus file."""
    started = time.perf_counter()
    ids, texts = read_corpus(corpus, id_column=id_column, text_column=text_column)
    content = documents_hash(ids, texts)
    table = state_dir() / "arrays" / f"corpus-{content}.parquet"
    table.parent.mkdir(parents=True, exist_ok=True)
    if not table.exists():
        pl.DataFrame({"id": ids, "text": texts}).write_parquet(table)
    fan_out(
        embed_texts_chunk_task,
        [
            {"table": str(table), "documents": content, "model": model, "start": a, "stop": b}
            for a, b in corpus_chunks(len(texts), chunk_size)
        ],
    )
    # Every chunk is in the embedding cache now: the assembly reads it back, embedding nothing.
    index = build_index(
        texts,
        ids=ids,
        folder=state_dir() / "indexes" / (name or Path(corpus).stem),
        embedder=embedder_for(model),
        cache=EmbeddingCache(embedding_cache_dir()),
        chunk_size=chunk_size,
    )
    return {
        "index": str(index.folder),
        "documents": index.count,
        "dimension": index.dimension,
        "model": index.model,
        "documents_hash": index.documents_hash,
        "seconds": time.perf_counter() - started,
    }


# ---- classify -----------------------------------------------------------------------------------
@task(name="label-chunk")
def label_chunk_task(
    index_folder: str,
    vector: str,
    threshold: float,
    judged: str,
    start: int,
    stop: int,
    part: str,
    positive_at: float = 0.5,
) -> str:
    """Score rows ``start:stop`` against the refined vector and write their labels as a parquet part."""
    index = CorpusIndex.open(index_folder)
    ids, _ = index.documents()
    scores = corpus_scores(index.vectors()[start:stop], np.load(vector))
    judge_scores = np.load(judged)[start:stop]  # NaN: not judged; -1: judged, the judge failed
    labels = label_documents(scores, threshold, np.where(judge_scores >= 0, judge_scores, np.nan), positive_at)
    pl.DataFrame(
        {
            "id": ids[start:stop],
            "score": scores,
            "label": labels,
            "judged": ~np.isnan(judge_scores),
            "judge_score": pl.Series([float(s) if s >= 0 else None for s in judge_scores], dtype=pl.Float32),
        }
    ).write_parquet(part)
    return part


@flow(name="classify-corpus", log_prints=False)
def classify_corpus_flow(
    index: str,
    criterion: str,
    judge: JudgeSpec,
    out: str,
    k: int = 20,
    rounds: int = 1,
    calibrate: int = 0,
    lr: float = 1e-4,
    instruction: str | None = None,
    score_chunk: int = 262_144,
    pull: float = 0.0,
    start: str = "query",
    rocchio_beta: float = 0.75,
    rocchio_gamma: float = 0.15,
    min_positives: int = 0,
    min_share: float = 0.0,
) -> dict:
    """Judge, refine and choose the threshold, then label the corpus in chunks into ``out``
    (``rocchio_beta``/``rocchio_gamma``: Rocchio's weights with ``start="rocchio"``, default SMART)."""
    opened = CorpusIndex.open(index)
    result = classify(
        opened,
        criterion,
        judge=build_judge(judge),
        embedder=embedder_for(opened.model),
        k=k,
        rounds=rounds,
        calibrate=calibrate,
        config=RefineConfig(lr=lr, pull=pull),
        instruction=instruction,
        ledger=JudgmentLedger(ledger_url()),
        concurrency=judge.concurrency,
        start=start,
        rocchio=RocchioParams(beta=rocchio_beta, gamma=rocchio_gamma),
        min_positives=min_positives,
        min_share=min_share,
    )
    name = digest(
        "classify",
        opened.documents_hash,
        criterion,
        judge.model_dump(),
        k,
        rounds,
        calibrate,
        lr,
        instruction,
        pull,
        start,
        *((rocchio_beta, rocchio_gamma) if start == "rocchio" else ()),
        *((min_positives, min_share) if min_positives or min_share else ()),
    )
    vector = save_array(f"classify-{name}-vector", result.refinement.refined)
    judged = np.where(result.judged, result.judge_scores, np.nan).astype(np.float32)
    judged[result.judged & ~np.isfinite(result.judge_scores)] = -1.0  # judged but failed: kept apart from "not judged"
    judged_path = save_array(f"classify-{name}-judged", judged)
    with tempfile.TemporaryDirectory(dir=state_dir()) as tmp:
        parts = fan_out(
            label_chunk_task,
            [
                {
                    "index_folder": str(opened.folder),
                    "vector": vector,
                    "threshold": result.threshold,
                    "judged": judged_path,
                    "start": a,
                    "stop": b,
                    "part": str(Path(tmp) / f"part-{i:06d}.parquet"),
                    "positive_at": result.positive_at,
                }
                for i, (a, b) in enumerate(corpus_chunks(opened.count, score_chunk))
            ],
        )
        frame = pl.concat([pl.read_parquet(p) for p in parts])
        target = Path(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write_parquet(target)
    summary = result.as_dict()
    summary["out"] = str(target)
    return summary


# ---- evaluation of the classification mode ----------------------------------------------------------
def _benchmark_index(bench, model: str) -> CorpusIndex:
    embedder = embedder_for(model)
    folder = state_dir() / "indexes" / f"benchmark-{bench.name}-{bench.content_hash}-{embedder.cache_key[-16:]}"
    return build_index(
        bench.document_texts(),
        ids=bench.documents["doc_id"].to_list(),
        folder=folder,
        embedder=embedder,
        cache=EmbeddingCache(embedding_cache_dir()),
    )


@flow(name="evaluate-classification", log_prints=False)
def evaluate_classification(
    benchmark: BenchmarkSpec,
    judge: JudgeSpec,
    model: str = "all-MiniLM-L6-v2",
    k: int = 20,
    rounds: int = 1,
    calibrate: int = 0,
    lr: float = 1e-4,
    experiment: str = "classification",
    tracking: str | None = None,
    pull: float = 0.0,
    start: str = "query",
    rocchio_beta: float = 0.75,
    rocchio_gamma: float = 0.15,
    min_positives: int = 0,
    min_share: float = 0.0,
) -> dict:
    """Classification mode on every query of a labelled benchmark, logged as one MLflow run.

    For each query (the criterion) the corpus is labelled by :func:`corpus.classify`
    (``refined``) and by the same procedure without the optimisation (``baseline``: same
    judging, same threshold rule, unrefined scores); ``*.best_f1`` is the best F1 any threshold
    on those scores reaches (the ceiling). Metrics are means over queries; ``*.interval_coverage``
    is how often the 90% interval on the positive count holds the true count; ``*.warned`` the share
    of criteria whose calibrated estimate came with a warning (:func:`refine_core.calibration.tail_warning`).
    """
    from evaluations.registry import load_benchmark
    from flows.tracking import Tracker

    started = time.perf_counter()
    bench = load_benchmark(
        benchmark.name,
        queries=benchmark.queries,
        query_seed=benchmark.query_seed,
        max_documents=benchmark.max_documents,
        corpus_seed=benchmark.corpus_seed,
    )
    if bench.pool != "corpus":
        raise ValueError(
            f"{bench.name}: classification needs labels over the whole corpus; this benchmark only "
            "labels a pool of documents per query"
        )
    index = _benchmark_index(bench, model)
    judge_obj = build_judge(judge, bench)
    ledger = JudgmentLedger(ledger_url())
    qrels = bench.qrels()
    embedder = embedder_for(model)
    settings = {
        "judge": judge_obj,
        "embedder": embedder,
        "k": k,
        "rounds": rounds,
        "calibrate": calibrate,
        "config": RefineConfig(lr=lr, pull=pull),
        "instruction": bench.embed_instruction,
        "ledger": ledger,
        "judge_instruction": bench.judge_instruction,
        "start": start,
        "rocchio": RocchioParams(beta=rocchio_beta, gamma=rocchio_gamma),
        "min_positives": min_positives,
        "min_share": min_share,
    }
    criteria = bench.query_texts()
    rows = [r for qi, text in enumerate(criteria) if (r := _classify_query(bench, index, qrels, qi, text, settings))]
    frame = pl.DataFrame(rows)
    metrics = _classification_metrics(frame)
    metrics["queries"] = float(frame.height)
    metrics["time.total_s"] = time.perf_counter() - started
    tracker = Tracker(tracking)
    experiment_id = tracker.experiment(experiment)
    run_id = tracker.start(
        experiment_id,
        f"{bench.name} | {judge.label} | k={k} r={rounds} cal={calibrate}",
        tags={"refine.kind": "classification"},
    )
    with tracker.ends_run_on_error(run_id):
        params: dict[str, object] = {"benchmark.name": bench.name, "benchmark.hash": bench.content_hash, "model": model}
        params |= {"k": k, "rounds": rounds, "calibrate": calibrate, "lr": lr, "pull": pull, "start": start}
        params |= {"min_positives": min_positives, "min_share": min_share}
        if start == "rocchio":
            params |= {"rocchio.beta": rocchio_beta, "rocchio.gamma": rocchio_gamma}
        params |= {f"judge.{key}": v for key, v in judge.model_dump().items() if v is not None}
        tracker.log_params(run_id, params)
        tracker.log_metrics(run_id, metrics)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "per_query_classification.parquet"
            frame.write_parquet(path)
            tracker.log_artifact(run_id, path, "per_query")
        tracker.finish(run_id, "FINISHED")
    return {
        "run_id": run_id,
        "experiment_id": experiment_id,
        "benchmark": bench.name,
        "judge": judge.label,
        "metrics": metrics,
    }


def _classify_query(bench, index, qrels, qi: int, criterion: str, settings: dict) -> dict[str, object] | None:
    """One criterion (query ``qi``) labelled with and without the refinement, scored against its
    gold labels; None for a query without a relevant document."""
    gold = np.zeros(bench.n_documents, dtype=bool)
    lo, hi = qrels.indptr[qi], qrels.indptr[qi + 1]
    gold[qrels.docs[lo:hi][qrels.gains[lo:hi] > 0]] = True
    if not gold.any():
        return None
    row: dict[str, object] = {"query_id": bench.queries["query_id"][qi], "positives_gold": int(gold.sum())}
    for prefix, optimise in (("refined", True), ("baseline", False)):
        result = classify(index, criterion, optimise=optimise, **settings)
        for name, value in binary_metrics(result.labels, gold).items():
            row[f"{prefix}_{name}"] = value
        row[f"{prefix}_best_f1"] = best_threshold_f1(result.scores, gold)["f1"]
        row[f"{prefix}_estimate"] = result.estimate
        row[f"{prefix}_interval_low"], row[f"{prefix}_interval_high"] = result.interval
        row[f"{prefix}_warned"] = float(bool(result.warnings))
    return row


def _classification_metrics(frame: pl.DataFrame) -> dict[str, float]:
    """Means over the criteria, the 90% interval's coverage of the true count and the count's error."""
    metrics = {
        c.replace("_", ".", 1): _mean(frame[c])
        for c in frame.columns
        if c.startswith(("refined_", "baseline_")) and not c.endswith(("_estimate", "_low", "_high"))
    }
    for prefix in ("refined", "baseline"):
        gold_count = frame["positives_gold"]
        inside = (gold_count >= frame[f"{prefix}_interval_low"]) & (gold_count <= frame[f"{prefix}_interval_high"])
        metrics[f"{prefix}.interval_coverage"] = _mean(inside)
        metrics[f"{prefix}.count_relative_error"] = _mean((frame[f"{prefix}_estimate"] - gold_count).abs() / gold_count)
    return metrics


def _mean(series: pl.Series) -> float:
    """A numeric column's mean as a float (NaN for no values; polars types it as any literal)."""
    value = series.mean()
    return float("nan") if value is None else float(value)  # type: ignore[arg-type]
