"""benchmarks/lr_rules.py: the label-free lr rules pick what they say, from judgments only."""

from __future__ import annotations

import importlib

import numpy as np
import pytest


@pytest.fixture(scope="module")
def rules():
    return importlib.import_module("benchmarks.lr_rules")


def test_best_mean_wins_and_ties_go_to_the_smaller_lr(rules) -> None:
    auc = {1e-4: np.array([0.6, 0.7]), 3e-4: np.array([0.7, 0.8]), 1e-3: np.array([0.8, 0.7])}
    assert rules.pick_best(auc) == 3e-4  # 0.75 twice: the smaller lr
    auc[1e-3] = np.array([0.9, 0.8])
    assert rules.pick_best(auc) == 1e-3


def test_one_se_takes_the_smallest_lr_within_one_standard_error_of_the_best(rules) -> None:
    rng = np.random.default_rng(0)
    base = rng.random(40)
    noisy = {1e-4: base, 3e-4: base + 0.002 + 0.05 * rng.standard_normal(40), 1e-3: base + 0.3}
    assert rules.pick_best(noisy) == 1e-3
    assert rules.pick_one_se(noisy) == 1e-3  # a clear gain is taken
    close = {1e-4: base, 3e-4: base + 0.002 + 0.05 * rng.standard_normal(40)}
    assert rules.pick_one_se(close) == 1e-4  # a gain within the noise is not


def test_out_of_fold_auc_uses_only_the_judgments_and_sees_a_consistent_judge(rules) -> None:
    rng = np.random.default_rng(1)
    d = rng.standard_normal((300, 8)).astype(np.float32)
    truth = rng.standard_normal((8, 8)).astype(np.float32)
    q = (truth + 0.5 * rng.standard_normal((8, 8))).astype(np.float32)
    fb = np.argsort(-(q @ d.T), axis=1)[:, :20]
    gold = truth @ d.T
    verdict = (gold > np.quantile(gold, 0.9, axis=1, keepdims=True)).astype(np.float32)
    scores = np.take_along_axis(verdict, fb, axis=1)
    mask = np.ones(fb.shape, bool)
    consistent = rules.out_of_fold_auc(q, d, fb, scores, mask, lr=3e-3)
    shuffled = rules.out_of_fold_auc(q, d, fb, rng.permuted(scores, axis=1), mask, lr=3e-3)
    assert consistent.shape == (8,)
    assert np.nanmean(consistent) > 0.85 and np.nanmean(shuffled) < 0.6
    np.testing.assert_array_equal(consistent, rules.out_of_fold_auc(q, d, fb, scores, mask, lr=3e-3))  # seeded
