"""The checks before a sweep pays anything: datasets, document vectors, models, judges, pool
sizes and runner (every problem at once), then the stores it will write to."""

from __future__ import annotations

from pathlib import Path

from flows.console import user_errors as _user_errors


def _check_vectors_file(name: str, path: str, n_documents: int) -> None:
    """A benchmark's own document vectors: the file is there, in a known format, one row per
    document (a header is read, not the matrix; the dimension is checked when the sweep runs)."""
    from embedders.vector_files import VectorFileError, vector_rows
    from evaluations.errors import DatasetError

    where = f"benchmark {name}: document_vectors {path}"
    try:
        rows = vector_rows(path, id_column="doc_id")
    except VectorFileError as exc:
        raise DatasetError(f"{where}: {exc}") from None
    if Path(path).suffix == ".npy" and rows != n_documents:
        raise DatasetError(f"{where}: {rows} rows for the benchmark's {n_documents} documents")


def preflight(config, *, stores: bool = True) -> None:
    """Fail fast, before anything is paid: datasets, models, judges and pools, then (``stores``)
    the tracking store, the ledger and the rest (:func:`check_tracking_store`, seconds)."""
    check_inputs(config)
    if stores:
        check_tracking_store()


def check_inputs(config) -> None:
    """The config's datasets, document vectors, models, judges, pool sizes and runner, each
    checked without loading model weights or starting anything. Every problem is found in one
    pass: one is raised as it is, several as one ``ValueError`` listing them all."""
    problems: list[Exception] = []
    benches = _checked_benchmarks(config, problems)
    _checked_models_and_judges(config, benches, problems)
    for spec, bench in benches.items():
        smallest = (
            bench.n_documents
            if bench.pool == "corpus"
            else int(bench.labels.group_by("query_id").len()["len"].to_numpy().min())
        )
        too_large = [(k, r) for k in config.grid.k for r in config.grid.rounds if k * r > smallest]
        if too_large:
            k, rounds = too_large[0]
            problems.append(
                ValueError(
                    f"k={k} x rounds={rounds} is larger than the smallest pool of {spec.name} ({smallest} documents)"
                )
            )
    if config.runner != "local":
        from flows.execution import check_scheduler, require_prefect_dask

        _collect(problems, require_prefect_dask)
        _collect(problems, check_scheduler, config.runner)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        listed = "".join(f"\n  {i}. {p}" for i, p in enumerate(problems, 1))
        raise ValueError(f"{len(problems)} problems, to fix before anything runs:{listed}")


def _collect(problems: list[Exception], check, *args):
    """``check(*args)``, with a user error (bad input) noted in ``problems`` instead of raised."""
    try:
        return check(*args)
    except _user_errors() as exc:
        problems.append(exc)  # type: ignore[arg-type]  # user errors are Exceptions
        return None


def _checked_benchmarks(config, problems: list[Exception]) -> dict:
    """Every benchmark the config names that loads (and its document vectors, if given)."""
    from evaluations.registry import load_benchmark

    benches = {}
    for spec in dict.fromkeys(c.benchmark for c in config.cells()):
        bench = _collect(
            problems,
            lambda s: load_benchmark(
                s.name,
                queries=s.queries,
                query_seed=s.query_seed,
                max_documents=s.max_documents,
                corpus_seed=s.corpus_seed,
            ),
            spec,
        )
        if bench is None:
            continue
        benches[spec] = bench
        if spec.document_vectors is not None:
            _collect(problems, _check_vectors_file, spec.name, spec.document_vectors.path, bench.n_documents)
    return benches


def _checked_models_and_judges(config, benches: dict, problems: list[Exception]) -> None:
    """The embedding models and local judge or HyDE models exist here (not loaded: a cached run
    never needs the weights); API judges have their keys; oracles have a benchmark."""
    from embedders.models import check_model
    from judging.kinds import judge_kind

    for model in config.models:
        _collect(problems, check_model, model)
    first = next(iter(benches.values()), None)
    for judge in config.judges:
        kind = judge_kind(judge.kind)
        if first is None and kind.gold_labels:
            continue  # no benchmark loaded: its problem is listed already
        _collect(problems, kind.preflight, judge, first)
    if config.hyde is not None and config.hyde.kind == "local-lm":
        from judging.local_lm import check_local_model

        _collect(problems, check_local_model, config.hyde.model or "")


def check_tracking_store(*, run: bool = True) -> None:
    """Every store the command needs (tracking, ledger, a Prefect API of the user's, an S3
    artifact endpoint) answers within a few seconds, or one ValueError naming the first that
    does not, its URI redacted (see :mod:`flows.stores`)."""
    from flows.stores import check_stores
    from flows.tracking import tracking_uri

    check_stores(tracking_uri(), ledger=run, prefect=run, artifacts=run)
