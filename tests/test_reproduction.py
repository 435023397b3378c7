"""End to end on real data: the DESIGN.md reference figures (bundled MiniLM, oracle judge, K=20).

These embed the full CLINC150 corpus (15,000 utterances, about a minute on 2 cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from embedders.cache import EmbeddingCache
from evaluations import load_benchmark
from judging import noisy_oracle_scores, oracle_scores
from refine_core import RefineConfig
from refine_core.evaluation import evaluate_cell_arrays
from tasks.storage import embedding_cache_dir


@pytest.fixture(scope="module")
def clinc(data_root: Path, minilm):
    bench = load_benchmark("clinc150", root=data_root)
    cache = EmbeddingCache(embedding_cache_dir())  # the session's: the sweeps of other tests reuse it
    docs = minilm.embed_documents(bench.document_texts(), cache=cache)
    queries = minilm.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache)
    labels, _ = bench.label_matrix()
    return queries, docs, labels, (bench.query_texts(), bench.document_texts())


@pytest.mark.slow
@pytest.mark.data
def test_clinc150_oracle_matches_reference(clinc) -> None:
    queries, docs, labels, _ = clinc
    out = evaluate_cell_arrays(queries, docs, labels, lambda rows, idx: oracle_scores(labels[rows], idx))
    maps = out.summary()
    # DESIGN.md section 3: baseline 0.380, rerank-only 0.396, refined 0.548 (lr 1e-4); with the paper's
    # instruction the paper code's own optimize() gives .3798 -> .5480 on these inputs (issue 14)
    assert maps["baseline"] == pytest.approx(0.3798, abs=0.0005)
    assert maps["rerank_only"] == pytest.approx(0.396, abs=0.001)
    assert maps["refined"] == pytest.approx(0.5480, abs=0.001)
    assert out.tests["refined"].pvalue < 1e-6
    fast = evaluate_cell_arrays(
        queries, docs, labels, lambda rows, idx: oracle_scores(labels[rows], idx), config=RefineConfig(lr=1e-3)
    )
    assert fast.summary()["refined"] == pytest.approx(0.680, abs=0.015)


@pytest.mark.slow
@pytest.mark.data
def test_small_lr_protects_against_a_noisy_judge(clinc) -> None:
    queries, docs, labels, (query_texts, document_texts) = clinc
    maps = {}
    for lr in (1e-4, 1e-2):

        def judge(rows, idx):
            return noisy_oracle_scores(
                labels[rows],
                idx,
                flip_rate=0.25,
                seed=0,
                query_texts=[query_texts[r] for r in rows],
                document_texts=document_texts,
            )

        out = evaluate_cell_arrays(queries, docs, labels, judge, config=RefineConfig(lr=lr))
        maps[lr] = out.summary()
    # DESIGN.md: with 25% flipped, refined 0.477 at lr 1e-4 but 0.195 at lr 1e-2 (baseline 0.380)
    assert maps[1e-4]["refined"] > maps[1e-4]["baseline"] + 0.05
    assert maps[1e-2]["refined"] < maps[1e-2]["baseline"] - 0.1
    assert np.isfinite(list(maps[1e-4].values())).all()


@pytest.mark.slow
@pytest.mark.data
def test_banking77_oracle_matches_reference(data_root: Path, minilm) -> None:
    bench = load_benchmark("banking77", root=data_root)
    cache = EmbeddingCache(embedding_cache_dir())
    docs = minilm.embed_documents(bench.document_texts(), cache=cache)
    queries = minilm.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache)
    labels, _ = bench.label_matrix()
    maps = evaluate_cell_arrays(queries, docs, labels, lambda rows, idx: oracle_scores(labels[rows], idx)).summary()
    # DESIGN.md section 3: Banking77 0.420 -> 0.556 (lr 1e-4), with the paper's instruction string.
    assert maps["baseline"] == pytest.approx(0.420, abs=0.001)
    assert maps["refined"] == pytest.approx(0.556, abs=0.001)
