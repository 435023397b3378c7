"""Fetching the registered datasets from the Hugging Face Hub (online users only).

Each function builds the same :class:`Benchmark` as the local loader, from the Hub copy of
the data. They are used only when the local files are absent and ``HF_HUB_OFFLINE`` is
not set; the test suite never calls them (it runs offline).
"""

from __future__ import annotations

import os

from evaluations.benchmark import Benchmark, make_tables
from evaluations.loaders import CLINC150_NAMES_INSTRUCTION, PAPER_INSTRUCTIONS, beir_document_text, intent_benchmark


def hub_enabled() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() not in ("1", "true", "yes")


def _load(path: str, *args: str, **kwargs: str):
    from datasets import load_dataset

    return load_dataset(path, *args, **kwargs)


def banking77() -> Benchmark:
    """``PolyAI/banking77`` train + test (label ids mapped to category names)."""
    ds = _load("PolyAI/banking77")
    names = ds["train"].features["label"].names
    pairs = [(row["text"], names[row["label"]]) for split in ("train", "test") for row in ds[split]]
    return intent_benchmark(
        name="banking77",
        version="1",
        pairs=pairs,
        query_text={n: n.replace("_", " ") for n in names},
        embed_instruction=PAPER_INSTRUCTIONS["banking77"],
        source="hf:PolyAI/banking77",
        doc_prefix="text-",
        dedupe=True,
    )


def clinc150_names() -> Benchmark:
    """``clinc_oos`` (config ``plus``) train split without the out-of-scope class."""
    ds = _load("clinc_oos", "plus")
    names = ds["train"].features["intent"].names
    pairs = [(row["text"], names[row["intent"]]) for row in ds["train"] if names[row["intent"]] != "oos"]
    return intent_benchmark(
        name="clinc150-names",
        version="1",
        pairs=pairs,
        query_text={n: n.replace("_", " ") for n in names},
        embed_instruction=CLINC150_NAMES_INSTRUCTION,
        source="hf:clinc_oos/plus",
        doc_prefix="train-",
        dedupe=False,
    )


def nfcorpus() -> Benchmark:
    """``BeIR/nfcorpus`` corpus and queries with ``BeIR/nfcorpus-qrels`` test."""
    corpus = _load("BeIR/nfcorpus", "corpus")["corpus"]
    queries = _load("BeIR/nfcorpus", "queries")["queries"]
    qrels = _load("BeIR/nfcorpus-qrels")["test"]
    text = {str(r["_id"]): r["text"] for r in queries}
    order = list(dict.fromkeys(str(r["query-id"]) for r in qrels))
    q, d, lab = make_tables(
        [(qid, text[qid]) for qid in order],
        [(str(r["_id"]), beir_document_text(r)) for r in corpus],
        [(str(r["query-id"]), str(r["corpus-id"]), 1, float(r["score"])) for r in qrels if float(r["score"]) > 0],
    )
    return Benchmark(
        name="nfcorpus",
        version="1",
        queries=q,
        documents=d,
        labels=lab,
        embed_instruction=PAPER_INSTRUCTIONS["nfcorpus"],
        judge_instruction=None,
        pool="corpus",
        source="hf:BeIR/nfcorpus",
    )


def followir(sub: str) -> Benchmark:
    """``jhu-clsp/{sub}-instructions-mteb``: query + original instruction, per-query pools."""
    repo = f"jhu-clsp/{sub}-instructions-mteb"
    corpus = _load(repo, "corpus")["corpus"]
    queries = _load(repo, "queries")["queries"]
    qrels = _load(repo, "qrels_og")["test"]
    top = _load(repo, "top_ranked")["test"]
    grades = {(str(r["query-id"]), str(r["corpus-id"])): float(r["score"]) for r in qrels}
    labels = [
        (
            str(r["query-id"]),
            str(did),
            int(grades.get((str(r["query-id"]), str(did)), 0.0) > 0),
            grades.get((str(r["query-id"]), str(did)), 0.0),
        )
        for r in top
        for did in dict.fromkeys(r["corpus-ids"])
    ]
    used = {d for _, d, _, _ in labels}
    q, d, lab = make_tables(
        [(str(r["_id"]), f"{r['text'].strip()} {r['instruction_og'].strip()}") for r in queries],
        [(str(r["_id"]), beir_document_text(r)) for r in corpus if str(r["_id"]) in used],
        labels,
    )
    return Benchmark(
        name=f"followir-{sub}",
        version="1",
        queries=q,
        documents=d,
        labels=lab,
        embed_instruction=PAPER_INSTRUCTIONS["followir"],
        judge_instruction=None,
        pool="per-query",
        source=f"hf:{repo}",
    )


__all__ = ["banking77", "clinc150_names", "followir", "hub_enabled", "nfcorpus"]


def realscholarquery() -> Benchmark:
    """``CarlanLark/pasa-dataset``: the three files of the local layout, fetched into the Hub cache."""
    from pathlib import Path

    from huggingface_hub import hf_hub_download

    from evaluations.realscholarquery import RSQ_FILES, load_realscholarquery

    paths = [Path(hf_hub_download("CarlanLark/pasa-dataset", f, repo_type="dataset")) for f in RSQ_FILES]
    # hf_hub_download keeps the repository's folders: the root is two levels above the zip.
    return load_realscholarquery(paths[0].parent.parent)
