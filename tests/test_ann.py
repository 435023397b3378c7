"""ANN candidates with exact rescoring: FAISS flat / IVF / HNSW, recall measured against brute force."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from corpus.ann import AnnIndex, AnnSettings, exact_top, recall_at
from refine_core.feedback import top_k_indices
from refine_core.metrics import cosine_block
from tasks.storage import embedding_cache_dir


def _unit(rng: np.random.Generator, n: int, d: int = 32) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["flat", "ivf", "hnsw"])
def test_each_kind_finds_the_brute_force_neighbours_and_survives_a_save(kind: str, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    docs = _unit(rng, 4000)
    queries = _unit(rng, 50)
    ann = AnnIndex.build(docs, AnnSettings(kind=kind, nprobe=64 if kind == "ivf" else 16))
    recall = recall_at(ann, docs, queries, 10)
    assert recall == 1.0 if kind == "flat" else recall > 0.9
    ann.save(tmp_path, {"note": "x"})
    loaded, info = AnnIndex.load(tmp_path)
    assert info["note"] == "x" and info["settings"]["kind"] == kind
    np.testing.assert_array_equal(loaded.search(queries, 10)[0], ann.search(queries, 10)[0])


def test_a_poor_index_is_measured_as_poor() -> None:
    rng = np.random.default_rng(1)
    docs = _unit(rng, 4000)
    queries = _unit(rng, 50)
    poor = AnnIndex.build(docs, AnnSettings(kind="ivf", nlist=64, nprobe=1))
    assert recall_at(poor, docs, queries, 10) < 0.6  # one cell of 64 searched: most neighbours are missed


def test_exact_rescoring_of_candidates() -> None:
    rng = np.random.default_rng(2)
    docs = _unit(rng, 300)
    q = _unit(rng, 1)[0]
    every = np.arange(300)
    top, scores = exact_top(docs, q, every, 15, exclude=np.array([int(np.argmax(docs @ q))]))
    expected = top_k_indices(cosine_block(q[None, :], docs), 16)[0][1:]
    np.testing.assert_array_equal(top, expected)
    np.testing.assert_allclose(scores, (docs @ q)[expected], rtol=1e-6)
    with pytest.raises(ValueError, match="ANN kind must be one of flat, ivf, hnsw"):
        AnnSettings(kind="lsh")


@pytest.mark.data
def test_search_through_an_ann_index_equals_brute_force_with_flat(data_root: Path, minilm, tmp_path: Path) -> None:
    from corpus import build_ann, build_index, search
    from embedders.cache import EmbeddingCache
    from evaluations.registry import load_benchmark
    from judging import OracleJudge

    bench = load_benchmark("clinc150", queries=2, max_documents=1200, corpus_seed=3)
    index = build_index(
        bench.document_texts(),
        ids=bench.documents["doc_id"].to_list(),
        folder=tmp_path / "idx",
        embedder=minilm,
        cache=EmbeddingCache(embedding_cache_dir()),
    )
    judge = OracleJudge(bench.relevant_texts())
    criterion = bench.query_texts()[0]
    brute = search(index, criterion, judge=judge, embedder=minilm, k=10, top=20)
    record = build_ann(index, AnnSettings(kind="flat"), sample=50)
    assert record["recall@20"] == 1.0 and record["documents_hash"] == index.documents_hash
    served = search(index, criterion, judge=judge, embedder=minilm, k=10, top=20, check_ann=True)
    assert served.ann is not None and served.ann["kind"] == "flat" and served.ann["recall_this_query"] == 1.0
    assert served.top_ids == brute.top_ids
    assert [h.original_rank for h in served.hits] == [h.original_rank for h in brute.hits]
    forced = search(index, criterion, judge=judge, embedder=minilm, k=10, top=20, use_ann=False)
    assert forced.ann is None and forced.top_ids == brute.top_ids
    assert served.as_dict()["ann"]["candidates"] >= 1000 and "ann" not in brute.as_dict()


@pytest.mark.integration
@pytest.mark.data
def test_cli_index_builds_the_ann_it_is_asked_for_and_names_a_bad_kind(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evaluations.registry import load_benchmark
    from flows.cli import app

    monkeypatch.setenv("REFINE_HOME", str(tmp_path / "home"))
    bench = load_benchmark("clinc150", queries=1, max_documents=600, corpus_seed=4)
    path = tmp_path / "notes.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"id": i, "text": t})
            for i, t in zip(bench.documents["doc_id"].to_list(), bench.document_texts())
        )
        + "\n"
    )
    runner = CliRunner()
    built = runner.invoke(app, ["index", str(path), "--ann", "hnsw", "--json"])
    assert built.exit_code == 0, built.output
    info = json.loads(built.output.strip().splitlines()[-1])
    assert info["ann"]["settings"]["kind"] == "hnsw" and 0.0 <= info["ann"]["recall@20"] <= 1.0
    assert (Path(info["index"]) / "ann.faiss").is_file()
    plain = runner.invoke(app, ["index", str(path), "--name", "plain", "--json"])  # auto: small corpus, no ANN
    assert plain.exit_code == 0 and json.loads(plain.output.strip().splitlines()[-1])["ann"] is None
    bad = runner.invoke(app, ["index", str(path), "--ann", "lsh"])
    assert bad.exit_code != 0 and "--ann must be none, auto or one of flat, ivf, hnsw, got 'lsh'" in bad.output
    assert "Traceback" not in bad.output


@pytest.mark.data
def test_an_index_from_vectors_computed_elsewhere_searches_like_an_embedded_one(
    data_root: Path, minilm, tmp_path: Path
) -> None:
    import polars as pl

    from corpus import CorpusError, build_index, read_vectors, search
    from embedders.cache import EmbeddingCache
    from evaluations.registry import load_benchmark
    from judging import OracleJudge

    bench = load_benchmark("clinc150", queries=2, max_documents=700, corpus_seed=6)
    ids, texts = bench.documents["doc_id"].to_list(), bench.document_texts()
    embedded = build_index(
        texts, ids=ids, folder=tmp_path / "embedded", embedder=minilm, cache=EmbeddingCache(embedding_cache_dir())
    )
    np.save(tmp_path / "v.npy", np.asarray(embedded.vectors()))
    pl.DataFrame(
        {"id": ids[::-1], "vector": [row.tolist() for row in np.asarray(embedded.vectors())[::-1]]}
    ).write_parquet(tmp_path / "v.parquet")
    judge = OracleJudge(bench.relevant_texts())
    expected = search(embedded, bench.query_texts()[0], judge=judge, embedder=minilm, k=10, top=15).top_ids
    for name in ("v.npy", "v.parquet"):
        given = read_vectors(tmp_path / name, ids)
        index = build_index(texts, ids=ids, folder=tmp_path / name.replace(".", "-"), embedder=minilm, vectors=given)
        np.testing.assert_allclose(np.asarray(index.vectors()), np.asarray(embedded.vectors()), atol=1e-6)
        assert search(index, bench.query_texts()[0], judge=judge, embedder=minilm, k=10, top=15).top_ids == expected
    with pytest.raises(CorpusError, match="vectors: dimension 5, but .* embeds queries in 384"):
        build_index(
            texts, ids=ids, folder=tmp_path / "bad", embedder=minilm, vectors=np.ones((len(texts), 5), np.float32)
        )
    with pytest.raises(CorpusError, match=f"vectors: shape \\(3, 384\\) for {len(texts)} documents"):
        build_index(texts, ids=ids, folder=tmp_path / "bad", embedder=minilm, vectors=np.ones((3, 384), np.float32))
    with pytest.raises(CorpusError, match=f"1 of {len(ids)} documents have no vector"):
        pl.DataFrame({"id": ids[1:], "vector": [[0.0] * 3] * (len(ids) - 1)}).write_parquet(tmp_path / "short.parquet")
        read_vectors(tmp_path / "short.parquet", ids)


def test_one_reader_of_vector_files_names_what_is_wrong(tmp_path: Path) -> None:
    import polars as pl

    from embedders.vector_files import VectorFileError, check_vectors, read_vectors, vector_rows

    v = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    np.save(tmp_path / "v.npy", v)
    pl.DataFrame({"doc_id": ["d3", "d1", "d0", "d2"], "vector": [v[i].tolist() for i in (3, 1, 0, 2)]}).write_parquet(
        tmp_path / "v.parquet"
    )
    assert vector_rows(tmp_path / "v.npy") == 4 == vector_rows(tmp_path / "v.parquet", id_column="doc_id")
    ids = ["d0", "d1", "d2", "d3"]
    np.testing.assert_array_equal(read_vectors(tmp_path / "v.parquet", ids, id_column="doc_id"), v)
    np.testing.assert_array_equal(read_vectors(tmp_path / "v.npy", ids), v)
    check_vectors(read_vectors(tmp_path / "v.npy", ids), 4, 3, "m")
    (tmp_path / "v.txt").write_text("x")
    (tmp_path / "broken.npy").write_bytes(b"not numpy")
    cases = [
        (lambda: vector_rows(tmp_path / "absent.npy"), "no such file"),
        (lambda: vector_rows(tmp_path / "v.txt"), "unknown format '.txt' (.npy or .parquet)"),
        (lambda: vector_rows(tmp_path / "broken.npy"), "not a readable .npy matrix"),
        (lambda: vector_rows(tmp_path / "v.parquet"), "needs columns id and vector (has doc_id, vector)"),
        (lambda: read_vectors(tmp_path / "v.parquet", ids), "needs columns id and vector"),
        (
            lambda: read_vectors(tmp_path / "v.parquet", ["d0", "d9"], id_column="doc_id"),
            "1 of 2 documents have no vector (first: 'd9')",
        ),
        (lambda: check_vectors(v, 5, 3, "m"), "shape (4, 3) for 5 documents"),
        (lambda: check_vectors(v, 4, 8, "m"), "dimension 3, but m embeds queries in 8"),
        (lambda: check_vectors(np.where(np.arange(4)[:, None] == 2, np.nan, v), 4, 3, "m"), "row 2 is not finite"),
        (lambda: check_vectors(np.where(np.arange(4)[:, None] == 1, 0, v), 4, 3, "m"), "row 1 is a zero vector"),
    ]
    for call, message in cases:
        with pytest.raises(VectorFileError) as caught:
            call()
        assert message in str(caught.value), (message, str(caught.value))
