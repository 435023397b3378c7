"""The registry of benchmarks by name, and where their files are found.

Named datasets live in ``<data dir>/<folder>`` where the data directory is
``$REFINE_DATA_DIR`` or, when unset, ``$XDG_CACHE_HOME/refine-eval/data`` (default
``~/.cache/refine-eval/data``). Parametric names point at a folder of a known layout:
``beir:<folder>``, ``intent-csv:<folder>``, ``followir:<folder>`` and ``files:<folder>``.

When a named dataset's files are absent and the Hugging Face Hub is reachable (and
``HF_HUB_OFFLINE`` is not set), the loaders that have a Hub source fetch it through
``datasets``. Tests never do this.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from evaluations import hub
from evaluations.benchmark import Benchmark
from evaluations.errors import DatasetError, DatasetNotFound
from evaluations.loaders import (
    load_argkp21,
    load_banking77,
    load_beir,
    load_clinc150,
    load_followir_folder,
    load_intent_csv,
    load_nfcorpus,
    load_snips,
)
from evaluations.realscholarquery import RSQ_FILES, load_realscholarquery
from evaluations.user_files import load_user_files

SPARSE_SEED = 0
"""The seed of every registered ``-sparse`` variant (:meth:`Benchmark.sparse`)."""


def data_dir() -> Path:
    """The configured data directory (it need not exist)."""
    configured = os.environ.get("REFINE_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "refine-eval" / "data"


@dataclass(frozen=True)
class DatasetSpec:
    """How to find and load one named benchmark."""

    name: str
    folder: str
    files: tuple[str, ...]
    loader: Callable[[Path], Benchmark]
    description: str
    origin: str
    licence: str
    hub_loader: Callable[[], Benchmark] | None = None

    def path(self, root: Path | None = None) -> Path:
        return (root or data_dir()) / self.folder

    def missing_files(self, root: Path | None = None) -> list[Path]:
        folder = self.path(root)
        return [folder / f for f in self.files if not (folder / f).is_file()]


def _sparse(loader: Callable[[Path], Benchmark], path: Path) -> Benchmark:
    return loader(path).sparse(seed=SPARSE_SEED)


def _sparse_hub(hub_loader: Callable[[], Benchmark]) -> Benchmark:
    return hub_loader().sparse(seed=SPARSE_SEED)


def _followir(sub: str, path: Path) -> Benchmark:
    return load_followir_folder(path, name=f"followir-{sub}")


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "clinc150",
            "clinc150",
            ("data_full.json", "clinc150_intent_mapping.csv"),
            load_clinc150,
            "CLINC150 train split: 150 intent descriptions x 15,000 utterances (paper construction)",
            "clinc/oos-eval data_full.json + IBM/task-aware-embedding-refinement clinc150_intent_mapping.csv",
            "CC BY 3.0 (data), Apache-2.0 (intent descriptions)",
        ),
        DatasetSpec(
            "clinc150-names",
            "clinc150",
            ("data_full.json",),
            lambda p: load_clinc150(p, descriptions=False),
            "CLINC150 with intent names ('_' -> ' ') as queries instead of descriptions",
            "clinc/oos-eval data_full.json",
            "CC BY 3.0",
            hub.clinc150_names,
        ),
        DatasetSpec(
            "banking77",
            "banking77",
            ("train.csv", "test.csv"),
            load_banking77,
            "Banking77 train+test: 77 category queries over the unique texts",
            "PolyAI-LDN/task-specific-datasets banking_data/{train,test}.csv",
            "CC BY 4.0",
            hub.banking77,
        ),
        DatasetSpec(
            "nfcorpus",
            "nfcorpus",
            ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"),
            load_nfcorpus,
            "NFCorpus (BEIR) test split over the full corpus; title + text",
            "BEIR nfcorpus.zip",
            "see the BEIR / NFCorpus terms (non-commercial research)",
            hub.nfcorpus,
        ),
        DatasetSpec(
            "snips",
            "snips",
            tuple(f"{s}/{f}" for s in ("train", "valid", "test") for f in ("seq.in", "label")),
            load_snips,
            "SNIPS: 7 intents over the unique utterances of train+valid+test",
            "MiuLab/SlotGated-SLU data/snips (from sonos/nlu-benchmark)",
            "CC0 1.0",
        ),
        DatasetSpec(
            "realscholarquery",
            "realscholarquery",
            RSQ_FILES,
            load_realscholarquery,
            "RealScholarQuery (PaSa): 50 research questions over 25,000 arXiv abstracts (gold papers kept, seed 42)",
            "Hugging Face Hub CarlanLark/pasa-dataset (paper_database/, RealScholarQuery/test.jsonl)",
            "see the dataset card",
            hub.realscholarquery,
        ),
        DatasetSpec(
            "argkp21",
            "argkp21",
            (),
            load_argkp21,
            "ArgKP-21 key-point matching, dev+train: each key point over its labelled arguments",
            "IBM ArgKP-2021 kpm_data (arguments_*, key_points_*, labels_*.csv)",
            "CC BY-SA 3.0 (IBM Debater)",
        ),
        *(
            DatasetSpec(
                f"{base}-sparse",
                base,
                files,
                partial(_sparse, loader),
                f"{base} with one relevant document per query (Benchmark.sparse, seed {SPARSE_SEED}): "
                "each query's other relevant documents leave its pool",
                origin,
                licence,
                None if hub_loader is None else partial(_sparse_hub, hub_loader),
            )
            for base, files, loader, origin, licence, hub_loader in (
                (
                    "nfcorpus",
                    ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"),
                    load_nfcorpus,
                    "BEIR nfcorpus.zip",
                    "see the BEIR / NFCorpus terms (non-commercial research)",
                    hub.nfcorpus,
                ),
                (
                    "banking77",
                    ("train.csv", "test.csv"),
                    load_banking77,
                    "PolyAI-LDN/task-specific-datasets",
                    "CC BY 4.0",
                    hub.banking77,
                ),
                (
                    "clinc150",
                    ("data_full.json", "clinc150_intent_mapping.csv"),
                    load_clinc150,
                    "clinc/oos-eval data_full.json + IBM/task-aware-embedding-refinement clinc150_intent_mapping.csv",
                    "CC BY 3.0 (data), Apache-2.0 (intent descriptions)",
                    None,
                ),
            )
        ),
        *(
            DatasetSpec(
                f"followir-{sub}",
                f"followir/{sub}",
                ("corpus.jsonl", "queries.jsonl", "qrels_og.jsonl", "top_ranked.jsonl"),
                partial(_followir, sub),
                f"FollowIR {sub} (MTEB InstructionRetrieval): query + instruction over per-query pools",
                f"Hugging Face Hub jhu-clsp/{sub}-instructions-mteb",
                "see the dataset card",
                partial(hub.followir, sub),
            )
            for sub in ("core17", "robust04", "news21")
        ),
    )
}

PARAMETRIC: dict[str, Callable[[Path], Benchmark]] = {
    "beir": load_beir,
    "intent-csv": load_intent_csv,
    "followir": load_followir_folder,
    "files": load_user_files,
}


def _argkp_missing(folder: Path) -> list[Path]:
    base = folder / "kpm_data" if (folder / "kpm_data").is_dir() else folder
    return [
        base / f"{kind}_{split}.csv"
        for split in ("dev", "train")
        for kind in ("arguments", "key_points", "labels")
        if not (base / f"{kind}_{split}.csv").is_file()
    ]


def missing_files(name: str, root: Path | None = None) -> list[Path]:
    """Files a named dataset needs that are not in the data directory."""
    spec = REGISTRY[name]
    if name == "argkp21":
        return _argkp_missing(spec.path(root))
    return spec.missing_files(root)


def load_raw(name: str, *, root: Path | None = None) -> Benchmark:
    """Load a benchmark by registry or parametric name, without subsetting."""
    if ":" in name:
        kind, _, location = name.partition(":")
        if kind not in PARAMETRIC:
            raise DatasetError(f"unknown dataset kind {kind!r} in {name!r}; known kinds: {sorted(PARAMETRIC)}")
        folder = Path(location).expanduser()
        if not folder.is_dir():
            raise DatasetNotFound(f"dataset {name!r}: folder {folder} does not exist")
        return PARAMETRIC[kind](folder)
    if name not in REGISTRY:
        raise DatasetError(
            f"unknown dataset {name!r}; known datasets: {', '.join(sorted(REGISTRY))}, "
            f"or one of {', '.join(k + ':<folder>' for k in PARAMETRIC)}"
        )
    spec = REGISTRY[name]
    missing = missing_files(name, root)
    if not missing:
        return spec.loader(spec.path(root))
    if spec.hub_loader is not None and hub.hub_enabled():
        try:
            return spec.hub_loader()
        except Exception as exc:
            hub_note = f"; the Hugging Face Hub failed too ({type(exc).__name__}: {exc})"
        else:  # pragma: no cover
            hub_note = ""
    elif spec.hub_loader is not None:
        hub_note = "; the Hugging Face Hub was not tried (HF_HUB_OFFLINE is set)"
    else:
        hub_note = "; this dataset has no Hub source"
    shown = ", ".join(str(p) for p in missing[:3]) + (" ..." if len(missing) > 3 else "")
    raise DatasetNotFound(
        f"dataset {name!r}: files not found: {shown}. Put the publisher's files ({spec.origin}) in "
        f"{spec.path(root)} or point REFINE_DATA_DIR at a folder holding {spec.folder}/{hub_note}"
    )


def load_benchmark(
    name: str,
    *,
    root: Path | None = None,
    queries: int | None = None,
    query_seed: int | None = None,
    max_documents: int | None = None,
    corpus_seed: int = 42,
) -> Benchmark:
    """Load a benchmark and apply the requested subsetting.

    Args:
        name: a registry name (``refine datasets``) or ``kind:<folder>``.
        root: data directory (default :func:`data_dir`).
        queries: keep this many queries (first ones, or random with ``query_seed``).
        max_documents: subsample the corpus to this size, keeping every positive of the
            (remaining) queries.
        corpus_seed: seed of the corpus subsample (paper: 42).
    """
    benchmark = load_raw(name, root=root)
    if queries is not None:
        benchmark = benchmark.subset_queries(queries, seed=query_seed)
    if max_documents is not None:  # after the query subset: keeps the positives of the queries kept
        benchmark = benchmark.subsample_corpus(max_documents, seed=corpus_seed)
    return benchmark
