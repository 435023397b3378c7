"""RealScholarQuery (PaSa layout) from local files: construction, subsampling, bad files."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from evaluations.errors import DatasetError
from evaluations.realscholarquery import load_realscholarquery


def write_pasa(root: Path, n_papers: int = 40, questions: int = 3) -> Path:
    """The Hub dataset's layout with ``n_papers`` papers; question q's gold papers are 2q and 2q+1,
    plus one arXiv id that the paper database lacks."""
    (root / "paper_database").mkdir(parents=True)
    (root / "RealScholarQuery").mkdir()
    id2paper = {}
    with zipfile.ZipFile(root / "paper_database" / "cs_paper_2nd.zip", "w") as zf:
        for i in range(n_papers):
            title = f"Paper Number {i}: A Study"
            id2paper[f"2401.{i:05d}"] = title
            # file names and title spelling differ from id2paper on purpose: the loader matches normalised titles
            zf.writestr(
                f"cs_paper_2nd/p{i}.json",
                json.dumps(
                    {
                        "title": title.upper(),
                        "abstract": f"Abstract of paper {i}.",
                        "authors": ["A"],
                        "arxiv_id": f"2401.{i:05d}",
                    }
                ),
            )
        zf.writestr("cs_paper_2nd/broken-but-skipped.txt", "not json")
    id2paper["9999.00001"] = "A paper that is not in the database"
    (root / "paper_database" / "id2paper.json").write_text(json.dumps(id2paper))
    with (root / "RealScholarQuery" / "test.jsonl").open("w") as f:
        for q in range(questions):
            f.write(
                json.dumps(
                    {
                        "question": f"Which papers study topic {q}?",
                        "answer_arxiv_id": [f"2401.{2 * q:05d}", f"2401.{2 * q + 1:05d}", "9999.00001"],
                    }
                )
                + "\n"
            )
    return root


def test_paper_construction(tmp_path: Path) -> None:
    bench = load_realscholarquery(write_pasa(tmp_path / "rsq"), corpus_size=12, seed=42)
    assert bench.n_queries == 3 and bench.n_documents == 12 and bench.pool == "corpus"
    assert bench.query_texts()[1] == "Which papers study topic 1?"
    relevant = bench.relevant_texts()
    assert relevant["Which papers study topic 2?"] == {"Abstract of paper 4.", "Abstract of paper 5."}
    ids = bench.documents["doc_id"].to_list()
    assert ids[:6] == [f"2401.{i:05d}" for i in range(6)]  # every gold paper kept, first
    assert "3 gold ids not in the database" in bench.source
    again = load_realscholarquery(tmp_path / "rsq", corpus_size=12, seed=42)
    assert again.documents["doc_id"].to_list() == ids  # seeded
    other = load_realscholarquery(tmp_path / "rsq", corpus_size=12, seed=7)
    assert other.documents["doc_id"].to_list()[:6] == ids[:6] and other.documents["doc_id"].to_list() != ids
    labels, pool = bench.label_matrix()
    assert pool is None and labels.sum() == 6
    assert load_realscholarquery(tmp_path / "rsq", questions=2).n_queries == 2


def test_registry_and_bad_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluations.registry import load_benchmark

    write_pasa(tmp_path / "data" / "realscholarquery")
    monkeypatch.setenv("REFINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert load_benchmark("realscholarquery").n_documents == 40  # fewer papers than 25,000: all kept
    (tmp_path / "data" / "realscholarquery" / "paper_database" / "cs_paper_2nd.zip").write_text("no zip")
    with pytest.raises(DatasetError, match="is not a zip file"):
        load_benchmark("realscholarquery")
    (tmp_path / "data" / "realscholarquery" / "RealScholarQuery" / "test.jsonl").unlink()
    with pytest.raises(
        DatasetError, match=r"RealScholarQuery/test.jsonl.*CarlanLark/pasa-dataset.*HF_HUB_OFFLINE is set"
    ):
        load_benchmark("realscholarquery")
