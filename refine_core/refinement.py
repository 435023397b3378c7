"""Batched test-time refinement of query vectors from judge feedback.

For each query the target distribution over its K judged documents is

    p = softmax(norm(s) / T_s)

and the model distribution is

    q(z) = softmax(norm(cos(z, d_k)) / T_c)

where ``norm`` is the identity (paper) or a min-max rescaling to [0, 1] (ReFIT mode).
Only the query vector ``z`` moves; it minimises

    KL(p || q) = sum_k p_k * log((p_k + eps) / (q_k + eps)),   eps = 1e-8

with Adam (paper: lr 1e-4, 100 steps) or plain SGD, starting from the original query vector.
Judgments that are missing (a failed LLM call) are removed from both softmaxes.

With ``pull = lambda > 0`` (not in the paper; 0 by default) the objective gains a pull toward the
judged-positive centroid:

    L(z) = KL(p || q(z)) - lambda * cos(z, c),    c = sum_k w_k d_k / |d_k|

where ``w`` is each query's valid judge scores rescaled to [0, 1] (min-max; binary verdicts give
the centroid of the documents judged relevant, graded scores a graded one; a query whose scores
are all equal gets no pull).

The gradient is written out analytically and the whole optimisation of one query runs in a
compiled kernel (``refine_core._kernels``) whose working set (K x d feedback, a few d-vectors)
stays in the CPU cache; queries run in parallel over the cores. Each query has its own Adam
state, so the result is identical to refining the queries one by one. Queries are processed
in blocks so that memory is bounded by the block, not by the number of queries.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np

from refine_core._validation import (
    as_float_array,
    as_mask,
    check_no_zero_rows,
    check_positive,
    check_positive_int,
)

Optimizer = Literal["adam", "sgd"]
Normalization = Literal["none", "minmax"]
Implementation = Literal["kernel", "reference"]
IMPLEMENTATION_ENV = "REFINE_REFINEMENT"


def chosen_implementation(implementation: str | None = None) -> Implementation:
    """``implementation``, or ``REFINE_REFINEMENT`` from the environment, or ``"kernel"``."""
    chosen = implementation or os.environ.get(IMPLEMENTATION_ENV, "").strip() or "kernel"
    if chosen not in ("kernel", "reference"):
        source = "implementation" if implementation else IMPLEMENTATION_ENV
        raise ValueError(f"{source} must be 'kernel' or 'reference', got {chosen!r}")
    return chosen  # type: ignore[return-value]


@dataclass(frozen=True)
class RefineConfig:
    """Hyperparameters of the refinement objective and optimiser.

    The defaults are the paper's main setup. ``REFIT`` holds the ReFIT-style preset
    (cross-encoder judge: min-max normalisation, judge temperature 2, lr 0.005).
    """

    lr: float = 1e-4
    steps: int = 100
    optimizer: Optimizer = "adam"
    score_temperature: float = 1.0
    similarity_temperature: float = 1.0
    normalize: Normalization = "none"
    kl_eps: float = 1e-8
    betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    momentum: float = 0.0
    pull: float = 0.0

    def __post_init__(self) -> None:
        check_positive(self.lr, "lr")
        check_positive_int(self.steps, "steps")
        if self.optimizer not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {self.optimizer!r}")
        if self.normalize not in ("none", "minmax"):
            raise ValueError(f"normalize must be 'none' or 'minmax', got {self.normalize!r}")
        check_positive(self.score_temperature, "score_temperature")
        check_positive(self.similarity_temperature, "similarity_temperature")
        if not (0 < self.kl_eps < 1):
            raise ValueError(f"kl_eps must be in (0, 1): log(0) makes the KL loss NaN at 0; got {self.kl_eps!r}")
        b1, b2 = self.betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"betas must both be in [0, 1), got {self.betas!r}")
        check_positive(self.adam_eps, "adam_eps")
        if not (0 <= self.momentum < 1):
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum!r}")
        if not (isinstance(self.pull, (int, float)) and math.isfinite(self.pull) and self.pull >= 0):
            raise ValueError(f"pull must be a finite number >= 0, got {self.pull!r}")

    def as_params(self) -> dict[str, object]:
        """Flat, loggable view of the configuration."""
        params = asdict(self)
        params["betas"] = f"{self.betas[0]},{self.betas[1]}"
        return params


PAPER = RefineConfig()
REFIT = RefineConfig(lr=0.005, score_temperature=2.0, normalize="minmax")


@dataclass(frozen=True)
class RefineResult:
    """Output of :func:`refine`.

    Attributes:
        vectors: refined query vectors, ``(n, d)`` float32 (same scale as the input;
            cosine similarity ignores the norm anyway).
        losses: KL loss before each optimiser step, ``(n, steps)`` float32; NaN rows for
            skipped queries.
        skipped: ``(n,)`` bool, queries with fewer than two valid judge scores. They keep
            their original vector.
        config: the hyperparameters used.
    """

    vectors: np.ndarray
    losses: np.ndarray
    skipped: np.ndarray
    config: RefineConfig = field(default_factory=RefineConfig)


def target_distribution(
    scores: np.ndarray,
    valid: np.ndarray,
    *,
    temperature: float = 1.0,
    normalize: Normalization = "none",
) -> np.ndarray:
    """Teacher distribution ``softmax(norm(s) / T)`` over the valid entries of each row.

    Args:
        scores: judge scores, ``(n, K)``.
        valid: ``(n, K)`` bool, False where a judgment is missing.
        temperature: divides the (normalised) scores before the softmax.
        normalize: ``"minmax"`` rescales each row's valid scores to [0, 1] first
            (a row whose valid scores are all equal becomes uniform).

    Returns:
        ``(n, K)`` float64 array whose valid entries sum to one per row (zero elsewhere).
    """
    s = np.where(valid, np.asarray(scores, dtype=np.float64), 0.0)
    if normalize == "minmax":
        lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
        hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
        span = np.maximum(hi - lo, 1e-12)
        s = np.where(valid, (s - lo) / span, 0.0)
    logits = np.where(valid, s / temperature, -np.inf)
    top = np.max(logits, axis=1, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    e = np.where(valid, np.exp(logits - top), 0.0)
    total = e.sum(axis=1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


def pull_weights(scores: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Weights ``w`` of the positive centroid of the ``pull`` term: each row's valid scores
    rescaled to [0, 1] (min-max), zero where a judgment is missing and for a row whose valid
    scores are all equal. ``(n, K)`` float64."""
    s = np.where(valid, np.asarray(scores, dtype=np.float64), 0.0)
    lo = np.where(valid, s, np.inf).min(axis=1, keepdims=True)
    hi = np.where(valid, s, -np.inf).max(axis=1, keepdims=True)
    span = hi - lo
    ok = valid & np.isfinite(span) & (span > 0)
    return np.where(ok, (s - np.where(np.isfinite(lo), lo, 0.0)) / np.where(ok, span, 1.0), 0.0)


def _settings(config: RefineConfig | None, hyperparameters: dict[str, Any]) -> RefineConfig:
    """``config``, or the paper's settings with ``hyperparameters`` (RefineConfig fields) changed."""
    unknown = sorted(set(hyperparameters) - set(RefineConfig.__dataclass_fields__))
    if unknown:
        raise TypeError(
            f"refine() got unknown hyperparameter(s) {', '.join(unknown)}; "
            f"RefineConfig has {', '.join(RefineConfig.__dataclass_fields__)}"
        )
    if config is not None and hyperparameters:
        raise ValueError("pass hyperparameters either as config or as keywords, not both")
    if "betas" in hyperparameters:
        hyperparameters = {**hyperparameters, "betas": tuple(hyperparameters["betas"])}
    return config if config is not None else replace(PAPER, **hyperparameters)


def _feedback_documents(
    feedback: np.ndarray, documents: np.ndarray | None, n: int, d: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """The document matrix the kernel reads, each query's rows in it ``(n, K)`` and the name errors
    use: ``documents`` with ``feedback`` as indices, or the ``(n, K, d)`` tensor viewed as one."""
    fb_array = np.asarray(feedback)
    if documents is not None:
        if not np.issubdtype(fb_array.dtype, np.integer):
            raise ValueError("feedback must hold integer document indices when documents is given")
        docs = as_float_array(documents, "documents", ndim=2)
        if fb_array.ndim != 2 or fb_array.shape[0] != n:
            raise ValueError(f"feedback indices must have shape (n, K) with n={n}, got {fb_array.shape}")
        if docs.shape[1] != d:
            raise ValueError(f"documents must have dimension {d} like queries, got {docs.shape[1]}")
        if fb_array.size and (fb_array.min() < 0 or fb_array.max() >= docs.shape[0]):
            raise ValueError(
                f"feedback indices must lie in [0, {docs.shape[0]}), got range [{fb_array.min()}, {fb_array.max()}]"
            )
        doc_idx = fb_array.astype(np.int64)
        name = "documents (selected as feedback)"
    else:
        fb_array = as_float_array(fb_array, "feedback", ndim=3)
        if fb_array.shape[0] != n or fb_array.shape[2] != d:
            raise ValueError(f"feedback must have shape (n, K, d) = ({n}, K, {d}), got {fb_array.shape}")
        k = fb_array.shape[1]
        # View the tensor as a document matrix with one row per (query, slot): no copy.
        docs = np.ascontiguousarray(fb_array).reshape(n * k, d)
        doc_idx = np.arange(n * k, dtype=np.int64).reshape(n, k)
        name = "feedback"
    if doc_idx.shape[1] < 2:
        raise ValueError(f"feedback must hold at least K=2 documents per query, got K={doc_idx.shape[1]}")
    return docs, doc_idx, name


def _checked_scores(scores: np.ndarray, mask: np.ndarray | None, n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The judge scores as float32 and the mask of valid judgments (finite where valid)."""
    raw_scores = np.asarray(scores, dtype=np.float32)
    if raw_scores.shape != (n, k):
        raise ValueError(f"scores must have shape (n, K) = ({n}, {k}), got {raw_scores.shape}")
    if mask is None:
        valid = np.ones((n, k), dtype=bool)
        if not np.isfinite(raw_scores).all():
            raise ValueError("scores contains NaN or inf; pass mask=False for missing judgments")
    else:
        valid = as_mask(mask, "mask", shape=(n, k))
        if not np.isfinite(raw_scores[valid]).all():
            raise ValueError("scores contains NaN or inf where mask is True")
    return raw_scores, valid


def refine(
    queries: np.ndarray,
    feedback: np.ndarray,
    scores: np.ndarray,
    *,
    mask: np.ndarray | None = None,
    documents: np.ndarray | None = None,
    config: RefineConfig | None = None,
    block_size: int | None = None,
    query_ids: Sequence[str] | None = None,
    implementation: Implementation | None = None,
    **hyperparameters: Any,
) -> RefineResult:
    """Refine query vectors so their cosine ranking of the feedback agrees with the judge.

    Minimises ``KL(softmax(s / T_s) || softmax(cos(z, d_k) / T_c))`` over each query
    vector ``z`` independently (see the module docstring for the exact objective).

    Args:
        queries: ``(n, d)`` original query vectors (the optimisation start point).
        feedback: ``(n, K, d)`` vectors of the judged documents, or ``(n, K)`` integer row
            indices into ``documents``.
        scores: ``(n, K)`` judge scores. Entries where ``mask`` is False are ignored and may
            be NaN.
        mask: ``(n, K)`` bool, True where a judgment exists. Missing judgments are left out
            of both softmaxes. A query with fewer than two valid judgments is skipped (it
            keeps its vector and is flagged in ``RefineResult.skipped``).
        documents: ``(N, d)`` document matrix when ``feedback`` holds indices.
        config: the hyperparameters, a :class:`RefineConfig` (default :data:`PAPER`; ``REFIT`` is
            the ReFIT-style preset).
        **hyperparameters: or any :class:`RefineConfig` field by name instead (``lr=1e-3,
            steps=50``: the paper's settings with those changed); not together with ``config``.
        block_size: queries handed to the kernel at once (bounds the per-block buffers).
            Feedback given by index is never gathered into an ``(n, K, d)`` tensor: memory
            stays at the document matrix plus ``O(block_size * (d + steps))``.
        query_ids: names of the ``n`` queries, used in error messages (default: row numbers).
        implementation: ``"kernel"`` (compiled, the default) or ``"reference"``
            (:mod:`refine_core.refinement_reference`: plain numpy, one query at a time, for
            debugging); None reads ``REFINE_REFINEMENT`` from the environment.

    Returns:
        A :class:`RefineResult` with ``vectors`` ``(n, d)`` float32 and ``losses``
        ``(n, steps)``.

    Raises:
        ValueError: on shape mismatches, NaN/inf, K < 2, zero vectors or bad settings (the
            message names the argument), or when a query's loss or vector becomes non-finite
            (the message names the query).

    Example:
        >>> import numpy as np
        >>> from refine_core import refine
        >>> rng = np.random.default_rng(0)
        >>> q, fb = rng.normal(size=(2, 8)), rng.normal(size=(2, 5, 8))
        >>> s = rng.random((2, 5))
        >>> result = refine(q, fb, s, lr=1e-2, steps=20)
        >>> result.vectors.shape, result.losses.shape
        ((2, 8), (2, 20))
        >>> bool(result.losses[0, -1] < result.losses[0, 0])
        True
    """
    config = _settings(config, hyperparameters)
    q = as_float_array(queries, "queries", ndim=2)
    n, d = q.shape
    if n == 0:
        raise ValueError("queries is empty: nothing to refine")
    check_no_zero_rows(q, "queries")
    if query_ids is not None and len(query_ids) != n:
        raise ValueError(f"query_ids has {len(query_ids)} names for {n} queries")

    docs, doc_idx, feedback_name = _feedback_documents(feedback, documents, n, d)
    k = doc_idx.shape[1]
    raw_scores, valid = _checked_scores(scores, mask, n, k)
    if block_size is not None:
        check_positive_int(block_size, "block_size")
    else:
        block_size = 4096

    skipped = valid.sum(axis=1) < 2
    vectors = q.copy()
    losses = np.full((n, config.steps), np.nan, dtype=np.float32)
    reference = chosen_implementation(implementation) == "reference"

    active = np.flatnonzero(~skipped)
    target = target_distribution(raw_scores, valid, temperature=config.score_temperature, normalize=config.normalize)
    weights = pull_weights(raw_scores, valid) if config.pull > 0 else np.zeros((n, k))
    block_vectors = np.empty((min(block_size, active.size), d), dtype=np.float32)
    for start in range(0, active.size, block_size):
        rows = active[start : start + block_size]
        out_z = block_vectors[: rows.size]
        out_loss = np.empty((rows.size, config.steps), dtype=np.float64)
        out_norms = np.empty((rows.size, k), dtype=np.float64)
        step = _reference_block if reference else _kernel_block
        step(q[rows], docs, doc_idx[rows], target[rows], valid[rows], weights[rows], config, out_z, out_loss, out_norms)
        zero = (out_norms == 0) & valid[rows]
        if zero.any():
            r, c = np.argwhere(zero)[0]
            raise ValueError(f"{feedback_name} contains a zero vector at index ({int(rows[r])}, {int(c)})")
        bad = ~(np.isfinite(out_z).all(axis=1) & np.isfinite(out_loss).all(axis=1))
        if bad.any():
            row = int(rows[np.flatnonzero(bad)[0]])
            name = repr(query_ids[row]) if query_ids is not None else str(row)
            raise ValueError(
                f"refinement of query {name} gave a non-finite loss or vector "
                f"(lr={config.lr}, steps={config.steps}, kl_eps={config.kl_eps}); lower lr or check its feedback"
            )
        vectors[rows] = out_z
        losses[rows] = out_loss
    return RefineResult(vectors=vectors, losses=losses, skipped=skipped, config=config)


def _kernel_block(
    q: np.ndarray,
    docs: np.ndarray,
    doc_idx: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray,
    config: RefineConfig,
    out_z: np.ndarray,
    out_loss: np.ndarray,
    out_norms: np.ndarray,
) -> None:
    """One block of queries through the compiled kernel (the same arguments as :func:`_reference_block`)."""
    from refine_core._parallel import KERNEL_LOCK

    with KERNEL_LOCK:  # see refine_core._parallel
        sys.modules[__name__].refine_kernel(  # imported on first use (see __getattr__)
            np.ascontiguousarray(q),
            docs,
            np.ascontiguousarray(doc_idx),
            np.ascontiguousarray(target),
            np.ascontiguousarray(valid),
            np.ascontiguousarray(weights),
            float(config.pull),
            config.lr,
            config.steps,
            config.optimizer == "adam",
            config.similarity_temperature,
            config.normalize == "minmax",
            config.kl_eps,
            config.betas[0],
            config.betas[1],
            config.adam_eps,
            config.momentum,
            out_z,
            out_loss,
            out_norms,
        )


def _reference_block(
    z0: np.ndarray,
    docs: np.ndarray,
    doc_idx: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    weights: np.ndarray,
    config: RefineConfig,
    out_z: np.ndarray,
    out_loss: np.ndarray,
    out_norms: np.ndarray,
) -> None:
    """What the kernel does for a block of queries, through
    :func:`refine_core.refinement_reference.refine_one`, filling the same outputs."""
    from refine_core.refinement_reference import refine_one

    for i in range(z0.shape[0]):
        rows = docs[doc_idx[i]]
        out_norms[i] = np.linalg.norm(rows.astype(np.float64), axis=1)
        keep = valid[i]
        if (out_norms[i][keep] < 1e-30).any():
            out_norms[i][keep & (out_norms[i] < 1e-30)] = 0.0
            return
        z, loss = refine_one(
            z0[i],
            rows[keep],
            target[i][keep],
            lr=config.lr,
            steps=config.steps,
            adam=config.optimizer == "adam",
            similarity_temperature=config.similarity_temperature,
            minmax=config.normalize == "minmax",
            kl_eps=config.kl_eps,
            betas=config.betas,
            adam_eps=config.adam_eps,
            momentum=config.momentum,
            pull=config.pull,
            pull_weights=weights[i][keep],
        )
        out_z[i] = z
        out_loss[i] = loss


def __getattr__(name: str) -> Any:
    """``refine_kernel`` is the compiled kernel, imported on first use: numba takes about half a
    second to import, which commands that never refine (a cached re-run) should not pay."""
    if name == "refine_kernel":
        from refine_core._kernels import refine_kernel

        globals()["refine_kernel"] = refine_kernel
        return refine_kernel
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
