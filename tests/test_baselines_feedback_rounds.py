"""Feedback selection, rerank-only, Rocchio, multi-round refinement and statistics."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from refine_core import (
    TopK,
    TopKPlusRandom,
    benjamini_hochberg,
    bootstrap_delta_ci,
    cosine_scores,
    paired_ttest,
    refine,
    refine_rounds,
    rerank_only_scores,
    rocchio,
    select_feedback,
)
from refine_core.refinement import RefineConfig


def test_top_k_orders_best_first_and_respects_pool_and_exclude() -> None:
    sims = np.array([[0.1, 0.9, 0.5, 0.7, -np.inf], [0.3, 0.3, 0.3, 0.2, 0.1]])
    assert select_feedback(sims, k=3).tolist() == [[1, 3, 2], [0, 1, 2]]  # ties by index
    exclude = np.zeros(sims.shape, bool)
    exclude[0, 1] = True
    assert select_feedback(sims, k=2, exclude=exclude)[0].tolist() == [3, 2]
    assert select_feedback(sims, k=6)[0].tolist() == [1, 3, 2, 0, -1, -1]  # pool smaller than k


def test_top_k_plus_random_is_seeded_and_draws_from_the_tail() -> None:
    rng = np.random.default_rng(0)
    sims = rng.random((4, 50))
    strat = TopKPlusRandom(extra=3, seed=7)
    a, b = strat.select(sims, k=8), strat.select(sims, k=8)
    np.testing.assert_array_equal(a, b)
    top5 = TopK().select(sims, k=5)
    np.testing.assert_array_equal(a[:, :5], top5)
    for row in range(4):
        assert len(set(a[row])) == 8 and not set(a[row, 5:]) & set(top5[row])
    assert not np.array_equal(a, TopKPlusRandom(extra=3, seed=8).select(sims, k=8))
    with pytest.raises(ValueError, match="extra must be smaller than k"):
        TopKPlusRandom(extra=8).select(sims, k=8)


def test_rerank_only_keeps_unjudged_documents_in_place() -> None:
    rng = np.random.default_rng(1)
    base = rng.random((3, 30))
    fb = select_feedback(base, k=5)
    judge = rng.random((3, 5))
    new = rerank_only_scores(base, fb, judge)
    for i in range(3):
        before = np.argsort(-base[i], kind="stable")
        after = np.argsort(-new[i], kind="stable")
        assert set(after[:5]) == set(fb[i])
        np.testing.assert_array_equal(after[5:], before[5:])  # the rest did not move
        np.testing.assert_array_equal(after[:5], fb[i][np.argsort(-judge[i], kind="stable")])


def test_rerank_only_drops_failed_judgments_out_of_the_block() -> None:
    base = np.array([[0.9, 0.8, 0.7, 0.1]])
    new = rerank_only_scores(
        base, np.array([[0, 1, 2]]), np.array([[0.1, 0.0, 0.9]]), mask=np.array([[True, False, True]])
    )
    assert np.argsort(-new[0], kind="stable").tolist() == [2, 0, 1, 3]


def test_rocchio_moves_toward_positives_and_away_from_negatives() -> None:
    q = np.array([[1.0, 0.0, 0.0]])
    fb = np.array([[[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])
    out = rocchio(q, fb, np.array([[0.9, 0.1]]), alpha=1.0, beta=0.5, gamma=0.25)
    np.testing.assert_allclose(out, [[1.0, 0.5, -0.25]])
    masked = rocchio(q, fb, np.array([[0.9, 0.1]]), mask=np.array([[True, False]]), beta=0.5, gamma=0.25)
    np.testing.assert_allclose(masked, [[1.0, 0.5, 0.0]])


def _toy_problem(seed: int = 0):
    rng = np.random.default_rng(seed)
    docs = rng.normal(size=(200, 16)).astype(np.float32)
    queries = rng.normal(size=(6, 16)).astype(np.float32)
    truth = rng.normal(size=(6, 16))
    gold = cosine_scores(truth, docs)

    def judge(rows: np.ndarray, idx: np.ndarray):
        scores = np.take_along_axis(gold[rows], np.maximum(idx, 0), axis=1)
        return (scores > 0).astype(np.float32), idx >= 0

    return queries, docs, judge, gold


def test_one_round_equals_single_shot() -> None:
    queries, docs, judge, _ = _toy_problem()
    multi = refine_rounds(queries, docs, judge, rounds=1, k=10)
    sims = cosine_scores(queries, docs)
    idx = select_feedback(sims, k=10)
    scores, mask = judge(np.arange(6), idx)
    single = refine(queries, docs[idx], scores, mask=mask)
    np.testing.assert_array_equal(multi.vectors, single.vectors)
    np.testing.assert_array_equal(multi.feedback_idx, idx)


def test_later_rounds_judge_new_documents_and_refine_from_previous_vector() -> None:
    queries, docs, judge, _ = _toy_problem(2)
    res = refine_rounds(queries, docs, judge, rounds=3, k=5)
    assert res.feedback_idx.shape == (6, 15) and res.round_vectors.shape == (3, 6, 16)
    for row in res.feedback_idx:
        assert len(set(row.tolist())) == 15  # never the same document twice
    assert not np.array_equal(res.round_vectors[1], res.round_vectors[0])
    assert len(res.losses) == 3


def test_rocchio_rounds_spend_the_same_budget_chosen_the_same_way_as_refinement() -> None:
    from refine_core.baselines import RocchioParams
    from refine_core.rounds import rocchio_rounds

    queries, docs, judge, _ = _toy_problem(3)
    params = RocchioParams(beta=1.5, gamma=0.25)
    res = rocchio_rounds(queries, docs, judge, rounds=3, k=5, params=params)
    assert res.feedback_idx.shape == (6, 15) and res.round_vectors.shape == (3, 6, 16)
    for row in res.feedback_idx:
        assert len(set(row.tolist())) == 15  # never the same document twice
    rows = np.arange(6)
    # round 1 judges the original vector's top 5, like refinement's round 1
    first = select_feedback(cosine_scores(queries, docs), k=5)
    np.testing.assert_array_equal(res.feedback_idx[:, :5], first)
    # round r: Rocchio of the ORIGINAL query with every judgment so far; the next round judges
    # that vector's top 5 not judged yet
    for r in range(3):
        idx = res.feedback_idx[:, : 5 * (r + 1)]
        scores, mask = judge(rows, idx)
        expected = rocchio(queries, docs[idx], scores, mask=mask, beta=1.5, gamma=0.25)
        np.testing.assert_allclose(res.round_vectors[r], expected, rtol=1e-6, atol=1e-7)
        if r < 2:
            exclude = np.zeros((6, docs.shape[0]), bool)
            np.put_along_axis(exclude, idx, True, axis=1)
            nxt = select_feedback(cosine_scores(expected, docs), k=5, exclude=exclude)
            np.testing.assert_array_equal(res.feedback_idx[:, 5 * (r + 1) : 5 * (r + 2)], nxt)
    assert all(loss.shape == (6, 0) for loss in res.losses)  # nothing optimised


def test_rocchio_then_refine_is_the_kl_refinement_started_from_the_rocchio_vector() -> None:
    from refine_core.refinement import RefineConfig
    from refine_core.rounds import rocchio_rounds

    queries, docs, judge, _ = _toy_problem(4)
    config = RefineConfig(lr=3e-3, steps=40)
    res = rocchio_rounds(queries, docs, judge, rounds=1, k=8, then_refine=config)
    idx = select_feedback(cosine_scores(queries, docs), k=8)
    scores, mask = judge(np.arange(6), idx)
    start = rocchio(queries, docs[idx], scores, mask=mask)
    expected = refine(start, idx, scores, mask=mask, documents=docs, config=config)
    np.testing.assert_allclose(res.vectors, expected.vectors, rtol=1e-6, atol=1e-7)
    assert res.losses[0].shape == (6, 40)
    # it moved from the Rocchio start, and differs from refinement started at the query
    assert not np.allclose(res.vectors, start)
    assert not np.allclose(res.vectors, refine_rounds(queries, docs, judge, rounds=1, k=8, config=config).vectors)


def test_a_cell_with_variants_scores_them_beside_the_paper_methods() -> None:
    from refine_core.evaluation import VARIANTS, evaluate_cell_arrays
    from refine_core.metrics import evaluate_rankings
    from refine_core.rounds import rocchio_rounds

    queries, docs, judge, gold = _toy_problem(5)
    labels = (gold > 0.3).astype(np.float32)
    plain = evaluate_cell_arrays(queries, docs, labels, judge, k=5, rounds=2)
    both = evaluate_cell_arrays(queries, docs, labels, judge, k=5, rounds=2, variants=VARIANTS)
    assert set(both.metrics) - set(plain.metrics) == {"rocchio_r2", "rocchio_kl", "rocchio_kl_r2"}
    for method in plain.metrics:  # the paper's methods are untouched by the variants
        assert both.metrics[method].means == plain.metrics[method].means
    r2 = rocchio_rounds(queries, docs, judge, rounds=2, k=5).vectors
    by_hand = evaluate_rankings(cosine_scores(r2, docs), labels).means
    for key in ("map", "ndcg@10"):
        assert both.metrics["rocchio_r2"].means[key] == pytest.approx(by_hand[key], abs=1e-9)
    assert "rocchio_kl" in both.tests  # tested against the baseline like every method
    with pytest.raises(ValueError, match="variants: unknown 'rochio'"):
        evaluate_cell_arrays(queries, docs, labels, judge, k=5, variants=("rochio",))


def test_a_cell_with_variants_asks_the_judge_about_each_pair_once() -> None:
    """A paid judge must not pay twice: the variants' first round is the refinement's, and a
    document another method already judged is answered from memory."""
    from refine_core.evaluation import VARIANTS, evaluate_cell_arrays
    from refine_core.rounds import rocchio_rounds

    queries, docs, judge, gold = _toy_problem(6)
    labels = (gold > 0.3).astype(np.float32)
    asked: list[tuple[int, int]] = []

    def failing(rows: np.ndarray, idx: np.ndarray):
        scores, mask = judge(rows, idx)
        return scores, mask & (idx % 7 != 3)  # some judgments fail: remembered as failed, not re-asked

    def counting(rows: np.ndarray, idx: np.ndarray):
        asked.extend((int(r), int(j)) for r, row in zip(rows, idx, strict=True) for j in row if j >= 0)
        return failing(rows, idx)

    both = evaluate_cell_arrays(queries, docs, labels, counting, k=5, rounds=2, variants=VARIANTS)
    assert len(asked) == len(set(asked))  # no pair twice
    refinement_pairs = {(i, int(j)) for i, row in enumerate(both.feedback_idx) for j in row}
    variant_pairs = set()
    for then_refine in (None, RefineConfig()):
        res = rocchio_rounds(queries, docs, failing, rounds=2, k=5, then_refine=then_refine)
        variant_pairs |= {(i, int(j)) for i, row in enumerate(res.feedback_idx) for j in row}
    assert set(asked) == refinement_pairs | variant_pairs  # exactly the union, nothing more
    assert len(asked) < 6 * 5 * 2 * 3  # less than three methods judging their own 2 rounds
    # the same numbers as a judge without memory (the toy judge is deterministic)
    again = evaluate_cell_arrays(queries, docs, labels, failing, k=5, rounds=2)
    for method in again.metrics:
        assert both.metrics[method].means == again.metrics[method].means


def test_paired_ttest_matches_scipy_and_handles_nan() -> None:
    rng = np.random.default_rng(4)
    a = rng.random(30)
    b = a + rng.normal(0.05, 0.1, 30)
    res = paired_ttest(a, b)
    assert res.pvalue == pytest.approx(stats.ttest_rel(b, a, alternative="greater").pvalue)
    assert res.delta == pytest.approx((b - a).mean())
    a_nan = a.copy()
    a_nan[0] = np.nan
    assert paired_ttest(a_nan, b).n == 29
    assert paired_ttest(a, a).pvalue == 1.0
    with pytest.raises(ValueError, match="same length"):
        paired_ttest(a, b[:-1])


def test_benjamini_hochberg_equals_scipy() -> None:
    """The numpy step-up equals scipy's false_discovery_control on random families with ties,
    tiny and large values, one and many tests."""
    from scipy.stats import false_discovery_control

    rng = np.random.default_rng(5)
    for m in (1, 2, 7, 100, 1000):
        p = rng.uniform(0, 1, m) ** 3
        p[: m // 3] = p[0]  # ties
        np.testing.assert_allclose(benjamini_hochberg(p), false_discovery_control(p, method="bh"), rtol=1e-12)


def test_benjamini_hochberg_by_hand() -> None:
    # sorted p: 0.01, 0.03, 0.04 (m=3): 0.03, 0.045, 0.04 -> monotone from the top: 0.03, 0.04, 0.04
    np.testing.assert_allclose(benjamini_hochberg([0.01, 0.04, 0.03]), [0.03, 0.04, 0.04])
    out = benjamini_hochberg([0.5, np.nan])
    assert out[0] == 0.5 and np.isnan(out[1])
    with pytest.raises(ValueError, match=r"pvalues must lie in \[0, 1\]"):
        benjamini_hochberg([1.5])


def test_bootstrap_ci_contains_the_mean_difference() -> None:
    rng = np.random.default_rng(5)
    a = rng.random(40)
    b = a + 0.1 + rng.normal(0, 0.05, 40)
    lo, hi = bootstrap_delta_ci(a, b, seed=1)
    assert lo < (b - a).mean() < hi and lo > 0
    assert bootstrap_delta_ci(a, b, seed=1) == (lo, hi)


# ---- learning-rate selection from held-out judgments ------------------------------------------------
def _two_cluster_problem(seed: int = 0, n: int = 40, k: int = 20, d: int = 16):
    """Queries sit between a relevant and an irrelevant cluster; the top-K mixes both."""
    rng = np.random.default_rng(seed)
    relevant = rng.standard_normal(d)
    irrelevant = rng.standard_normal(d)
    docs = np.concatenate(
        [relevant + 0.6 * rng.standard_normal((200, d)), irrelevant + 0.6 * rng.standard_normal((200, d))]
    ).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = (relevant + irrelevant + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    sims = queries @ docs.T
    idx = np.argsort(-sims, axis=1)[:, :k]
    gold = (idx < 200).astype(np.float32)
    return queries, docs, idx, gold


def test_select_lr_prefers_larger_steps_with_a_reliable_judge_and_is_deterministic() -> None:
    from refine_core.lr_selection import select_lr

    queries, docs, idx, gold = _two_cluster_problem()
    mask = np.ones_like(gold, dtype=bool)
    good = select_lr(queries, docs, idx, gold, mask, seed=1)
    assert set(good.heldout_auc) == {1e-4, 3e-4, 1e-3, 3e-3, 1e-2} and good.queries_scored > 10
    assert good.lr > 1e-4  # a perfect judge on separable data: bigger steps order held-out documents better
    assert good.heldout_auc[good.lr] >= good.heldout_auc[1e-4]
    assert select_lr(queries, docs, idx, gold, mask, seed=1) == good
    # a judge that says "relevant" at random gives the held-out AUC nothing to reward: stays near chance
    rng = np.random.default_rng(3)
    coin = (rng.random(gold.shape) < 0.5).astype(np.float32)
    noisy = select_lr(queries, docs, idx, coin, mask, seed=1)
    assert all(abs(a - 0.5) < 0.15 for a in noisy.heldout_auc.values()), noisy.heldout_auc


def test_select_lr_ties_go_to_the_smaller_lr_and_bad_arguments_fail() -> None:
    from refine_core.lr_selection import select_lr

    queries, docs, idx, gold = _two_cluster_problem(n=5)
    mask = np.zeros_like(gold, dtype=bool)
    mask[:, :2] = True  # two judgments per query: too few to hold any out
    chosen = select_lr(queries, docs, idx, gold, mask, candidates=(1e-2, 1e-3))
    assert chosen.lr == 1e-3 and chosen.queries_scored == 0
    with pytest.raises(ValueError, match="holdout must be in"):
        select_lr(queries, docs, idx, gold, mask, holdout=1.0)
    with pytest.raises(ValueError, match="at least one learning rate"):
        select_lr(queries, docs, idx, gold, mask, candidates=())


def test_lr_selection_scores_by_cosine_so_document_lengths_do_not_matter() -> None:
    from refine_core.lr_selection import select_lr

    rng = np.random.default_rng(4)
    q = rng.standard_normal((12, 16)).astype(np.float32)
    docs = rng.standard_normal((200, 16)).astype(np.float32)
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    idx = np.stack([rng.choice(200, 10, replace=False) for _ in range(12)])
    scores = (rng.random(idx.shape) < 0.4).astype(np.float32)
    mask = np.ones(idx.shape, dtype=bool)
    unit = select_lr(q, docs, idx, scores, mask)
    stretched = docs * rng.uniform(0.1, 20.0, size=(200, 1)).astype(np.float32)  # same directions
    other = select_lr(q, stretched, idx, scores, mask)
    assert other.lr == unit.lr
    for lr, auc in unit.heldout_auc.items():
        assert other.heldout_auc[lr] == pytest.approx(auc, abs=1e-6)
