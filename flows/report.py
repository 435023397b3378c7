"""Result tables: the sweep's cell table (console, markdown, CSV, summary.md) and the paper's
table (one row per model x method, one column per benchmark).

The one Benjamini–Hochberg family (:data:`BH_FAMILY`) is defined by :func:`adjust_sweep_pvalues`
and nowhere else: every method-vs-baseline test of every cell of the run. A sweep applies it when
it ends and stores ``<method>.p_bh`` on every cell run; every table shows the stored values and
never recomputes them over a filtered subset. ``refine demo`` (one cell) and
``benchmarks/quality.py`` (one cell per dataset) call the same function.

The paper's table:

Each entry is the method's MAP with its relative change against the original query's MAP in
brackets, marked when the paired one-sided t-test on per-query AP (method > original) is
significant after Benjamini–Hochberg correction over :data:`BH_FAMILY`: ``*`` for
p < 0.05, ``**`` for p < 0.01. Two average columns close each row: the mean MAP and the mean
relative change over the benchmarks the row has. Rendered as markdown or LaTeX.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refine_core.measures import from_mlflow_key
from refine_core.statistics import benjamini_hochberg

PAPER_METHODS: tuple[tuple[str, str], ...] = (
    ("baseline", "Original"),
    ("rerank_only", "Rerank-only"),
    ("refined", "Refined"),
    ("hyde", "HyDE"),
    ("hyde_refined", "HyDE-refined"),
    ("rocchio_kl", "Rocchio → KL"),
    ("recommended", "Recommended"),
)
# Every method a cell can log besides refined_rN (MLflow metric keys are "<method>.<measure>").
LOGGED_METHODS = ("baseline", "rerank_only", "rocchio", "hyde", "hyde_refined", "rocchio_kl", "recommended")


class ReportError(ValueError):
    """The runs cannot be laid out as the paper's table; the message says why."""


BH_FAMILY = "every method-vs-baseline test of every cell of the run"
# Grid coordinates that can differ between cells, in the order tables show them.
CELL_COORDINATES = (
    "model",
    "lr",
    "k",
    "rounds",
    "steps",
    "optimizer",
    "normalize",
    "score_temperature",
    "similarity_temperature",
    "pull",
    "rocchio_beta",
    "rocchio_gamma",
)
METHOD_ORDER = ("baseline", "rerank_only", "rocchio", "refined")


def adjust_sweep_pvalues(cells: list[dict]) -> list[float]:
    """Benjamini–Hochberg over :data:`BH_FAMILY`, the project's one family.

    Each cell is a dict with ``tests: {method: {"pvalue": raw one-sided p, ...}}``; sets
    ``pvalue_bh`` beside every finite ``pvalue`` (a NaN p, e.g. no query changed, is left out of
    the family and gets none) and returns the adjusted values in cell, then method, order.
    """
    tested = [
        test
        for c in cells
        for test in c.get("tests", {}).values()
        if test.get("pvalue") is not None and np.isfinite(test["pvalue"])
    ]
    adjusted = benjamini_hochberg([test["pvalue"] for test in tested]) if tested else np.zeros(0)
    for test, p in zip(tested, adjusted):
        test["pvalue_bh"] = float(p)
    return [float(p) for p in adjusted]


def methods_present(cells: list[dict]) -> list[str]:
    """Every method any cell has, the paper's methods first, then rounds and HyDE in order."""
    seen = list(dict.fromkeys(m for c in cells for m in c["metrics"]))
    first = [m for m in METHOD_ORDER if m in seen]
    return first + sorted((m for m in seen if m not in first), key=lambda m: (not m.startswith("refined"), m))


def coordinate(cell: dict, name: str) -> object:
    """A cell's value of a grid coordinate (``judge`` and ``benchmark`` too)."""
    if name in ("model", "judge", "benchmark"):
        return cell.get(name)
    return cell.get("params", {}).get(name)


def varying_coordinates(cells: list[dict]) -> list[str]:
    """The grid coordinates whose value differs between the cells (the columns a reader needs)."""
    return [n for n in CELL_COORDINATES if len({str(coordinate(c, n)) for c in cells}) > 1]


def _fmt(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def cell_rows(cells: list[dict]) -> tuple[list[str], list[dict[str, object]]]:
    """Column names and one row per cell: benchmark, judge, the varying coordinates (lr and k
    always), MAP of every method, ΔMAP and stored p (BH) of refined, queries improved / unchanged /
    hurt by refined, and failed queries."""
    coords = [n for n in CELL_COORDINATES if n in varying_coordinates(cells) or n in ("lr", "k")]
    methods = methods_present(cells)
    columns = [
        "benchmark",
        "judge",
        *coords,
        *(f"MAP {m}" for m in methods),
        "ΔMAP",
        "p (BH)",
        "+/=/−",
        "failed queries",
    ]
    rows = []
    for c in cells:
        test = c.get("tests", {}).get("refined", {})
        wtl = c.get("win_tie_loss", {}).get("refined")
        row: dict[str, object] = {"benchmark": c["benchmark"], "judge": c["judge"]}
        row.update({n: _fmt(coordinate(c, n)) for n in coords})
        row.update({f"MAP {m}": f"{c['metrics'][m]['map']:.4f}" if m in c["metrics"] else "–" for m in methods})
        delta, p_bh = test.get("delta_map"), test.get("pvalue_bh")
        row["ΔMAP"] = "–" if delta is None else f"{delta:+.4f}"
        row["p (BH)"] = "–" if p_bh is None or not np.isfinite(p_bh) else f"{p_bh:.2g}"
        row["+/=/−"] = "–" if not wtl else "/".join(str(int(v)) for v in wtl)
        row["failed queries"] = str(c.get("failed_queries", 0))
        rows.append(row)
    return columns, rows


def _shown(column: str, value: object) -> str:
    """A table cell's text; a p (BH) below 0.05 is starred."""
    text = str(value)
    return text + " *" if column == "p (BH)" and text != "–" and float(text) < 0.05 else text


def _legend(map_words: str, changes: str) -> str:
    """What the numbers of a cell table are (``changes``: the improved/same/hurt column's name)."""
    return (
        f"{map_words} ΔMAP: refined minus baseline. p (BH): one-sided paired t-test of per-query AP "
        f"(refined > baseline), Benjamini–Hochberg corrected over {BH_FAMILY}; * p < 0.05. {changes}: "
        "queries whose AP refinement raised, left equal, lowered. failed queries: queries with at "
        "least one failed judgment (refined from the judgments that succeeded; with none, the query "
        "keeps the baseline ranking)."
    )


def summary_markdown(cells: list[dict], *, title: str | None = None) -> str:
    """:func:`cell_rows` as a markdown table with a caption that says what the numbers are."""
    columns, rows = cell_rows(cells)
    lines = ([f"**{title}**", ""] if title else []) + [
        "| " + " | ".join(columns).replace("+/=/−", "improved/same/hurt") + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(_shown(c, r[c]) for c in columns) + " |" for r in rows]
    lines += ["", _legend("MAP over each query's full pool per method.", "improved/same/hurt")]
    return "\n".join(lines)


def summary_markdown_by_cell(cells: list[dict], *, caption: str = "") -> str:
    """:func:`cell_rows` turned on its side for the sweep's ``summary.md``: one column per cell
    (headed by its number), one row per measure, then the legend.

    MLflow's artifact view gives every header cell about 70 pixels and cuts longer text
    ("MAP rocchio" and "MAP rocchio_kl" both read "MAP ro…") while body cells wrap; with the
    cells as columns the headers are numbers, every measure's name is a body cell, and a sweep
    of up to about seven cells needs no horizontal scrolling. A coordinate every cell shares is
    said once above the table, not repeated in a row."""
    columns, rows = cell_rows(cells)
    coordinates = columns[: next((i for i, c in enumerate(columns) if c.startswith("MAP ")), len(columns))]
    shared = [c for c in coordinates if len(rows) > 1 and len({str(r[c]) for r in rows}) == 1]
    lines = [caption.rstrip(), ""] if caption else []
    if shared:
        lines += ["Every cell: " + ", ".join(f"{c} {rows[0][c]}" for c in shared) + ".", ""]
    lines += ["| | " + " | ".join(str(i) for i in range(1, len(rows) + 1)) + " |", "|---" * (len(rows) + 1) + "|"]
    lines += [f"| {c} | " + " | ".join(_shown(c, r[c]) for r in rows) + " |" for c in columns if c not in shared]
    lines += ["", _legend("MAP: over each query's full pool.", "+/=/−") + " Every cell is a child run of this run."]
    return "\n".join(lines)


@dataclass(frozen=True)
class Entry:
    map: float
    relative: float | None  # (MAP - original MAP) / original MAP; None for the original row
    p_bh: float | None  # BH-corrected one-sided p-value; None for the original row

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
        lines.append(
            "MAP (relative change vs Original); * p < 0.05, ** p < 0.01: one-sided paired t-test on "
            f"per-query AP, Benjamini–Hochberg corrected over {BH_FAMILY}."
        )
        return "\n".join(lines)

    def latex(self) -> str:
        def esc(text: str) -> str:
            return text.replace("\\", "\\textbackslash{}").replace("_", "\\_").replace("&", "\\&").replace("%", "\\%")

        cols = "ll" + "r" * (len(self.benchmarks) + 2)
        out = [
            "\\begin{tabular}{" + cols + "}",
            "\\toprule",
            " & ".join(["Model", "Method", *(esc(b) for b in self.benchmarks), "Avg MAP", "Avg $\\Delta$"]) + " \\\\",
            "\\midrule",
        ]
        previous = None
        for model, label, entries in self.rows:
            if previous is not None and model != previous:
                out.append("\\midrule")
            mean_map, mean_rel = self.averages(entries)
            rel = "" if mean_rel is None else f"{'+' if mean_rel >= 0 else '-'}{abs(mean_rel) * 100:.1f}\\%"
            cells = [self._cell(entries.get(b), True) for b in self.benchmarks]
            out.append(
                " & ".join([esc(model) if model != previous else "", label, *cells, f"{mean_map:.3f}", rel]) + " \\\\"
            )
            previous = model
        out += ["\\bottomrule", "\\end{tabular}"]
        return "\n".join(out)


def filter_cells(cells: list[dict], where: list[str]) -> list[dict]:
    """Keep the cells whose coordinates match every ``name=value`` (numbers compare as numbers;
    ``judge`` and ``benchmark`` work too).

    Raises:
        ReportError: a filter that is not ``name=value`` or names no known coordinate.
    """
    known = {"benchmark", "judge", *CELL_COORDINATES}
    out = cells
    for item in where:
        name, sep, wanted = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ReportError(f"--where {item!r}: expected name=value, for example lr=1e-4")
        if name not in known:
            raise ReportError(f"--where {item!r}: {name!r} is not one of {', '.join(sorted(known))}")

        def matches(c: dict, name: str = name, wanted: str = wanted.strip()) -> bool:
            value = coordinate(c, name)
            try:
                return float(value) == float(wanted)  # type: ignore[arg-type]
            except (TypeError, ValueError):
                return str(value) == wanted

        kept = [c for c in out if matches(c)]
        if out and not kept:
            raise ReportError(f"--where {item!r}: no cell matches; {present_values(out, name)}")
        out = kept
    return out


def present_values(cells: list[dict], name: str) -> str:
    """``the cells have lr 0.0001, 0.001``: the values of a coordinate among ``cells``, for an error."""
    values = sorted({_fmt(coordinate(c, name)) for c in cells})
    return f"the cells have {name} {', '.join(values)}"


def paper_table(cells: list[dict]) -> PaperTable:
    """Lay out cells (``model``, ``benchmark``, ``metrics[method]["map"]``, ``tests[method]["pvalue"]``).

    Raises:
        ReportError: no cells, or several cells for one model and benchmark; the message names the
            coordinates they differ in and the ``--where`` that picks one.
    """
    if not cells:
        raise ReportError("no finished cells to tabulate")
    groups: dict[tuple[str, str], list[dict]] = {}
    for c in cells:
        groups.setdefault((c["model"], c["benchmark"]), []).append(c)
    for (model, bench), group in groups.items():
        if len(group) > 1:
            differ = [n for n in ("judge", *CELL_COORDINATES) if len({str(coordinate(c, n)) for c in group}) > 1]
            example = " ".join(f"{n}={_fmt(coordinate(group[0], n))}" for n in differ)
            values = "; ".join(
                f"{n}: {', '.join(dict.fromkeys(_fmt(coordinate(c, n)) for c in group))}" for n in differ
            )
            raise ReportError(
                f"{len(group)} cells for model {model!r} on {bench!r} differ in {', '.join(differ)} ({values}): "
                f"the paper's layout has one cell per model and benchmark, so fix every one of them, e.g. "
                f"--where {example}"
                if differ
                else f"{len(group)} cells for model {model!r} on {bench!r} come from different sweeps: "
                "pick one with --parent"
            )
    by_key = {key: group[0] for key, group in groups.items()}
    models = list(dict.fromkeys(c["model"] for c in cells))
    benchmarks = list(dict.fromkeys(c["benchmark"] for c in cells))
    present = [(m, label) for m, label in PAPER_METHODS if any(m in c["metrics"] for c in cells)]
    # p (BH) as the run stored it; cells without stored values (runs logged before every method
    # had one) get the same family applied over the table's cells.
    if any(
        t.get("pvalue") is not None and "pvalue_bh" not in t
        for c in by_key.values()
        for t in c.get("tests", {}).values()
    ):
        by_key = {key: {**c, "tests": {m: dict(t) for m, t in c.get("tests", {}).items()}} for key, c in by_key.items()}
        adjust_sweep_pvalues(list(by_key.values()))
    rows = []
    for model in models:
        for method, label in present:
            entries: dict[str, Entry] = {}
            for bench in benchmarks:
                cell = by_key.get((model, bench))
                if cell is None or method not in cell["metrics"]:
                    continue
                value = float(cell["metrics"][method]["map"])
                if method == "baseline":
                    entries[bench] = Entry(value, None, None)
                    continue
                original = float(cell["metrics"]["baseline"]["map"])
                relative = (value - original) / original if original > 0 else None
                p = cell.get("tests", {}).get(method, {}).get("pvalue_bh")
                entries[bench] = Entry(value, relative, None if p is None else float(p))
            if entries:
                rows.append((model, label, entries))
    return PaperTable(benchmarks=benchmarks, rows=rows)


# ---- cells read back from MLflow (what `refine compare` shows) ------------------------------------------
def metrics_from_run(run) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for key, value in run.data.metrics.items():
        method, _, name = key.partition(".")
        if method in LOGGED_METHODS or method.startswith("refined"):
            out.setdefault(method, {})[from_mlflow_key(name)] = value
    return out


_TEST_KEYS = (
    "delta_map",
    "pvalue",
    "p_raw",
    "p_bh",
    "relative_gain",
    "queries_improved",
    "queries_unchanged",
    "queries_hurt",
)


def cell_from_run(run) -> dict:
    """A finished cell run read back into the shape ``refine run`` returns."""
    params = dict(run.data.params)
    metrics = metrics_from_run(run)
    tests = {}
    outcomes = {}
    for m, v in metrics.items():
        raw = v.get("p_raw", v.get("pvalue"))  # runs logged before p_raw was named so
        if raw is not None:
            tests[m] = {"delta_map": v.get("delta_map"), "pvalue": raw}
            if "p_bh" in v:
                tests[m]["pvalue_bh"] = v["p_bh"]
        if "queries_improved" in v:
            outcomes[m] = (
                int(v["queries_improved"]),
                int(v.get("queries_unchanged", 0)),
                int(v.get("queries_hurt", 0)),
            )
    typed = {
        "lr": float(params.get("lr", "nan")),
        "k": int(params.get("k", 0)),
        "rounds": int(params.get("rounds", 1)),
        **{k: v for k, v in params.items() if k not in ("lr", "k", "rounds")},
    }
    for name in ("steps",):
        if name in typed:
            typed[name] = int(typed[name])
    for name in ("score_temperature", "similarity_temperature", "pull"):
        if name in typed:
            typed[name] = float(typed[name])
    return {
        "run_id": run.info.run_id,
        "benchmark": params.get("benchmark.name", "?"),
        "model": params.get("model", "?"),
        "judge": run.data.tags.get("refine.judge", params.get("judge.kind", "")),
        "params": typed,
        "metrics": {m: {k: v for k, v in vals.items() if k not in _TEST_KEYS} for m, vals in metrics.items()},
        "tests": tests,
        "win_tie_loss": outcomes,
        "failed_queries": int(run.data.metrics.get("judge_failed_queries", 0)),
        "judgments_failed": int(run.data.metrics.get("judgments_failed", 0)),
    }


def degraded(cell: dict) -> bool:
    """A cell whose judgments are incomplete (failed, held back by the budget, or not asked once
    the judge was stopped): its numbers are not a result; the same command completes it."""
    return bool(cell.get("failed_queries") or cell.get("judgments_failed"))


def cells_from_mlflow(
    tracker,
    experiment: str,
    *,
    parent: str | None = None,
    all_sweeps: bool = False,
    benchmark: str | None = None,
    judge: str | None = None,
    where: list[str] | None = None,
) -> tuple[str, str | None, list[dict]]:
    """The finished cells of one sweep (``parent``; default the latest) or of the whole experiment
    (``all_sweeps``), filtered: ``(experiment id, parent run id, cells)``.

    Raises:
        ReportError: no such experiment, no sweep in it, or a bad ``where`` filter.
    """
    exp = tracker.client.get_experiment_by_name(experiment)
    if exp is None:
        raise ReportError(
            f"no experiment named {experiment!r} in {tracker.uri}; run `refine run` first (`refine experiments` "
            "lists them)"
        )
    if parent is None and not all_sweeps:
        sweeps = tracker.client.search_runs(
            [exp.experiment_id], "tags.`refine.kind` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1
        )
        if not sweeps:
            raise ReportError(f"experiment {experiment!r} has no sweep runs")
        parent = sweeps[0].info.run_id
    query = "tags.`refine.kind` = 'cell' and attributes.status = 'FINISHED'"
    if parent:
        query += f" and tags.`mlflow.parentRunId` = '{parent}'"
    runs = tracker.client.search_runs(
        [exp.experiment_id], query, order_by=["attributes.start_time ASC"], max_results=5000
    )
    cells = [cell_from_run(r) for r in runs]
    for option, name, keep in (
        (benchmark, "benchmark", lambda c: c["benchmark"] == benchmark),
        (judge, "judge", lambda c: judge in c["judge"]),
    ):
        if option:
            kept = [c for c in cells if keep(c)]
            if cells and not kept:
                raise ReportError(f"--{name} {option}: no cell matches; {present_values(cells, name)}")
            cells = kept
    return exp.experiment_id, parent, filter_cells(cells, list(where or []))
