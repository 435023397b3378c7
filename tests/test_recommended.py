"""The default refinement (refine_core.recommended): one definition, what it ranks, the same in
every scoring path, and the sparse data it was chosen to be safe on."""

from __future__ import annotations

import numpy as np
import pytest

from refine_core.evaluation import (
    finish_shards,
    method_rankings,
    score_methods,
    score_shard,
    shard_bounds,
    shard_inputs,
)
from refine_core.feedback import select_feedback
from refine_core.metrics import cosine_scores, evaluate_rankings
from refine_core.qrels import Qrels
from refine_core.recommended import (
    LIFT,
    RECOMMENDED,
    Recommended,
    judged_positive_idx,
    lift_judged_positives,
    recommended_vectors,
)
from refine_core.refinement import refine


def _data(seed: int = 0, n: int = 12, n_docs: int = 300, d: int = 16):
    rng = np.random.default_rng(seed)
    queries = rng.normal(size=(n, d)).astype(np.float32)
    docs = rng.normal(size=(n_docs, d)).astype(np.float32)
    labels = np.zeros((n, n_docs), dtype=np.float32)
    for i in range(n):  # a few relevant documents near each query
        near = np.argsort(-cosine_scores(queries[i : i + 1], docs)[0])[rng.integers(0, 40, size=3)]
        labels[i, near] = 1.0
    feedback = select_feedback(cosine_scores(queries, docs), k=10)
    return queries, docs, labels, feedback


def test_recommended_vectors_refine_from_the_query_only_with_a_relevant_verdict() -> None:
    queries, docs, labels, feedback = _data()
    scores = np.take_along_axis(labels, feedback, axis=1)
    scores[:3] = 0.0  # three queries whose judge found nothing relevant
    scores[3:7, :5] = 1.0  # four whose judge called half of them relevant
    mask = np.ones(feedback.shape, dtype=bool)
    got = recommended_vectors(queries, docs, feedback, scores, mask)
    want = refine(queries, feedback, scores, mask=mask, documents=docs, lr=RECOMMENDED.lr).vectors
    share = (scores >= 0.5).sum(axis=1) / scores.shape[1]
    found = share >= RECOMMENDED.min_share  # enough relevant verdicts to move
    assert not found[:3].any() and found.sum() >= 3 and (~found[3:]).any()
    np.testing.assert_array_equal(got[~found], queries[~found])  # no relevant verdict: no move
    np.testing.assert_allclose(got[found], want[found], rtol=1e-6, atol=1e-7)
    assert not np.allclose(got[found], queries[found])
    # from the Rocchio vector when asked, and more than one positive required when asked
    rocchio = recommended_vectors(queries, docs, feedback, scores, mask, Recommended(start="rocchio", lr=3e-4))
    assert not np.allclose(rocchio[found], got[found])
    strict = recommended_vectors(queries, docs, feedback, scores, mask, Recommended(min_positives=50))
    np.testing.assert_array_equal(strict, queries)
    # without the share gate, one relevant verdict is enough
    loose = recommended_vectors(queries, docs, feedback, scores, mask, Recommended(min_share=0.0))
    one = (scores >= 0.5).any(axis=1)
    assert not np.allclose(loose[one & ~found], queries[one & ~found])


def test_the_judges_relevant_verdicts_rank_first_in_the_refined_order() -> None:
    scores = np.array([[0.9, 0.1, 0.5, 0.3, -np.inf]], dtype=np.float32)
    positive = judged_positive_idx(np.array([[3, 1, 4]]), np.array([[1.0, 0.0, 1.0]]), np.ones((1, 3), bool))
    assert positive.tolist() == [[3, -1, 4]]
    lifted = lift_judged_positives(scores, positive)
    assert np.argsort(-lifted[0], kind="stable").tolist()[:2] == [3, 0]  # 3 first; 4 is outside the pool
    assert lifted[0, 3] == pytest.approx(0.3 + LIFT) and lifted[0, 4] == -np.inf
    # a block of documents 2..4 lifts only the ones it holds
    block = lift_judged_positives(scores[:, 2:], positive, offset=2)
    assert block[0].tolist() == pytest.approx([0.5, 0.3 + LIFT, -np.inf])
    # in the original ranking's order: the lifted value is the original score's
    original = np.array([[0.1, 0.2, 0.3, 0.8, 0.0]], dtype=np.float32)
    assert lift_judged_positives(scores, positive, original=original)[0, 3] == pytest.approx(0.8 + LIFT)


def test_recommended_is_rerank_only_where_nothing_was_called_relevant_and_the_same_in_every_scoring_path() -> None:
    queries, docs, labels, feedback = _data(seed=1, n=20, n_docs=400)
    scores = np.take_along_axis(labels, feedback, axis=1)
    scores[::2] = 0.0  # half the queries: no relevant verdict
    scores[1::4, :5] = 1.0  # a quarter: half of the judged called relevant (moves)
    mask = np.ones(feedback.shape, dtype=bool)
    extra = {"recommended": recommended_vectors(queries, docs, feedback, scores, mask)}
    moved = (scores >= 0.5).sum(axis=1) >= RECOMMENDED.min_share * scores.shape[1]
    assert moved.sum() >= 5 and (~moved).sum() >= 10
    inputs = {
        "feedback_idx": feedback,
        "judge_scores": scores,
        "judge_mask": mask,
        "round_vectors": [queries],
        "extra_vectors": extra,
    }
    rankings = method_rankings(queries, docs, **inputs)
    ap = {m: evaluate_rankings(r, labels, ks=(10,)).per_query["ap"] for m, r in rankings.items()}
    # too few relevant verdicts: rerank-only's ranking, exactly
    np.testing.assert_allclose(ap["recommended"][~moved], ap["rerank_only"][~moved], atol=1e-12)
    assert not np.allclose(ap["recommended"][moved], ap["rerank_only"][moved])
    for i in range(1, 20, 2):  # judged positives first, in the original order (rerank-only's)
        found = feedback[i][scores[i] >= 0.5]
        top = np.argsort(-rankings["recommended"][i], kind="stable")[: found.size]
        assert top.tolist() == np.argsort(-rankings["rerank_only"][i], kind="stable")[: found.size].tolist()
    qrels = Qrels.from_dense(labels)
    metrics, tests = score_methods(queries, docs, qrels, **inputs)
    assert metrics["recommended"].means["map"] == pytest.approx(float(np.mean(ap["recommended"])), abs=1e-12)
    assert "recommended" in tests
    # the corpus in shards (the platform's distributed path) gives the same numbers
    prepared = shard_inputs(queries, docs, qrels, **inputs)
    shards = [score_shard(prepared, docs[lo:hi], lo, qrels) for lo, hi in shard_bounds(docs.shape[0], 130)]
    sharded, _, _ = finish_shards(prepared, shards, qrels)
    for name in ("map", "ndcg@10", "recall@50"):
        assert sharded["recommended"].means[name] == pytest.approx(metrics["recommended"].means[name], abs=1e-9)


def test_one_definition_for_the_commands_and_the_sweep() -> None:
    from corpus import RECOMMENDED_LR, RECOMMENDED_START
    from evaluations.config import SweepConfig
    from flows.cell import cell_params
    from flows.corpus_cli import refinement_settings

    assert RECOMMENDED_START == RECOMMENDED.start
    # the commands' lr: the default's with --keep-verdicts, the paper's 1e-4 from the query without
    assert refinement_settings(RECOMMENDED.start, None, 0.0, 1.5, 0.5, True)[0].lr == RECOMMENDED.lr
    assert refinement_settings("query", None, 0.0, 1.5, 0.5, False)[0].lr == RECOMMENDED_LR["query"] == 1e-4
    assert refinement_settings("rocchio", None, 0.0, 1.5, 0.5, True)[0].lr == RECOMMENDED_LR["rocchio"]
    config = SweepConfig.model_validate({"benchmarks": [{"name": "clinc150"}]})
    assert "recommended" in config.methods
    cell = config.cells()[0]

    class Bench:
        name, hash = "clinc150", "h"
        counts = {"version": "1", "queries": 1, "documents": 1, "subset": {}}

    params = cell_params(cell, Bench())  # type: ignore[arg-type]
    assert params["recommended.lr"] == RECOMMENDED.lr and params["recommended.start"] == RECOMMENDED.start
    assert params["recommended.min_positives"] == 1 and params["recommended.verdicts_first"] is True
    assert params["recommended.min_share"] == 0.35


def test_the_commands_warn_when_the_verdicts_look_like_the_case_where_refinement_hurts() -> None:
    from corpus.query import Refinement

    def refinement(scores: list[float], start: str = "query", min_share: float = 0.35) -> Refinement:
        v = np.ones(4, dtype=np.float32)
        return Refinement(
            query="q",
            original=v,
            refined=v,
            judged_idx=np.arange(len(scores)),
            judged_scores=np.array(scores, dtype=np.float32),
            settings={"start": start, "min_share": min_share},
        )

    many = refinement([1.0] * 8 + [0.0] * 12)
    assert many.warnings() == []  # many relevant verdicts: nothing stands out
    spread = refinement([0.0] * 12 + [1.0] + [0.0] * 4 + [1.0] + [0.0] * 2)
    (warning,) = spread.warnings()
    assert "only 2 of 20" in warning and "original ranks 13, 18" in warning
    assert "was not moved (fewer than 35%" in warning
    assert "the default would have kept it" in refinement(list(spread.judged_scores), min_share=0.0).warnings()[0]
    assert "--start rocchio moves it far" in refinement(list(spread.judged_scores), "rocchio").warnings()[0]
    assert "none of the 20 judged documents relevant" in refinement([0.0] * 20).warnings()[0]
    assert refinement([1.0] + [0.0] * 19).warnings() == []  # one relevant verdict at the top: the usual shape
    assert "no judgment" in refinement([np.nan] * 5).warnings()[0]


@pytest.fixture
def safe():
    import benchmarks.safe_default

    return benchmarks.safe_default


def test_the_safe_default_benchmark_cross_fits_the_choice_and_counts_losses(safe) -> None:
    ROCCHIO_GRID, halves = safe.ROCCHIO_GRID, safe.halves
    n = 40
    a, b = halves(n)
    ap = {
        "baseline": np.full(n, 0.2),
        "rerank_only": np.full(n, 0.3),
        "recommended": np.full(n, 0.35),
        "rocchio_kl": np.where(np.isin(np.arange(n), a), 0.5, 0.1),  # good on one half only
        "rocchio_grid": {p: np.full(n, 0.25 + 0.01 * i) for i, p in enumerate(ROCCHIO_GRID)},
    }
    crossed = safe.crossfit(ap)
    # chosen on half a (Rocchio → KL wins there), reported on b where it is bad, and the other way round
    np.testing.assert_allclose(crossed["either"][b], 0.1)
    np.testing.assert_allclose(crossed["either"][a], 0.35)
    np.testing.assert_allclose(crossed["rocchio_tuned"], 0.25 + 0.01 * (len(ROCCHIO_GRID) - 1))
    tests = safe.tests_of(crossed)
    assert tests["recommended vs rerank_only"]["delta"] == pytest.approx(0.05)
    assert tests["either vs rerank_only"]["pvalue_loss"] < 0.05  # the loss on half b is seen
    assert safe.judge_rates("asymmetric", 0.8) == pytest.approx((0.3, 0.1))
    assert safe.judge_label("asymmetric", 0.8) == "0.8 asym (0.3/0.1)"
    # section 10's prose counts what the table holds
    cell = {"queries": n, "relevant_per_query": 1.0, "map": {m: float(np.mean(v)) for m, v in crossed.items()}}
    cell["tests"] = tests
    result = {"toy": {"oracle": dict(cell, relevant_per_query=5.0)}, "toy-sparse": {"0.8 sym": cell}}
    from benchmarks.beyond import adjust_tests

    adjust_tests([c for per in result.values() for c in per.values()])
    text = "\n".join(safe.render_safe(result))
    assert text.startswith(safe.SECTION) and "| toy-sparse | 1.0 | 0.8 sym |" in text
    assert "significantly below tuned Rocchio in 0 of 1 dense cells" in text


def test_the_commands_defaults_are_the_recommended_settings() -> None:
    import typer

    from flows.cli import app

    group = typer.main.get_command(app)
    for name in ("search", "classify", "evaluate-classification"):
        params = {p.name: p for p in group.commands[name].params}  # type: ignore[attr-defined]
        assert params["start"].default == RECOMMENDED.start, name
        assert params["keep_verdicts"].default is RECOMMENDED.verdicts_first, name
        assert params["lr"].default is None  # the start's lr: RECOMMENDED_LR[start], RECOMMENDED.lr from the query
