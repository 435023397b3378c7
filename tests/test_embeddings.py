"""The bundled model, the query template and the content-addressed embedding cache."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from embedders.cache import EmbeddingCache
from embedders.models import EmbeddingModelError, SentenceTransformerEmbedder, resolve_model


def test_default_alias_resolves_offline_to_the_bundled_copy() -> None:
    model_id, path = resolve_model("all-MiniLM-L6-v2")
    assert model_id == "sentence-transformers/all-MiniLM-L6-v2"
    assert path is not None and (path / "config.json").is_file()


def test_query_template_and_plain_documents(minilm: SentenceTransformerEmbedder) -> None:
    assert (
        minilm.format_query("cancel my card", "Find the intent") == "Instruct: Find the intent\nQuery: cancel my card"
    )
    assert minilm.format_query("cancel my card", None) == "cancel my card"
    q = minilm.embed_queries(["cancel my card"], instruction="Find the intent")
    direct = minilm.encode(["Instruct: Find the intent\nQuery: cancel my card"])
    np.testing.assert_allclose(q, direct, atol=1e-6)
    d = minilm.embed_documents(["cancel my card"])
    assert q.dtype == np.float32 and q.shape == (1, 384)
    assert not np.allclose(q, d)  # the template changes the query vector
    np.testing.assert_allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)


def test_related_texts_are_closer(minilm: SentenceTransformerEmbedder) -> None:
    v = minilm.embed_documents(["I lost my bank card", "my credit card is missing", "the weather is sunny"])
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2


@pytest.mark.model
@pytest.mark.data
def test_the_thread_count_does_not_change_a_vector(data_root: Path) -> None:
    """Processes with one torch thread (Dask workers, the test suite) and with two (``refine`` on
    its own) share one embedding cache: their vectors must be the same, to the bit."""
    from evaluations import load_benchmark

    texts = load_benchmark("banking77", root=data_root).document_texts()[:200]
    one = SentenceTransformerEmbedder(threads=1).encode(texts)
    two = SentenceTransformerEmbedder(threads=2).encode(texts)
    np.testing.assert_array_equal(one, two)


def test_cache_hit_does_no_forward_pass(tmp_path: Path) -> None:
    emb = SentenceTransformerEmbedder(threads=2)
    cache = EmbeddingCache(tmp_path, chunk_size=3)
    texts = [f"document number {i}" for i in range(7)]
    first = emb.embed_documents(texts, cache=cache)
    assert emb.forward_calls == 7
    again = emb.embed_documents(texts, cache=cache)
    assert emb.forward_calls == 7  # nothing re-embedded
    np.testing.assert_array_equal(first, again)
    subset = emb.embed_documents(texts[2:5] + ["a new text"], cache=cache)
    assert emb.forward_calls == 8  # only the new text
    np.testing.assert_array_equal(subset[:3], first[2:5])
    fresh = SentenceTransformerEmbedder(threads=2)  # another process would build its own embedder
    fresh.embed_documents(texts, cache=cache)
    assert fresh.forward_calls == 0 and cache.count(emb.cache_key) == 8
    # duplicates within one call are embedded once
    emb.embed_documents(["dup", "dup", "dup"], cache=cache)
    assert emb.forward_calls == 9


def test_queries_and_documents_with_the_same_text_are_different_entries(tmp_path: Path) -> None:
    emb = SentenceTransformerEmbedder(threads=2)
    cache = EmbeddingCache(tmp_path)
    d = emb.embed_documents(["lost card"], cache=cache)
    q = emb.embed_queries(["lost card"], instruction="Find the intent", cache=cache)
    assert not np.allclose(d, q) and cache.count(emb.cache_key) == 2


def test_a_crash_mid_run_keeps_completed_chunks_and_no_partial_entries(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path, chunk_size=2)
    calls: list[list[str]] = []

    def flaky(texts: list[str]) -> np.ndarray:
        calls.append(texts)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return np.full((len(texts), 4), float(len(calls)), dtype=np.float32)

    texts = [f"t{i}" for i in range(8)]
    with pytest.raises(RuntimeError, match="killed"):
        cache.get_or_compute("model-x", texts, flaky)
    assert cache.count("model-x") == 4  # two chunks committed, the failed one absent
    assert not list((tmp_path / "model-x").glob("*.tmp"))
    calls.clear()
    out = cache.get_or_compute("model-x", texts, lambda t: np.zeros((len(t), 4), np.float32))
    assert out[:4].tolist() == [[1.0] * 4, [1.0] * 4, [2.0] * 4, [2.0] * 4]
    assert cache.size_bytes() > 0


def test_cache_rejects_bad_model_output(tmp_path: Path) -> None:
    cache = EmbeddingCache(tmp_path)
    with pytest.raises(ValueError, match="returned NaN or inf"):
        cache.get_or_compute("m", ["a"], lambda t: np.array([[np.nan, 1.0]], dtype=np.float32))
    with pytest.raises(ValueError, match="returned 2 vectors for 1 texts"):
        cache.get_or_compute("m", ["a"], lambda t: np.ones((2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match="model_key must be a plain name"):
        cache.get_or_compute("../evil", ["a"], lambda t: np.ones((1, 2), dtype=np.float32))


def test_a_hub_id_with_a_dot_is_a_hub_id_and_a_path_is_a_path() -> None:
    from embedders.models import resolve_model

    assert resolve_model("Qwen/Qwen3-Embedding-0.6B") == ("Qwen/Qwen3-Embedding-0.6B", None)
    for path in ("./models/x", "/no/such/model", "model.bin", "a/b/c", "~/x"):
        with pytest.raises(EmbeddingModelError, match="no such folder"):
            resolve_model(path)


def test_model_that_does_not_exist_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddingModelError, match="no such folder"):
        SentenceTransformerEmbedder(str(tmp_path / "nope"))
    emb = SentenceTransformerEmbedder("no-such-org/no-such-model")
    with pytest.raises(EmbeddingModelError, match="'no-such-org/no-such-model' could not be loaded"):
        emb.embed_documents(["x"])


def test_fingerprint_changes_with_the_weights(tmp_path: Path) -> None:
    _, path = resolve_model("all-MiniLM-L6-v2")
    copy = tmp_path / "model"
    import shutil

    shutil.copytree(path, copy)
    a = SentenceTransformerEmbedder(str(copy)).fingerprint
    cfg = copy / "config.json"
    cfg.write_text(cfg.read_text() + "\n")
    assert SentenceTransformerEmbedder(str(copy)).fingerprint != a


def test_the_embedding_cache_is_in_the_home_unless_one_is_named(tmp_path, monkeypatch) -> None:
    """``REFINE_EMBEDDING_CACHE`` names one cache for many homes (and deployments pass it on);
    without it the cache is the home's ``embeddings/``."""
    from flows.cli import SHARED_SETTINGS
    from tasks.storage import embedding_cache_dir

    monkeypatch.setenv("REFINE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("REFINE_EMBEDDING_CACHE", raising=False)
    assert embedding_cache_dir() == (tmp_path / "home" / "embeddings").resolve()
    monkeypatch.setenv("REFINE_EMBEDDING_CACHE", str(tmp_path / "team-cache"))
    assert embedding_cache_dir() == (tmp_path / "team-cache").resolve()
    assert "REFINE_EMBEDDING_CACHE" in SHARED_SETTINGS


@pytest.mark.parametrize(
    ("given", "first", "expected"),
    [(None, "", "PASSIVE"), ("ACTIVE", "", "ACTIVE"), (None, "import torch; ", "None")],
)
def test_idle_openmp_threads_sleep_unless_the_user_chose_or_torch_is_loaded(
    given: str | None, first: str, expected: str
) -> None:
    """The CLI and the embedder set OMP_WAIT_POLICY=PASSIVE before torch loads (spinning threads
    slowed embedding beside a busy core: benchmarks/embed_speed.py --openmp); a user's own policy
    stays, and once torch is loaded the setting could no longer take effect, so it is left alone."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    code = f"{first}import os; from embedders.models import sleeping_openmp_threads as s; s(); print(os.environ.get('OMP_WAIT_POLICY'))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == expected


def test_progress_is_reported_before_the_first_chunk_and_after_each(tmp_path: Path) -> None:
    """A progress bar starts its clock at the first report: the first one comes before the model
    runs (the bars of `refine run` showed about half of each chunk's time before)."""
    cache = EmbeddingCache(tmp_path, chunk_size=2)
    calls: list[tuple[int, int]] = []
    fake = lambda texts: np.ones((len(texts), 3), dtype=np.float32)  # noqa: E731
    cache.get_or_compute("m", ["a", "b", "c", "a"], fake, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(0, 3), (2, 3), (3, 3)]
    calls.clear()
    cache.get_or_compute("m", ["a", "c"], fake, progress=lambda done, total: calls.append((done, total)))
    assert calls == []  # all cached: nothing to show
