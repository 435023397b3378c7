"""RealScholarQuery: the paper's literature-search benchmark, built from its released files."""

from __future__ import annotations

import re
from pathlib import Path

from evaluations.benchmark import Benchmark, make_tables
from evaluations.errors import DatasetError

# The paper's task instructions, verbatim (instruction_templates.yaml of its released code). Each
# fills the query template ``Instruct: {instruction}\nQuery: {query}``; for the classification
# datasets (CLINC150, Banking77, ArgKP21) it is also the judge's task instruction ("Judge the
# relevance according to the following task: ..."); search datasets give the judge none.
# tests/test_datasets.py pins them.
from evaluations.loaders import PAPER_INSTRUCTIONS
from evaluations.readers import read_json, read_jsonl

# ---------------------------------------------------------------------------------------
# RealScholarQuery (PaSa): academic questions over arXiv abstracts.
# ---------------------------------------------------------------------------------------
RSQ_FILES = ("paper_database/cs_paper_2nd.zip", "paper_database/id2paper.json", "RealScholarQuery/test.jsonl")


def _title_key(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", title.lower()).strip()


def load_realscholarquery(folder: Path, *, questions: int = 50, corpus_size: int = 25_000, seed: int = 42) -> Benchmark:
    """RealScholarQuery in the layout of the Hub dataset ``CarlanLark/pasa-dataset``.

    ``paper_database/cs_paper_2nd.zip`` holds one JSON per paper (``title``, ``abstract``, ...),
    ``paper_database/id2paper.json`` maps an arXiv id to its title (or to a record with a
    ``title``), ``RealScholarQuery/test.jsonl`` has ``question`` and ``answer_arxiv_id`` (a list).
    Paper construction: the first ``questions`` questions; documents are the abstracts; the
    corpus is subsampled to ``corpus_size`` papers (seeded) keeping every gold paper; the gold
    papers are the positives. Gold ids whose paper is not in the database are dropped (their
    number is recorded in ``source``).
    """
    import json
    import zipfile

    import numpy as np

    id2paper = read_json(folder / "paper_database" / "id2paper.json")
    if not isinstance(id2paper, dict):
        raise DatasetError(f"{folder / 'paper_database' / 'id2paper.json'}: expected an object of arXiv id -> title")
    title_of = {}
    for arxiv_id, value in id2paper.items():
        title = value.get("title") if isinstance(value, dict) else value
        if isinstance(title, str) and title.strip():
            title_of[str(arxiv_id)] = title
    rows = read_jsonl(folder / "RealScholarQuery" / "test.jsonl", ("question", "answer_arxiv_id"))[:questions]
    archive = folder / "paper_database" / "cs_paper_2nd.zip"
    papers: dict[str, str] = {}  # title key -> abstract
    display: dict[str, str] = {}  # title key -> a document id
    try:
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                if info.is_dir() or not info.filename.endswith(".json"):
                    continue
                try:
                    record = json.loads(zf.read(info).decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise DatasetError(f"{archive}: {info.filename} is not valid JSON ({exc})") from None
                title, abstract = record.get("title"), record.get("abstract")
                if not isinstance(title, str) or not isinstance(abstract, str) or not abstract.strip():
                    continue
                key = _title_key(title)
                if key and key not in papers:
                    papers[key] = abstract.strip()
                    display[key] = str(record.get("arxiv_id") or record.get("id") or Path(info.filename).stem)
    except zipfile.BadZipFile:
        raise DatasetError(f"{archive} is not a zip file") from None
    key_of_id = {arxiv_id: _title_key(t) for arxiv_id, t in title_of.items()}
    labels_rows: list[tuple[str, str]] = []
    dropped = 0
    queries: list[tuple[str, str]] = []
    for n, row in enumerate(rows):
        qid = f"rsq-{n}"
        queries.append((qid, str(row["question"]).strip()))
        answers = row["answer_arxiv_id"]
        if not isinstance(answers, list):
            raise DatasetError(
                f"{folder / 'RealScholarQuery' / 'test.jsonl'}: line {n + 1}: 'answer_arxiv_id' must be a list"
            )
        for arxiv_id in dict.fromkeys(str(a) for a in answers):
            paper = key_of_id.get(arxiv_id)
            if paper is None or paper not in papers:
                dropped += 1
                continue
            labels_rows.append((qid, paper))
    gold = list(dict.fromkeys(key for _, key in labels_rows))
    others = sorted(set(papers) - set(gold))
    room = max(corpus_size - len(gold), 0)
    rng = np.random.default_rng(seed)
    picked = [others[i] for i in sorted(rng.choice(len(others), size=min(room, len(others)), replace=False))]
    keep = gold + picked
    doc_id = {key: f"{display[key]}" for key in keep}
    if len(set(doc_id.values())) != len(doc_id):  # ids from file names may collide: fall back to positions
        doc_id = {key: f"paper-{i}" for i, key in enumerate(keep)}
    documents = [(doc_id[key], papers[key]) for key in keep]
    labels = [(qid, doc_id[key], 1, 1.0) for qid, key in dict.fromkeys(labels_rows)]  # the corpus is every query's pool
    q, d, lab = make_tables(queries, documents, labels)
    return Benchmark(
        name="realscholarquery",
        version="1",
        queries=q,
        documents=d,
        labels=lab,
        embed_instruction=PAPER_INSTRUCTIONS["realscholarquery"],
        judge_instruction=None,
        pool="corpus",
        source=f"{folder} (corpus {len(keep)} of {len(papers)} papers, seed {seed}; {dropped} gold ids not in the database)",
    )
