"""The plots logged with every cell: per-query AP before vs after, score distributions of
positives and negatives before and after (the paper's binary separation), loss curves."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np


def _wrap(title: str, width: int) -> str:
    """The whole title on as many lines as it needs (never cut: the lr is usually last)."""
    return "\n".join(textwrap.wrap(title, width=width)) or title


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def ap_scatter(ap_before: np.ndarray, ap_after: np.ndarray, path: Path, *, title: str) -> Path:
    plt = _plt()
    from refine_core.statistics import win_tie_loss

    fig, ax = plt.subplots(figsize=(4.8, 5.2))
    ax.scatter(ap_before, ap_after, s=12, alpha=0.7)
    ax.plot([0, 1], [0, 1], color="grey", lw=1, ls="--")
    improved, unchanged, hurt = win_tie_loss(np.asarray(ap_before), np.asarray(ap_after))
    ax.text(
        0.03,
        0.97,
        f"improved {improved}\nunchanged {unchanged}\nhurt {hurt}",
        transform=ax.transAxes,
        va="top",
        ha="left",
        fontsize=9,
        bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
    )
    ax.set(xlabel="AP, original query", ylabel="AP, refined query", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(_wrap(title, 48), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def separation(
    base_pos: np.ndarray, base_neg: np.ndarray, ref_pos: np.ndarray, ref_neg: np.ndarray, path: Path, *, title: str
) -> Path:
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    bins = np.linspace(min(base_neg.min(initial=0), ref_neg.min(initial=0)), 1, 60)
    for ax, pos, neg, name in ((axes[0], base_pos, base_neg, "original"), (axes[1], ref_pos, ref_neg, "refined")):
        ax.hist(neg, bins=bins, density=True, alpha=0.6, label="negatives")
        ax.hist(pos, bins=bins, density=True, alpha=0.6, label="positives")
        ax.set(title=f"{name} query", xlabel="cosine similarity")
    axes[0].set_ylabel("density")
    axes[1].legend()
    fig.suptitle(_wrap(title, 100), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def loss_curves(losses: np.ndarray, path: Path, *, title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    finite = losses[np.isfinite(losses).all(axis=1)]
    shown = finite[:20]
    for row in shown:
        ax.plot(row, color="tab:blue", alpha=0.2, lw=0.8)
    if finite.size:
        ax.plot(finite.mean(axis=0), color="black", lw=2, label=f"mean of {len(finite)} queries")
        ax.plot([], [], color="tab:blue", alpha=0.4, lw=0.8, label=f"{len(shown)} queries shown")
        ax.legend()
    ax.set(xlabel="step", ylabel="KL(p || q)")
    ax.set_title(_wrap(title, 56), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
