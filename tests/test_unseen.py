"""benchmarks/unseen.py: the unseen sets really are unseen, and the comparisons count every query."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def unseen():
    return importlib.import_module("benchmarks.unseen")


def test_the_nfcorpus_sets_hold_other_queries_over_the_same_corpus(unseen, data_root: Path) -> None:
    from evaluations.registry import load_benchmark

    shipped = load_benchmark("nfcorpus")
    for name in ("nfcorpus-dev", "nfcorpus-train"):
        bench = unseen.unseen_benchmark(name, data_root)
        assert bench.n_queries > 300
        assert not set(bench.queries["query_id"].to_list()) & set(shipped.queries["query_id"].to_list())
        assert bench.documents["doc_id"].to_list() == shipped.documents["doc_id"].to_list()


def test_a_split_that_overlaps_the_benchmark_is_refused(unseen, data_root: Path) -> None:
    with pytest.raises(ValueError, match=r"nfcorpus-test: 323 queries are also in the nfcorpus benchmark"):
        unseen.unseen_benchmark("nfcorpus-test", data_root)
    with pytest.raises(ValueError, match="unknown unseen data set 'banking77-test'"):
        unseen.unseen_benchmark("banking77-test", data_root)


def test_clinc150_test_has_new_documents_and_the_benchmarks_queries(unseen, data_root: Path) -> None:
    from evaluations.registry import load_benchmark

    shipped = load_benchmark("clinc150")
    bench = unseen.unseen_benchmark("clinc150-test", data_root)
    assert bench.n_documents == 4500 and bench.n_queries == 150
    assert sorted(bench.query_texts()) == sorted(shipped.query_texts())
    assert not set(bench.documents["doc_id"].to_list()) & set(shipped.documents["doc_id"].to_list())
    labels, pool = bench.label_matrix()
    assert pool is None and (labels.sum(axis=1) == 30).all()  # 30 test utterances per intent


def test_the_comparisons_pair_every_query_and_point_the_right_way(unseen) -> None:
    rng = np.random.default_rng(0)
    n = 40
    base = rng.random(n)
    ap = {
        "baseline": {0: base},
        "rerank_only": {1: base + 0.01},
        "rocchio": {b: base + 0.05 for b in (1, 2, 3)},
        "refined_paper": {b: base for b in (1, 2, 3)},
        "refined": {b: base for b in (1, 2, 3)},
        "rocchio_kl": {b: base + 0.05 + 0.02 * rng.random(n) for b in (1, 2, 3)},  # better than Rocchio
        "pull": {b: base + 0.05 - 0.02 * rng.random(n) for b in (1, 2, 3)},  # worse than Rocchio
        "rocchio_kl_pull": {b: base + 0.05 for b in (1, 2, 3)},  # Rocchio itself: every query a tie
    }
    out = unseen.compare(ap)
    assert len(out["tests"]) == 12  # three methods x (three budgets vs Rocchio + one vs rerank-only)
    for test in out["tests"].values():
        assert test["wins"] + test["ties"] + test["losses"] == n
    assert (
        out["tests"]["rocchio_kl vs rocchio @2"]["delta"] > 0
        and out["tests"]["rocchio_kl vs rocchio @2"]["pvalue"] < 1e-6
    )
    assert out["tests"]["pull vs rocchio @2"]["delta"] < 0 and out["tests"]["pull vs rocchio @2"]["pvalue"] > 0.99
    tie = out["tests"]["rocchio_kl_pull vs rocchio @1"]
    assert tie["delta"] == 0 and (tie["wins"], tie["ties"], tie["losses"]) == (0, n, 0)
    assert out["map"]["rocchio"][3] == pytest.approx(float(np.mean(base + 0.05)))
