"""The refinement written out plainly: one query at a time, numpy, float64.

This is the mathematics that the compiled kernel (:mod:`refine_core._kernels`) computes, kept
readable so it can be checked by eye and used for debugging: ``refine(..., implementation=
"reference")`` (or ``REFINE_REFINEMENT=reference`` in the environment) runs it instead of the
kernel, with the same validation and the same result layout. The tests hold the kernel to this
function and this function to an independent torch-autograd implementation.

For one query with start vector ``z0``, valid judged documents ``d_1 .. d_K`` and target
distribution ``p`` (:func:`refine_core.refinement.target_distribution`):

    c_k(z)  = <z, d_k> / (|z| |d_k|)                         cosine similarity
    x_k     = c_k, or (c_k - min c) / (max c - min c)          ("minmax" normalisation, ReFIT)
    q       = softmax(x / T_c)
    L(z)    = sum_k p_k * log((p_k + eps) / (q_k + eps))       (KL(p || q) with eps)
              - pull * cos(z, c),  c = sum_k w_k d_k / |d_k|     (only when pull > 0)

Gradient, by the chain rule (r_k = p_k q_k / (q_k + eps)):

    dL/dx_k = (q_k * sum_j r_j - r_k) / T_c
    minmax:  dL/dc_k = g_k / span, plus, at the arg-min, (sum_j g_j x_j - sum_j g_j) / span and,
             at the arg-max, - sum_j g_j x_j / span               (g = dL/dx, span = max c - min c)
    pull:    dL/dc_k gains - pull * w_k / |c|   (cos(z, c) = sum_k w_k c_k / |c|)
    dL/dz   = sum_k dL/dc_k * (d_k / (|z| |d_k|) - c_k z / |z|^2)

and one optimiser step per iteration, the loss recorded before the step:

    Adam: m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2;
          z = z - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps_adam)     (as torch.optim.Adam)
    SGD:  u = momentum * u + g (u = g at the first step);  z = z - lr * u
"""

from __future__ import annotations

import numpy as np


def refine_one(
    z0: np.ndarray,
    docs: np.ndarray,
    target: np.ndarray,
    *,
    lr: float,
    steps: int,
    adam: bool,
    similarity_temperature: float = 1.0,
    minmax: bool = False,
    kl_eps: float = 1e-8,
    betas: tuple[float, float] = (0.9, 0.999),
    adam_eps: float = 1e-8,
    momentum: float = 0.0,
    pull: float = 0.0,
    pull_weights: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Refine one query vector ``z0`` ``(d,)`` against its valid judged documents ``docs`` ``(K, d)``
    and target ``p`` ``(K,)``; returns the final vector and the loss before each step ``(steps,)``.
    ``pull_weights`` ``(K,)`` are the ``w`` of the pull term, used when ``pull > 0``."""
    z = np.asarray(z0, dtype=np.float64).copy()
    d_unit = np.asarray(docs, dtype=np.float64)
    d_unit = d_unit / np.linalg.norm(d_unit, axis=1, keepdims=True)
    p = np.asarray(target, dtype=np.float64)
    m = np.zeros_like(z)
    v = np.zeros_like(z)
    losses = np.empty(steps)
    pull_c = np.zeros(len(p))
    if pull > 0 and pull_weights is not None:
        centroid = np.asarray(pull_weights, dtype=np.float64) @ d_unit
        if np.linalg.norm(centroid) > 1e-12:
            pull_c = pull * np.asarray(pull_weights, dtype=np.float64) / np.linalg.norm(centroid)
    for step in range(steps):
        norm = np.linalg.norm(z)
        c = d_unit @ z / norm
        if minmax:
            lo, hi = int(np.argmin(c)), int(np.argmax(c))
            span = max(c[hi] - c[lo], 1e-12)
            x = (c - c[lo]) / span
        else:
            x = c
        logits = x / similarity_temperature
        q = np.exp(logits - logits.max())
        q /= q.sum()
        losses[step] = float(np.sum(p * np.log((p + kl_eps) / (q + kl_eps))))
        r = p * q / (q + kl_eps)
        g = (q * r.sum() - r) / similarity_temperature  # dL/dx
        if minmax:
            g_c = g / span
            g_c[lo] += (np.dot(g, x) - g.sum()) / span
            g_c[hi] -= np.dot(g, x) / span
            g = g_c  # dL/dc
        losses[step] -= float(np.dot(pull_c, c))
        g = g - pull_c
        grad = (g @ d_unit) / norm - np.dot(g, c) * z / norm**2
        if adam:
            t = step + 1
            m = betas[0] * m + (1 - betas[0]) * grad
            v = betas[1] * v + (1 - betas[1]) * grad**2
            z = z - lr / (1 - betas[0] ** t) * m / (np.sqrt(v) / np.sqrt(1 - betas[1] ** t) + adam_eps)
        else:
            m = momentum * m + grad if step > 0 else grad
            z = z - lr * m
    return z, losses
