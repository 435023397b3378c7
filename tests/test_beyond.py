"""benchmarks/beyond.py: settings are chosen on the tuning half only, and reported on the other.

The guard against tuning to the five benchmarks is the seeded split; these tests check that it
holds: what the report half's labels say cannot change any chosen setting.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import benchmark_script


@pytest.fixture(scope="module")
def beyond():
    yield from benchmark_script("beyond")


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
        ap = beyond._ap(by_hand.round_vectors[b - 1], documents, labels, None)
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
