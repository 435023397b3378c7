"""The bad-input table: each case through the `refine` CLI, one line on stderr, exit code 2.

Data cases use a user dataset folder (`files:<folder>`) built per case; the config cases are in
tests/test_platform.py (they need the registered datasets) and the engine's own ValueErrors in
tests/test_refinement.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

GOOD_QUERIES = '{"query_id": "q1", "text": "lost card"}\n{"query_id": "q2", "text": "weather"}\n'
GOOD_DOCS = '{"doc_id": "d1", "text": "my card is gone"}\n{"doc_id": "d2", "text": "sunny today"}\n{"doc_id": "d3", "text": "rain"}\n'
GOOD_LABELS = '{"query_id": "q1", "doc_id": "d1", "label": 1}\n{"query_id": "q2", "doc_id": "d2", "label": 1}\n'


def dataset(tmp: Path, **files: str | bytes) -> Path:
    folder = tmp / "data"
    folder.mkdir()
    contents = {"queries.jsonl": GOOD_QUERIES, "documents.jsonl": GOOD_DOCS, "labels.jsonl": GOOD_LABELS}
    contents.update({k.replace("__", "."): v for k, v in files.items()})
    for name, text in contents.items():
        if text is None:
            continue
        (folder / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return folder


CASES = [
    ("unknown dataset", None, ["datasets", "show", "no-such-dataset"], "unknown dataset 'no-such-dataset'"),
    ("missing data files", {"labels__jsonl": None}, ["datasets", "show"], "missing labels.jsonl or labels.parquet"),
    (
        "malformed JSONL line",
        {"documents__jsonl": GOOD_DOCS + '{"doc_id": "d4", "text": \n'},
        ["datasets", "show"],
        "documents.jsonl: line 4: malformed JSON",
    ),
    (
        "duplicate ids",
        {"documents__jsonl": GOOD_DOCS + '{"doc_id": "d1", "text": "again"}\n'},
        ["datasets", "show"],
        "duplicate doc_id 'd1' in documents (row 3)",
    ),
    (
        "non-UTF-8 text",
        {"documents__jsonl": GOOD_DOCS.encode() + b'{"doc_id": "d9", "text": "\xff"}\n'},
        ["datasets", "show"],
        "documents.jsonl: line 4 is not valid UTF-8",
    ),
    (
        "empty string",
        {"queries__jsonl": GOOD_QUERIES + '{"query_id": "q3", "text": "  "}\n'},
        ["datasets", "show"],
        "queries.jsonl: line 3: 'text' must be a non-empty string, got '  '",
    ),
    (
        "null text",
        {"documents__jsonl": GOOD_DOCS + '{"doc_id": "d4", "text": null}\n'},
        ["datasets", "show"],
        "documents.jsonl: line 4: 'text' must be a non-empty string, got None",
    ),
    (
        "null id",
        {"queries__jsonl": GOOD_QUERIES + '{"query_id": null, "text": "hello"}\n'},
        ["datasets", "show"],
        "queries.jsonl: line 3: 'query_id' must be a non-empty string or an integer, got None",
    ),
    (
        "label pointing at an unknown id",
        {"labels__jsonl": GOOD_LABELS + '{"query_id": "q1", "doc_id": "d7", "label": 1}\n'},
        ["datasets", "show"],
        "labels row 2 points at unknown doc_id 'd7'",
    ),
    (
        "a query with no documents (per-query pool)",
        {
            "benchmark__json": json.dumps({"pool": "per-query"}),
            "queries__jsonl": GOOD_QUERIES + '{"query_id": "q3", "text": "orphan"}\n',
        },
        ["datasets", "show"],
        "query 'q3' has no documents in its pool",
    ),
    (
        "a label that is not 0/1",
        {"labels__jsonl": GOOD_LABELS + '{"query_id": "q1", "doc_id": "d2", "label": 300}\n'},
        ["datasets", "show"],
        "labels.jsonl: line 3: 'label' must be 0 or 1 (put a graded relevance in 'score'), got 300",
    ),
    (
        "a null label",
        {"labels__jsonl": '{"query_id": "q1", "doc_id": "d1", "label": null}\n'},
        ["datasets", "show"],
        "labels.jsonl: line 1: 'label' must be 0 or 1 (put a graded relevance in 'score'), got None",
    ),
    (
        "a label written as text",
        {"labels__jsonl": '{"query_id": "q1", "doc_id": "d1", "label": "yes"}\n'},
        ["datasets", "show"],
        "labels.jsonl: line 1: 'label' must be 0 or 1 (put a graded relevance in 'score'), got 'yes'",
    ),
    (
        "a score that is not a number",
        {"labels__jsonl": '{"query_id": "q1", "doc_id": "d1", "label": 1, "score": "high"}\n'},
        ["datasets", "show"],
        "labels.jsonl: line 1: 'score' must be a finite number (a graded relevance), got 'high'",
    ),
    ("negative lr", {}, ["demo", "--lr", "-0.5"], "lr must be a positive finite number, got -0.5"),
    ("steps = 0", {}, ["demo", "--steps", "0"], "steps must be an integer >= 1, got 0"),
    ("negative pull", {}, ["demo", "--pull", "-0.1"], "pull must be a finite number >= 0, got -0.1"),
    (
        "K larger than the pool",
        {},
        ["demo", "--k", "50"],
        "--k 50 x --rounds 1 exceeds the smallest query pool (3 documents)",
    ),
    (
        "an embedding model that does not exist",
        {},
        ["demo", "--model", "./nowhere/model"],
        "embedding model './nowhere/model': no such folder",
    ),
]


@pytest.mark.parametrize("label,files,args,message", CASES, ids=[c[0] for c in CASES])
def test_bad_input(tmp_path: Path, label: str, files: dict | None, args: list[str], message: str) -> None:
    argv = list(args)
    if files is not None:
        folder = dataset(tmp_path, **files)
        if argv[0] == "datasets":
            argv.append(f"files:{folder}")
        else:
            argv += ["--dataset", f"files:{folder}"]
    env = {**os.environ, "REFINE_HOME": str(tmp_path / ".refine"), "COLUMNS": "200"}
    res = subprocess.run(
        [sys.executable, "-m", "flows.cli", *argv], capture_output=True, text=True, env=env, timeout=300, cwd=ROOT
    )
    assert res.returncode == 2, (label, res.stdout, res.stderr)
    assert message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_a_parquet_label_that_is_not_0_or_1_names_the_file_and_row(tmp_path: Path) -> None:
    import polars as pl

    from evaluations.errors import DatasetError
    from evaluations.user_files import load_user_files

    folder = dataset(tmp_path, labels__jsonl=None)
    pl.DataFrame({"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "label": [1.0, 0.5]}).write_parquet(
        folder / "labels.parquet"
    )
    with pytest.raises(DatasetError, match=r"labels.parquet: row 2: 'label' must be 0 or 1 .* got 0.5"):
        load_user_files(folder)
    pl.DataFrame(
        {"query_id": ["q1", "q2"], "doc_id": ["d1", "d2"], "label": [1.0, 0.0], "score": [2.0, None]}
    ).write_parquet(folder / "labels.parquet")
    bench = load_user_files(folder)  # 1.0 / 0.0 read as 1 / 0; a missing score defaults to the label
    assert bench.n_queries == 2
