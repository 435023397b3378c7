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

from judging import oracle_scores
from refine_core.evaluation import ScoreSamples, evaluate_cell_arrays, method_rankings, score_methods
from refine_core.feedback import TopK, TopKPlusRandom, select_feedback, select_feedback_blocks, top_k_indices
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
    labels[0] = 0 if seed % 5 == 0 else labels[0]  # a query without positives
    if n > 1 and seed % 7 == 0:
        labels[1] = 1  # a query without negatives
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
    pooled = Qrels.from_dense(labels, pool)
    np.testing.assert_array_equal(pooled.pool_block(1, 4, (10, 30)), pool[1:4, 10:30])
    np.testing.assert_array_equal(pooled.negative_block(1, 4, (10, 30)), (pool & (labels == 0))[1:4, 10:30])
    np.testing.assert_array_equal(qrels.negative_block(0, 6), labels == 0)
    assert qrels.pool_block(0, 6, (10, 30)) is None


def test_repeated_pairs_keep_the_last_gain_and_bad_pairs_are_named() -> None:
    q = Qrels.from_pairs(
        np.array([0, 0, 1]), np.array([3, 3, 1]), np.array([1.0, 2.0, 1.0]), n_queries=2, n_documents=5
    )
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
    scores = (
        rng.integers(0, 4, (n, total)).astype(np.float32) if seed % 2 else rng.random((n, total)).astype(np.float32)
    )
    if seed % 3 == 0:
        scores[rng.random((n, total)) < 0.8] = -np.inf  # pools smaller than k
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


def _cell_inputs(q: np.ndarray, fb: np.ndarray, judge: np.ndarray, rng: np.random.Generator) -> dict:
    """score_methods' keyword inputs: the judgments (10 % missing), two rounds of moved vectors, a HyDE vector."""
    mask = rng.random(fb.shape) < 0.9
    rounds = [q + 0.1 * rng.standard_normal(q.shape).astype(np.float32) for _ in range(2)]
    return {
        "feedback_idx": fb,
        "judge_scores": judge,
        "judge_mask": mask,
        "round_vectors": rounds,
        "extra_vectors": {"hyde": q[::-1].copy()},
    }


def test_score_methods_in_blocks_equals_one_block_and_the_dense_engine() -> None:
    q, docs, labels = _vectors(2)
    rng = np.random.default_rng(2)
    fb = np.argsort(-cosine_scores(q, docs), axis=1)[:, :5]
    judge = (np.take_along_axis(labels, fb, axis=1) > 0).astype(np.float32)
    kwargs = _cell_inputs(q, fb, judge, rng)
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
    score_methods(
        q,
        docs,
        qrels,
        feedback_idx=fb,
        judge_scores=np.zeros(fb.shape, np.float32),
        judge_mask=np.zeros(fb.shape, bool),
        round_vectors=[q],
        visit=samples,
        block_rows=4,
    )
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

    def judge(rows, idx):
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


# ---- corpus shards: counts add up, summaries merge, the measures equal one pass -------------------
def _shard_bounds(rng: np.random.Generator, total: int) -> list[tuple[int, int]]:
    cuts = np.unique(rng.integers(1, total, size=int(rng.integers(0, 5)))) if total > 1 else np.zeros(0, int)
    edges = [0, *cuts.tolist(), total]
    return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


@pytest.mark.parametrize("seed", range(40))
def test_measures_merged_from_corpus_shards_equal_one_pass(seed: int) -> None:
    from refine_core.shards import count_shard, measures, merge_shards, relevant_specials

    scores, labels, pool = _case(seed)
    qrels = Qrels.from_dense(labels, pool)
    rng = np.random.default_rng(1000 + seed)
    whole = rank_metrics(scores, qrels)
    specials = relevant_specials(qrels, np.asarray(scores, dtype=np.float64)[qrels.row_ids(), qrels.docs])
    bounds = _shard_bounds(rng, scores.shape[1])
    parts = [count_shard(scores[:, a:b], a, qrels, specials) for a, b in bounds]
    rng.shuffle(parts)  # the merge does not depend on the order
    merged = measures(merge_shards(parts), specials, (5, 10, 20, 30, 40, 50))
    assert len(bounds) >= 1 and set(merged) == set(whole)
    for name, expected in whole.items():
        np.testing.assert_allclose(merged[name], expected, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("seed", range(12))
def test_rerank_only_from_shards_equals_the_dense_rerank_scores(seed: int) -> None:
    from refine_core.baselines import rerank_only_scores
    from refine_core.shards import (
        count_shard,
        finish_rerank_only,
        measures,
        merge_shards,
        relevant_specials,
        rerank_only_specials,
    )

    scores, labels, pool = _case(seed)
    scores = np.asarray(scores, dtype=np.float64)
    qrels = Qrels.from_dense(labels, pool)
    rng = np.random.default_rng(2000 + seed)
    n, total = scores.shape
    k = min(6, total)
    base = np.where(pool, scores, -np.inf) if pool is not None else scores
    idx = top_k_indices(base, k)
    judge = rng.integers(0, 3, idx.shape).astype(np.float64) / 2  # ties among judge scores
    mask = rng.random(idx.shape) < 0.85
    dense = rerank_only_scores(base, idx, judge, mask=mask)
    expected = rank_metrics(np.where(pool, dense, -np.inf) if pool is not None else dense, qrels)

    relevant = relevant_specials(qrels, scores[qrels.row_ids(), qrels.docs])
    judged_base = np.where(idx >= 0, np.take_along_axis(scores, np.maximum(idx, 0), axis=1), np.nan)
    specials = rerank_only_specials(relevant, idx, judge, mask, judged_base, pool=qrels)
    merged = merge_shards([count_shard(scores[:, a:b], a, qrels, specials) for a, b in _shard_bounds(rng, total)])
    ours = measures(merged, finish_rerank_only(specials, merged), (5, 10, 20, 30, 40, 50))
    for name, value in expected.items():
        np.testing.assert_allclose(ours[name], value, rtol=1e-12, atol=1e-12, equal_nan=True, err_msg=name)


@pytest.mark.parametrize("seed", range(8))
def test_top_k_merged_from_shards_equals_top_k_of_the_whole_corpus(seed: int) -> None:
    from refine_core.shards import merge_top_k

    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, (9, 300)).astype(np.float32)  # many ties: the lower index must win
    scores[0, :] = -np.inf
    scores[1, 5:] = -np.inf  # fewer finite documents than k
    k = 12
    parts = []
    for a, b in _shard_bounds(rng, 300):
        local = top_k_indices(scores[:, a:b], k)
        local_scores = np.take_along_axis(scores[:, a:b], np.maximum(local, 0), axis=1)
        parts.append((np.where(local >= 0, local + a, -1), local_scores))
    np.testing.assert_array_equal(merge_top_k(parts, k), top_k_indices(scores, k))


@pytest.mark.parametrize("pooled", [False, True])
def test_score_methods_over_corpus_shards_equals_the_whole_corpus(pooled: bool) -> None:
    from refine_core.evaluation import ScoreSamples, finish_shards, score_shard, shard_bounds, shard_inputs

    q, docs, labels = _vectors(5, n=11, total=300)
    rng = np.random.default_rng(5)
    pool = rng.random(labels.shape) < 0.5 if pooled else None
    qrels = Qrels.from_dense(labels, pool)
    fb = select_feedback_blocks(q, docs, k=6, pool=qrels if pooled else None)
    judge = rng.integers(0, 3, fb.shape).astype(np.float32) / 2
    kwargs = _cell_inputs(q, fb, judge, rng)
    samples = ScoreSamples(qrels, methods=("baseline", "refined"), max_negatives=500)
    whole, tests = score_methods(q, docs, qrels, visit=samples, **kwargs)
    sharded, sharded_tests = score_methods(q, docs, qrels, corpus_shard=70, block_rows=4, **kwargs)
    assert list(sharded) == list(whole)
    for method, result in whole.items():
        for name, values in result.per_query.items():
            # the relevant documents' own scores come from a separate product: last-bit rounding only
            np.testing.assert_allclose(
                sharded[method].per_query[name], values, rtol=0, atol=1e-6, equal_nan=True, err_msg=f"{method} {name}"
            )
    for method, test in tests.items():
        assert sharded_tests[method].pvalue == pytest.approx(test.pvalue, rel=1e-5)
    # the plot samples: the same relevant scores and the same first negatives, in the same order
    inputs = shard_inputs(q, docs, qrels, **kwargs)
    shards = [score_shard(inputs, docs[a:b], a, qrels, max_negatives=500) for a, b in shard_bounds(300, 70)]
    _, _, arrays = finish_shards(inputs, shards, qrels, max_negatives=500)
    for key, expected in samples.arrays().items():
        np.testing.assert_allclose(arrays[key], expected, rtol=0, atol=1e-6, err_msg=key)
    with pytest.raises(ValueError, match="visit"):
        score_methods(q, docs, qrels, corpus_shard=70, visit=samples, **kwargs)


@pytest.mark.parametrize("pooled", [False, True])
def test_selection_from_corpus_shards_equals_selection_over_the_whole_corpus(pooled: bool) -> None:
    from refine_core.evaluation import shard_bounds
    from refine_core.feedback import top_k_shard
    from refine_core.shards import merge_top_k

    q, docs, labels = _vectors(7, n=9, total=260)
    rng = np.random.default_rng(7)
    qrels = Qrels.from_dense(labels, rng.random(labels.shape) < 0.3) if pooled else None
    first = select_feedback_blocks(q, docs, k=8, pool=qrels)
    again = select_feedback_blocks(q, docs, k=8, pool=qrels, exclude_idx=first)
    for exclude, expected in ((None, first), (first, again)):
        parts = [
            top_k_shard(q, docs[a:b], a, k=8, pool=qrels, exclude_idx=exclude, block_rows=4)
            for a, b in shard_bounds(260, 60)
        ]
        np.testing.assert_array_equal(merge_top_k(parts, 8), expected)
    assert not any(np.isin(a[a >= 0], f).any() for a, f in zip(again, first))  # the second round skips the first's


def test_a_corpus_above_the_auto_threshold_is_read_in_shards_with_the_same_results(monkeypatch) -> None:
    """Above twice AUTO_SHARD_DOCUMENTS, selection and scoring go shard by shard on their own (so the
    bytes read grow as N, not N²); the results are those of one whole-corpus pass."""
    import refine_core.evaluation as evaluation
    import refine_core.feedback as feedback
    import refine_core.metrics as metrics

    q, docs, labels = _vectors(9, n=12, total=400)
    rng = np.random.default_rng(9)
    qrels = Qrels.from_dense(labels)
    whole_fb = select_feedback_blocks(q, docs, k=6, corpus_shard=None)
    fb_again = select_feedback_blocks(q, docs, k=6, exclude_idx=whole_fb, corpus_shard=None)
    judge = (np.take_along_axis(labels, whole_fb, axis=1) > 0).astype(np.float32)
    kwargs = _cell_inputs(q, whole_fb, judge, rng)
    whole, whole_tests = score_methods(q, docs, qrels, corpus_shard=None, **kwargs)

    calls = {"select": 0, "score": 0}
    real_top, real_score = feedback.top_k_shard, evaluation.score_shard

    def top_spy(*args, **kw):
        calls["select"] += 1
        return real_top(*args, **kw)

    def score_spy(*args, **kw):
        calls["score"] += 1
        return real_score(*args, **kw)

    monkeypatch.setattr(feedback, "top_k_shard", top_spy)
    monkeypatch.setattr(evaluation, "score_shard", score_spy)
    # at the real threshold this small corpus is one pass: no shard is touched
    assert metrics.auto_corpus_shard("auto", 400) is None
    np.testing.assert_array_equal(select_feedback_blocks(q, docs, k=6), whole_fb)
    score_methods(q, docs, qrels, **kwargs)
    assert calls == {"select": 0, "score": 0}

    monkeypatch.setattr(metrics, "AUTO_SHARD_DOCUMENTS", 90)  # 400 > 2 × 90: shards of 90
    np.testing.assert_array_equal(select_feedback_blocks(q, docs, k=6), whole_fb)
    np.testing.assert_array_equal(select_feedback_blocks(q, docs, k=6, exclude_idx=whole_fb), fb_again)
    assert calls["select"] == 2 * 5  # ceil(400 / 90) shards, twice
    auto, auto_tests = score_methods(q, docs, qrels, **kwargs)
    assert calls["score"] == 5
    for method, result in whole.items():
        for name, values in result.per_query.items():
            np.testing.assert_allclose(auto[method].per_query[name], values, rtol=0, atol=1e-6, equal_nan=True)
    for method, test in whole_tests.items():
        assert auto_tests[method].pvalue == pytest.approx(test.pvalue, rel=1e-5)
    # a visitor needs whole-corpus blocks, and a strategy other than top-K one stream: no shards then
    score_methods(q, docs, qrels, visit=lambda lo, hi, blocks: None, **kwargs)
    select_feedback_blocks(q, docs, k=6, strategy=TopKPlusRandom(extra=2, seed=1))
    assert calls == {"select": 10, "score": 5}
    with pytest.raises(ValueError, match="corpus_shard must be"):
        select_feedback_blocks(q, docs, k=6, corpus_shard="all")
