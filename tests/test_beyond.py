"""benchmarks/beyond.py: settings are chosen on the tuning half only, and reported on the other.

The guard against tuning to the five benchmarks is the seeded split; these tests check that it
holds: what the report half's labels say cannot change any chosen setting.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest


@pytest.fixture(scope="module")
def beyond():
    return importlib.import_module("benchmarks.beyond")


def test_the_split_is_seeded_disjoint_and_complete(beyond) -> None:
    tune, report = beyond.halves(11)
    again, _ = beyond.halves(11)
    np.testing.assert_array_equal(tune, again)
    assert tune.size == 5 and report.size == 6
    assert sorted(np.concatenate([tune, report]).tolist()) == list(range(11))
    other, _ = beyond.halves(11, seed=1)
    assert not np.array_equal(tune, other)


def test_a_setting_is_chosen_by_the_tuning_half_alone(beyond) -> None:
    tune, report = beyond.halves(10)
    good_on_tune = np.zeros(10)
    good_on_tune[tune] = 0.9
    good_on_tune[report] = 0.1
    good_on_report = 1.0 - good_on_tune
    runs = {"a": {1: good_on_report}, "b": {1: good_on_tune}, "c": {1: good_on_tune.copy()}}
    assert beyond.choose(runs, tune) == {1: "b"}  # the report half would pick "a"; ties go to the first


def _toy(seed: int = 0, n: int = 12, docs: int = 300, d: int = 16):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d))
    topic = rng.integers(0, 4, size=docs)
    documents = (centres[topic] + 0.8 * rng.normal(size=(docs, d))).astype(np.float32)
    documents /= np.linalg.norm(documents, axis=1, keepdims=True)
    query_topic = np.arange(n) % 4
    queries = (centres[query_topic] + 1.5 * rng.normal(size=(n, d))).astype(np.float32)
    labels = (topic[None, :] == query_topic[:, None]).astype(np.float32)

    def judge(rows: np.ndarray, idx: np.ndarray):
        scores = np.take_along_axis(labels[rows], np.maximum(idx, 0), axis=1)
        return scores.astype(np.float32), idx >= 0

    return queries, documents, labels, judge


def test_report_half_labels_cannot_move_a_chosen_setting(beyond) -> None:
    queries, documents, labels, judge = _toy()
    result = beyond.run_dataset(queries, documents, labels, None, judge)
    assert result["tune"] + result["report"] == 12
    assert set(result["map"]) == {
        "baseline",
        "rerank_only",
        "rocchio_smart",
        "rocchio_tuned",
        "refined_paper",
        "refined_tuned",
        "rocchio_kl",
        "pull",
        "rocchio_kl_pull",
    }
    assert set(result["map"]["rocchio_kl"]) == {1, 2, 3} and set(result["map"]["rerank_only"]) == {1}
    assert set(result["map"]["pull"]) == {1, 2, 3}
    assert all(tuple(c.values()) in beyond.PULL_GRID for c in result["settings"]["pull"].values())
    assert {t.split(" vs ")[0] for t in result["tests"]} == {"rocchio_kl", "pull", "rocchio_kl_pull"}
    for b, chosen in result["settings"]["rocchio_kl"].items():
        assert chosen["lr"] in beyond.KL_LR_GRID
        # the KL refinement starts from the Rocchio weights chosen at the same budget
        assert (chosen["beta"], chosen["gamma"]) == tuple(result["settings"]["rocchio_tuned"][b].values())
    for b, chosen in result["settings"]["rocchio_kl_pull"].items():
        assert (chosen["lr"], chosen["pull"]) in beyond.PULL_GRID
        assert (chosen["beta"], chosen["gamma"]) == tuple(result["settings"]["rocchio_tuned"][b].values())
        # the number is that of the pull's objective run from that Rocchio vector, by hand
        by_hand = beyond.rocchio_rounds(
            queries,
            documents,
            judge,
            rounds=beyond.ROUNDS,
            k=beyond.K,
            params=beyond.RocchioParams(beta=chosen["beta"], gamma=chosen["gamma"]),
            then_refine=beyond.RefineConfig(lr=chosen["lr"], pull=chosen["pull"]),
        )
        tune, _ = beyond.halves(12)
        ap = beyond.per_query_ap(by_hand.round_vectors[b - 1], documents, labels, None)
        assert result["map"]["rocchio_kl_pull"][b]["tune"] == pytest.approx(beyond._mean(ap, tune), abs=1e-12)
    # scramble the report half's labels (the judge still sees the true ones): every setting and
    # every tuning-half number stays, the report half's numbers move
    _, report = beyond.halves(12)
    scrambled = labels.copy()
    scrambled[report] = labels[report][:, ::-1]
    again = beyond.run_dataset(queries, documents, scrambled, None, judge)
    assert again["settings"] == result["settings"]
    for method, per in result["map"].items():
        for b, values in per.items():
            assert again["map"][method][b]["tune"] == values["tune"]
    for method in beyond.NEW_METHODS:
        assert again["map"][method][1]["report"] != result["map"][method][1]["report"], method
    for test in result["tests"].values():
        assert test["wins"] + test["ties"] + test["losses"] == result["report"]


def test_cross_fitting_reports_every_query_under_settings_from_the_other_half(beyond) -> None:
    queries, documents, labels, judge = _toy(seed=1)
    result = beyond.run_dataset(queries, documents, labels, None, judge)
    crossfit = result["crossfit"]
    for test in crossfit["tests"].values():
        assert test["wins"] + test["ties"] + test["losses"] == 12
    # the report half's share of a cross-fitted mean is the single split's report-half mean
    tune, report = beyond.halves(12)
    for method, per in crossfit["map"].items():
        for b, value in per.items():
            shares = result["map"][method][b]
            if method in ("baseline", "rerank_only"):
                assert value == pytest.approx((shares["tune"] * tune.size + shares["report"] * report.size) / 12)
    # tuned Rocchio's cross-fitted MAP, by hand: report-half queries under the weights chosen on the
    # tuning half, tuning-half queries under those chosen on the report half
    for b in (1, 2, 3):
        ap = {}
        for rows, chosen in ((report, result["settings"]), (tune, crossfit["settings_on_report_half"])):
            params = beyond.RocchioParams(**chosen["rocchio_tuned"][b])
            run = beyond.rocchio_rounds(queries, documents, judge, rounds=3, k=beyond.K, params=params)
            ap.update(zip(rows.tolist(), beyond.per_query_ap(run.round_vectors[b - 1], documents, labels, None)[rows]))
        assert crossfit["map"]["rocchio_tuned"][b] == pytest.approx(np.mean(list(ap.values())), abs=1e-12)
    # the settings for the tuning half's queries are chosen on the report half alone: scrambling the
    # tuning half's labels leaves them
    scrambled = labels.copy()
    scrambled[tune] = labels[tune][:, ::-1]
    again = beyond.run_dataset(queries, documents, scrambled, None, judge)
    assert again["crossfit"]["settings_on_report_half"] == crossfit["settings_on_report_half"]
    assert again["crossfit"]["map"] != crossfit["map"]


def test_the_goal_is_counted_from_the_tests(beyond) -> None:
    def test(delta: float, p: float, p_loss: float = 1.0) -> dict:
        return {"delta": delta, "p_bh": p, "p_loss_bh": p_loss, "wins": 1, "ties": 0, "losses": 0}

    tests = {}
    for method in beyond.NEW_METHODS:
        tests[f"{method} vs rerank_only @1"] = test(0.2, 0.001)
        tests[f"{method} vs rocchio_tuned @1"] = test(0.01, 0.01)
        tests[f"{method} vs rocchio_tuned @2"] = test(-0.02, 0.9, 0.01)
        tests[f"{method} vs rocchio_tuned @3"] = test(0.0, 0.5)
    result = {"toy": {"1.0": {"tests": tests, "crossfit": {"tests": tests}}}}
    summary = beyond.goal_summary(result)
    assert summary["rocchio_kl"] == {
        "comparisons": 3,
        "at_or_above": 2,
        "significant_gains": 1,
        "significant_losses": 1,
        "largest_loss": -0.02,
        "rerank_comparisons": 1,
        "above_rerank": 1,
    }


def test_a_combined_method_keeps_its_own_name_in_the_tables(beyond) -> None:
    # "pull" inside "rocchio_kl_pull" once became "Rocchio → KL + refined + pull" in docs/results.md
    assert beyond._test_label("rocchio_kl_pull vs rocchio_tuned @2") == "Rocchio → KL + pull vs tuned Rocchio at 2"
    assert beyond._test_label("pull vs rerank_only @1") == "refined + pull vs rerank-only at 1"
