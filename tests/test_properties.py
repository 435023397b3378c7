"""Property-based tests (hypothesis) for the engine and the metrics over random shapes and values."""

from __future__ import annotations

import warnings

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from refine_core import evaluate_rankings, refine, rerank_only_scores, select_feedback

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
finite = st.floats(min_value=-10, max_value=10, allow_nan=False, allow_infinity=False, width=32)


@st.composite
def refine_inputs(draw):
    n = draw(st.integers(1, 5))
    k = draw(st.integers(2, 8))
    d = draw(st.integers(1, 12))
    q = draw(arrays(np.float32, (n, d), elements=finite))
    fb = draw(arrays(np.float32, (n, k, d), elements=finite))
    s = draw(arrays(np.float32, (n, k), elements=st.floats(0, 1, width=32)))
    mask = draw(arrays(np.bool_, (n, k)))
    return q, fb, s, mask


@SETTINGS
@given(refine_inputs(), st.sampled_from(["adam", "sgd"]), st.sampled_from(["none", "minmax"]))
def test_refine_outputs_are_finite_or_a_clear_error(inputs, optimizer: str, normalize: str) -> None:
    q, fb, s, mask = inputs
    try:
        res = refine(q, fb, s, mask=mask, lr=1e-2, steps=5, optimizer=optimizer, normalize=normalize)
    except ValueError as exc:
        assert "zero vector" in str(exc)  # the only way valid-shaped finite input can be rejected
        return
    assert res.vectors.shape == q.shape and res.vectors.dtype == np.float32
    assert np.isfinite(res.vectors).all()
    skipped = mask.sum(axis=1) < 2
    np.testing.assert_array_equal(res.skipped, skipped)
    np.testing.assert_array_equal(res.vectors[skipped], q[skipped])
    assert np.isfinite(res.losses[~skipped]).all() and (res.losses[~skipped] >= -1e-6).all()  # KL >= 0


@st.composite
def rankings(draw):
    n = draw(st.integers(1, 4))
    total = draw(st.integers(2, 40))
    scores = draw(arrays(np.float64, (n, total), elements=st.floats(-1, 1, allow_nan=False)))
    labels = draw(arrays(np.int64, (n, total), elements=st.integers(0, 3)))
    pool = draw(arrays(np.bool_, (n, total)))
    return scores, labels, pool


@SETTINGS
@given(rankings())
def test_metrics_are_bounded_and_consistent(data) -> None:
    scores, labels, pool = data
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random labels: the "no positives" warning is expected
        res = evaluate_rankings(scores, labels, pool=pool, ks=(1, 5, 10))
    for name, values in res.per_query.items():
        defined = values[np.isfinite(values)]
        if name == "separation":
            continue
        assert ((defined >= -1e-12) & (defined <= 1 + 1e-12)).all(), name
    has_pos = ((labels > 0) & pool).any(axis=1)
    assert res.n_without_positives == int((~has_pos).sum())
    assert np.isnan(res.per_query["ap"][~has_pos]).all() and np.isfinite(res.per_query["ap"][has_pos]).all()
    # ranking every positive first gives AP = 1 and ROC-AUC = 1 (where defined)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        perfect = evaluate_rankings((labels > 0).astype(float), labels, pool=pool, ks=(1,))
    assert np.allclose(perfect.per_query["ap"][has_pos], 1.0)
    auc = perfect.per_query["roc_auc"]
    assert np.allclose(auc[np.isfinite(auc)], 1.0)


@SETTINGS
@given(st.integers(1, 5), st.integers(3, 30), st.integers(1, 10), st.integers(0, 2**32 - 1))
def test_rerank_only_only_permutes_the_judged_block(n: int, total: int, k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    base = rng.random((n, total))
    k = min(k, total)
    idx = select_feedback(base, k=k)
    judge = rng.random((n, k))
    new = rerank_only_scores(base, idx, judge)
    for i in range(n):
        before = np.argsort(-base[i], kind="stable")
        after = np.argsort(-new[i], kind="stable")
        assert set(after[:k]) == set(before[:k])
        np.testing.assert_array_equal(after[k:], before[k:])
