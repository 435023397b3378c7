"""Memory that grows with the corpus: sparse qrels, query blocks, ranks without sorting the pool.

The query-block engine must give what the dense engine gave (``tests/reference_metrics.py``,
the previous implementation: a stable argsort of every pool and scipy's rankdata), on ties,
pools, graded labels and queries without positives or negatives, and blocks must not change
any result.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from reference_metrics import dense_reference

from refine_core.evaluation import ScoreSamples, evaluate_cell_arrays, method_rankings, score_methods
from refine_core.feedback import TopK, TopKPlusRandom, select_feedback, select_feedback_blocks, top_k_indices
from refine_core.judges import oracle_scores
from refine_core.metrics import cosine_scores, evaluate_rankings, rank_metrics
from refine_core.qrels import Qrels
from refine_core.rounds import refine_rounds


def _case(seed: int):
    rng = np.random.default_rng(seed)
    n, total = int(rng.integers(1, 25)), int(rng.integers(2, 400))
    kind = seed % 4
    if kind == 0:
        scores = rng.integers(0, 5, (n, total)).astype(np.float64)  # heavy ties
    elif kind == 1:
        scores = rng.random((n, total)).astype(np.float32)
    elif kind == 2:
        scores = np.round(rng.standard_normal((n, total)), 1)  # ties between positives and negatives
    else:
        scores = rng.standard_normal((n, total))
    labels = np.where(rng.random((n, total)) < 0.2, rng.integers(1, 4, (n, total)), 0).astype(np.float32)
    labels[0] = 0 if seed % 5 == 0 else labels[0]          # a query without positives
    if n > 1 and seed % 7 == 0:
        labels[1] = 1                                       # a query without negatives
    pool = None if seed % 2 else rng.random((n, total)) < 0.6
    return scores, labels, pool


@pytest.mark.parametrize("seed", range(40))
def test_block_engine_equals_the_dense_engine(seed: int) -> None:
    scores, labels, pool = _case(seed)
    reference = dense_reference(scores, labels, pool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours = evaluate_rankings(scores, labels, pool=pool, block_rows=3).per_query
        sparse = evaluate_rankings(scores, Qrels.from_dense(labels, pool)).per_query
    assert set(ours) == set(reference)
    for name, expected in reference.items():
        np.testing.assert_allclose(ours[name], expected, rtol=0, atol=1e-12, equal_nan=True, err_msg=name)
        np.testing.assert_array_equal(sparse[name], ours[name], err_msg=name)


def test_qrels_round_trip_and_lookups() -> None:
    rng = np.random.default_rng(3)
    labels = np.where(rng.random((6, 50)) < 0.2, rng.integers(1, 3, (6, 50)), 0).astype(np.float32)
    pool = rng.random((6, 50)) < 0.5
    for p in (None, pool):
        qrels = Qrels.from_dense(labels, p)
        back, back_pool = qrels.to_dense()
        np.testing.assert_array_equal(back, np.where(pool, labels, 0) if p is not None else labels)
        assert (back_pool is None) == (p is None)
        if p is not None:
            np.testing.assert_array_equal(back_pool, pool)
    qrels = Qrels.from_dense(labels)
    idx = rng.integers(-1, 50, (6, 7))
    expected = np.where(idx >= 0, np.take_along_axis(labels, np.maximum(idx, 0), axis=1), 0)
    np.testing.assert_array_equal(qrels.gains_at(idx), expected)
    np.testing.assert_array_equal(oracle_scores(qrels, idx)[0], oracle_scores(labels, idx)[0])
    np.testing.assert_array_equal(qrels.take([4, 1]).to_dense()[0], labels[[4, 1]])
    np.testing.assert_array_equal(qrels.rows(2, 5).to_dense()[0], labels[2:5])
    np.testing.assert_array_equal(qrels.n_relevant(), (labels > 0).sum(axis=1))
    assert qrels.nbytes < labels.nbytes


def test_repeated_pairs_keep_the_last_gain_and_bad_pairs_are_named() -> None:
    q = Qrels.from_pairs(np.array([0, 0, 1]), np.array([3, 3, 1]), np.array([1.0, 2.0, 1.0]), n_queries=2, n_documents=5)
    np.testing.assert_array_equal(q.to_dense()[0][0], [0, 0, 0, 2, 0])
    with pytest.raises(ValueError, match="document indices must lie in"):
        Qrels.from_pairs(np.array([0]), np.array([5]), np.array([1.0]), n_queries=1, n_documents=5)
    with pytest.raises(ValueError, match="query rows must lie in"):
        Qrels.from_pairs(np.array([2]), np.array([0]), np.array([1.0]), n_queries=2, n_documents=5)
    with pytest.raises(ValueError, match="gains must be finite and non-negative"):
        Qrels.from_pairs(np.array([0]), np.array([0]), np.array([-1.0]), n_queries=1, n_documents=5)


def test_scores_outside_a_pool_are_never_read_and_non_finite_inside_is_an_error() -> None:
    labels = np.array([[1, 0, 0, 1]], dtype=np.float32)
    pool = np.array([[True, True, False, True]])
    scores = np.array([[0.9, 0.5, np.nan, 0.1]])
    qrels = Qrels.from_dense(labels, pool)
    assert rank_metrics(scores, qrels)["ap"][0] == pytest.approx((1 + 2 / 3) / 2)
    with pytest.raises(ValueError, match="scores contains NaN or inf inside the pool"):
        rank_metrics(np.array([[0.9, np.inf, 0.0, 0.1]]), qrels)


@pytest.mark.parametrize("seed", range(30))
def test_top_k_equals_a_stable_descending_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n, total, k = int(rng.integers(1, 20)), int(rng.integers(1, 600)), int(rng.integers(1, 40))
    scores = rng.integers(0, 4, (n, total)).astype(np.float32) if seed % 2 else rng.random((n, total)).astype(np.float32)
    if seed % 3 == 0:
        scores[rng.random((n, total)) < 0.8] = -np.inf      # pools smaller than k
    order = np.argsort(-scores, axis=1, kind="stable")[:, : min(k, total)]
    finite = np.isfinite(np.take_along_axis(scores, order, axis=1))
    expected = np.full((n, k), -1)
    expected[:, : min(k, total)] = np.where(finite, order, -1)
    np.testing.assert_array_equal(top_k_indices(scores, k), expected)


def _vectors(seed: int, n: int = 13, total: int = 240, d: int = 16):
    rng = np.random.default_rng(seed)
    q = rng.standard_normal((n, d)).astype(np.float32)
    docs = rng.standard_normal((total, d)).astype(np.float32)
    labels = (rng.random((n, total)) < 0.1).astype(np.float32)
    labels[:, 0] = 1
    return q, docs, labels


@pytest.mark.parametrize("pooled", [False, True])
def test_blocked_selection_equals_dense_selection(pooled: bool) -> None:
    q, docs, labels = _vectors(1)
    pool = np.random.default_rng(1).random(labels.shape) < 0.5 if pooled else None
    sims = cosine_scores(q, docs)
    if pool is not None:
        sims = np.where(pool, sims, -np.inf)
    first = select_feedback(sims, k=7)
    exclude = np.zeros(sims.shape, dtype=bool)
    np.put_along_axis(exclude, np.maximum(first, 0), first >= 0, axis=1)
    qpool = Qrels.from_dense(np.zeros(labels.shape, np.float32), pool) if pooled else None
    for strategy in (TopK(), TopKPlusRandom(extra=3, seed=4)):
        dense = select_feedback(sims, k=7, strategy=strategy, exclude=exclude)
        blocked = select_feedback_blocks(q, docs, k=7, strategy=strategy, pool=qpool, exclude_idx=first, block_rows=4)
        np.testing.assert_array_equal(blocked, dense)


def test_score_methods_in_blocks_equals_one_block_and_the_dense_engine() -> None:
    q, docs, labels = _vectors(2)
    rng = np.random.default_rng(2)
    fb = np.argsort(-cosine_scores(q, docs), axis=1)[:, :5]
    judge = (np.take_along_axis(labels, fb, axis=1) > 0).astype(np.float32)
    mask = rng.random(fb.shape) < 0.9
    rounds = [q + 0.1 * rng.standard_normal(q.shape).astype(np.float32) for _ in range(2)]
    kwargs = {"feedback_idx": fb, "judge_scores": judge, "judge_mask": mask, "round_vectors": rounds,
              "extra_vectors": {"hyde": q[::-1].copy()}}
    one, tests_one = score_methods(q, docs, labels, block_rows=100, **kwargs)
    many, tests_many = score_methods(q, docs, Qrels.from_dense(labels), block_rows=3, **kwargs)
    dense = method_rankings(q, docs, **kwargs)
    assert list(one) == ["baseline", "rerank_only", "rocchio", "refined", "refined_r2", "hyde"] == list(dense)
    for method in one:
        reference = dense_reference(dense[method], labels)
        for name, values in one[method].per_query.items():
            # BLAS rounds a product's last float32 bit by the product's shape: blocks of 3 rows move
            # a cosine by ~1e-8, which only the separation (a mean of scores) can see
            np.testing.assert_allclose(many[method].per_query[name], values, rtol=0, atol=1e-6)
            np.testing.assert_allclose(values, reference[name], rtol=0, atol=1e-12, equal_nan=True)
    for method, test in tests_one.items():
        assert tests_many[method].pvalue == pytest.approx(test.pvalue, rel=1e-6)


def test_score_samples_are_the_relevant_and_first_negative_scores() -> None:
    q, docs, labels = _vectors(5)
    pool = np.random.default_rng(5).random(labels.shape) < 0.7
    pool[:, 0] = True
    qrels = Qrels.from_dense(labels, pool)
    samples = ScoreSamples(qrels, methods=("baseline",), max_negatives=500)
    fb = np.zeros((q.shape[0], 2), dtype=np.int64)
    score_methods(q, docs, qrels, feedback_idx=fb, judge_scores=np.zeros(fb.shape, np.float32),
                  judge_mask=np.zeros(fb.shape, bool), round_vectors=[q], visit=samples, block_rows=4)
    base = cosine_scores(q, docs)
    arrays = samples.arrays()
    # blocks of 4 rows: BLAS may round the last float32 bit differently from one product (see above)
    np.testing.assert_allclose(arrays["baseline_pos"], base[(labels > 0) & pool], rtol=0, atol=1e-6)
    np.testing.assert_allclose(arrays["baseline_neg"], base[~(labels > 0) & pool][:500], rtol=0, atol=1e-6)


def test_rounds_with_pooled_qrels_equal_rounds_with_a_dense_pool() -> None:
    q, docs, labels = _vectors(7, n=9, total=120)
    pool = np.random.default_rng(7).random(labels.shape) < 0.6
    pool[:, 0] = True
    qrels = Qrels.from_dense(labels, pool)

    def judge(rows, idx):  # noqa: ANN001, ANN202
        return oracle_scores(qrels.take(rows), idx)

    dense = refine_rounds(q, docs, judge, rounds=3, k=4, pool=pool)
    sparse = refine_rounds(q, docs, judge, rounds=3, k=4, pool=qrels)
    np.testing.assert_array_equal(dense.feedback_idx, sparse.feedback_idx)
    np.testing.assert_array_equal(dense.vectors, sparse.vectors)
    for row, chosen in zip(pool, sparse.feedback_idx):
        assert row[chosen[chosen >= 0]].all() and len(set(chosen[chosen >= 0])) == (chosen >= 0).sum()
    outcome = evaluate_cell_arrays(q, docs, qrels, judge, k=4, rounds=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        via_dense = evaluate_cell_arrays(q, docs, labels, judge, pool=pool, k=4, rounds=2)
    for method, result in outcome.metrics.items():
        for name, values in result.per_query.items():
            np.testing.assert_array_equal(values, via_dense.metrics[method].per_query[name])
