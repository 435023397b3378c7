"""The plots logged with every cell: per-query AP before vs after, score distributions of
positives and negatives before and after (the paper's binary separation), loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():  # noqa: ANN202
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ap_scatter(ap_before: np.ndarray, ap_after: np.ndarray, path: Path, *, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(ap_before, ap_after, s=12, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    ax.set(xlabel="AP, original query", ylabel="AP, refined query", xlim=(0, 1), ylim=(0, 1), title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def separation(base_pos: np.ndarray, base_neg: np.ndarray, ref_pos: np.ndarray, ref_neg: np.ndarray,
               path: Path, *, title: str) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    bins = np.linspace(min(base_neg.min(initial=0), ref_neg.min(initial=0)), 1, 60)
    for ax, pos, neg, name in ((axes[0], base_pos, base_neg, "original"), (axes[1], ref_pos, ref_neg, "refined")):
        ax.hist(neg, bins=bins, density=True, alpha=0.6, label="negatives")
        ax.hist(pos, bins=bins, density=True, alpha=0.6, label="positives")
        ax.set(title=f"{name} query", xlabel="cosine similarity")
    axes[0].set_ylabel("density")
    axes[1].legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(losses: np.ndarray, path: Path, *, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    finite = losses[np.isfinite(losses).all(axis=1)]
    for row in finite[:20]:
        ax.plot(row, color="tab:blue", alpha=0.2, lw=0.8)
    if finite.size:
        ax.plot(finite.mean(axis=0), color="black", lw=2, label="mean")
        ax.legend()
    ax.set(xlabel="step", ylabel="KL(p || q)", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
