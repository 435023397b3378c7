"""Every example config parses and is preflighted; the ones that need nothing from outside run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# What each example needs from outside this machine, and so what its preflight says here.
NEEDS_OUTSIDE = {
    "paper-table.yaml": "dataset '",  # argkp21, realscholarquery files, FollowIR from the Hub (and the Qwen models)
    "refit-cross-encoder.yaml": "not in the local Hugging Face cache",
}
RUNS_OFFLINE = {"own-data.yaml"}


def test_the_examples_are_the_documented_set() -> None:
    assert {p.name for p in EXAMPLES} == {
        "paper-table.yaml",
        "claude-listwise-budget.yaml",
        "refit-cross-encoder.yaml",
        "hyde.yaml",
        "own-data.yaml",
        "nightly.yaml",
    }


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_parses_and_preflights(
    path: Path, data_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from evaluations.config import load_config
    from flows.cli import preflight
    from flows.schedule import check_cron

    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("REFINE_HOME", str(tmp_path))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-example-preflight")  # the key is only checked for presence
    config = load_config(path)
    assert path.read_text().lstrip().startswith("#"), "an example says what it is and how to run it"
    if config.schedule:
        check_cron(config.schedule)
    if path.name == "paper-table.yaml":  # every missing piece in one go (issue 32: one per run before)
        with pytest.raises(ValueError) as caught:
            preflight(config)
        message = str(caught.value)
        assert message.startswith("5 problems, to fix before anything runs:"), message
        for missing in ("argkp21", "realscholarquery", "followir-core17", "Qwen3-Embedding-0.6B", "Qwen3-Embedding-8B"):
            assert missing in message, missing
        assert "no such folder" not in message  # a Hub id with a dot in it is a Hub id, not a folder
    elif path.name in NEEDS_OUTSIDE:
        with pytest.raises(ValueError) as caught:
            preflight(config)
        assert NEEDS_OUTSIDE[path.name] in str(caught.value) and "\n" not in str(caught.value)
    else:
        preflight(config)


def test_checking_a_config_reads_no_prefect_setting(data_root: Path, tmp_path: Path) -> None:
    """`refine run` checks the config before it starts its Prefect server; Prefect reads its settings
    when it is imported, so no check may import it (the server would then not be used). Each example
    and the Dask runner are checked in a process of their own, and Prefect must not be imported."""
    import subprocess
    import sys

    configs = [str(p) for p in EXAMPLES if p.name not in NEEDS_OUTSIDE]
    dask = tmp_path / "dask.yaml"
    dask.write_text("name: x\nbenchmarks: [{name: clinc150, queries: 5}]\nrunner: dask\n")
    script = (
        "import sys\n"
        "from evaluations.config import load_config\n"
        "from flows.preflight import check_inputs\n"
        "for path in sys.argv[1:]:\n"
        "    check_inputs(load_config(path))\n"
        "print('prefect' in sys.modules, 'mlflow' in sys.modules)\n"
    )
    env = os.environ | {"REFINE_HOME": str(tmp_path / "home"), "HF_HUB_OFFLINE": "1"}
    env |= {"ANTHROPIC_API_KEY": "sk-ant-example-preflight"}
    done = subprocess.run(
        [sys.executable, "-c", script, *configs, str(dask)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"], done.stdout


@pytest.mark.integration
def test_the_offline_examples_run(platform: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    monkeypatch.chdir(ROOT)
    for name in sorted(RUNS_OFFLINE):
        result = CliRunner().invoke(app, ["run", str(ROOT / "examples" / name), "--json"])
        assert result.exit_code == 0, result.output
        cells = json.loads(result.stdout.strip().splitlines()[-1])["cells"]
        assert cells and all(c["metrics"]["refined"]["map"] > 0 for c in cells)


def test_the_readme_sweep_config_parses_and_its_benchmarks_load_as_written(data_root: Path) -> None:
    """The README's config block, as written: valid, and both benchmark entries (a query subset,
    a corpus subsample that keeps every positive) load from the raw data."""
    import re

    import yaml

    from evaluations.config import parse_config
    from evaluations.registry import load_benchmark

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"### A sweep config\n\n```yaml\n(.*?)```", readme, re.S)
    assert block, "the README has a '### A sweep config' yaml block"
    config = parse_config(yaml.safe_load(block.group(1)), source="README.md")
    assert len(config.judges) >= 5 and config.budget is not None
    for spec in config.benchmarks:
        bench = load_benchmark(
            spec.name,
            queries=spec.queries,
            query_seed=spec.query_seed,
            max_documents=spec.max_documents,
            corpus_seed=spec.corpus_seed,
        )
        if spec.max_documents:
            assert bench.n_documents == spec.max_documents
        if spec.queries:
            assert bench.n_queries == spec.queries


def test_every_sweep_config_in_the_docs_parses() -> None:
    """Each complete sweep config written in the README or a docs page (a yaml block with a name
    and benchmarks) is valid as written."""
    import re

    import yaml

    from evaluations.config import parse_config

    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    found = 0
    for page in pages:
        for block in re.findall(r"```yaml\n(.*?)```", page.read_text(), re.S):
            raw = yaml.safe_load(block)
            if isinstance(raw, dict) and {"name", "benchmarks"} <= set(raw):
                parse_config(raw, source=str(page.relative_to(ROOT)))
                found += 1
    assert found >= 1


def test_the_readmes_links_reach_files() -> None:
    """The README is read on its own (the docs site checks the pages' links): every relative link
    in it names a file of the checkout."""
    import re

    readme = (ROOT / "README.md").read_text()
    targets = [t for t in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme) if "://" not in t]
    assert targets, "the README links to its docs pages"
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing, missing


def test_a_cells_defaults_are_the_librarys() -> None:
    """A cell with nothing set refines as the library's paper setup and weighs Rocchio as SMART;
    the grid's defaults are the same values (each written once, in refine_core)."""
    from evaluations.config import BenchmarkSpec, CellSpec, Grid, JudgeSpec
    from refine_core.baselines import RocchioParams
    from refine_core.refinement import PAPER, RefineConfig

    cell = CellSpec(benchmark=BenchmarkSpec(name="clinc150"), model="m", judge=JudgeSpec(kind="oracle"))
    assert cell.refine_config() == PAPER and cell.smart_rocchio
    assert (cell.rocchio_beta, cell.rocchio_gamma) == (RocchioParams().beta, RocchioParams().gamma)
    grid = Grid()
    assert [grid.lr, grid.steps, grid.pull] == [[PAPER.lr], [PAPER.steps], [PAPER.pull]]
    moved = CellSpec(**{**cell.model_dump(), "lr": 3e-4, "pull": 0.1, "normalize": "minmax"})
    assert moved.refine_config() == RefineConfig(lr=3e-4, pull=0.1, normalize="minmax")


def test_a_configs_data_paths_are_read_from_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 32: examples/own-data.yaml found its data only from the repository's root. A relative
    path that exists beside the config is read from there, from any working directory; one that
    exists only from the working directory is kept as written."""
    import shutil

    from evaluations.config import load_config

    folder = tmp_path / "project"
    shutil.copytree(ROOT / "tests" / "fixtures" / "userdata", folder / "data" / "mine")
    np_file = folder / "vectors.npy"
    np_file.write_bytes(b"")
    config = folder / "sweep.yaml"
    config.write_text(
        "name: mine\nmodels: [m]\nbenchmarks:\n  - name: files:data/mine\n    document_vectors: {path: vectors.npy, model: m}\n"
        "  - name: files:elsewhere\n"
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path)
    mine, other = load_config(config).benchmarks
    assert mine.name == f"files:{folder / 'data' / 'mine'}" and Path(mine.name[6:]).is_dir()
    assert mine.document_vectors is not None and mine.document_vectors.path == str(np_file)
    assert other.name == "files:elsewhere"  # not beside the config: as written (the working directory's)
    own = load_config(ROOT / "examples" / "own-data.yaml").benchmarks[0]
    assert Path(own.name.partition(":")[2]).is_dir()  # the example runs from anywhere
