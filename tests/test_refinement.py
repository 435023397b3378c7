"""The batched engine against an independent per-query autograd implementation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from refine_core import REFIT, RefineConfig, refine
from refine_core.refinement import PAPER, pull_weights, target_distribution


def reference_refine(
    q: np.ndarray,
    fb: np.ndarray,
    s: np.ndarray,
    valid: np.ndarray,
    *,
    lr: float,
    steps: int,
    optimizer: str,
    score_temperature: float = 1.0,
    similarity_temperature: float = 1.0,
    minmax: bool = False,
    pull: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """One query at a time, torch autograd and torch.optim, float64: the obvious implementation
    (``pull``: minus ``pull`` times the cosine to the centroid of the unit documents weighted by the
    min-max-scaled scores)."""
    out, all_losses = [], []
    for i in range(q.shape[0]):
        keep = valid[i]
        docs = torch.tensor(fb[i][keep], dtype=torch.float64)
        judge = torch.tensor(s[i][keep], dtype=torch.float64)
        if minmax:
            judge = (judge - judge.min()) / (judge.max() - judge.min())
        p = torch.softmax(judge / score_temperature, dim=0)
        raw = torch.tensor(s[i][keep], dtype=torch.float64)
        w = (raw - raw.min()) / (raw.max() - raw.min())
        centroid = (w[:, None] * F.normalize(docs, dim=1)).sum(dim=0)
        z = torch.nn.Parameter(torch.tensor(q[i], dtype=torch.float64))
        opt = torch.optim.Adam([z], lr=lr) if optimizer == "adam" else torch.optim.SGD([z], lr=lr)
        losses = []
        for _ in range(steps):
            opt.zero_grad()
            cos = F.cosine_similarity(z.unsqueeze(0), docs, dim=1)
            if minmax:
                cos = (cos - cos.min()) / (cos.max() - cos.min())
            qd = torch.softmax(cos / similarity_temperature, dim=0)
            loss = (p * torch.log((p + 1e-8) / (qd + 1e-8))).sum()
            if pull:
                loss = loss - pull * F.cosine_similarity(z, centroid, dim=0)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        out.append(z.detach().numpy())
        all_losses.append(losses)
    return np.array(out), np.array(all_losses)


def _inputs(n: int, k: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(n, d)).astype(np.float32),
        rng.normal(size=(n, k, d)).astype(np.float32),
        rng.random((n, k)).astype(np.float32),
    )


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.mark.parametrize("d", [8, 384, 4096])
@pytest.mark.parametrize("optimizer,lr", [("adam", 1e-2), ("adam", 1e-4), ("sgd", 0.5)])
@pytest.mark.parametrize("masked", [False, True])
def test_matches_per_query_autograd(d: int, optimizer: str, lr: float, masked: bool) -> None:
    n, k, steps = 6, 20, 30
    q, fb, s = _inputs(n, k, d, seed=d)
    valid = np.ones((n, k), dtype=bool)
    if masked:
        rng = np.random.default_rng(1)
        valid = rng.random((n, k)) > 0.3
        valid[:, :2] = True
        s = np.where(valid, s, np.nan)  # missing judgments may be NaN
    got = refine(q, fb, s, mask=valid if masked else None, lr=lr, steps=steps, optimizer=optimizer)
    want_vec, want_loss = reference_refine(q, fb, np.nan_to_num(s), valid, lr=lr, steps=steps, optimizer=optimizer)
    # Compare the movement (z - z0): for lr 1e-4 it is tiny next to z itself.
    assert _rel_err(got.vectors - q, want_vec - q) <= 1e-3
    assert _rel_err(got.losses, want_loss) <= 1e-3
    assert got.vectors.dtype == np.float32 and got.vectors.shape == (n, d)
    assert got.losses.shape == (n, steps)


@pytest.mark.parametrize("tc,ts", [(0.5, 2.0), (0.05, 1.0)])
def test_temperatures_match_autograd(tc: float, ts: float) -> None:
    q, fb, s = _inputs(4, 10, 16, seed=3)
    got = refine(q, fb, s, lr=1e-2, steps=25, score_temperature=ts, similarity_temperature=tc)
    want, _ = reference_refine(
        q,
        fb,
        s,
        np.ones(s.shape, bool),
        lr=1e-2,
        steps=25,
        optimizer="adam",
        score_temperature=ts,
        similarity_temperature=tc,
    )
    assert _rel_err(got.vectors - q, want - q) <= 1e-3


def test_refit_minmax_matches_autograd() -> None:
    q, fb, s = _inputs(5, 12, 32, seed=4)
    got = refine(q, fb, s, config=dataclasses.replace(REFIT, steps=40))
    want, want_loss = reference_refine(
        q, fb, s, np.ones(s.shape, bool), lr=REFIT.lr, steps=40, optimizer="adam", score_temperature=2.0, minmax=True
    )
    assert _rel_err(got.vectors - q, want - q) <= 1e-3
    assert _rel_err(got.losses, want_loss) <= 1e-3


def test_one_step_equals_analytic_gradient() -> None:
    """With SGD and one step, z1 = z0 - lr * grad, where grad is written out by hand here."""
    q, fb, s = _inputs(3, 7, 12, seed=5)
    lr = 0.1
    got = refine(q, fb, s, lr=lr, steps=1, optimizer="sgd")
    for i in range(3):
        z = q[i].astype(np.float64)
        f = fb[i].astype(np.float64)
        f = f / np.linalg.norm(f, axis=1, keepdims=True)
        nz = np.linalg.norm(z)
        cos = f @ z / nz
        p = np.exp(s[i]) / np.exp(s[i]).sum()
        qd = np.exp(cos) / np.exp(cos).sum()
        r = p * qd / (qd + 1e-8)
        dl_dcos = qd * r.sum() - r
        grad = (f.T @ dl_dcos - (dl_dcos @ cos) * z / nz) / nz
        np.testing.assert_allclose(got.vectors[i], z - lr * grad, rtol=1e-5, atol=1e-6)


def test_loss_decreases_and_refined_vector_prefers_high_scores() -> None:
    q, fb, s = _inputs(8, 20, 64, seed=6)
    res = refine(q, fb, s, lr=1e-2, steps=100)
    assert (res.losses[:, -1] < res.losses[:, 0]).all()
    unit = fb / np.linalg.norm(fb, axis=2, keepdims=True)
    before = np.einsum("nkd,nd->nk", unit, q / np.linalg.norm(q, axis=1, keepdims=True))
    after = np.einsum("nkd,nd->nk", unit, res.vectors / np.linalg.norm(res.vectors, axis=1, keepdims=True))
    corr_before = [np.corrcoef(before[i], s[i])[0, 1] for i in range(8)]
    corr_after = [np.corrcoef(after[i], s[i])[0, 1] for i in range(8)]
    assert np.mean(corr_after) > np.mean(corr_before) + 0.1


def test_index_feedback_equals_vector_feedback_and_blocks_do_not_matter() -> None:
    rng = np.random.default_rng(7)
    docs = rng.normal(size=(50, 16)).astype(np.float32)
    q = rng.normal(size=(9, 16)).astype(np.float32)
    idx = np.stack([rng.choice(50, size=6, replace=False) for _ in range(9)])
    s = rng.random((9, 6))
    by_vec = refine(q, docs[idx], s, lr=1e-2, steps=20)
    by_idx = refine(q, idx, s, documents=docs, lr=1e-2, steps=20, block_size=2)
    np.testing.assert_allclose(by_idx.vectors, by_vec.vectors, rtol=1e-6, atol=1e-7)


def test_missing_scores_are_excluded_not_zero() -> None:
    """Dropping a document entirely and masking it must give the same result."""
    q, fb, s = _inputs(1, 6, 10, seed=8)
    mask = np.array([[True, True, False, True, True, True]])
    masked = refine(q, fb, s, mask=mask, lr=1e-2, steps=30)
    dropped = refine(q, fb[:, mask[0]], s[:, mask[0]], lr=1e-2, steps=30)
    as_zero = refine(q, fb, np.where(mask, s, 0.0), lr=1e-2, steps=30)
    np.testing.assert_allclose(masked.vectors, dropped.vectors, rtol=1e-6)
    assert not np.allclose(masked.vectors, as_zero.vectors, rtol=1e-6)


def test_queries_with_fewer_than_two_scores_are_skipped() -> None:
    q, fb, s = _inputs(3, 5, 8, seed=9)
    mask = np.ones((3, 5), dtype=bool)
    mask[1] = [True, False, False, False, False]
    res = refine(q, fb, s, mask=mask, lr=1e-2, steps=5)
    assert res.skipped.tolist() == [False, True, False]
    np.testing.assert_array_equal(res.vectors[1], q[1])
    assert np.isnan(res.losses[1]).all() and np.isfinite(res.losses[[0, 2]]).all()


def test_target_distribution_respects_mask_and_temperature() -> None:
    p = target_distribution(np.array([[1.0, 0.0, 5.0]]), np.array([[True, True, False]]), temperature=0.5)
    expected = np.exp([2.0, 0.0]) / np.exp([2.0, 0.0]).sum()
    np.testing.assert_allclose(p[0], [*expected, 0.0], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"queries": np.zeros((2, 4))}, "queries contains a zero vector"),
        ({"queries": np.full((2, 4), np.nan)}, "queries contains NaN"),
        ({"feedback": np.ones((2, 1, 4))}, "at least K=2"),
        ({"feedback": np.ones((3, 5, 4))}, "feedback must have shape"),
        ({"scores": np.ones((2, 4))}, "scores must have shape"),
        ({"scores": np.array([[np.inf] * 5] * 2)}, "scores contains NaN or inf"),
        ({"lr": -1.0}, "lr must be a positive"),
        ({"steps": 0}, "steps must be an integer >= 1"),
        ({"optimizer": "rmsprop"}, "optimizer must be"),
        ({"mask": np.ones((2, 3), bool)}, "mask must have shape"),
        ({"kl_eps": 0.0}, r"kl_eps must be in \(0, 1\)"),
        ({"pull": -0.1}, "pull must be a finite number >= 0, got -0.1"),
        ({"pull": float("nan")}, "pull must be a finite number >= 0, got nan"),
        ({"query_ids": ["only-one"]}, "query_ids has 1 names for 2 queries"),
    ],
)
def test_bad_inputs_name_the_argument(kwargs: dict, message: str) -> None:
    rng = np.random.default_rng(0)
    args = {"queries": rng.normal(size=(2, 4)), "feedback": rng.normal(size=(2, 5, 4)), "scores": rng.random((2, 5))}
    args.update(kwargs)
    queries, feedback, scores = args.pop("queries"), args.pop("feedback"), args.pop("scores")
    with pytest.raises(ValueError, match=message):
        refine(queries, feedback, scores, **args)


def test_pull_weights_are_the_scores_rescaled_per_query_and_zero_where_nothing_separates() -> None:
    scores = np.array([[1.0, 0.0, 1.0, 0.0], [0.2, 0.8, 0.5, 9.0], [0.7, 0.7, 0.7, 0.7]])
    valid = np.array([[True, True, True, True], [True, True, True, False], [True, True, True, True]])
    w = pull_weights(scores, valid)
    np.testing.assert_allclose(w[0], [1, 0, 1, 0])  # binary verdicts: the judged-relevant documents
    np.testing.assert_allclose(w[1], [0, 1, 0.5, 0])  # graded; the missing judgment has no weight
    np.testing.assert_array_equal(w[2], 0)  # all equal: no centroid, no pull


def test_the_pull_moves_the_vector_toward_the_positive_centroid_and_zero_is_the_paper() -> None:
    rng = np.random.default_rng(21)
    q, fb = rng.normal(size=(6, 32)).astype(np.float32), rng.normal(size=(6, 10, 32)).astype(np.float32)
    s = (rng.random((6, 10)) > 0.5).astype(np.float32)
    s[:, 0], s[:, 1] = 1, 0
    unit = fb / np.linalg.norm(fb, axis=2, keepdims=True)
    centroid = (s[:, :, None] * unit).sum(axis=1)

    def cos_to_centroid(v: np.ndarray) -> np.ndarray:
        return (v * centroid).sum(1) / np.linalg.norm(v, axis=1) / np.linalg.norm(centroid, axis=1)

    paper = refine(q, fb, s, lr=3e-3, steps=50)
    np.testing.assert_array_equal(refine(q, fb, s, lr=3e-3, steps=50, pull=0.0).vectors, paper.vectors)
    pulled = refine(q, fb, s, lr=3e-3, steps=50, pull=1.0)
    assert (cos_to_centroid(pulled.vectors) > cos_to_centroid(paper.vectors)).all()
    assert RefineConfig(pull=0.1).as_params()["pull"] == 0.1


def test_zero_feedback_vector_is_rejected() -> None:
    fb = np.ones((1, 3, 4))
    fb[0, 2] = 0
    with pytest.raises(ValueError, match=r"feedback contains a zero vector at index \(0, 2\)"):
        refine(np.ones((1, 4)), fb, np.ones((1, 3)))


def test_config_object_and_keywords_agree() -> None:
    q, fb, s = _inputs(2, 4, 6, seed=10)
    a = refine(q, fb, s, config=RefineConfig(lr=3e-3, steps=7))
    b = refine(q, fb, s, lr=3e-3, steps=7)
    np.testing.assert_array_equal(a.vectors, b.vectors)


def test_each_hyperparameter_keyword_is_a_config_field_with_the_papers_default() -> None:
    """The keywords are RefineConfig's fields (one list, one set of defaults): no keyword means
    PAPER, a misspelt one is named with the fields there are."""
    q, fb, s = _inputs(2, 4, 6, seed=13)
    np.testing.assert_array_equal(refine(q, fb, s).vectors, refine(q, fb, s, config=PAPER).vectors)
    with pytest.raises(TypeError, match=r"unknown hyperparameter\(s\) learning_rate; RefineConfig has lr, steps"):
        refine(q, fb, s, learning_rate=1e-3)


def test_config_and_keywords_together_are_rejected() -> None:
    q, fb, s = _inputs(1, 3, 4, seed=12)
    with pytest.raises(ValueError, match="either as config or as keywords"):
        refine(q, fb, s, steps=40, config=REFIT)


def test_refinement_is_deterministic_across_block_sizes() -> None:
    q, fb, s = _inputs(7, 5, 8, seed=11)
    a = refine(q, fb, s, lr=1e-2, steps=10, block_size=3)
    b = refine(q, fb, s, lr=1e-2, steps=10)
    np.testing.assert_array_equal(a.vectors, b.vectors)
    np.testing.assert_array_equal(a.losses, b.losses)


def test_a_non_finite_result_raises_naming_the_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard after the kernel: a NaN in one query's loss (injected) is an error naming it."""
    import refine_core.refinement as refinement

    real = refinement.refine_kernel

    def poisoned(*args):
        real(*args)
        args[-2][1, 3] = np.nan  # out_loss of the second query in the block

    monkeypatch.setattr(refinement, "refine_kernel", poisoned)
    q, fb, s = _inputs(3, 5, 8, seed=13)
    with pytest.raises(ValueError, match="refinement of query 'q-b' gave a non-finite loss"):
        refine(q, fb, s, steps=5, query_ids=["q-a", "q-b", "q-c"])


def test_the_kernel_matches_the_reference_when_one_similarity_dominates() -> None:
    """The softmax max is seeded from a valid entry (no -inf under fastmath): a feedback set whose
    first entries are masked out still matches autograd."""
    q, fb, s = _inputs(2, 6, 8, seed=14)
    mask = np.ones((2, 6), bool)
    mask[:, :3] = False
    ours = refine(q, fb, s, mask=mask, lr=1e-2, steps=10)
    want_vec, want_loss = reference_refine(q, fb, s, mask, lr=1e-2, steps=10, optimizer="adam")
    assert _rel_err(ours.vectors - q, want_vec - q) <= 1e-3
    assert _rel_err(ours.losses, want_loss) <= 1e-3


# ---- the readable reference in the package: the kernel is held to it, it is held to autograd -----------
REFERENCE_SETTINGS = [
    {"lr": 1e-2, "steps": 30, "optimizer": "adam"},
    {"lr": 1e-4, "steps": 100, "optimizer": "adam"},
    {"lr": 0.5, "steps": 30, "optimizer": "sgd"},
    {"lr": 0.2, "steps": 30, "optimizer": "sgd", "momentum": 0.9},
    {"lr": 5e-3, "steps": 40, "optimizer": "adam", "score_temperature": 2.0, "normalize": "minmax"},
    {"lr": 1e-2, "steps": 25, "optimizer": "adam", "similarity_temperature": 0.05},
    {"lr": 3e-3, "steps": 40, "optimizer": "adam", "pull": 0.1},
    {"lr": 0.5, "steps": 30, "optimizer": "sgd", "pull": 2.0},
    {"lr": 5e-3, "steps": 40, "optimizer": "adam", "score_temperature": 2.0, "normalize": "minmax", "pull": 0.3},
]


@pytest.mark.parametrize("settings", REFERENCE_SETTINGS, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("masked", [False, True])
def test_the_kernel_equals_the_packaged_reference(settings: dict, masked: bool) -> None:
    q, fb, s = _inputs(7, 12, 48, seed=11)
    mask = None
    if masked:
        mask = np.random.default_rng(2).random(s.shape) > 0.3
        mask[:, :2] = True
        mask[0, 1:] = False  # a query with one judgment: skipped by both
    kernel = refine(q, fb, s, mask=mask, **settings)
    reference = refine(q, fb, s, mask=mask, implementation="reference", **settings)
    np.testing.assert_array_equal(kernel.skipped, reference.skipped)
    moved = ~reference.skipped
    assert _rel_err(kernel.vectors[moved] - q[moved], reference.vectors[moved] - q[moved]) <= 1e-4
    assert _rel_err(kernel.losses[moved], reference.losses[moved]) <= 1e-5
    np.testing.assert_array_equal(reference.vectors[~moved], q[~moved])


def test_the_packaged_reference_equals_autograd_in_float64() -> None:
    from refine_core.refinement_reference import refine_one

    q, fb, s = _inputs(3, 9, 16, seed=12)
    for kwargs, minmax, ts, pull in (
        ({"optimizer": "adam", "lr": 1e-2}, False, 1.0, 0.0),
        ({"optimizer": "sgd", "lr": 0.5}, False, 1.0, 0.0),
        ({"optimizer": "adam", "lr": 5e-3}, True, 2.0, 0.0),
        ({"optimizer": "adam", "lr": 1e-2}, False, 1.0, 0.3),
        ({"optimizer": "sgd", "lr": 0.5}, True, 2.0, 2.0),
    ):
        want, want_loss = reference_refine(
            q, fb, s, np.ones(s.shape, bool), steps=20, minmax=minmax, score_temperature=ts, pull=pull, **kwargs
        )
        p = target_distribution(s, np.ones(s.shape, bool), temperature=ts, normalize="minmax" if minmax else "none")
        w = pull_weights(s, np.ones(s.shape, bool))
        for i in range(3):
            z, loss = refine_one(
                q[i],
                fb[i],
                p[i],
                lr=kwargs["lr"],
                steps=20,
                adam=kwargs["optimizer"] == "adam",
                minmax=minmax,
                pull=pull,
                pull_weights=w[i],
            )
            np.testing.assert_allclose(z - q[i], want[i] - q[i], rtol=1e-7, atol=1e-10)
            np.testing.assert_allclose(loss, want_loss[i], rtol=1e-7, atol=1e-12)


def test_the_environment_switch_runs_the_reference(monkeypatch: pytest.MonkeyPatch) -> None:
    from refine_core.refinement_reference import refine_one

    q, fb, s = _inputs(2, 6, 8, seed=13)
    monkeypatch.setenv("REFINE_REFINEMENT", "reference")
    switched = refine(q, fb, s, lr=1e-2, steps=10)
    p = target_distribution(s, np.ones(s.shape, bool))
    z, loss = refine_one(q[1], fb[1], p[1], lr=1e-2, steps=10, adam=True)
    np.testing.assert_array_equal(switched.vectors[1], z.astype(np.float32))
    np.testing.assert_array_equal(switched.losses[1], loss.astype(np.float32))
    monkeypatch.setenv("REFINE_REFINEMENT", "fast")
    with pytest.raises(ValueError, match="REFINE_REFINEMENT must be 'kernel' or 'reference', got 'fast'"):
        refine(q, fb, s)
