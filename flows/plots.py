"""The plots logged with every cell: per-query AP before vs after, score distributions of
positives and negatives before and after (the paper's binary separation), loss curves."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

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


SWEEP_METHODS = ("baseline", "rerank_only", "refined", "recommended", "rocchio_kl")
"""The methods the sweep's plot draws, where present (the rest are in summary.csv)."""


def sweep_map(cells: list[dict], differing: list[str], path: Path, *, title: str) -> Path:
    """MAP per method against the sweep's first varying grid axis (log scale for lr), one panel
    per combination of the other varying coordinates: what the sweep found, at a glance (the
    parent run's ``summary_map.png``). Cells that vary in nothing are one point each."""
    plt = _plt()
    axis = next((n for n in differing if n not in ("benchmark", "model", "judge")), None)

    def coordinate(cell: dict, name: str) -> Any:
        return cell[name] if name in ("benchmark", "model", "judge") else cell["params"].get(name)

    others = [n for n in differing if n != axis]
    panels: dict[str, list[dict]] = {}
    for cell in cells:
        key = " · ".join(f"{n} {coordinate(cell, n)}" for n in others) or "all cells"
        panels.setdefault(key, []).append(cell)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8), squeeze=False, sharey=True)
    for ax, (key, group) in zip(axes[0], panels.items()):
        values = [coordinate(c, axis) if axis else i for i, c in enumerate(group)]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        if numeric:
            order = np.argsort(np.asarray(values, dtype=float), kind="stable")
            group, xs = [group[i] for i in order], [float(values[i]) for i in order]
        else:  # optimizer, normalize: one tick per value
            xs = [float(i) for i in range(len(group))]
            ax.set_xticks(xs, [str(v) for v in values])
        for method in SWEEP_METHODS:
            ys = [c["metrics"].get(method, {}).get("map") for c in group]
            if all(y is None for y in ys):
                continue
            ax.plot(xs, [np.nan if y is None else y for y in ys], marker="o", label=method)
        if axis == "lr" and numeric:
            ax.set_xscale("log")
        ax.set(xlabel=axis or "cell", ylabel="MAP")
        ax.set_title(_wrap(key, 40), fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(_wrap(title, 90), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
