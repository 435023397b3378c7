"""The paper's table (`refine compare --layout paper`) from synthetic runs with hand-computed values."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from flows.report import ReportError, filter_cells, paper_table

# (model, benchmark) -> {method: (MAP, one-sided p vs original)}
RUNS = {
    ("A", "X"): {"baseline": (0.50, None), "rerank_only": (0.55, 0.04), "refined": (0.60, 0.001)},
    ("A", "Y"): {"baseline": (0.20, None), "rerank_only": (0.21, 0.30), "refined": (0.25, 0.02)},
    ("B", "X"): {"baseline": (0.40, None), "rerank_only": (0.40, 0.5), "refined": (0.44, 0.01)},
    ("B", "Y"): {"baseline": (0.30, None), "rerank_only": (0.33, 0.03), "refined": (0.27, 0.9)},
}


def _cells() -> list[dict]:
    return [
        {
            "run_id": f"{m}{b}",
            "model": m,
            "benchmark": b,
            "metrics": {meth: {"map": v} for meth, (v, _) in methods.items()},
            "tests": {meth: {"pvalue": p} for meth, (_, p) in methods.items() if p is not None},
        }
        for (m, b), methods in RUNS.items()
    ]


# BH over the 8 p-values: .001->.008, .01->.04, .02->.0533, .03->.06, .04->.064, .30->.4, .5->.571, .9->.9
EXPECTED_MARKDOWN = """| model | method | X | Y | avg MAP | avg Δ |
|---|---|---|---|---|---|
| A | Original | 0.500 | 0.200 | 0.350 |  |
| A | Rerank-only | 0.550 (+10.0%) | 0.210 (+5.0%) | 0.380 | +7.5% |
| A | Refined | 0.600 (+20.0%)** | 0.250 (+25.0%) | 0.425 | +22.5% |
| B | Original | 0.400 | 0.300 | 0.350 |  |
| B | Rerank-only | 0.400 (+0.0%) | 0.330 (+10.0%) | 0.365 | +5.0% |
| B | Refined | 0.440 (+10.0%)* | 0.270 (−10.0%) | 0.355 | +0.0% |"""


def test_markdown_by_hand() -> None:
    table = paper_table(_cells())
    text = table.markdown()
    assert text.split("\n\n")[0] == EXPECTED_MARKDOWN
    assert "Benjamini–Hochberg corrected over every method-vs-baseline test of every cell of the run" in text
    refined_b = dict((label, e) for m, label, e in table.rows if m == "B")["Refined"]
    assert refined_b["X"].p_bh == pytest.approx(0.04) and refined_b["Y"].p_bh == pytest.approx(0.9)


def test_latex_by_hand() -> None:
    lines = paper_table(_cells()).latex().splitlines()
    assert lines[0] == "\\begin{tabular}{llrrrr}" and lines[-1] == "\\end{tabular}"
    assert "A & Original & 0.500 & 0.200 & 0.350 &  \\\\" in lines
    assert " & Refined & 0.600 (+20.0\\%)$^{**}$ & 0.250 (+25.0\\%) & 0.425 & +22.5\\% \\\\" in lines
    assert " & Refined & 0.440 (+10.0\\%)$^{*}$ & 0.270 (-10.0\\%) & 0.355 & +0.0\\% \\\\" in lines
    assert lines.count("\\midrule") == 2  # under the header and between the models


def test_hyde_rows_appear_when_runs_have_them_and_missing_entries_show_a_dash() -> None:
    cells = _cells()
    cells[0]["metrics"]["hyde"] = {"map": 0.52}
    cells[0]["tests"]["hyde"] = {"pvalue": 0.2}
    table = paper_table(cells)
    labels = [label for m, label, _ in table.rows if m == "A"]
    assert labels == ["Original", "Rerank-only", "Refined", "HyDE"]
    assert "| A | HyDE | 0.520 (+4.0%) | – | 0.520 | +4.0% |" in table.markdown()


def test_duplicate_cells_are_refused() -> None:
    cells = _cells() + [dict(_cells()[0], run_id="again")]
    with pytest.raises(
        ReportError, match="2 cells for model 'A' on 'X' come from different sweeps: pick one with --parent"
    ):
        paper_table(cells)
    grid = _cells() + [dict(_cells()[0], run_id="lr", params={"lr": 1e-3})]
    for c in grid[:-1]:
        c["params"] = {"lr": 1e-4}
    with pytest.raises(ReportError, match=r"differ in lr \(lr: 0.0001, 0.001\): .* e.g. --where lr=0.0001"):
        paper_table(grid)
    assert len(paper_table(filter_cells(grid, ["lr=1e-4"])).rows) == 6
    # a filter that matches nothing is an error that lists what there is
    with pytest.raises(ReportError, match=r"--where 'lr=0.0003': no cell matches; the cells have lr 0.0001, 0.001"):
        filter_cells(grid, ["lr=0.0003"])
    for c in grid:
        c["judge"] = "noisy-oracle-0.2"
    with pytest.raises(ReportError, match="no cell matches; the cells have judge noisy-oracle-0.2"):
        filter_cells(grid, ["judge=noisy-oracle"])
    assert filter_cells([], ["lr=0.0003"]) == []  # nothing to filter: nothing to say
    with pytest.raises(ReportError, match="no finished cells"):
        paper_table([])


def test_cli_renders_runs_from_mlflow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REFINE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    from flows.cli import app
    from flows.environment import configure_environment
    from flows.tracking import Tracker

    configure_environment(tmp_path)
    tracker = Tracker()
    experiment = tracker.experiment("paper-test")
    for (model, bench), methods in RUNS.items():
        run = tracker.start(experiment, f"{model} {bench}", tags={"refine.kind": "cell", "refine.judge": "oracle"})
        tracker.log_params(run, {"model": model, "benchmark.name": bench, "lr": 1e-4, "k": 20, "rounds": 1})
        metrics = {f"{meth}.map": v for meth, (v, _) in methods.items()}
        metrics.update({f"{meth}.pvalue": p for meth, (_, p) in methods.items() if p is not None})
        tracker.log_metrics(run, metrics)
        tracker.finish(run, "FINISHED")
    result = CliRunner().invoke(
        app, ["compare", "--experiment", "paper-test", "--all", "--layout", "paper", "--format", "markdown"]
    )
    assert result.exit_code == 0, result.output
    assert EXPECTED_MARKDOWN in result.output
    latex = CliRunner().invoke(
        app, ["compare", "--experiment", "paper-test", "--all", "--layout", "paper", "--format", "latex"]
    )
    assert latex.exit_code == 0 and "\\begin{tabular}" in latex.output and "| model |" not in latex.output
    bad = CliRunner().invoke(app, ["compare", "--experiment", "paper-test", "--all", "--layout", "poster"])
    assert bad.exit_code == 2 and "--layout must be cells or paper" in bad.output


def test_the_table_shows_the_stored_p_bh_and_never_recomputes_it_over_its_subset() -> None:
    """A sweep stores p (BH) over its whole family; a table of two of its cells shows those values."""
    from flows.report import adjust_sweep_pvalues

    cells = _cells()
    adjusted = adjust_sweep_pvalues(cells)
    assert adjusted == pytest.approx([0.064, 0.008, 0.4, 0.05333333, 0.5714286, 0.04, 0.06, 0.9])
    subset = [c for c in cells if c["benchmark"] == "X"]
    refined_b = dict((label, e) for m, label, e in paper_table(subset).rows if m == "B")["Refined"]
    assert refined_b["X"].p_bh == pytest.approx(0.04)  # over the subset alone it would be 0.0133


def test_nan_p_values_stay_out_of_the_family() -> None:
    from flows.report import adjust_sweep_pvalues

    cells = [
        {"tests": {"refined": {"pvalue": 0.01}, "rerank_only": {"pvalue": float("nan")}}},
        {"tests": {"refined": {"pvalue": 0.04}}},
    ]
    assert adjust_sweep_pvalues(cells) == pytest.approx([0.02, 0.04])
    assert "pvalue_bh" not in cells[0]["tests"]["rerank_only"]


def test_one_function_applies_benjamini_hochberg() -> None:
    """Every table, report, metric and benchmark gets p (BH) from flows.report.adjust_sweep_pvalues:
    no other module calls the statistics function (a second family would disagree with the first)."""
    root = Path(__file__).resolve().parents[1]
    callers = {
        str(f.relative_to(root))
        for package in ("flows", "tasks", "refine_core", "evaluations", "benchmarks")
        for f in (root / package).rglob("*.py")
        if "benjamini_hochberg(" in f.read_text()
    }
    assert callers == {"flows/report.py", "refine_core/statistics.py"}, callers
    for module in ("flows/cli_run.py", "flows/sweep.py", "benchmarks/quality.py", "benchmarks/beyond.py"):
        assert "adjust_sweep_pvalues(" in (root / module).read_text(), module


def test_cells_that_differ_in_any_coordinate_never_read_the_same() -> None:
    """Labels (logs, tags, plot titles, Prefect sub-flow names, dry-run rows) and MLflow run names
    carry every coordinate in which a sweep's cells differ: here only pull, only Rocchio's beta, or
    only the query sample's seed (issue 32: `pull: [0, 0.1]` gave two cells one name)."""
    from evaluations.config import BenchmarkSpec, Grid, JudgeSpec, SweepConfig
    from flows.cell_logging import cell_label
    from flows.sweep import mlflow_run_name, varying

    grids = [
        ([BenchmarkSpec(name="clinc150")], Grid(pull=[0.0, 0.1])),
        ([BenchmarkSpec(name="clinc150")], Grid(rocchio_beta=[0.75, 1.5])),
        ([BenchmarkSpec(name="clinc150", queries=30, query_seed=s) for s in (1, 2)], Grid()),
    ]
    for benchmarks, grid in grids:
        cells = SweepConfig(name="x", benchmarks=benchmarks, judges=[JudgeSpec(kind="oracle")], grid=grid).cells()
        assert len(cells) == 2
        differing = varying(cells)
        assert len(differing) == 1, differing
        labels = [cell_label(c) for c in cells]
        names = [mlflow_run_name(c, differing) for c in cells]
        assert labels[0] != labels[1] and names[0] != names[1], (labels, names)
    paper = SweepConfig(name="x", benchmarks=[BenchmarkSpec(name="clinc150")]).cells()[0]
    assert cell_label(paper) == "clinc150 · all-MiniLM-L6-v2 · oracle · lr 0.0001 · k 20 · r 1"  # nothing else


def test_the_run_says_what_was_paid_free_failed_and_sent_apart() -> None:
    """Issue 32: an oracle sweep reported its 1,200 free verdicts as paid, and a run whose 60
    requests all failed (a wrong key) said "0 judgments asked"."""
    from flows.failures import judgment_counts, judgments_line

    oracle = {"params": {"judge.kind": "oracle"}, "judge_usage": {"judgments_free": 1200.0, "judge_requests": 60.0}}
    wrong_key = {
        "params": {"judge.kind": "anthropic"},
        "judge_usage": {"judgments_paid": 0.0, "judge_requests": 60.0, "judge_cost_usd": 0.0},
        "judgments_failed": 80,
        "judge_errors": {"AuthenticationError: HTTP 401": 60, "BudgetExceeded": 20},
    }
    counts = judgment_counts([oracle, wrong_key])
    assert counts == {"paid": 0, "free": 1200, "failed": 60, "held_back": 20, "requests": 60, "cost_usd": 0.0}
    assert judgments_line([oracle, wrong_key]) == (
        "judgments in this run: 0 paid, 1,200 free (local judges), 60 failed, 20 held back by the budget; "
        "60 requests sent to paid judges, estimated $0.00"
    )


def test_a_free_judges_verdicts_are_not_counted_as_paid(tmp_path: Path) -> None:
    from judging import JudgeRequest, JudgmentLedger, OracleJudge, run_judge

    judge = OracleJudge({"q": {"a"}})
    report = run_judge(judge, [JudgeRequest("q", ("a", "b"))], ledger=JudgmentLedger(tmp_path / "l.sqlite"))
    metrics = report.as_metrics()
    assert (metrics["judgments_paid"], metrics["judgments_free"]) == (0.0, 2.0) and report.judged == 2


def test_summary_md_puts_cells_in_columns_so_no_header_is_longer_than_a_number() -> None:
    """The sweep's summary.md (issue 32): MLflow's artifact view cuts header cells at about 70
    pixels ("MAP rocchio" and "MAP rocchio_kl" both read "MAP ro…") and wraps body cells, so the
    cells are the columns, numbered, and every measure's name is a row label."""
    from flows.report import summary_markdown_by_cell

    cells = [
        {
            "benchmark": "clinc150",
            "judge": judge,
            "params": {"lr": lr, "k": 20},
            "metrics": {"baseline": {"map": 0.38}, "rocchio": {"map": 0.65}, "rocchio_kl": {"map": m}},
            "tests": {"refined": {"delta_map": m - 0.38, "pvalue_bh": p}},
            "win_tie_loss": {"refined": [3, 1, 2]},
            "failed_queries": failed,
        }
        for judge, lr, m, p, failed in [("oracle", 1e-4, 0.68, 0.001, 0), ("noisy-oracle-0.2", 1e-3, 0.49, 0.58, 4)]
    ]
    lines = summary_markdown_by_cell(cells, caption="**s** — 2 cells").splitlines()
    # what every cell shares is said once, above the table
    assert lines[:6] == [
        "**s** — 2 cells",
        "",
        "Every cell: benchmark clinc150, k 20.",
        "",
        "| | 1 | 2 |",
        "|---|---|---|",
    ]
    cells_of = [[v.strip() for v in line.strip("| ").split(" | ")] for line in lines[6:] if line.startswith("| ")]
    rows = {label: values for label, *values in cells_of}
    assert "benchmark" not in rows and "k" not in rows
    assert rows["judge"] == ["oracle", "noisy-oracle-0.2"] and rows["lr"] == ["0.0001", "0.001"]
    assert rows["MAP rocchio"] == ["0.6500", "0.6500"] and rows["MAP rocchio_kl"] == ["0.6800", "0.4900"]
    assert rows["ΔMAP"] == ["+0.3000", "+0.1100"] and rows["p (BH)"] == ["0.001 *", "0.58"]
    assert rows["+/=/−"] == ["3/1/2", "3/1/2"] and rows["failed queries"] == ["0", "4"]
    assert lines[-1].startswith("MAP: over each query's full pool.")
    alone = summary_markdown_by_cell(cells[:1]).splitlines()  # one cell: nothing to share, every row kept
    assert alone[0] == "| | 1 |" and "| benchmark | clinc150 |" in alone and "| k | 20 |" in alone
