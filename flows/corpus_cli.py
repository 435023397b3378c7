"""``refine index`` / ``refine search`` / ``refine classify``: refinement on a user's own corpus.

Thin wrappers around :mod:`corpus`: indexes live under ``$REFINE_HOME/indexes/<name>``
(or any folder given as INDEX), embeddings go through the shared embedding cache and every
judgment through the judgment ledger, so nothing is embedded or paid for twice.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from flows.console import console, err_console, fail, user_errors
from flows.corpus_options import (
    ANN_AUTO_FROM,
    JUDGE_HELP,
    BetaOption,
    GammaOption,
    LrOption,
    PullOption,
    StartOption,
    VerdictsOption,
    ann_kind,
    describe_refinement,
    ensure_ann,
    index_folder,
    judge_spec,
    kept_positives,
    kept_share,
    refinement_settings,
)


def index_cmd(
    corpus: Annotated[Path, typer.Argument(help="a .jsonl, .parquet or .csv file with id and text columns")],
    name: Annotated[str | None, typer.Option(help="index name (default: the file's stem)")] = None,
    model: Annotated[str, typer.Option(help="embedding model")] = "all-MiniLM-L6-v2",
    id_column: Annotated[str, typer.Option(help="column of document ids")] = "id",
    text_column: Annotated[str, typer.Option(help="column of document texts")] = "text",
    chunk_size: Annotated[int, typer.Option(help="documents embedded (and cached) per step")] = 4096,
    vectors: Annotated[
        Path | None,
        typer.Option(
            help="the documents' vectors computed elsewhere (.npy in corpus "
            "order, or .parquet with id and vector), made by --model: "
            "nothing is embedded"
        ),
    ] = None,
    ann: Annotated[
        str,
        typer.Option(
            help="ANN structure for search: none (brute force), flat, ivf, hnsw, or "
            f"auto (hnsw from {ANN_AUTO_FROM:,} documents)"
        ),
    ] = "none",
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Embed a corpus into a persistent index (resumable: the embedding cache keeps every chunk).

    With an ANN structure, search takes exact-cosine candidates from it; its recall against
    brute force is measured at build time and reported (index.json's neighbour ann.json)."""
    from flows.environment import configure_environment

    configure_environment()
    from corpus import build_index, read_corpus, read_vectors
    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from tasks.storage import embedding_cache_dir, state_dir, torch_threads

    started = time.perf_counter()
    try:
        ids, texts = read_corpus(corpus, id_column=id_column, text_column=text_column)
        embedder = SentenceTransformerEmbedder(model, threads=torch_threads())
        embedder.dimension  # noqa: B018 - load the model now: a bad name fails before anything else
        folder = state_dir() / "indexes" / (name or corpus.stem)
        kind = ann_kind(ann, len(texts))
        given = read_vectors(vectors, ids) if vectors is not None else None
        index = build_index(
            texts,
            ids=ids,
            folder=folder,
            embedder=embedder,
            cache=EmbeddingCache(embedding_cache_dir()),
            chunk_size=chunk_size,
            progress=lambda done, total: console.print(
                f"{'copied' if given is not None else 'embedded'} {done}/{total}", highlight=False
            ),
            vectors=given,
        )
        ann_record = ensure_ann(index, kind)
    except user_errors() as exc:
        fail(exc)
    seconds = time.perf_counter() - started
    console.print(
        f"index [bold]{index.folder.name}[/]: {index.count} documents, d={index.dimension}, "
        f"model {index.model}, in {index.folder} ({seconds:.1f} s)"
    )
    if ann_record:
        console.print(
            f"ANN {ann_record['settings']['kind']}: recall@20 {ann_record['recall@20']:.3f} against "
            f"brute force ({ann_record['recall_sample']} sample queries), built in "
            f"{ann_record['build_seconds']:.1f} s",
            highlight=False,
        )
    if as_json:
        print(
            json.dumps(
                {
                    "index": str(index.folder),
                    "name": index.folder.name,
                    "documents": index.count,
                    "dimension": index.dimension,
                    "model": index.model,
                    "documents_hash": index.documents_hash,
                    "seconds": seconds,
                    "ann": ann_record,
                }
            )
        )


def _open(index: str, model: str | None, judge: str, base_url: str | None, concurrency: int):
    from corpus import CorpusIndex
    from embedders.models import SentenceTransformerEmbedder
    from judging import JudgmentLedger
    from tasks.judging import build_judge
    from tasks.storage import ledger_url, torch_threads

    opened = CorpusIndex.open(index_folder(index))
    embedder = SentenceTransformerEmbedder(model or opened.model, threads=torch_threads())
    opened.check_model(embedder)
    spec = judge_spec(judge, base_url, concurrency)
    return opened, embedder, build_judge(spec), JudgmentLedger(ledger_url()), spec


def search_cmd(
    index: Annotated[str, typer.Argument(help="index name (see `refine index`) or folder")],
    query: Annotated[str, typer.Argument(help="what to search for")],
    judge: Annotated[str, typer.Option(help=JUDGE_HELP)] = "anthropic",
    base_url: Annotated[
        str | None, typer.Option(help="judge endpoint (openai-compatible, or another Messages API)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="embedding model (default: the index's; another one is an error)")
    ] = None,
    k: Annotated[int, typer.Option(help="documents judged per round")] = 20,
    rounds: Annotated[int, typer.Option(help="judge-and-refine rounds")] = 1,
    top: Annotated[int, typer.Option(help="results to print")] = 10,
    lr: LrOption = None,
    pull: PullOption = 0.0,
    start: StartOption = "query",
    rocchio_beta: BetaOption = 1.5,
    rocchio_gamma: GammaOption = 0.5,
    keep_verdicts: VerdictsOption = True,
    instruction: Annotated[
        str | None, typer.Option(help="task instruction for the query template and the judge")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="judge calls in flight")] = 4,
    use_ann: Annotated[bool, typer.Option("--ann/--no-ann", help="use the index's ANN structure if it has one")] = True,
    check_ann: Annotated[
        bool,
        typer.Option("--check-ann", help="also score the whole corpus and report the ANN's recall for this query"),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object instead of the table")] = False,
) -> None:
    """Search an index: judge the top K, refine the query vector, print the refined ranking."""
    from flows.environment import configure_environment

    configure_environment()
    from rich.table import Table

    from corpus import search

    try:
        config, rocchio = refinement_settings(start, lr, pull, rocchio_beta, rocchio_gamma, keep_verdicts)
        opened, embedder, judge_obj, ledger, spec = _open(index, model, judge, base_url, concurrency)
        result = search(
            opened,
            query,
            judge=judge_obj,
            embedder=embedder,
            k=k,
            rounds=rounds,
            top=top,
            config=config,
            instruction=instruction,
            ledger=ledger,
            concurrency=spec.concurrency,
            use_ann=use_ann,
            check_ann=check_ann,
            start=start,
            rocchio=rocchio,
            min_positives=kept_positives(keep_verdicts),
            min_share=kept_share(keep_verdicts),
            verdicts_first=keep_verdicts,
        )
    except user_errors() as exc:
        fail(exc)
    out = result.as_dict()
    if as_json:
        print(json.dumps(out))
        return
    table = Table(title=f"{query!r}: top {top} after refinement ({k} judged x {rounds} round(s))")
    for column in ("rank", "id", "score", "was", "judge", "text"):
        table.add_column(column, justify="right" if column in ("rank", "score", "was", "judge") else "left")
    for hit in result.hits:
        table.add_row(
            str(hit.rank),
            hit.id,
            f"{hit.score:.4f}",
            f"{hit.original_rank}" + (" (new)" if hit.moved_in else ""),
            "" if hit.judge_score is None else f"{hit.judge_score:.2f}",
            hit.text[:80],
        )
    console.print(table)
    console.print(
        f"{len(out['moved_in'])} of the top {top} moved in because of refinement; "
        f"{out['judged']} documents judged ({out['judgments_paid']} paid, {out['judgments_free']} free, {out['judgments_from_ledger']} "
        f"from the ledger, {out['judge_failed']} failed); cost ${out['cost_usd']:.4f}; "
        f"refined with {describe_refinement(out['refinement'])}"
    )
    for warning in out["warnings"]:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)


def classify_cmd(
    index: Annotated[str, typer.Argument(help="index name (see `refine index`) or folder")],
    criterion: Annotated[str, typer.Argument(help="what makes a document positive, in words")],
    out: Annotated[Path, typer.Option(help="labels file to write (.parquet)")] = Path("labels.parquet"),
    judge: Annotated[str, typer.Option(help=JUDGE_HELP)] = "anthropic",
    base_url: Annotated[
        str | None, typer.Option(help="judge endpoint (openai-compatible, or another Messages API)")
    ] = None,
    model: Annotated[
        str | None, typer.Option(help="embedding model (default: the index's; another one is an error)")
    ] = None,
    k: Annotated[int, typer.Option(help="documents judged per round")] = 20,
    rounds: Annotated[int, typer.Option(help="judge-and-refine rounds")] = 1,
    calibrate: Annotated[
        int,
        typer.Option(
            help="extra documents judged, sampled across the ranking, to estimate "
            "the positive count and set the threshold from it"
        ),
    ] = 0,
    lr: LrOption = None,
    pull: PullOption = 0.0,
    start: StartOption = "query",
    rocchio_beta: BetaOption = 1.5,
    rocchio_gamma: GammaOption = 0.5,
    keep_verdicts: VerdictsOption = True,
    instruction: Annotated[
        str | None, typer.Option(help="task instruction for the query template and the judge")
    ] = None,
    concurrency: Annotated[int, typer.Option(help="judge calls in flight")] = 4,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Label every document of an index for a criterion; writes id, score, label, judged, judge_score."""
    from flows.environment import configure_environment

    configure_environment()
    from corpus import CorpusError, classify, write_labels

    try:
        if out.suffix.lower() != ".parquet":
            raise CorpusError(f"--out {out}: labels are written as parquet; give a path ending in .parquet")
        if out.parent.exists() and not out.parent.is_dir():
            raise CorpusError(f"--out {out}: {out.parent} is not a folder")
        config, rocchio = refinement_settings(start, lr, pull, rocchio_beta, rocchio_gamma, keep_verdicts)
        opened, embedder, judge_obj, ledger, spec = _open(index, model, judge, base_url, concurrency)
        result = classify(
            opened,
            criterion,
            judge=judge_obj,
            embedder=embedder,
            k=k,
            rounds=rounds,
            calibrate=calibrate,
            config=config,
            instruction=instruction,
            ledger=ledger,
            concurrency=spec.concurrency,
            start=start,
            rocchio=rocchio,
            min_positives=kept_positives(keep_verdicts),
            min_share=kept_share(keep_verdicts),
        )
        path = write_labels(result, opened, out)
    except user_errors() as exc:
        fail(exc)
    summary = result.as_dict()
    summary["out"] = str(path)
    source = (
        "a stratified sample of the ranking"
        if result.method == "stratified-sample"
        else "the threshold's uncertainty only; --calibrate N estimates it from a sample"
    )
    console.print(
        f"{criterion!r}: {result.positives} of {result.scores.size} documents labelled positive; "
        f"estimated positives {result.estimate:.0f} (90% interval {result.interval[0]}-{result.interval[1]}, "
        f"from {source}); "
        f"threshold {result.threshold:.4f}; {summary['judged']} judged, cost ${summary['cost_usd']:.4f}; "
        f"refined with {describe_refinement(summary['refinement'])}; labels in {path}",
        highlight=False,
    )
    for warning in result.warnings:
        err_console.print(f"[bold yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    if as_json:
        print(json.dumps(summary))


def evaluate_classification_cmd(
    benchmark: Annotated[str, typer.Argument(help="a labelled benchmark (see `refine datasets`)")],
    judge: Annotated[
        str,
        typer.Option(
            help="oracle, noisy-oracle:FLIP_RATE, noisy-oracle:FP_RATE/FN_RATE (asymmetric), "
            "or any judge of `refine search`"
        ),
    ] = "oracle",
    base_url: Annotated[str | None, typer.Option(help="judge endpoint")] = None,
    queries: Annotated[int | None, typer.Option(help="first N queries only")] = None,
    max_documents: Annotated[int | None, typer.Option(help="subsample the corpus (keeps every positive)")] = None,
    model: Annotated[str, typer.Option(help="embedding model")] = "all-MiniLM-L6-v2",
    k: Annotated[int, typer.Option(help="documents judged per round")] = 20,
    rounds: Annotated[int, typer.Option(help="judge-and-refine rounds")] = 1,
    calibrate: Annotated[int, typer.Option(help="extra documents judged, sampled across the ranking")] = 0,
    lr: LrOption = None,
    pull: PullOption = 0.0,
    start: StartOption = "query",
    rocchio_beta: BetaOption = 1.5,
    rocchio_gamma: GammaOption = 0.5,
    keep_verdicts: VerdictsOption = True,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Classification mode on a labelled benchmark: P/R/F1 of the chosen threshold vs the best and vs
    the unrefined query, logged to MLflow (experiment 'classification')."""
    from flows.environment import configure_environment

    configure_environment()
    from flows.local_server import ready, start_ephemeral
    from flows.watchdog import guard

    if start_ephemeral():  # this command's own Prefect server, as `refine run`'s
        guard()  # ends it if this process is killed
    from evaluations.config import BenchmarkSpec, ConfigError, JudgeSpec

    try:
        kind, _, arg = judge.partition(":")
        if kind == "oracle":
            spec = JudgeSpec(kind="oracle")
        elif kind == "noisy-oracle":
            try:
                if "/" in arg:  # an asymmetric judge: false-positive / false-negative rate
                    fp, _, fn = arg.partition("/")
                    spec = JudgeSpec(kind="noisy-oracle", false_positive_rate=float(fp), false_negative_rate=float(fn))
                else:
                    spec = JudgeSpec(kind="noisy-oracle", flip_rate=float(arg))
            except ValueError:
                raise ConfigError(
                    f"--judge {judge}: give the flip rate as noisy-oracle:0.2, or the false-positive and "
                    "false-negative rates as noisy-oracle:0.3/0.1 (each in [0, 1])"
                ) from None
        else:
            spec = judge_spec(judge, base_url, 4)
        config, rocchio = refinement_settings(start, lr, pull, rocchio_beta, rocchio_gamma, keep_verdicts)
        bench_spec = BenchmarkSpec(name=benchmark, queries=queries, max_documents=max_documents)
        from evaluations.registry import load_benchmark

        load_benchmark(benchmark, queries=queries, max_documents=max_documents)  # unknown names fail here, cheaply
    except user_errors() as exc:
        fail(exc)
    from flows.corpus import evaluate_classification
    from flows.watchdog import without_heartbeats

    try:
        ready()
        with without_heartbeats():
            result = evaluate_classification(
                bench_spec,
                spec,
                model=model,
                k=k,
                rounds=rounds,
                calibrate=calibrate,
                lr=config.lr,
                pull=pull,
                start=start,
                rocchio_beta=rocchio.beta,
                rocchio_gamma=rocchio.gamma,
                min_positives=kept_positives(keep_verdicts),
                min_share=kept_share(keep_verdicts),
            )
    except user_errors() as exc:
        fail(exc)
    m = result["metrics"]
    console.print(
        f"{result['benchmark']} ({int(m['queries'])} criteria), judge {result['judge']}: F1 refined "
        f"{m['refined.f1']:.3f} (best threshold {m['refined.best_f1']:.3f}) vs unrefined "
        f"{m['baseline.f1']:.3f} (best {m['baseline.best_f1']:.3f}); precision {m['refined.precision']:.3f}, "
        f"recall {m['refined.recall']:.3f}; positive-count interval covers the truth for "
        f"{100 * m['refined.interval_coverage']:.0f}% of criteria; MLflow run {result['run_id']}",
        highlight=False,
    )
    if m.get("refined.warned"):
        err_console.print(
            f"[bold yellow]warning:[/] for {100 * m['refined.warned']:.0f}% of criteria the judge's mistakes could "
            "explain most of the calibrated count (positives judged at the bottom of the ranking; see "
            "`refine classify`'s warning): their cut, and so their F1, follows the judge's false positives",
            highlight=False,
            soft_wrap=True,
        )
    if as_json:
        print(json.dumps(result, default=float))


def register(app: typer.Typer) -> None:
    """Add the corpus commands to the ``refine`` app."""
    app.command("index")(index_cmd)
    app.command("search")(search_cmd)
    app.command("classify")(classify_cmd)
    app.command("evaluate-classification")(evaluate_classification_cmd)
