"""Compiled inner loop of the refinement engine (numba).

One query's whole optimisation runs here: its K feedback rows of the document matrix, the teacher
distribution and the Adam/SGD state, all small enough to stay in cache. Queries run in
parallel over the available cores (``numba.set_num_threads`` / ``NUMBA_NUM_THREADS``).

The maths, for one query with valid judged documents k (``c`` = logits, ``x`` = similarity
after optional min-max scaling, ``T`` = similarity temperature):

    cos_k  = f_k . z / |z|                 (f_k unit length)
    q      = softmax(x / T)
    L      = sum_k p_k log((p_k + eps) / (q_k + eps))
    dL/dc_j = q_j * sum_k r_k - r_j,        r_k = p_k q_k / (q_k + eps)
    dL/dz  = (sum_k a_k f_k - (a . cos) z / |z|) / |z|,   a = dL/dcos

With ``pull`` > 0 the loss gains ``-pull * cos(z, c)``, ``c = sum_k w_k f_k / |f_k|``, i.e.
``-sum_k pull_c_k cos_k`` with ``pull_c_k = pull * w_k / |c|``: ``a_k`` gains ``-pull_c_k``.

The displacement ``z - z0`` is tracked separately in float32 so that steps of size 1e-4 are
not lost to the rounding of ``z`` itself; the dot products with the start vector are
computed once in float64.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from refine_core import _parallel  # noqa: F401 - chooses the threading layer before any kernel runs

# Full fastmath (reassociation, no NaN/inf checks) lets LLVM vectorise the reductions. Its
# assumptions hold: inputs are validated finite, masked entries are skipped explicitly, no
# constant is infinite, and kl_eps > 0 keeps every log argument positive. The caller checks
# the outputs are finite and names the query if one is not.
_FASTMATH = True


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _dots(docs: np.ndarray, idx: np.ndarray, x: np.ndarray, out: np.ndarray) -> None:
    """``out[k] = docs[idx[k]] . x`` for every k; four rows per pass so ``x`` is loaded once for four."""
    k_total = idx.shape[0]
    d = docs.shape[1]
    k = 0
    while k + 4 <= k_total:
        r0, r1, r2, r3 = docs[idx[k]], docs[idx[k + 1]], docs[idx[k + 2]], docs[idx[k + 3]]
        a0 = a1 = a2 = a3 = np.float32(0.0)
        for j in range(d):
            xj = x[j]
            a0 += r0[j] * xj
            a1 += r1[j] * xj
            a2 += r2[j] * xj
            a3 += r3[j] * xj
        out[k], out[k + 1], out[k + 2], out[k + 3] = a0, a1, a2, a3
        k += 4
    while k < k_total:
        row = docs[idx[k]]
        acc = np.float32(0.0)
        for j in range(d):
            acc += row[j] * x[j]
        out[k] = acc
        k += 1


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy", inline="always")
def _accumulate(docs: np.ndarray, idx: np.ndarray, coef: np.ndarray, out: np.ndarray) -> None:
    """``out += sum_k coef[k] * docs[idx[k]]``, four rows per pass over ``out``."""
    k_total = idx.shape[0]
    d = docs.shape[1]
    k = 0
    while k + 4 <= k_total:
        r0, r1, r2, r3 = docs[idx[k]], docs[idx[k + 1]], docs[idx[k + 2]], docs[idx[k + 3]]
        c0, c1, c2, c3 = coef[k], coef[k + 1], coef[k + 2], coef[k + 3]
        for j in range(d):
            out[j] += c0 * r0[j] + c1 * r1[j] + c2 * r2[j] + c3 * r3[j]
        k += 4
    while k < k_total:
        row = docs[idx[k]]
        c = coef[k]
        for j in range(d):
            out[j] += c * row[j]
        k += 1


@njit(cache=True, fastmath=_FASTMATH, error_model="numpy")
def _refine_one(
    z0: np.ndarray,
    docs: np.ndarray,
    idx: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    pull_w: np.ndarray,
    pull: float,
    lr: float,
    steps: int,
    use_adam: bool,
    tc: float,
    minmax: bool,
    kl_eps: float,
    b1: float,
    b2: float,
    adam_eps: float,
    momentum: float,
    out_z: np.ndarray,
    out_loss: np.ndarray,
    out_doc_norms: np.ndarray,
) -> None:
    k_total = idx.shape[0]
    d = docs.shape[1]
    delta = np.zeros(d, dtype=np.float32)
    m = np.zeros(d, dtype=np.float32)
    v = np.zeros(d, dtype=np.float32)
    grad = np.empty(d, dtype=np.float32)
    z = np.empty(d, dtype=np.float32)
    dots0 = np.zeros(k_total, dtype=np.float64)
    cos = np.zeros(k_total, dtype=np.float64)
    x = np.zeros(k_total, dtype=np.float64)
    q = np.zeros(k_total, dtype=np.float64)
    a = np.zeros(k_total, dtype=np.float64)
    a32 = np.zeros(k_total, dtype=np.float32)
    dd = np.zeros(k_total, dtype=np.float32)
    inv_doc = np.zeros(k_total, dtype=np.float64)
    p_log_p = 0.0
    for k in range(k_total):
        row = docs[idx[k]]
        acc = 0.0
        sq = 0.0
        for j in range(d):
            acc += np.float64(row[j]) * np.float64(z0[j])
            sq += np.float64(row[j]) * np.float64(row[j])
        out_doc_norms[k] = math.sqrt(sq)
        if valid[k]:
            if sq < 1e-60:  # numerically zero (norm < 1e-30): the caller sees it and raises
                out_doc_norms[k] = 0.0
                return
            inv_doc[k] = 1.0 / math.sqrt(sq)
            dots0[k] = acc * inv_doc[k]
            p_log_p += target[k] * math.log(target[k] + kl_eps)
    # the pull toward the judged-positive centroid c = sum_k w_k f_k / |f_k|: its term
    # -pull * cos(z, c) = -sum_k pull_c[k] cos_k, pull_c[k] = pull * w_k / |c|
    pull_c = np.zeros(k_total, dtype=np.float64)
    if pull > 0.0:
        centroid = np.zeros(d, dtype=np.float64)
        for k in range(k_total):
            if valid[k] and pull_w[k] > 0.0:
                row = docs[idx[k]]
                for j in range(d):
                    centroid[j] += pull_w[k] * inv_doc[k] * np.float64(row[j])
        c_sq = 0.0
        for j in range(d):
            c_sq += centroid[j] * centroid[j]
        if c_sq > 1e-24:
            c_norm = math.sqrt(c_sq)
            for k in range(k_total):
                if valid[k] and pull_w[k] > 0.0:
                    pull_c[k] = pull * pull_w[k] / c_norm
    # z = z0 + delta and its squared norm; refreshed inside the update loop after each step.
    nrm2 = np.float32(0.0)
    for j in range(d):
        z[j] = z0[j]
        nrm2 += z0[j] * z0[j]
    for step in range(steps):
        norm = math.sqrt(nrm2)
        _dots(docs, idx, delta, dd)
        for k in range(k_total):
            if valid[k]:
                cos[k] = (dots0[k] + dd[k] * inv_doc[k]) / norm
        # optional min-max scaling of the similarities over the valid entries
        lo_i = -1
        hi_i = -1
        span = 1.0
        if minmax:
            for k in range(k_total):
                if valid[k]:
                    if lo_i < 0 or cos[k] < cos[lo_i]:
                        lo_i = k
                    if hi_i < 0 or cos[k] > cos[hi_i]:
                        hi_i = k
            span = max(cos[hi_i] - cos[lo_i], 1e-12)
            for k in range(k_total):
                x[k] = (cos[k] - cos[lo_i]) / span if valid[k] else 0.0
        else:
            for k in range(k_total):
                x[k] = cos[k]
        # softmax over valid entries
        # max over the valid entries, seeded from the first one: fastmath assumes no inf
        top = 0.0
        seen = False
        for k in range(k_total):
            if valid[k] and (not seen or x[k] / tc > top):
                top = x[k] / tc
                seen = True
        total = 0.0
        for k in range(k_total):
            if valid[k]:
                q[k] = math.exp(x[k] / tc - top)
                total += q[k]
        loss = p_log_p
        r_sum = 0.0
        for k in range(k_total):
            if valid[k]:
                q[k] /= total
                loss -= target[k] * math.log(q[k] + kl_eps)
                a[k] = target[k] * q[k] / (q[k] + kl_eps)  # r_k for now
                r_sum += a[k]
        for k in range(k_total):
            a[k] = (q[k] * r_sum - a[k]) / tc if valid[k] else 0.0  # dL/dx
        if minmax:
            a_sum = 0.0
            a_x = 0.0
            for k in range(k_total):
                a_sum += a[k]
                a_x += a[k] * x[k]
            for k in range(k_total):
                a[k] /= span
            a[lo_i] += (a_x - a_sum) / span
            a[hi_i] -= a_x / span
        if pull > 0.0:  # the pull's term acts on the raw cosines: dL/dcos_k gains -pull_c[k]
            for k in range(k_total):
                loss -= pull_c[k] * cos[k]
                a[k] -= pull_c[k]
        out_loss[step] = loss
        along = 0.0
        for k in range(k_total):
            along += a[k] * cos[k]
        inv = 1.0 / norm
        z_coef = np.float32(-along * inv * inv)
        for j in range(d):
            grad[j] = z_coef * z[j]
        for k in range(k_total):
            a32[k] = np.float32(a[k] * inv * inv_doc[k])  # zero for missing judgments
        _accumulate(docs, idx, a32, grad)
        if use_adam:
            t = step + 1
            step_size = np.float32(lr / (1.0 - b1**t))
            bc2_sqrt = np.float32(math.sqrt(1.0 - b2**t))
            f_b1 = np.float32(b1)
            f_b2 = np.float32(b2)
            f_eps = np.float32(adam_eps)
            nrm2 = np.float32(0.0)
            for j in range(d):
                g = grad[j]
                mj = f_b1 * m[j] + (np.float32(1.0) - f_b1) * g
                vj = f_b2 * v[j] + (np.float32(1.0) - f_b2) * g * g
                m[j] = mj
                v[j] = vj
                dj = delta[j] - step_size * mj / (math.sqrt(vj) / bc2_sqrt + f_eps)
                delta[j] = dj
                zj = z0[j] + dj
                z[j] = zj
                nrm2 += zj * zj
        else:
            f_lr = np.float32(lr)
            f_mom = np.float32(momentum if step > 0 else 0.0)
            if momentum > 0.0:
                for j in range(d):
                    m[j] = f_mom * m[j] + grad[j]
                    delta[j] -= f_lr * m[j]
            else:
                for j in range(d):
                    delta[j] -= f_lr * grad[j]
            nrm2 = np.float32(0.0)
            for j in range(d):
                zj = z0[j] + delta[j]
                z[j] = zj
                nrm2 += zj * zj
    for j in range(d):
        out_z[j] = z0[j] + delta[j]


@njit(cache=True, parallel=True, error_model="numpy")
def refine_kernel(
    z0: np.ndarray,
    docs: np.ndarray,
    idx: np.ndarray,
    target: np.ndarray,
    valid: np.ndarray,
    pull_w: np.ndarray,
    pull: float,
    lr: float,
    steps: int,
    use_adam: bool,
    tc: float,
    minmax: bool,
    kl_eps: float,
    b1: float,
    b2: float,
    adam_eps: float,
    momentum: float,
    out_z: np.ndarray,
    out_loss: np.ndarray,
    out_doc_norms: np.ndarray,
) -> None:
    """Refine ``z0[i]`` against documents ``docs[idx[i]]`` for every i in parallel.

    ``docs`` rows need not be unit length. Writes ``out_z`` (n, d), ``out_loss``
    (n, steps) and ``out_doc_norms`` (n, K); a query whose valid feedback contains a zero
    vector stops early and leaves a 0 in ``out_doc_norms`` for the caller to report.
    """
    for i in prange(z0.shape[0]):
        _refine_one(
            z0[i],
            docs,
            idx[i],
            target[i],
            valid[i],
            pull_w[i],
            pull,
            lr,
            steps,
            use_adam,
            tc,
            minmax,
            kl_eps,
            b1,
            b2,
            adam_eps,
            momentum,
            out_z[i],
            out_loss[i],
            out_doc_norms[i],
        )
