"""Refinement on a user's own corpus: index it, search it, classify every document.

Three operations, no Prefect needed:

* :func:`build_index` embeds a corpus (``id`` + ``text``) into a folder: the vectors
  (``vectors.npy``), the documents (``documents.parquet``) and ``index.json`` naming the model
  and a hash of the content. Embedding goes through the :class:`EmbeddingCache` in chunks, so
  an interrupted build resumes where it stopped and a rebuild of unchanged text is free.
* :func:`search` embeds a query, has the judge score the top ``k`` documents, refines the query
  vector (``rounds`` times) and re-ranks the whole corpus.
* :func:`classify` does the same for a criterion, then picks a decision threshold on the refined
  similarity from the judged documents (optionally judging documents near it to calibrate),
  and labels every document, with an estimate of the number of positives and an interval.

Example:
    >>> from refine_core.corpus import build_index, search
    >>> index = build_index(["a cat", "a dog"], ids=["1", "2"], folder="idx", embedder=embedder)  # doctest: +SKIP
    >>> search(index, "kittens", judge=judge, k=2).top_ids  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from refine_core.ann import AnnIndex, AnnSettings, exact_top

# The classification statistics live in refine_core.calibration (numeric, no I/O); re-exported
# here because they were part of this module's API.
from refine_core.calibration import best_threshold_f1 as best_threshold_f1
from refine_core.calibration import binary_metrics as binary_metrics
from refine_core.calibration import choose_threshold as choose_threshold
from refine_core.calibration import label_documents as label_documents
from refine_core.calibration import positive_interval as positive_interval
from refine_core.calibration import rank_bands as rank_bands
from refine_core.calibration import stratified_estimate as stratified_estimate
from refine_core.calibration import stratified_sample as stratified_sample
from refine_core.embedders import SentenceTransformerEmbedder
from refine_core.embedding_cache import EmbeddingCache
from refine_core.judges.ledger import JudgmentLedger
from refine_core.judges.runner import JudgeRequest, RunReport, run_judge
from refine_core.refinement import RefineConfig, refine

INDEX_FORMAT = 1
SCORE_CHUNK = 262_144  # documents scored per matrix product (bounds memory on large corpora)


class CorpusError(ValueError):
    """The corpus, the index or a request on it is unusable; the message says which and why."""


# ---- reading a corpus ------------------------------------------------------------------------
def read_corpus(
    path: str | os.PathLike[str], *, id_column: str = "id", text_column: str = "text"
) -> tuple[list[str], list[str]]:
    """Ids and texts from a ``.jsonl``, ``.parquet`` or ``.csv`` file.

    Raises:
        CorpusError: missing file, unknown format, missing columns, empty corpus, empty texts,
            duplicate ids — the message names the file, the column and a first offending row.
    """
    import polars as pl

    p = Path(path)
    if not p.is_file():
        raise CorpusError(f"corpus {p}: no such file")
    suffix = p.suffix.lower()
    try:
        if suffix == ".parquet":
            frame = pl.read_parquet(p)
        elif suffix in (".jsonl", ".ndjson"):
            frame = pl.read_ndjson(p, infer_schema_length=None) if p.stat().st_size else pl.DataFrame()
        elif suffix == ".csv":
            frame = pl.read_csv(p, infer_schema_length=0) if p.stat().st_size else pl.DataFrame()
        else:
            raise CorpusError(f"corpus {p}: unknown format {suffix or '(none)'!r}; use .jsonl, .parquet or .csv")
    except CorpusError:
        raise
    except Exception as exc:
        raise CorpusError(f"corpus {p}: cannot be read as {suffix[1:]} ({str(exc).splitlines()[0][:200]})") from None
    if frame.height == 0:
        raise CorpusError(f"corpus {p} is empty: it has no documents")
    for column in (id_column, text_column):
        if column not in frame.columns:
            raise CorpusError(f"corpus {p} has no column {column!r} (columns: {', '.join(frame.columns) or 'none'})")
    ids = [None if v is None else str(v) for v in frame[id_column].to_list()]
    texts = [None if v is None else str(v) for v in frame[text_column].to_list()]
    return check_corpus(ids, texts, source=str(p), id_column=id_column, text_column=text_column)


def check_corpus(
    ids: Sequence[str | None],
    texts: Sequence[str | None],
    *,
    source: str = "corpus",
    id_column: str = "id",
    text_column: str = "text",
) -> tuple[list[str], list[str]]:
    """Validate ids and texts (same length, non-empty, unique ids, no blank text)."""
    if len(ids) != len(texts):
        raise CorpusError(f"{source}: {len(ids)} ids but {len(texts)} texts")
    if not texts:
        raise CorpusError(f"{source} is empty: it has no documents")
    for row, (i, t) in enumerate(zip(ids, texts)):
        if i is None or not str(i).strip():
            raise CorpusError(f"{source}: row {row} has an empty {id_column!r}")
        if t is None or not str(t).strip():
            raise CorpusError(f"{source}: row {row} (id {i!r}) has an empty {text_column!r}")
    seen: set[str] = set()
    for i in ids:
        if i in seen:
            raise CorpusError(f"{source}: id {i!r} appears more than once in {id_column!r}")
        seen.add(str(i))
    return [str(i) for i in ids], [str(t) for t in texts]


# ---- the index -------------------------------------------------------------------------------
@dataclass(frozen=True)
class CorpusIndex:
    """A built index: a folder with ``index.json``, ``documents.parquet`` and ``vectors.npy``."""

    folder: Path
    model: str
    model_key: str
    documents_hash: str
    count: int
    dimension: int

    @classmethod
    def open(cls, folder: str | os.PathLike[str]) -> CorpusIndex:
        f = Path(folder)
        meta_path = f / "index.json"
        if not meta_path.is_file():
            raise CorpusError(f"index {f}: no index.json (not an index, or its build did not finish)")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorpusError(f"index {f}: index.json is not valid JSON ({exc})") from None
        if meta.get("format") != INDEX_FORMAT:
            raise CorpusError(f"index {f}: format {meta.get('format')!r}, this version reads {INDEX_FORMAT}")
        return cls(
            folder=f,
            model=meta["model"],
            model_key=meta["model_key"],
            documents_hash=meta["documents_hash"],
            count=int(meta["count"]),
            dimension=int(meta["dimension"]),
        )

    def vectors(self) -> np.ndarray:
        """``(count, dimension)`` float32, memory-mapped."""
        return np.load(self.folder / "vectors.npy", mmap_mode="r")

    def documents(self) -> tuple[list[str], list[str]]:
        """Ids and texts, in index order (read once per process and index content)."""
        return _read_documents(str(self.folder.resolve()), self.documents_hash)

    def ann(self) -> tuple[AnnIndex, dict] | None:
        """The index's ANN structure and its build record (kind, measured recall), or None.

        One built for other content or another model is ignored (the exact path is used)."""
        if not (self.folder / "ann.json").is_file():
            return None
        ann, info = AnnIndex.load(self.folder)
        if (
            info.get("documents_hash") != self.documents_hash
            or info.get("model_key") != self.model_key
            or ann.count != self.count
        ):
            return None
        return ann, info

    def check_model(self, embedder: SentenceTransformerEmbedder) -> None:
        """Refuse to mix vector spaces: the query must be embedded by the index's model."""
        if embedder.cache_key != self.model_key:
            raise CorpusError(
                f"index {self.folder} was built with model {self.model!r} ({self.model_key}); "
                f"the query model {embedder.model_id!r} ({embedder.cache_key}) is another one — "
                "rebuild the index with that model or search with the index's model"
            )


@lru_cache(maxsize=8)
def _read_documents(folder: str, content: str) -> tuple[list[str], list[str]]:
    import polars as pl

    frame = pl.read_parquet(Path(folder) / "documents.parquet")
    return frame["id"].to_list(), frame["text"].to_list()


def documents_hash(ids: Sequence[str], texts: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i, t in zip(ids, texts):
        h.update(i.encode())
        h.update(b"\x00")
        h.update(t.encode())
        h.update(b"\x01")
    return h.hexdigest()[:16]


def build_index(
    texts: Sequence[str],
    *,
    ids: Sequence[str],
    folder: str | os.PathLike[str],
    embedder: SentenceTransformerEmbedder,
    cache: EmbeddingCache | None = None,
    chunk_size: int = 4096,
    progress: Callable[[int, int], None] | None = None,
    vectors: np.ndarray | None = None,
) -> CorpusIndex:
    """Embed ``texts`` into an index at ``folder`` (returns it at once if it is up to date).

    ``vectors``: the documents' vectors computed elsewhere (one row per text, in order, by
    ``embedder``'s model; e.g. a memory-mapped ``.npy``): checked and copied, nothing embedded.

    Args:
        texts, ids: the corpus (validated by :func:`check_corpus`).
        folder: where the index lives; an index of other content or another model there is replaced.
        embedder: the document model.
        cache: the embedding cache that makes the build resumable (default: none).
        chunk_size: documents embedded (and cached) per step.
        progress: called with (documents done, total) after each chunk.
    """
    ids, texts = check_corpus(ids, texts)
    if chunk_size < 1:
        raise CorpusError(f"chunk_size must be >= 1, got {chunk_size}")
    if vectors is not None:
        check_vectors(vectors, len(texts), embedder.dimension, embedder.model_id)
    f = Path(folder)
    content = documents_hash(ids, texts)
    try:
        existing = CorpusIndex.open(f)
        if existing.documents_hash == content and existing.model_key == embedder.cache_key:
            return existing
    except CorpusError:
        pass
    import polars as pl

    f.mkdir(parents=True, exist_ok=True)
    (f / "index.json").unlink(missing_ok=True)  # the index is invalid until the new one is complete
    partial = f / "vectors.partial.npy"
    out = None
    for start in range(0, len(texts), chunk_size):
        chunk = texts[start : start + chunk_size]
        if vectors is None:
            part = embedder.embed_documents(chunk, cache=cache)
        else:
            part = np.asarray(vectors[start : start + len(chunk)], dtype=np.float32)
            part = part / np.linalg.norm(part, axis=1, keepdims=True)  # stored unit length, like the model's
        if out is None:
            out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.float32, shape=(len(texts), part.shape[1]))
        out[start : start + len(chunk)] = part
        if progress is not None:
            progress(min(start + chunk_size, len(texts)), len(texts))
    assert out is not None
    out.flush()
    dimension = int(out.shape[1])
    del out
    os.replace(partial, f / "vectors.npy")
    pl.DataFrame({"id": ids, "text": texts}).write_parquet(f / "documents.parquet")
    meta = {
        "format": INDEX_FORMAT,
        "model": embedder.model_id,
        "model_key": embedder.cache_key,
        "documents_hash": content,
        "count": len(texts),
        "dimension": dimension,
    }
    tmp = f / "index.json.tmp"
    tmp.write_text(json.dumps(meta, indent=2), encoding="utf-8")
    os.replace(tmp, f / "index.json")
    return CorpusIndex.open(f)


def check_vectors(vectors: np.ndarray, count: int, dimension: int, model: str) -> None:
    """Vectors computed elsewhere fit the corpus and the model (:func:`refine_core.vector_files.check_vectors`)."""
    from refine_core import vector_files

    try:
        vector_files.check_vectors(vectors, count, dimension, model)
    except vector_files.VectorFileError as exc:
        raise CorpusError(f"vectors: {exc}") from None


def read_vectors(path: str | os.PathLike[str], ids: Sequence[str]) -> np.ndarray:
    """Document vectors from ``.npy`` (rows in corpus order; memory-mapped) or ``.parquet``
    (columns ``id`` and list ``vector``, matched to ``ids``)."""
    from refine_core import vector_files

    try:
        return vector_files.read_vectors(path, ids, id_column="id")
    except vector_files.VectorFileError as exc:
        raise CorpusError(f"vectors {path}: {exc}") from None


def build_ann(index: CorpusIndex, settings: AnnSettings | None = None, *, sample: int = 200, seed: int = 0) -> dict:
    """Build the index's ANN structure (``ann.faiss``) and measure it: recall@10/20/100 of its top-k
    against brute force, for ``sample`` documents of the corpus used as queries (each query's own
    document excluded from both lists). Returns the record kept in ``ann.json``."""
    import time

    from refine_core.ann import recall_at

    vectors = index.vectors()
    started = time.perf_counter()
    ann = AnnIndex.build(vectors, settings, seed=seed)
    build_s = time.perf_counter() - started
    rng = np.random.default_rng(seed)
    picks = np.sort(rng.choice(index.count, size=min(sample, index.count), replace=False))
    # a document as its own query finds itself first: perturb it so the measurement is not trivial
    queries = np.asarray(vectors[picks], dtype=np.float32)
    queries = queries + 0.5 * rng.standard_normal(queries.shape).astype(np.float32) / np.sqrt(queries.shape[1])
    recall = {f"recall@{k}": round(recall_at(ann, vectors, queries, min(k, index.count)), 4) for k in (10, 20, 100)}
    meta = {
        "documents_hash": index.documents_hash,
        "model_key": index.model_key,
        "count": index.count,
        "build_seconds": round(build_s, 2),
        "recall_sample": int(picks.size),
        **recall,
    }
    ann.save(index.folder, meta)
    return {"settings": ann.settings.__dict__, **meta}


# Candidates an ANN lookup returns before exact rescoring (at least this many, or 10 × what is kept).
ANN_CANDIDATES = 1000


def corpus_scores(vectors: np.ndarray, query: np.ndarray, *, chunk: int = SCORE_CHUNK) -> np.ndarray:
    """Cosine similarity of one query vector with every (unit-norm) document, chunk by chunk."""
    q = np.asarray(query, dtype=np.float32)
    q = q / max(float(np.linalg.norm(q)), 1e-12)
    out = np.empty(vectors.shape[0], dtype=np.float32)
    for start in range(0, vectors.shape[0], chunk):
        out[start : start + chunk] = np.asarray(vectors[start : start + chunk]) @ q
    return out


# ---- the refinement loop on one query ------------------------------------------------------------
@dataclass
class Refinement:
    """What one query's judged refinement produced."""

    query: str
    original: np.ndarray  # query vector as embedded
    refined: np.ndarray  # after the last round
    judged_idx: np.ndarray  # document rows judged, in order
    judged_scores: np.ndarray  # judge scores in [0, 1] (NaN where the judge failed)
    report: RunReport = field(default_factory=lambda: RunReport(judgments=[]))

    @property
    def judged_ok(self) -> np.ndarray:
        return np.isfinite(self.judged_scores)


def _check_text(value: str, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CorpusError(
            f"the {what} is empty or whitespace; give the text to {'search for' if what == 'query' else 'classify by'}"
        )
    return value


def _judge_rows(
    judge,
    query: str,
    rows: np.ndarray,
    texts: list[str],
    instruction: str | None,
    ledger: JudgmentLedger | None,
    concurrency: int,
    report: RunReport,
) -> np.ndarray:
    request = JudgeRequest(query=query, documents=tuple(texts[int(j)] for j in rows), task_instruction=instruction)
    result = run_judge(judge, [request], ledger=ledger, concurrency=concurrency)
    report.usage.add(result.usage)
    report.cost += result.cost
    report.judged += result.judged
    report.from_ledger += result.from_ledger
    report.failed += result.failed
    return np.array([v.score if v.ok else np.nan for v in result.judgments[0]], dtype=np.float32)


def refine_query(
    index: CorpusIndex,
    query: str,
    *,
    judge,
    embedder: SentenceTransformerEmbedder,
    k: int = 20,
    rounds: int = 1,
    config: RefineConfig | None = None,
    instruction: str | None = None,
    ledger: JudgmentLedger | None = None,
    concurrency: int = 4,
    what: str = "query",
    judge_instruction: str | None = None,
    optimise: bool = True,
    use_ann: bool = True,
) -> Refinement:
    """Embed ``query``, then ``rounds`` times: judge the top ``k`` unjudged documents and refine.

    ``instruction`` goes into the query template; the judge gets ``judge_instruction``
    (default: the same text). ``optimise=False`` judges the same way but keeps the query vector
    (the control the evaluation compares with). With an ANN structure in the index (and
    ``use_ann``), each round's top ``k`` is chosen by exact cosine among ANN candidates.
    """
    _check_text(query, what)
    if k < 2:
        raise CorpusError(f"k must be >= 2 (the refinement compares judged documents), got {k}")
    if rounds < 1:
        raise CorpusError(f"rounds must be >= 1, got {rounds}")
    if k * rounds > index.count:
        raise CorpusError(f"k={k} x rounds={rounds} is more than the {index.count} documents of the index")
    index.check_model(embedder)
    config = config or RefineConfig()
    vectors = index.vectors()
    _, texts = index.documents()
    original = embedder.embed_queries([query], instruction=instruction)[0]
    current = original.copy()
    judged_idx = np.empty(0, dtype=np.int64)
    judged_scores = np.empty(0, dtype=np.float32)
    report = RunReport(judgments=[])
    ann = index.ann() if use_ann else None
    for _ in range(rounds):
        if ann is not None:  # ANN candidates, exact cosine on them
            cands, _ = ann[0].search(current, max(ANN_CANDIDATES, 10 * k + judged_idx.size))
            top, _ = exact_top(vectors, current, cands[0], k, exclude=judged_idx)
        else:
            sims = corpus_scores(vectors, current)
            sims[judged_idx] = -np.inf
            top = np.argpartition(-sims, k - 1)[:k]
            top = top[np.argsort(-sims[top], kind="stable")]
        scores = _judge_rows(judge, query, top, texts, judge_instruction or instruction, ledger, concurrency, report)
        judged_idx = np.concatenate([judged_idx, top])
        judged_scores = np.concatenate([judged_scores, scores])
        ok = np.isfinite(judged_scores)
        if ok.sum() < 2 or not optimise:
            continue  # nothing to learn from (or asked not to): keep the current vector
        result = refine(
            current[None, :],
            judged_idx[None, :],
            np.nan_to_num(judged_scores)[None, :],
            mask=ok[None, :],
            documents=np.asarray(vectors),
            config=config,
        )
        current = result.vectors[0]
    return Refinement(
        query=query,
        original=original,
        refined=current,
        judged_idx=judged_idx,
        judged_scores=judged_scores,
        report=report,
    )


# ---- search -------------------------------------------------------------------------------------
@dataclass
class SearchHit:
    id: str
    text: str
    score: float
    rank: int  # 1-based, refined ranking
    original_rank: int  # 1-based, ranking of the query as embedded
    judge_score: float | None

    @property
    def moved_in(self) -> bool:
        """True when refinement brought this document into the top N."""
        return self.original_rank > self.top_n

    top_n: int = 0


@dataclass
class SearchResult:
    query: str
    hits: list[SearchHit]
    refinement: Refinement
    ann: dict | None = None  # kind, candidates and measured recall when an ANN index served the search

    @property
    def top_ids(self) -> list[str]:
        return [h.id for h in self.hits]

    @property
    def moved_in(self) -> list[SearchHit]:
        return [h for h in self.hits if h.moved_in]

    def as_dict(self) -> dict:
        r = self.refinement.report
        return {
            "query": self.query,
            "results": [
                {
                    "id": h.id,
                    "rank": h.rank,
                    "score": h.score,
                    "original_rank": h.original_rank,
                    "moved_in": h.moved_in,
                    "judge_score": h.judge_score,
                    "text": h.text,
                }
                for h in self.hits
            ],
            "moved_in": [h.id for h in self.moved_in],
            "judged": int(self.refinement.judged_idx.size),
            "judge_failed": int((~self.refinement.judged_ok).sum()),
            "cost_usd": r.cost,
            "judge_input_tokens": r.usage.input_tokens,
            "judge_output_tokens": r.usage.output_tokens,
            "judgments_paid": r.judged,
            "judgments_from_ledger": r.from_ledger,
            **({"ann": self.ann} if self.ann is not None else {}),
        }


def _ranks(scores: np.ndarray) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")
    ranks = np.empty(scores.size, dtype=np.int64)
    ranks[order] = np.arange(1, scores.size + 1)
    return ranks


def search(
    index: CorpusIndex,
    query: str,
    *,
    judge,
    embedder: SentenceTransformerEmbedder | None = None,
    k: int = 20,
    rounds: int = 1,
    top: int = 10,
    config: RefineConfig | None = None,
    instruction: str | None = None,
    ledger: JudgmentLedger | None = None,
    concurrency: int = 4,
    use_ann: bool = True,
    check_ann: bool = False,
) -> SearchResult:
    """The top ``top`` documents for ``query`` after judged refinement (see the module docs).

    An index with an ANN structure (:func:`build_ann`) is searched through it: candidates from
    the ANN, exact cosine on them; ``check_ann`` also scores the whole corpus once and reports
    the recall of the ANN top list for this query. ``use_ann=False`` forces brute force."""
    if top < 1:
        raise CorpusError(f"top must be >= 1, got {top}")
    embedder = embedder or SentenceTransformerEmbedder(index.model)
    ref = refine_query(
        index,
        query,
        judge=judge,
        embedder=embedder,
        k=k,
        rounds=rounds,
        config=config,
        instruction=instruction,
        ledger=ledger,
        concurrency=concurrency,
        use_ann=use_ann,
    )
    vectors = index.vectors()
    ids, texts = index.documents()
    judged = {int(j): float(s) for j, s in zip(ref.judged_idx, ref.judged_scores) if np.isfinite(s)}
    top_n = min(top, index.count)
    ann = index.ann() if use_ann else None
    ann_info: dict | None = None
    if ann is None:
        before = _ranks(corpus_scores(vectors, ref.original))
        after_scores = corpus_scores(vectors, ref.refined)
        order = np.argsort(-after_scores, kind="stable")[:top]
        hits = [
            SearchHit(
                id=ids[j],
                text=texts[j],
                score=float(after_scores[j]),
                rank=r + 1,
                original_rank=int(before[j]),
                judge_score=judged.get(int(j)),
                top_n=top_n,
            )
            for r, j in enumerate(order)
        ]
    else:
        # exact cosine on ANN candidates; an original rank beyond the candidates is reported as
        # candidates + 1 (it was not among the original query's first `candidates` documents)
        c = max(ANN_CANDIDATES, 10 * top)
        orig_cands, _ = ann[0].search(ref.original, c)
        orig_order, _ = exact_top(vectors, ref.original, orig_cands[0], c)
        orig_rank = {int(j): r + 1 for r, j in enumerate(orig_order)}
        new_cands, _ = ann[0].search(ref.refined, c)
        order, after = exact_top(vectors, ref.refined, new_cands[0], top)
        hits = [
            SearchHit(
                id=ids[j],
                text=texts[j],
                score=float(s),
                rank=r + 1,
                original_rank=orig_rank.get(int(j), c + 1),
                judge_score=judged.get(int(j)),
                top_n=top_n,
            )
            for r, (j, s) in enumerate(zip(order, after))
        ]
        ann_info = {
            "kind": ann[0].settings.kind,
            "candidates": c,
            **{key: ann[1][key] for key in ("recall@10", "recall@20", "recall@100") if key in ann[1]},
        }
        if check_ann:  # measure this query: the ANN top list against brute force
            exact = np.argsort(-corpus_scores(vectors, ref.refined), kind="stable")[:top]
            ann_info["recall_this_query"] = round(float(np.intersect1d(exact, order).size) / max(1, exact.size), 4)
    return SearchResult(query=query, hits=hits, refinement=ref, ann=ann_info)


# ---- classify -----------------------------------------------------------------------------------


@dataclass
class Classification:
    """Every document's refined score and label for one criterion.

    ``labels`` are the judge's verdicts for judged documents and ``score >= threshold`` for
    the rest. ``estimate`` and ``interval`` (90%) concern the number of positives in the corpus:
    with ``calibrate`` they come from a stratified random sample of the ranking (see
    :func:`stratified_estimate`); without, ``estimate`` is the count above the threshold and the
    interval only reflects how uncertain the threshold is (a bootstrap of the judged documents).
    """

    criterion: str
    threshold: float
    scores: np.ndarray  # refined similarity of every document
    labels: np.ndarray  # bool per document
    judged: np.ndarray  # bool per document
    judge_scores: np.ndarray  # NaN where not judged (or the judge failed)
    positives: int  # labels.sum()
    estimate: float
    interval: tuple[int, int]
    refinement: Refinement
    calibrated: int = 0
    method: str = "threshold"
    positive_at: float = 0.5  # a judge score at or above this is a positive verdict

    def as_dict(self) -> dict:
        r = self.refinement.report
        return {
            "criterion": self.criterion,
            "documents": int(self.scores.size),
            "threshold": self.threshold,
            "positives": self.positives,
            "positives_estimate": self.estimate,
            "positives_interval": list(self.interval),
            "estimate_method": self.method,
            "judged": int(self.judged.sum()),
            "calibration_judged": self.calibrated,
            "cost_usd": r.cost,
            "judgments_paid": r.judged,
            "judgments_from_ledger": r.from_ledger,
            "judge_failed": int(r.failed),
        }


def classify(
    index: CorpusIndex,
    criterion: str,
    *,
    judge,
    embedder: SentenceTransformerEmbedder | None = None,
    k: int = 20,
    rounds: int = 1,
    calibrate: int = 0,
    config: RefineConfig | None = None,
    instruction: str | None = None,
    ledger: JudgmentLedger | None = None,
    concurrency: int = 4,
    positive_at: float = 0.5,
    judge_instruction: str | None = None,
    seed: int = 0,
    optimise: bool = True,
) -> Classification:
    """Label every document of ``index`` for ``criterion`` (see the module docs).

    Args:
        calibrate: after refinement, judge this many more documents, sampled at random inside
            geometric bands of the refined ranking below the judged top; the number of positives
            is estimated from them (with an interval) and the threshold set so that as many
            documents are labelled positive. 0: the threshold that best separates the judged
            documents.
        positive_at: a judge score at or above this counts as a positive.
        seed: the calibration sample's seed.
        optimise: False labels with the unrefined query vector (same judging and threshold rule).
    """
    if calibrate < 0:
        raise CorpusError(f"calibrate must be >= 0, got {calibrate}")
    embedder = embedder or SentenceTransformerEmbedder(index.model)
    ref = refine_query(
        index,
        criterion,
        judge=judge,
        embedder=embedder,
        k=k,
        rounds=rounds,
        config=config,
        instruction=instruction,
        ledger=ledger,
        concurrency=concurrency,
        what="criterion",
        judge_instruction=judge_instruction,
        optimise=optimise,
    )
    scores = corpus_scores(index.vectors(), ref.refined)
    if ref.judged_ok.sum() == 0:
        raise CorpusError(
            f"the judge failed on every document judged for {criterion!r}; nothing to set a threshold from "
            "(the judgments that did succeed are kept in the ledger)"
        )
    order = np.argsort(-scores, kind="stable")
    added, method = 0, "threshold"
    if calibrate:
        judged_mask = np.zeros(scores.size, dtype=bool)
        judged_mask[ref.judged_idx] = True
        known = int((ref.judged_scores[ref.judged_ok] >= positive_at).sum())
        sample = stratified_sample(order[~judged_mask[order]], calibrate, first_band=k, seed=seed)
        extra = np.concatenate([rows for rows, _ in sample]) if sample else np.empty(0, dtype=np.int64)
        if extra.size:
            _, texts = index.documents()
            extra_scores = _judge_rows(
                judge, criterion, extra, texts, judge_instruction or instruction, ledger, concurrency, ref.report
            )
            ref.judged_idx = np.concatenate([ref.judged_idx, extra])
            ref.judged_scores = np.concatenate([ref.judged_scores, extra_scores])
            added = int(extra.size)
            strata, at = [], 0
            for rows, size in sample:
                got = extra_scores[at : at + rows.size]
                at += rows.size
                ok = np.isfinite(got)  # a failed judgment is dropped from its band's sample
                strata.append((size, int(ok.sum()), int((got[ok] >= positive_at).sum())))
            estimate, interval = stratified_estimate(known, strata, total=scores.size)
            threshold = float(scores[order[max(int(round(estimate)), 1) - 1]])
            method = "stratified-sample"
    if method == "threshold":
        ok = ref.judged_ok
        threshold = choose_threshold(scores[ref.judged_idx[ok]], ref.judged_scores[ok] >= positive_at)
        estimate = float((scores >= threshold).sum())
        interval = positive_interval(scores, scores[ref.judged_idx[ok]], ref.judged_scores[ok] >= positive_at)
    judged = np.zeros(scores.size, dtype=bool)
    judged[ref.judged_idx] = True
    judge_scores = np.full(scores.size, np.nan, dtype=np.float32)
    judge_scores[ref.judged_idx] = ref.judged_scores
    labels = label_documents(scores, threshold, judge_scores, positive_at)
    return Classification(
        criterion=criterion,
        threshold=threshold,
        scores=scores,
        labels=labels,
        judged=judged,
        judge_scores=judge_scores,
        positives=int(labels.sum()),
        estimate=estimate,
        interval=interval,
        refinement=ref,
        calibrated=added,
        method=method,
        positive_at=positive_at,
    )


def write_labels(result: Classification, index: CorpusIndex, path: str | os.PathLike[str]) -> Path:
    """Every document's id, refined score, label, whether it was judged and the judge's score, as parquet."""
    import polars as pl

    ids, _ = index.documents()
    out = Path(path)
    if out.suffix.lower() != ".parquet":
        raise CorpusError(f"--out {out}: labels are written as parquet; give a path ending in .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    frame = pl.DataFrame(
        {
            "id": ids,
            "score": result.scores.astype(np.float32),
            "label": result.labels,
            "judged": result.judged,
            "judge_score": pl.Series(
                [None if not np.isfinite(s) else float(s) for s in result.judge_scores], dtype=pl.Float32
            ),
        }
    )
    tmp = out.with_suffix(".parquet.tmp")
    frame.write_parquet(tmp)
    os.replace(tmp, out)
    return out
