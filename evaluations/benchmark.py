"""The benchmark data model: queries, documents, relevance labels and a pool definition.

Tables are polars DataFrames with fixed columns:

* ``queries``:   ``query_id`` (str), ``text`` (str)
* ``documents``: ``doc_id`` (str), ``text`` (str)
* ``labels``:    ``query_id``, ``doc_id``, ``label`` (0/1), ``score`` (graded, float)

Two pool kinds:

* ``"corpus"``: every document is a candidate for every query; ``labels`` lists the
  relevant pairs (others are negatives).
* ``"per-query"``: each query's pool is exactly the documents it has a ``labels`` row for,
  with label 0 or 1 (ArgKP-21, FollowIR).

A benchmark's identity is its content hash (documents, queries, labels, instructions, pool
kind); subsetting produces a new benchmark with a new hash and records what was done.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from evaluations.errors import DatasetError
from refine_core.qrels import Qrels

PoolKind = Literal["corpus", "per-query"]

QUERY_SCHEMA = {"query_id": pl.String, "text": pl.String}
DOCUMENT_SCHEMA = {"doc_id": pl.String, "text": pl.String}
LABEL_SCHEMA = {"query_id": pl.String, "doc_id": pl.String, "label": pl.Int8, "score": pl.Float64}


def _hash_frame(hasher: hashlib._Hash, frame: pl.DataFrame) -> None:
    for column in frame.columns:
        hasher.update(column.encode())
        for value in frame[column].cast(pl.String).to_list():
            hasher.update(b"\x1f" + (value.encode("utf-8") if value is not None else b"\x00"))
        hasher.update(b"\x1e")


@dataclass(frozen=True)
class Benchmark:
    """One evaluation dataset, ready for embedding, judging and scoring.

    Attributes:
        name: registry name (``clinc150``, ``beir:/path``, ...).
        version: loader version; bump when a loader's construction changes.
        queries, documents, labels: the tables described in the module docstring.
        embed_instruction: instruction put in the embedding model's query template.
        judge_instruction: task instruction for the judge (classification datasets only).
        pool: ``"corpus"`` or ``"per-query"``.
        subset: what subsetting was applied (empty for the full benchmark).
        source: where the data came from (files or Hub ids), for provenance.
    """

    name: str
    version: str
    queries: pl.DataFrame
    documents: pl.DataFrame
    labels: pl.DataFrame
    embed_instruction: str
    judge_instruction: str | None
    pool: PoolKind
    subset: dict[str, object] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        validate_tables(self.queries, self.documents, self.labels, name=self.name, pool=self.pool)

    # ---- identity -------------------------------------------------------------------
    @cached_property
    def content_hash(self) -> str:
        """sha256 (hex, 16 chars) over documents, queries, labels, instructions and pool kind."""
        h = hashlib.sha256()
        for frame in (self.documents, self.queries, self.labels):
            _hash_frame(h, frame)
        for part in (self.embed_instruction, self.judge_instruction or "", self.pool):
            h.update(b"\x1d" + part.encode())
        return h.hexdigest()[:16]

    @cached_property
    def documents_hash(self) -> str:
        """Hash of the documents alone: the identity of a corpus embedding."""
        h = hashlib.sha256()
        _hash_frame(h, self.documents)
        return h.hexdigest()[:16]

    # ---- counts -----------------------------------------------------------------------
    @property
    def n_queries(self) -> int:
        return self.queries.height

    @property
    def n_documents(self) -> int:
        return self.documents.height

    def counts(self) -> dict[str, object]:
        """Summary used by ``refine datasets show`` and logged to MLflow."""
        positives = int((self.labels["label"] == 1).sum())
        pairs = self.n_queries * self.n_documents if self.pool == "corpus" else self.labels.height
        per_query = (
            self.labels.filter(pl.col("label") == 1).group_by("query_id").len()["len"].to_numpy()
            if positives
            else np.zeros(0)
        )
        return {
            "name": self.name,
            "version": self.version,
            "queries": self.n_queries,
            "documents": self.n_documents,
            "pairs": pairs,
            "positives": positives,
            "mean_positives_per_query": round(positives / self.n_queries, 4) if self.n_queries else 0.0,
            "queries_without_positives": self.n_queries - int(per_query.size),
            "pool": self.pool,
            "hash": self.content_hash,
            "subset": dict(self.subset),
        }

    # ---- views for refine_core -------------------------------------------------------
    def qrels(self) -> Qrels:
        """The labels as sparse :class:`~refine_core.qrels.Qrels` over table order (rows = queries,
        columns = documents): memory grows with the labelled pairs, not queries × documents.

        Gains: a relevant pair's graded ``score`` (at least 1; 1 when missing), 0 otherwise.
        Binary measures use ``gain > 0``. ``"per-query"`` benchmarks give pooled qrels.
        """
        q_index = pl.DataFrame({"query_id": self.queries["query_id"], "_row": np.arange(self.n_queries)})
        d_index = pl.DataFrame({"doc_id": self.documents["doc_id"], "_col": np.arange(self.n_documents)})
        pairs = self.labels.join(q_index, on="query_id", how="left").join(d_index, on="doc_id", how="left")
        gains = np.where(
            pairs["label"].to_numpy() > 0,
            np.maximum(pairs["score"].fill_null(1.0).to_numpy(), 1.0),
            0.0,
        ).astype(np.float32)
        return Qrels.from_pairs(
            pairs["_row"].to_numpy(),
            pairs["_col"].to_numpy(),
            gains,
            n_queries=self.n_queries,
            n_documents=self.n_documents,
            pooled=self.pool == "per-query",
        )

    def label_matrix(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Dense ``(labels (n, N) float32 graded, pool (n, N) bool or None)``: small benchmarks and tests
        only (the pipeline uses :meth:`qrels`). For ``"corpus"`` benchmarks the pool is None."""
        return self.qrels().to_dense()

    # ---- subsetting -------------------------------------------------------------------
    def subset_queries(self, n: int, *, seed: int | None = None) -> Benchmark:
        """The first ``n`` queries (``seed=None``) or ``n`` drawn at random (seeded).

        For per-query pools the documents no remaining query uses are dropped.
        """
        if n < 1:
            raise DatasetError(f"{self.name}: query subset size must be >= 1, got {n}")
        if n >= self.n_queries:
            return self
        if seed is None:
            chosen = self.queries.head(n)
            how: dict[str, object] = {"queries": n, "query_selection": "first"}
        else:
            idx = np.sort(np.random.default_rng(seed).choice(self.n_queries, size=n, replace=False))
            chosen = self.queries[idx.tolist()]
            how = {"queries": n, "query_selection": "random", "query_seed": seed}
        labels = self.labels.join(chosen.select("query_id"), on="query_id", how="semi")
        documents = self.documents
        if self.pool == "per-query":
            documents = documents.join(labels.select("doc_id").unique(), on="doc_id", how="semi")
        return replace(self, queries=chosen, labels=labels, documents=documents, subset={**self.subset, **how})

    def subsample_corpus(self, max_documents: int, *, seed: int = 42) -> Benchmark:
        """Keep at most ``max_documents`` documents, always including every positive.

        The paper does this for RealScholarQuery's corpus (25,000 papers, seed 42). Only for
        ``"corpus"`` pools; document order is preserved.
        """
        if self.pool != "corpus":
            raise DatasetError(f"{self.name}: corpus subsampling applies to shared-corpus benchmarks only")
        if max_documents >= self.n_documents:
            return self
        positives = set(self.labels.filter(pl.col("label") == 1)["doc_id"].to_list())
        if len(positives) > max_documents:
            raise DatasetError(
                f"{self.name}: cannot subsample to {max_documents} documents while keeping all "
                f"{len(positives)} positive documents"
            )
        doc_ids = self.documents["doc_id"].to_list()
        others = np.array([i for i, d in enumerate(doc_ids) if d not in positives], dtype=np.int64)
        keep_others = np.random.default_rng(seed).choice(others, size=max_documents - len(positives), replace=False)
        keep = np.zeros(len(doc_ids), dtype=bool)
        keep[keep_others] = True
        keep[[i for i, d in enumerate(doc_ids) if d in positives]] = True
        documents = self.documents.filter(pl.Series(keep))
        labels = self.labels.join(documents.select("doc_id"), on="doc_id", how="semi")
        how = {"max_documents": max_documents, "corpus_seed": seed}
        return replace(self, documents=documents, labels=labels, subset={**self.subset, **how})

    def sparse(self, *, seed: int = 0) -> Benchmark:
        """The *sparse* variant: every query keeps one relevant document and loses the others.

        The usual retrieval shape (one or two relevant documents per query, as in MS MARCO- or
        BEIR-style data), made from a benchmark with many. For each query, among its relevant
        documents of the highest grade, the one kept is the first in the order of
        ``sha256(seed, query_id, doc_id)``: a seeded rule that depends on nothing else (not the
        other queries, the table order or the subset). The query's other relevant documents are
        dropped from *its* pool, so they are neither relevant nor in the way; every other document
        stays, including the ones relevant to other queries (for an intent set: every other
        intent's utterances). The result is a ``"per-query"`` benchmark whose labels list each
        query's pool (1 for the kept document, 0 for the rest) and whose name ends in ``-sparse``.
        A query without a relevant document keeps the whole corpus as its pool.
        """
        relevant = self.labels.filter(pl.col("label") == 1)
        if relevant.height == 0:
            raise DatasetError(f"{self.name}: no relevant pairs to thin out; a sparse variant needs some")
        if self.pool != "corpus":
            raise DatasetError(f"{self.name}: the sparse variant is built from shared-corpus benchmarks only")
        ranked = relevant.with_columns(
            pl.col("score").fill_null(1.0).alias("_grade"),
            pl.concat_str([pl.lit(str(seed)), pl.col("query_id"), pl.col("doc_id")], separator="\x00")
            .map_elements(lambda key: hashlib.sha256(key.encode()).hexdigest(), return_dtype=pl.String)
            .alias("_order"),
        ).sort(["query_id", "_grade", "_order"], descending=[False, True, False])
        kept = ranked.group_by("query_id", maintain_order=True).first().drop("_grade", "_order")
        dropped = relevant.join(kept.select("query_id", "doc_id"), on=["query_id", "doc_id"], how="anti")
        pairs = self.queries.select("query_id").join(self.documents.select("doc_id"), how="cross")
        pairs = pairs.join(dropped.select("query_id", "doc_id"), on=["query_id", "doc_id"], how="anti")
        labels = (
            pairs.join(kept, on=["query_id", "doc_id"], how="left")
            .with_columns(pl.col("label").fill_null(0).cast(pl.Int8), pl.col("score").fill_null(0.0))
            .select(list(LABEL_SCHEMA))
        )
        name = self.name if self.name.endswith("-sparse") else f"{self.name}-sparse"
        how = {"sparse": "one relevant document per query", "sparse_seed": seed}
        return replace(self, name=name, labels=labels, pool="per-query", subset={**self.subset, **how})

    # ---- persistence (parquet + a small JSON of metadata) -------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write the tables as parquet plus ``benchmark.json``; returns the folder."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for name in ("queries", "documents", "labels"):
            tmp = out / f".{name}.parquet.tmp"
            getattr(self, name).write_parquet(tmp)
            tmp.replace(out / f"{name}.parquet")
        meta = {
            "name": self.name,
            "version": self.version,
            "embed_instruction": self.embed_instruction,
            "judge_instruction": self.judge_instruction,
            "pool": self.pool,
            "subset": self.subset,
            "source": self.source,
            "hash": self.content_hash,
        }
        tmp = out / ".benchmark.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        tmp.replace(out / "benchmark.json")
        return out

    @classmethod
    def load(cls, folder: str | Path) -> Benchmark:
        """Read a benchmark written by :meth:`save`."""
        src = Path(folder)
        meta = json.loads((src / "benchmark.json").read_text())
        bench = cls(
            name=meta["name"],
            version=meta["version"],
            queries=pl.read_parquet(src / "queries.parquet"),
            documents=pl.read_parquet(src / "documents.parquet"),
            labels=pl.read_parquet(src / "labels.parquet"),
            embed_instruction=meta["embed_instruction"],
            judge_instruction=meta["judge_instruction"],
            pool=meta["pool"],
            subset=meta["subset"],
            source=meta["source"],
        )
        if bench.content_hash != meta["hash"]:
            raise DatasetError(f"{src}: stored benchmark does not match its recorded hash (corrupt or edited)")
        return bench

    def relevant_texts(self) -> dict[str, set[str]]:
        """query text -> texts of its relevant documents (for the oracle judge)."""
        qtext = dict(zip(self.queries["query_id"].to_list(), self.queries["text"].to_list()))
        dtext = dict(zip(self.documents["doc_id"].to_list(), self.documents["text"].to_list()))
        out: dict[str, set[str]] = {t: set() for t in qtext.values()}
        for q, d in self.labels.filter(pl.col("label") == 1).select("query_id", "doc_id").iter_rows():
            out[qtext[q]].add(dtext[d])
        return out

    def query_texts(self) -> list[str]:
        return self.queries["text"].to_list()

    def document_texts(self) -> list[str]:
        return self.documents["text"].to_list()


def _first_duplicate(values: list[str]) -> tuple[int, str] | None:
    seen: set[str] = set()
    for row, value in enumerate(values):
        if value in seen:
            return row, value
        seen.add(value)
    return None


def validate_tables(
    queries: pl.DataFrame,
    documents: pl.DataFrame,
    labels: pl.DataFrame,
    *,
    name: str,
    pool: PoolKind,
) -> None:
    """Check columns, emptiness, duplicate ids, empty texts and dangling label ids."""
    if pool not in ("corpus", "per-query"):
        raise DatasetError(f"{name}: pool must be 'corpus' or 'per-query', got {pool!r}")
    for table, schema, label in (
        (queries, QUERY_SCHEMA, "queries"),
        (documents, DOCUMENT_SCHEMA, "documents"),
        (labels, LABEL_SCHEMA, "labels"),
    ):
        if list(table.columns) != list(schema):
            raise DatasetError(f"{name}: {label} table must have columns {list(schema)}, got {table.columns}")
        if table.height == 0:
            raise DatasetError(f"{name}: {label} table is empty")
    for table, id_col, label in ((queries, "query_id", "queries"), (documents, "doc_id", "documents")):
        dup = _first_duplicate(table[id_col].to_list())
        if dup is not None:
            raise DatasetError(f"{name}: duplicate {id_col} {dup[1]!r} in {label} (row {dup[0]})")
        empty = table.with_row_index().filter(pl.col("text").is_null() | (pl.col("text").str.strip_chars() == ""))
        if empty.height:
            row = empty.row(0, named=True)
            raise DatasetError(f"{name}: empty text for {id_col} {row[id_col]!r} in {label} (row {row['index']})")
    for id_col, table, label in (("query_id", queries, "queries"), ("doc_id", documents, "documents")):
        dangling = labels.with_row_index().join(table.select(id_col), on=id_col, how="anti")
        if dangling.height:
            row = dangling.row(0, named=True)
            raise DatasetError(
                f"{name}: labels row {row['index']} points at unknown {id_col} {row[id_col]!r} (not in {label})"
            )
    bad = labels.with_row_index().filter(~pl.col("label").is_in([0, 1]))
    if bad.height:
        row = bad.row(0, named=True)
        raise DatasetError(f"{name}: labels row {row['index']} has label {row['label']!r}; labels must be 0 or 1")
    if pool == "per-query":
        empty = queries.join(labels.select("query_id").unique(), on="query_id", how="anti")
        if empty.height:
            raise DatasetError(f"{name}: query {empty['query_id'][0]!r} has no documents in its pool (no labels rows)")
    dup_pairs = labels.select("query_id", "doc_id").is_duplicated()
    if dup_pairs.any():
        row = labels.row(int(np.flatnonzero(dup_pairs.to_numpy())[1]), named=True)
        raise DatasetError(f"{name}: duplicate label pair ({row['query_id']!r}, {row['doc_id']!r})")


def make_tables(
    queries: list[tuple[str, str]],
    documents: list[tuple[str, str]],
    labels: list[tuple[str, str, int, float]],
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Build the three tables from plain rows (used by the loaders)."""
    return (
        pl.DataFrame(queries, schema=QUERY_SCHEMA, orient="row"),
        pl.DataFrame(documents, schema=DOCUMENT_SCHEMA, orient="row"),
        pl.DataFrame(labels, schema=LABEL_SCHEMA, orient="row"),
    )
