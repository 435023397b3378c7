"""``files:<folder>``: a user's own labelled data as queries.jsonl, documents.jsonl and qrels.tsv,
every bad row named by file and line."""

from __future__ import annotations

import math
from pathlib import Path

from evaluations.benchmark import Benchmark, make_tables
from evaluations.errors import DatasetError, DatasetNotFound
from evaluations.readers import read_json, read_jsonl_lines


# The paper's task instructions, verbatim (instruction_templates.yaml of its released code). Each
# fills the query template ``Instruct: {instruction}\nQuery: {query}``; for the classification
# datasets (CLINC150, Banking77, ArgKP21) it is also the judge's task instruction ("Judge the
# relevance according to the following task: ..."); search datasets give the judge none.
# tests/test_datasets.py pins them.
def _user_id(where: str, row: dict, key: str) -> str:
    value = row[key]
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value).strip() == "":
        raise DatasetError(f"{where}: {key!r} must be a non-empty string or an integer, got {value!r}")
    return str(value)


def _user_text(where: str, row: dict) -> str:
    value = row["text"]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: 'text' must be a non-empty string, got {value!r}")
    return value


def _user_label(where: str, value: object) -> int:
    """0 or 1 (a graded relevance goes in 'score'); 0.0 and 1.0 are read as 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value not in (0, 1):
        raise DatasetError(f"{where}: 'label' must be 0 or 1 (put a graded relevance in 'score'), got {value!r}")
    return int(value)


def load_user_files(folder: Path) -> Benchmark:
    """A user's own data: ``queries``, ``documents`` and ``labels`` as .jsonl or .parquet.

    Columns: queries (``query_id``, ``text``), documents (``doc_id``, ``text``), labels
    (``query_id``, ``doc_id``, ``label`` 0 or 1 and optionally ``score``, a graded relevance).
    Ids are non-empty strings or integers, texts non-empty strings; anything else is a
    :class:`DatasetError` naming the file and line (or parquet row). An optional
    ``benchmark.json`` may set ``pool`` ("corpus" or "per-query"), ``embed_instruction``
    and ``judge_instruction``.
    """
    import polars as pl

    def table(stem: str, columns: tuple[str, ...]) -> list[tuple[str, dict[str, object]]]:
        """(where, row) pairs: where is "<file>: line N" (jsonl) or "<file>: row N" (parquet, 1-based)."""
        for suffix in (".jsonl", ".parquet"):
            path = folder / f"{stem}{suffix}"
            if path.is_file():
                if suffix == ".jsonl":
                    return [(f"{path}: line {n}", row) for n, row in read_jsonl_lines(path, columns)]
                try:
                    frame = pl.read_parquet(path)
                except (OSError, pl.exceptions.PolarsError) as exc:
                    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
                    raise DatasetError(f"{path}: not a readable parquet file ({first})") from None
                missing = [c for c in columns if c not in frame.columns]
                if missing:
                    raise DatasetError(f"{path}: missing column(s) {missing}; it has {frame.columns}")
                if frame.is_empty():
                    raise DatasetError(f"{path}: no rows")
                return [(f"{path}: row {n}", row) for n, row in enumerate(frame.to_dicts(), start=1)]
        raise DatasetNotFound(f"missing {stem}.jsonl or {stem}.parquet in {folder}")

    meta = read_json(folder / "benchmark.json") if (folder / "benchmark.json").is_file() else {}
    if not isinstance(meta, dict):
        raise DatasetError(f"{folder / 'benchmark.json'}: expected a JSON object")
    unknown = set(meta) - {"pool", "embed_instruction", "judge_instruction", "name"}
    if unknown:
        raise DatasetError(f"{folder / 'benchmark.json'}: unknown key(s) {sorted(unknown)}")
    queries = [
        (_user_id(where, r, "query_id"), _user_text(where, r)) for where, r in table("queries", ("query_id", "text"))
    ]
    documents = [
        (_user_id(where, r, "doc_id"), _user_text(where, r)) for where, r in table("documents", ("doc_id", "text"))
    ]
    labels = []
    for where, r in table("labels", ("query_id", "doc_id", "label")):
        label = _user_label(where, r["label"])
        score = r.get("score")
        if score is None:
            score = float(label)
        elif isinstance(score, bool) or not isinstance(score, (int, float)) or not math.isfinite(score):
            raise DatasetError(f"{where}: 'score' must be a finite number (a graded relevance), got {score!r}")
        labels.append((_user_id(where, r, "query_id"), _user_id(where, r, "doc_id"), label, float(score)))
    q, d, lab = make_tables(queries, documents, labels)
    return Benchmark(
        name=str(meta.get("name") or f"files:{folder}"),
        version="1",
        queries=q,
        documents=d,
        labels=lab,
        embed_instruction=str(meta.get("embed_instruction") or "Given a query, retrieve relevant documents"),
        judge_instruction=meta.get("judge_instruction"),
        pool=meta.get("pool", "corpus"),
        source=str(folder),
    )
