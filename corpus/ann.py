"""Approximate nearest-neighbour candidates (FAISS), exact cosine on the candidates.

An ANN index finds, for a query vector, ``C`` candidate documents far faster than scoring the
whole corpus; the candidates are then scored exactly (cosine on the stored unit vectors), so a
document's score never depends on the index, only whether it is found. What the index misses is
measured, never assumed: :func:`recall_at` compares its top-k with the brute-force top-k.

Kinds (inner product on unit vectors = cosine):

* ``flat``: exact search by FAISS itself (a reference, and what small corpora need).
* ``ivf``: inverted lists over k-means cells (``nlist`` ≈ 4·√N, ``nprobe`` cells searched).
* ``hnsw``: a navigable small-world graph (``m`` links per node, ``ef_search`` beam).

``faiss`` (PyPI ``faiss-cpu``) is imported on first use.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refine_core.cosine import cosine_one

ANN_KINDS = ("flat", "ivf", "hnsw")


@dataclass(frozen=True)
class AnnSettings:
    kind: str = "hnsw"
    m: int = 32  # hnsw: links per node
    ef_construction: int = 80  # hnsw: beam while building
    ef_search: int = 128  # hnsw: beam while searching
    nlist: int = 0  # ivf: cells (0 = 4·sqrt(N))
    nprobe: int = 16  # ivf: cells searched per query

    def __post_init__(self) -> None:
        if self.kind not in ANN_KINDS:
            raise ValueError(f"ANN kind must be one of {', '.join(ANN_KINDS)}, got {self.kind!r}")
        for name in ("m", "ef_construction", "ef_search", "nprobe"):
            if getattr(self, name) < 1:
                raise ValueError(f"ANN {name} must be >= 1, got {getattr(self, name)}")


def _faiss():
    try:
        import faiss
    except ImportError as exc:  # pragma: no cover - declared dependency
        raise RuntimeError("ANN indexes need the faiss-cpu package (pip install faiss-cpu)") from exc
    return faiss


class AnnIndex:
    """A FAISS index over unit document vectors (row ``i`` of the corpus is id ``i``)."""

    def __init__(self, index: Any, settings: AnnSettings) -> None:  # a faiss index (faiss ships no types)
        self.index = index
        self.settings = settings

    @classmethod
    def build(cls, vectors: np.ndarray, settings: AnnSettings | None = None, *, seed: int = 0) -> AnnIndex:
        """Index ``vectors`` (unit rows, float32; a memory map is read in chunks)."""
        faiss = _faiss()
        s = settings or AnnSettings()
        n, d = vectors.shape
        if s.kind == "flat":
            index = faiss.IndexFlatIP(d)
        elif s.kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, s.m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = s.ef_construction
        else:
            nlist = s.nlist or max(1, min(n // 39, int(4 * np.sqrt(n))))
            quantizer = faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(seed)
            sample = np.sort(rng.choice(n, size=min(n, max(nlist * 39, 10_000)), replace=False))
            index.train(np.ascontiguousarray(vectors[sample], dtype=np.float32))
        for lo in range(0, n, 1 << 16):
            index.add(np.ascontiguousarray(vectors[lo : lo + (1 << 16)], dtype=np.float32))
        out = cls(index, s)
        out._tune()
        return out

    def _tune(self) -> None:
        if self.settings.kind == "hnsw":
            self.index.hnsw.efSearch = self.settings.ef_search
        elif self.settings.kind == "ivf":
            self.index.nprobe = self.settings.nprobe

    @property
    def count(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids (n, k) int64, inner products (n, k))``; ``-1`` where fewer than k were found."""
        q = np.asarray(queries, dtype=np.float32)
        if q.ndim == 1:
            q = q[None, :]
        q = np.ascontiguousarray(q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-30))
        if self.settings.kind == "hnsw":
            self.index.hnsw.efSearch = max(self.settings.ef_search, k)
        sims, ids = self.index.search(q, min(k, self.count))
        return ids.astype(np.int64), sims

    def save(self, folder: str | os.PathLike[str], meta: dict | None = None) -> None:
        """``ann.faiss`` and ``ann.json`` (settings plus ``meta``) in ``folder``, written atomically."""
        faiss = _faiss()
        f = Path(folder)
        tmp = f / "ann.faiss.tmp"
        faiss.write_index(self.index, str(tmp))
        os.replace(tmp, f / "ann.faiss")
        info = {"settings": asdict(self.settings), **(meta or {})}
        (f / "ann.json.tmp").write_text(json.dumps(info, indent=2), encoding="utf-8")
        os.replace(f / "ann.json.tmp", f / "ann.json")

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> tuple[AnnIndex, dict]:
        faiss = _faiss()
        f = Path(folder)
        info = json.loads((f / "ann.json").read_text(encoding="utf-8"))
        out = cls(faiss.read_index(str(f / "ann.faiss")), AnnSettings(**info["settings"]))
        out._tune()
        return out, info


def exact_top(
    vectors: np.ndarray, query: np.ndarray, candidates: np.ndarray, k: int, exclude: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` best of ``candidates`` by exact cosine (ties to the lower document index), with scores."""
    cand = np.unique(candidates[candidates >= 0])
    if exclude is not None and exclude.size:
        cand = cand[~np.isin(cand, exclude)]
    scores = cosine_one(vectors[cand], query)
    order = np.lexsort((cand, -scores))[:k]
    return cand[order], scores[order]


def recall_at(ann: AnnIndex, vectors: np.ndarray, queries: np.ndarray, k: int, *, block: int = 64) -> float:
    """Mean recall@k of the ANN top-k against the brute-force top-k, over ``queries``."""
    from refine_core.feedback import top_k_indices
    from refine_core.metrics import cosine_block

    q = np.asarray(queries, dtype=np.float32)
    found = 0
    for lo in range(0, q.shape[0], block):
        exact = top_k_indices(cosine_block(q[lo : lo + block], np.asarray(vectors)), k)
        approx, _ = ann.search(q[lo : lo + block], k)
        for a, e in zip(approx, exact):
            found += np.intersect1d(a[a >= 0], e[e >= 0]).size
    return found / (q.shape[0] * k)
