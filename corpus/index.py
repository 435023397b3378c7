"""A corpus on disk: reading ``id`` + ``text`` files, building and opening an index folder.

:func:`build_index` embeds a corpus into a folder: the vectors (``vectors.npy``), the documents
(``documents.parquet``) and ``index.json`` naming the model and a hash of the content. Embedding
goes through the :class:`EmbeddingCache` in chunks, so an interrupted build resumes where it
stopped and a rebuild of unchanged text is free. :func:`build_ann` adds an approximate
nearest-neighbour structure and measures its recall.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from corpus.ann import AnnIndex, AnnSettings
from embedders.cache import EmbeddingCache
from embedders.models import SentenceTransformerEmbedder
from refine_core.cosine import cosine_one

INDEX_FORMAT = 1
SCORE_CHUNK = 262_144  # documents scored per matrix product (bounds memory on large corpora)


class CorpusError(ValueError):
    """The corpus, the index or a request on it is unusable; the message says which and why."""


# ---- reading a corpus ------------------------------------------------------------------------
def read_corpus(
    path: str | os.PathLike[str], *, id_column: str = "id", text_column: str = "text"
) -> tuple[list[str], list[str]]:
    """Ids and texts from a ``.jsonl``, ``.parquet`` or ``.csv`` file.

    Raises:
        CorpusError: missing file, unknown format, missing columns, empty corpus, empty texts,
            duplicate ids — the message names the file, the column and a first offending row.
    """
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"corpus {p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pl.read_ndjson(p, infer_schema_length=None) if p.stat().st_size else pl.DataFrame()
        elif suffix == ".csv":
            frame = pl.read_csv(p, infer_schema_length=0) if p.stat().st_size else pl.DataFrame()
        else:
            raise CorpusError(f"corpus {p}: unknown format {suffix or '(none)'!r}; use .jsonl, .parquet or .csv")
    except CorpusError:
        raise
    except Exception as exc:
        where = _bad_jsonl_line(p, id_column, text_column) if suffix in (".jsonl", ".ndjson") else None
        raise CorpusError(
            where or f"corpus {p}: cannot be read as {suffix[1:]} ({str(exc).splitlines()[0][:200]})"
        ) from None
    if frame.height == 0:
        raise CorpusError(f"corpus {p} is empty: it has no documents")
    for column in (id_column, text_column):
        if column not in frame.columns:
            raise CorpusError(f"corpus {p} has no column {column!r} (columns: {', '.join(frame.columns) or 'none'})")
    ids = [None if v is None else str(v) for v in frame[id_column].to_list()]
    texts = [None if v is None else str(v) for v in frame[text_column].to_list()]
    return check_corpus(ids, texts, source=str(p), id_column=id_column, text_column=text_column)


def _bad_jsonl_line(path: Path, id_column: str, text_column: str) -> str | None:
    """The first line of a JSON-lines corpus that is not one JSON object, as an error message
    that says what each line must hold; None when every line parses (the reader failed otherwise)."""
    import json

    with path.open(encoding="utf-8", errors="replace") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                problem = f"not valid JSON ({exc.msg} at character {exc.pos})"
            else:
                if isinstance(value, dict):
                    continue
                problem = f"a JSON {type(value).__name__}, not an object"
            return (
                f"corpus {path}: line {number}: {problem}; each line must be one JSON object with "
                f"{id_column!r} and {text_column!r} fields (--id-column / --text-column name others)"
            )
    return None


def check_corpus(
    ids: Sequence[str | None],
    texts: Sequence[str | None],
    *,
    source: str = "corpus",
    id_column: str = "id",
    text_column: str = "text",
) -> tuple[list[str], list[str]]:
    """Validate ids and texts (same length, non-empty, unique ids, no blank text)."""
    if len(ids) != len(texts):
        raise CorpusError(f"{source}: {len(ids)} ids but {len(texts)} texts")
    if not texts:
        raise CorpusError(f"{source} is empty: it has no documents")
    for row, (i, t) in enumerate(zip(ids, texts)):
        if i is None or not str(i).strip():
            raise CorpusError(f"{source}: row {row} has an empty {id_column!r}")
        if t is None or not str(t).strip():
            raise CorpusError(f"{source}: row {row} (id {i!r}) has an empty {text_column!r}")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise CorpusError(f"{source}: id {i!r} appears more than once in {id_column!r}")
        seen.add(str(i))
    return [str(i) for i in ids], [str(t) for t in texts]


# ---- the index -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusIndex:
    """A built index: a folder with ``index.json``, ``documents.parquet`` and ``vectors.npy``."""

    folder: Path
    model: str
    model_key: str
    documents_hash: str
    count: int
    dimension: int

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> CorpusIndex:
        f = Path(folder)
        meta_path = f / "index.json"
        if not meta_path.is_file():
            raise CorpusError(f"index {f}: no index.json (not an index, or its build did not finish)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorpusError(f"index {f}: index.json is not valid JSON ({exc})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise CorpusError(f"index {f}: format {meta.get('format')!r}, this version reads {INDEX_FORMAT}")
        return cls(
            folder=f,
            model=meta["model"],
            model_key=meta["model_key"],
            documents_hash=meta["documents_hash"],
            count=int(meta["count"]),
            dimension=int(meta["dimension"]),
        )

    def vectors(self) -> np.ndarray:
        """``(count, dimension)`` float32, memory-mapped."""
        return np.load(self.folder / "vectors.npy", mmap_mode="r")

    def documents(self) -> tuple[list[str], list[str]]:
        """Ids and texts, in index order (read once per process and index content)."""
        return _read_documents(str(self.folder.resolve()), self.documents_hash)

    def ann(self) -> tuple[AnnIndex, dict] | None:
        """The index's ANN structure and its build record (kind, measured recall), or None.

        One built for other content or another model is ignored (the exact path is used)."""
        if not (self.folder / "ann.json").is_file():
            return None
        ann, info = AnnIndex.load(self.folder)
        if (
            info.get("documents_hash") != self.documents_hash
            or info.get("model_key") != self.model_key
            or ann.count != self.count
        ):
            return None
        return ann, info

    def check_model(self, embedder: SentenceTransformerEmbedder) -> None:
        """Refuse to mix vector spaces: the query must be embedded by the index's model."""
        if embedder.cache_key != self.model_key:
            raise CorpusError(
                f"index {self.folder} was built with model {self.model!r} ({self.model_key}); "
                f"the query model {embedder.model_id!r} ({embedder.cache_key}) is another one — "
                "rebuild the index with that model or search with the index's model"
            )


@lru_cache(maxsize=8)
def _read_documents(folder: str, content: str) -> tuple[list[str], list[str]]:
    import polars as pl

    frame = pl.read_parquet(Path(folder) / "documents.parquet")
    return frame["id"].to_list(), frame["text"].to_list()


def documents_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(i.encode())
        h.update(b"\x00")
        h.update(t.encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def build_index(
    texts: Sequence[str],
    *,
    ids: Sequence[str],
    folder: str | os.PathLike[str],
    embedder: SentenceTransformerEmbedder,
    cache: EmbeddingCache | None = None,
    chunk_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
    vectors: np.ndarray | None = None,
) -> CorpusIndex:
    """Embed ``texts`` into an index at ``folder`` (returns it at once if it is up to date).

    ``vectors``: the documents' vectors computed elsewhere (one row per text, in order, by
    ``embedder``'s model; e.g. a memory-mapped ``.npy``): checked and copied, nothing embedded.

    Args:
        texts, ids: the corpus (validated by :func:`check_corpus`).
        folder: where the index lives; an index of other content or another model there is replaced.
        embedder: the document model.
        cache: the embedding cache that makes the build resumable (default: none).
        chunk_size: documents embedded (and cached) per step.
        progress: called with (documents done, total) after each chunk.
    """
    ids, texts = check_corpus(ids, texts)
    if chunk_size < 1:
        raise CorpusError(f"chunk_size must be >= 1, got {chunk_size}")
    if vectors is not None:
        check_vectors(vectors, len(texts), embedder.dimension, embedder.model_id)
    f = Path(folder)
    content = documents_hash(ids, texts)
    try:
        existing = CorpusIndex.open(f)
        if existing.documents_hash == content and existing.model_key == embedder.cache_key:
            return existing
    except CorpusError:
        pass
    import polars as pl

    f.mkdir(parents=True, exist_ok=True)
    (f / "index.json").unlink(missing_ok=True)  # the index is invalid until the new one is complete
    partial = f / "vectors.partial.npy"
    out = None
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start : start + chunk_size]
        if vectors is None:
            part = embedder.embed_documents(chunk, cache=cache)
        else:
            part = np.asarray(vectors[start : start + len(chunk)], dtype=np.float32)
            part = part / np.linalg.norm(part, axis=1, keepdims=True)  # stored unit length, like the model's
        if out is None:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(len(texts), part.shape[1]))
        out[start : start + len(chunk)] = part
        if progress is not None:
            progress(min(start + chunk_size, len(texts)), len(texts))
    assert out is not None
    out.flush()
    dimension = int(out.shape[1])
    del out
    os.replace(partial, f / "vectors.npy")
    pl.DataFrame({"id": ids, "text": texts}).write_parquet(f / "documents.parquet")
    meta = {
        "format": INDEX_FORMAT,
        "model": embedder.model_id,
        "model_key": embedder.cache_key,
        "documents_hash": content,
        "count": len(texts),
        "dimension": dimension,
    }
    tmp = f / "index.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(tmp, f / "index.json")
    return CorpusIndex.open(f)


def check_vectors(vectors: np.ndarray, count: int, dimension: int, model: str) -> None:
    """Vectors computed elsewhere fit the corpus and the model (:func:`embedders.vector_files.check_vectors`)."""
    from embedders import vector_files

    try:
        vector_files.check_vectors(vectors, count, dimension, model)
    except vector_files.VectorFileError as exc:
        raise CorpusError(f"vectors: {exc}") from None


def read_vectors(path: str | os.PathLike[str], ids: Sequence[str]) -> np.ndarray:
    """Document vectors from ``.npy`` (rows in corpus order; memory-mapped) or ``.parquet``
    (columns ``id`` and list ``vector``, matched to ``ids``)."""
    from embedders import vector_files

    try:
        return vector_files.read_vectors(path, ids, id_column="id")
    except vector_files.VectorFileError as exc:
        raise CorpusError(f"vectors {path}: {exc}") from None


def build_ann(index: CorpusIndex, settings: AnnSettings | None = None, *, sample: int = 200, seed: int = 0) -> dict:
    """Build the index's ANN structure (``ann.faiss``) and measure it: recall@10/20/100 of its top-k
    against brute force, for ``sample`` documents of the corpus used as queries (each query's own
    document excluded from both lists). Returns the record kept in ``ann.json``."""
    import time

    from corpus.ann import recall_at

    vectors = index.vectors()
    started = time.perf_counter()
    ann = AnnIndex.build(vectors, settings, seed=seed)
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(index.count, size=min(sample, index.count), replace=False))
    # a document as its own query finds itself first: perturb it so the measurement is not trivial
    queries = np.asarray(vectors[picks], dtype=np.float32)
    queries = queries + 0.5 * rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(queries.shape[1])
    recall = {f"recall@{k}": round(recall_at(ann, vectors, queries, min(k, index.count)), 4) for k in (10, 20, 100)}
    meta = {
        "documents_hash": index.documents_hash,
        "model_key": index.model_key,
        "count": index.count,
        "build_seconds": round(build_s, 2),
        "recall_sample": int(picks.size),
        **recall,
    }
    ann.save(index.folder, meta)
    return {"settings": ann.settings.__dict__, **meta}


# Candidates an ANN lookup returns before exact rescoring (at least this many, or 10 × what is kept).
ANN_CANDIDATES = 1000


def corpus_scores(vectors: np.ndarray, query: np.ndarray, *, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Cosine similarity of one query vector with every (unit-norm) document, chunk by chunk
    (:func:`refine_core.cosine.cosine_one` on the index's memory-mapped vectors)."""
    return cosine_one(vectors, query, chunk=chunk)
