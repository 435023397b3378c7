"""Content-addressed store of embeddings: a text is embedded once per model, ever.

Layout under the cache root, one folder per model key::

    <root>/<model_key>/index.sqlite      key -> (shard, row)   (WAL journal)
    <root>/<model_key>/<shard>.npy       float32 (rows, d), memory-mapped on read

A key is the sha256 of the exact string given to the model (for queries, the filled-in
template), so a second run, another subset of the same corpus or another sweep cell reuses
every vector it can. Shards are written to a temporary file and renamed into place, then
recorded in the index in one transaction: a crash leaves at most an unreferenced shard,
never a half-written vector that the index points at.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import tempfile
import uuid
from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

import numpy as np

ProgressFn = Callable[[int, int], None]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """Embeddings keyed by (model key, exact input text).

    Args:
        root: folder holding the cache (created on first write).
        chunk_size: texts embedded and committed together; a crash loses at most one chunk.

    Example:
        >>> import numpy as np, tempfile
        >>> cache = EmbeddingCache(tempfile.mkdtemp())
        >>> fake = lambda texts: np.ones((len(texts), 3), dtype=np.float32)
        >>> cache.get_or_compute("m", ["a", "b"], fake).shape
        (2, 3)
        >>> cache.count("m")
        2
    """

    def __init__(self, root: str | os.PathLike[str], *, chunk_size: int = 2048) -> None:
        self.root = Path(root)
        self.chunk_size = chunk_size

    def _folder(self, model_key: str) -> Path:
        if not model_key or any(c in model_key for c in "/\\:") or model_key.startswith("."):
            raise ValueError(f"model_key must be a plain name, got {model_key!r}")
        return self.root / model_key

    def _connect(self, model_key: str) -> sqlite3.Connection:
        folder = self._folder(model_key)
        folder.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(folder / "index.sqlite", timeout=60)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, shard TEXT NOT NULL, row INTEGER NOT NULL)"
        )
        return conn

    def count(self, model_key: str) -> int:
        """Number of cached vectors for a model."""
        if not (self._folder(model_key) / "index.sqlite").exists():
            return 0
        with closing(self._connect(model_key)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def size_bytes(self) -> int:
        """Bytes on disk under the cache root."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file()) if self.root.exists() else 0

    def _lookup(self, conn: sqlite3.Connection, keys: Sequence[str]) -> dict[str, tuple[str, int]]:
        found: dict[str, tuple[str, int]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 900):
            part = unique[start : start + 900]
            marks = ",".join("?" * len(part))
            for key, shard, row in conn.execute(f"SELECT key, shard, row FROM vectors WHERE key IN ({marks})", part):
                found[key] = (shard, int(row))
        return found

    def _write_shard(self, model_key: str, vectors: np.ndarray) -> str:
        folder = self._folder(model_key)
        shard = uuid.uuid4().hex
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, folder / f"{shard}.npy")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return shard

    def get_or_compute(
        self,
        model_key: str,
        texts: Sequence[str],
        compute: Callable[[list[str]], np.ndarray],
        *,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Vectors for ``texts`` (in order), calling ``compute`` only on texts never seen.

        Args:
            model_key: identity of the model and its settings (see ``Embedder.cache_key``).
            texts: exact strings the model embeds.
            compute: embeds a list of strings, returns ``(len, d)`` float32.
            progress: called with (0, texts to embed) before the first chunk, then with (texts
                done, texts to embed) after each chunk; not called when nothing is to embed.

        Returns:
            ``(len(texts), d)`` float32 array.
        """
        keys = [text_key(t) for t in texts]
        with closing(self._connect(model_key)) as conn:
            found = self._lookup(conn, keys)
            missing: dict[str, str] = {}
            for key, text in zip(keys, texts):
                if key not in found and key not in missing:
                    missing[key] = text
            todo = list(missing.items())
            if progress is not None and todo:
                progress(0, len(todo))  # before the model starts: a progress bar's clock starts here
            for start in range(0, len(todo), self.chunk_size):
                chunk = todo[start : start + self.chunk_size]
                vectors = np.asarray(compute([t for _, t in chunk]), dtype=np.float32)
                if vectors.shape[0] != len(chunk) or not np.isfinite(vectors).all():
                    raise ValueError(
                        f"embedding model returned {vectors.shape[0]} vectors for {len(chunk)} texts"
                        if vectors.shape[0] != len(chunk)
                        else "embedding model returned NaN or inf"
                    )
                shard = self._write_shard(model_key, vectors)
                with conn:
                    conn.executemany(
                        "INSERT OR IGNORE INTO vectors (key, shard, row) VALUES (?, ?, ?)",
                        [(key, shard, row) for row, (key, _) in enumerate(chunk)],
                    )
                for row, (key, _) in enumerate(chunk):
                    found[key] = (shard, row)
                if progress is not None:
                    progress(min(start + len(chunk), len(todo)), len(todo))
        return self._gather(model_key, keys, found)

    def _gather(self, model_key: str, keys: list[str], found: dict[str, tuple[str, int]]) -> np.ndarray:
        folder = self._folder(model_key)
        by_shard: dict[str, list[tuple[int, int]]] = {}
        for position, key in enumerate(keys):
            shard, row = found[key]
            by_shard.setdefault(shard, []).append((position, row))
        out: np.ndarray | None = None
        for shard, pairs in by_shard.items():
            data = np.load(folder / f"{shard}.npy", mmap_mode="r")
            if out is None:
                out = np.empty((len(keys), data.shape[1]), dtype=np.float32)
            positions = np.array([p for p, _ in pairs])
            rows = np.array([r for _, r in pairs])
            out[positions] = data[rows]
        if out is None:
            return np.empty((0, 0), dtype=np.float32)
        return out
