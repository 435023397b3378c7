"""Document vectors computed elsewhere (a GPU job, another library): one reader and one check.

Two formats: ``.npy`` (one row per document, in corpus order; memory-mapped, never loaded
whole) and ``.parquet`` (an id column and a list column ``vector``, rows in any order, matched
to the corpus's ids and put in its order). Used by ``refine index --vectors`` (id column
``id``), by a sweep benchmark's ``document_vectors`` (id column ``doc_id``) and by the sweep's
preflight (:func:`vector_rows`, which reads a header, not the matrix).

Errors are :class:`VectorFileError` whose message says what is wrong and nothing else; each
caller puts its own "where" in front.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

CHECK_ROWS = 1 << 16
MIN_NORM = 1e-30


class VectorFileError(ValueError):
    """A vectors file is missing, unreadable or does not fit the corpus or the model."""


def _npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r")
    except (ValueError, OSError, IndexError) as exc:
        raise VectorFileError(f"not a readable .npy matrix ({exc})") from None


def _known(path: str | os.PathLike[str]) -> Path:
    p = Path(path).expanduser()
    if not p.is_file():
        raise VectorFileError("no such file")
    if p.suffix not in (".npy", ".parquet"):
        raise VectorFileError(f"unknown format {p.suffix!r} (.npy or .parquet)")
    return p


def vector_rows(path: str | os.PathLike[str], *, id_column: str = "id") -> int:
    """How many vectors the file holds, from the ``.npy`` header or the parquet metadata."""
    p = _known(path)
    if p.suffix == ".npy":
        matrix = _npy(p)
        if matrix.ndim != 2:
            raise VectorFileError(f"shape {matrix.shape}: a 2-D matrix (documents, dimension) is needed")
        return int(matrix.shape[0])
    import polars as pl

    try:
        schema = pl.read_parquet_schema(p)
        if id_column not in schema or "vector" not in schema:
            raise VectorFileError(f"needs columns {id_column} and vector (has {', '.join(schema)})")
        return int(pl.scan_parquet(p).select(pl.len()).collect().item())
    except VectorFileError:
        raise
    except Exception as exc:
        raise VectorFileError(f"not a readable parquet file ({type(exc).__name__}: {exc})") from None


def read_vectors(path: str | os.PathLike[str], ids: Sequence[str], *, id_column: str = "id") -> np.ndarray:
    """The vectors of the documents ``ids``, in that order: a memory map of a ``.npy`` file (rows
    assumed in corpus order; :func:`check_vectors` checks the count), or a parquet file's rows
    matched by ``id_column``."""
    p = _known(path)
    if p.suffix == ".npy":
        return _npy(p)
    import polars as pl

    try:
        frame = pl.read_parquet(p, columns=[id_column, "vector"])
    except Exception as exc:
        raise VectorFileError(f"needs columns {id_column} and vector ({type(exc).__name__}: {exc})") from None
    rows = dict(zip(frame[id_column].cast(pl.String).to_list(), frame["vector"].to_list()))
    missing = [i for i in ids if rows.get(i) is None]
    if missing:
        raise VectorFileError(f"{len(missing)} of {len(ids)} documents have no vector (first: {missing[0]!r})")
    lengths = {len(rows[i]) for i in ids}
    if len(lengths) != 1:
        raise VectorFileError(f"every vector must have one length, got lengths {sorted(lengths)}")
    return np.asarray([rows[i] for i in ids], dtype=np.float32)


def check_vectors(vectors: np.ndarray, count: int, dimension: int, model: str) -> None:
    """One finite, non-zero row per document, in the dimension ``model`` embeds queries in (read in
    chunks: a memory map is never loaded whole)."""
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise VectorFileError(f"shape {tuple(vectors.shape)} for {count} documents (one row each)")
    if vectors.shape[1] != dimension:
        raise VectorFileError(
            f"dimension {vectors.shape[1]}, but {model} embeds queries in {dimension}: "
            "queries and documents must share one vector space"
        )
    for lo in range(0, count, CHECK_ROWS):
        part = np.asarray(vectors[lo : lo + CHECK_ROWS], dtype=np.float32)
        finite = np.isfinite(part).all(axis=1)
        if not finite.all():
            raise VectorFileError(f"row {lo + int(np.flatnonzero(~finite)[0])} is not finite")
        zero = np.linalg.norm(part, axis=1) < MIN_NORM
        if zero.any():
            raise VectorFileError(f"row {lo + int(np.flatnonzero(zero)[0])} is a zero vector")
