"""Metrics against pytrec_eval, and the documented tie / no-positive policies."""

from __future__ import annotations

import numpy as np
import pytest
import pytrec_eval

from refine_core import cosine_scores, evaluate_rankings

KS = (5, 10, 20, 30, 40, 50)


def _random_case(seed: int, n: int = 12, total: int = 120, graded: bool = True):
    rng = np.random.default_rng(seed)
    scores = rng.permutation(n * total).reshape(n, total).astype(np.float64) / (n * total)  # no ties
    labels = np.where(rng.random((n, total)) < 0.15, rng.integers(1, 4 if graded else 2, size=(n, total)), 0)
    labels[:, 0] = np.maximum(labels[:, 0], 1)  # every query has a positive
    return scores, labels


def _trec(scores: np.ndarray, labels: np.ndarray, pool: np.ndarray | None = None) -> dict[str, dict[str, float]]:
    n, total = scores.shape
    pool = np.ones(scores.shape, bool) if pool is None else pool
    qrels = {f"q{i}": {f"d{j}": int(labels[i, j]) for j in range(total) if pool[i, j]} for i in range(n)}
    run = {f"q{i}": {f"d{j}": float(scores[i, j]) for j in range(total) if pool[i, j]} for i in range(n)}
    measures = {"map", "Rprec", *(f"ndcg_cut_{k}" for k in KS), *(f"recall_{k}" for k in KS), *(f"P_{k}" for k in KS)}
    return pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_pytrec_eval_without_ties(seed: int) -> None:
    scores, labels = _random_case(seed)
    ours = evaluate_rankings(scores, labels, ks=KS).per_query
    ref = _trec(scores, labels)
    for i in range(scores.shape[0]):
        r = ref[f"q{i}"]
        assert ours["ap"][i] == pytest.approx(r["map"], abs=1e-9)
        assert ours["r_precision"][i] == pytest.approx(r["Rprec"], abs=1e-9)
        for k in KS:
            assert ours[f"ndcg@{k}"][i] == pytest.approx(r[f"ndcg_cut_{k}"], abs=1e-9)
            assert ours[f"recall@{k}"][i] == pytest.approx(r[f"recall_{k}"], abs=1e-9)
            assert ours[f"precision@{k}"][i] == pytest.approx(r[f"P_{k}"], abs=1e-9)


def test_per_query_pools_equal_pytrec_eval_on_each_pool() -> None:
    scores, labels = _random_case(5, graded=False)
    rng = np.random.default_rng(5)
    pool = rng.random(scores.shape) < 0.5
    pool[:, 0] = True
    labels_outside = labels.copy()
    labels_outside[~pool] = 1  # labels outside the pool must be ignored
    ours = evaluate_rankings(scores, labels_outside, pool=pool, ks=KS).per_query
    ref = _trec(scores, labels, pool)
    for i in range(scores.shape[0]):
        assert ours["ap"][i] == pytest.approx(ref[f"q{i}"]["map"], abs=1e-9)
        assert ours["ndcg@10"][i] == pytest.approx(ref[f"q{i}"]["ndcg_cut_10"], abs=1e-9)
        assert ours["precision@50"][i] == pytest.approx(ref[f"q{i}"]["P_50"], abs=1e-9)


def test_roc_auc_and_separation_match_direct_definitions() -> None:
    rng = np.random.default_rng(3)
    scores = np.round(rng.random((5, 40)), 1)  # deliberate ties
    labels = (rng.random((5, 40)) < 0.3).astype(int)
    labels[:, 0] = 1
    labels[:, 1] = 0
    res = evaluate_rankings(scores, labels).per_query
    for i in range(5):
        pos, neg = scores[i][labels[i] == 1], scores[i][labels[i] == 0]
        pairs = (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()
        assert res["roc_auc"][i] == pytest.approx(pairs, abs=1e-12)
        pooled = np.sqrt(
            ((pos.size - 1) * pos.var(ddof=1) + (neg.size - 1) * neg.var(ddof=1)) / (pos.size + neg.size - 2)
        )
        assert res["separation"][i] == pytest.approx((pos.mean() - neg.mean()) / pooled, abs=1e-12)


def test_ties_keep_document_order() -> None:
    """Documented policy: equal scores are ranked by document index (stable sort)."""
    scores = np.array([[0.5, 0.5, 0.5, 0.1]])
    first = evaluate_rankings(scores, np.array([[1, 0, 0, 0]]), ks=(1,))
    last = evaluate_rankings(scores, np.array([[0, 0, 1, 0]]), ks=(1,))
    assert first.means["map"] == 1.0
    assert last.means["map"] == pytest.approx(1 / 3)
    # ROC-AUC counts ties as half: positive tied with two negatives, above one.
    assert first.means["roc_auc"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert last.means["roc_auc"] == first.means["roc_auc"]


def test_queries_without_positives_are_excluded_and_counted() -> None:
    scores = np.array([[0.9, 0.1, 0.5], [0.3, 0.2, 0.1]])
    labels = np.array([[1, 0, 0], [0, 0, 0]])
    with pytest.warns(UserWarning, match="1 of 2 queries have no relevant document"):
        res = evaluate_rankings(scores, labels, ks=(1,))
    assert res.n_without_positives == 1
    assert np.isnan(res.per_query["ap"][1]) and np.isnan(res.per_query["precision@1"][1])
    assert res.means["map"] == 1.0


def test_query_without_negatives_has_undefined_auc_only() -> None:
    res = evaluate_rankings(np.array([[0.2, 0.1]]), np.array([[1, 1]]), ks=(1,))
    assert res.means["map"] == 1.0
    assert np.isnan(res.per_query["roc_auc"][0]) and np.isnan(res.per_query["separation"][0])


def test_blocks_do_not_change_results() -> None:
    scores, labels = _random_case(9, n=30)
    a = evaluate_rankings(scores, labels, block_rows=7).per_query
    b = evaluate_rankings(scores, labels, block_rows=100).per_query
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])


def test_renderers() -> None:
    scores, labels = _random_case(1, n=4)
    res = evaluate_rankings(scores, labels)
    table = res.to_polars(query_ids=["a", "b", "c", "d"])
    assert table.shape[0] == 4 and "ap" in table.columns and table["query_id"].to_list() == ["a", "b", "c", "d"]
    md = res.to_markdown()
    assert md.splitlines()[0] == "| map | ndcg@10 | recall@50 | roc_auc |"
    assert f"{res.means['map']:.4f}" in md


def test_cosine_scores() -> None:
    rng = np.random.default_rng(0)
    q, d = rng.normal(size=(3, 5)), rng.normal(size=(7, 5))
    want = (q / np.linalg.norm(q, axis=1, keepdims=True)) @ (d / np.linalg.norm(d, axis=1, keepdims=True)).T
    np.testing.assert_allclose(cosine_scores(q, d, block_rows=2), want, rtol=1e-5)
    with pytest.raises(ValueError, match="documents contains a zero vector at row 1"):
        cosine_scores(q, np.array([[1.0] * 5, [0.0] * 5]))


@pytest.mark.parametrize(
    "args,message",
    [
        ((np.ones(3), np.ones(3)), "scores must be 2-D"),
        ((np.ones((2, 3)), np.ones((2, 4))), "labels must have the shape"),
        ((np.array([[np.nan, 1.0]]), np.array([[1, 0]])), "scores contains NaN"),
        ((np.ones((1, 2)), np.array([[-1, 0]])), "labels must be finite and non-negative"),
    ],
)
def test_bad_inputs(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        evaluate_rankings(*args)


# ---- the measures registry: one name per measure, every spelling derived from it ------------------------
def test_every_measure_has_one_canonical_name_and_each_spelling_leads_back_to_it() -> None:
    from flows.tracking import measure_name, metric_key
    from refine_core.measures import parse_measure, ranking_measures

    measures = ranking_measures((5, 10))
    assert [m.name for m in measures] == [
        "AP", "nDCG@5", "nDCG@10", "R@5", "R@10", "P@5", "P@10", "Rprec", "ROC-AUC", "separation",
    ]  # fmt: skip
    for m in measures:
        for spelling in (m.name, m.key, m.mean_key, m.mlflow_key, m.name.upper()):
            assert parse_measure(spelling) == m, spelling
        assert metric_key(m.mean_key) == m.mlflow_key and measure_name(m.mlflow_key) == m.mean_key
        assert m.definition and (m.cutoff is None) == ("@" not in m.name)
    assert parse_measure("MAP").key == "ap" and parse_measure("precision_at_05").name == "P@5"
    assert [m.mlflow_key for m in measures if m.cutoff == 5] == ["ndcg_at_05", "recall_at_05", "precision_at_05"]
    with pytest.raises(ValueError, match="unknown measure 'mrr'; measures: AP, nDCG@10"):
        parse_measure("mrr")


def test_the_engine_and_the_means_are_keyed_by_the_registry() -> None:
    from refine_core.measures import ranking_measures

    rng = np.random.default_rng(0)
    labels = (rng.random((4, 30)) < 0.3).astype(np.float32)
    labels[:, 0] = 1
    result = evaluate_rankings(rng.random((4, 30)), labels, ks=(3, 7))
    measures = ranking_measures((3, 7))
    assert list(result.per_query) == [m.key for m in measures]
    assert list(result.means) == [m.mean_key for m in measures]
