"""The paper's results table: one row per model x method, one column per benchmark.

Each entry is the method's MAP with its relative change against the original query's MAP in
brackets, marked when the paired one-sided t-test on per-query AP (method > original) is
significant after Benjamini–Hochberg correction across every test in the table: ``*`` for
p < 0.05, ``**`` for p < 0.01. Two average columns close each row: the mean MAP and the mean
relative change over the benchmarks the row has. Rendered as markdown or LaTeX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refine_core.statistics import benjamini_hochberg

PAPER_METHODS: tuple[tuple[str, str], ...] = (
    ("baseline", "Original"),
    ("rerank_only", "Rerank-only"),
    ("refined", "Refined"),
    ("hyde", "HyDE"),
    ("hyde_refined", "HyDE-refined"),
)


class ReportError(ValueError):
    """The runs cannot be laid out as the paper's table; the message says why."""


@dataclass(frozen=True)
class Entry:
    map: float
    relative: float | None   # (MAP - original MAP) / original MAP; None for the original row
    p_bh: float | None       # BH-corrected one-sided p-value; None for the original row

    @property
    def marker(self) -> str:
        if self.p_bh is None or not np.isfinite(self.p_bh):
            return ""
        return "**" if self.p_bh < 0.01 else "*" if self.p_bh < 0.05 else ""


@dataclass(frozen=True)
class PaperTable:
    benchmarks: list[str]
    rows: list[tuple[str, str, dict[str, Entry]]]  # (model, method label, benchmark -> entry)

    def averages(self, entries: dict[str, Entry]) -> tuple[float, float | None]:
        values = [entries[b] for b in self.benchmarks if b in entries]
        mean_map = float(np.mean([e.map for e in values])) if values else float("nan")
        relatives = [e.relative for e in values if e.relative is not None]
        return mean_map, (float(np.mean(relatives)) if relatives else None)

    @staticmethod
    def _cell(entry: Entry | None, latex: bool) -> str:
        if entry is None:
            return "–" if not latex else "--"
        text = f"{entry.map:.3f}"
        if entry.relative is not None:
            sign = "+" if entry.relative >= 0 else "−" if not latex else "-"
            pct = f"{sign}{abs(entry.relative) * 100:.1f}" + ("\\%" if latex else "%")
            text += f" ({pct})"
        if entry.marker:
            text += f"$^{{{entry.marker}}}$" if latex else entry.marker
        return text

    def markdown(self) -> str:
        header = ["model", "method", *self.benchmarks, "avg MAP", "avg Δ"]
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for model, label, entries in self.rows:
            mean_map, mean_rel = self.averages(entries)
            cells = [self._cell(entries.get(b), False) for b in self.benchmarks]
            rel = "" if mean_rel is None else f"{'+' if mean_rel >= 0 else '−'}{abs(mean_rel) * 100:.1f}%"
            lines.append("| " + " | ".join([model, label, *cells, f"{mean_map:.3f}", rel]) + " |")
        lines.append("")
        lines.append("MAP (relative change vs Original); * p < 0.05, ** p < 0.01: one-sided paired t-test on "
                     "per-query AP, Benjamini–Hochberg corrected across the table.")
        return "\n".join(lines)

    def latex(self) -> str:
        def esc(text: str) -> str:
            return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")

        cols = "ll" + "r" * (len(self.benchmarks) + 2)
        out = ["\\begin{tabular}{" + cols + "}", "\\toprule",
               " & ".join(["Model", "Method", *(esc(b) for b in self.benchmarks), "Avg MAP", "Avg $\\Delta$"]) + " \\\\",
               "\\midrule"]
        previous = None
        for model, label, entries in self.rows:
            if previous is not None and model != previous:
                out.append("\\midrule")
            mean_map, mean_rel = self.averages(entries)
            rel = "" if mean_rel is None else f"{'+' if mean_rel >= 0 else '-'}{abs(mean_rel) * 100:.1f}\\%"
            cells = [self._cell(entries.get(b), True) for b in self.benchmarks]
            out.append(" & ".join([esc(model) if model != previous else "", label, *cells, f"{mean_map:.3f}", rel]) + " \\\\")
            previous = model
        out += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(out)


def paper_table(cells: list[dict]) -> PaperTable:
    """Lay out cells (``model``, ``benchmark``, ``metrics[method]["map"]``, ``tests[method]["pvalue"]``).

    Raises:
        ReportError: no cells, or two cells for the same model and benchmark (filter them first).
    """
    if not cells:
        raise ReportError("no finished cells to tabulate")
    by_key: dict[tuple[str, str], dict] = {}
    for c in cells:
        key = (c["model"], c["benchmark"])
        if key in by_key:
            raise ReportError(f"two cells for model {key[0]!r} on {key[1]!r} (runs {by_key[key]['run_id']} and "
                              f"{c['run_id']}): choose one sweep (--parent) or filter with --judge / --benchmark")
        by_key[key] = c
    models = list(dict.fromkeys(c["model"] for c in cells))
    benchmarks = list(dict.fromkeys(c["benchmark"] for c in cells))
    present = [(m, label) for m, label in PAPER_METHODS if any(m in c["metrics"] for c in cells)]
    tests = [(key, m) for key, c in by_key.items() for m, _ in present[1:]
             if m in c["metrics"] and c.get("tests", {}).get(m, {}).get("pvalue") is not None
             and np.isfinite(c["tests"][m]["pvalue"])]
    adjusted = dict(zip(tests, benjamini_hochberg([by_key[k]["tests"][m]["pvalue"] for k, m in tests]))) if tests else {}
    rows = []
    for model in models:
        for method, label in present:
            entries: dict[str, Entry] = {}
            for bench in benchmarks:
                c = by_key.get((model, bench))
                if c is None or method not in c["metrics"]:
                    continue
                value = float(c["metrics"][method]["map"])
                if method == "baseline":
                    entries[bench] = Entry(value, None, None)
                    continue
                original = float(c["metrics"]["baseline"]["map"])
                relative = (value - original) / original if original > 0 else None
                p = adjusted.get(((model, bench), method))
                entries[bench] = Entry(value, relative, None if p is None else float(p))
            if entries:
                rows.append((model, label, entries))
    return PaperTable(benchmarks=benchmarks, rows=rows)
