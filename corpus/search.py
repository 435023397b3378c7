"""Search an index: the top documents for a query after judged refinement."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpus.ann import exact_top
from corpus.index import ANN_CANDIDATES, CorpusError, CorpusIndex, corpus_scores
from corpus.query import Refinement, refine_query
from embedders.models import SentenceTransformerEmbedder
from judging.ledger import JudgmentLedger
from refine_core.baselines import RocchioParams
from refine_core.cosine import cosine_one
from refine_core.recommended import LIFT
from refine_core.refinement import RefineConfig


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
            "judgments_paid": r.paid,
            "judgments_free": r.judged - r.paid,
            "judgments_from_ledger": r.from_ledger,
            "refinement": dict(self.refinement.settings),
            "warnings": self.refinement.warnings(),
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
    start: str = "query",
    rocchio: RocchioParams | None = None,
    min_positives: int = 0,
    min_share: float = 0.0,
    verdicts_first: bool = False,
) -> SearchResult:
    """The top ``top`` documents for ``query`` after judged refinement (see the module docs).

    An index with an ANN structure (:func:`build_ann`) is searched through it: candidates from
    the ANN, exact cosine on them; ``check_ann`` also scores the whole corpus once and reports
    the recall of the ANN top list for this query. ``use_ann=False`` forces brute force.
    ``start``: ``"query"`` (the paper) or ``"rocchio"`` (refine from the Rocchio vector, with
    Rocchio's weights ``rocchio``, default SMART; see :func:`corpus.query.refine_query`).
    ``verdicts_first`` ranks the documents the judge called relevant above all others (in the
    original order), ``min_positives`` / ``min_share`` refine only with that many of them: the commands use
    :data:`refine_core.recommended.RECOMMENDED`'s settings."""
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
        start=start,
        rocchio=rocchio,
        min_positives=min_positives,
        min_share=min_share,
    )
    ref.settings["verdicts_first"] = verdicts_first
    ann = index.ann() if use_ann else None
    if ann is None:
        order, scores, original_rank = _exact_order(index, ref, top, verdicts_first)
        ann_info: dict | None = None
    else:
        order, scores, original_rank, ann_info = _ann_order(index, ref, ann, top, verdicts_first, check_ann)
    ids, texts = index.documents()
    judged = {int(j): float(s) for j, s in zip(ref.judged_idx, ref.judged_scores) if np.isfinite(s)}
    hits = [
        SearchHit(
            id=ids[j],
            text=texts[j],
            score=float(s),
            rank=r + 1,
            original_rank=o,
            judge_score=judged.get(int(j)),
            top_n=min(top, index.count),
        )
        for r, (j, s, o) in enumerate(zip(order, scores, original_rank))
    ]
    return SearchResult(query=query, hits=hits, refinement=ref, ann=ann_info)


def _exact_order(
    index: CorpusIndex, ref: Refinement, top: int, verdicts_first: bool
) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The ``top`` documents by the refined vector over the whole corpus (the judged positives
    first, in the original order, with ``verdicts_first``): indices, refined cosines, original ranks."""
    vectors = index.vectors()
    original_scores = corpus_scores(vectors, ref.original)
    before = _ranks(original_scores)
    after_scores = corpus_scores(vectors, ref.refined)
    lifted = after_scores.copy()
    if verdicts_first:
        lifted[ref.judged_positive] = original_scores[ref.judged_positive] + LIFT
    order = np.argsort(-lifted, kind="stable")[:top]
    return order, after_scores[order], [int(before[j]) for j in order]


def _ann_order(
    index: CorpusIndex, ref: Refinement, ann, top: int, verdicts_first: bool, check_ann: bool
) -> tuple[np.ndarray, np.ndarray, list[int], dict]:
    """As :func:`_exact_order`, by exact cosine on the ANN's candidates; an original rank beyond
    the candidates is reported as candidates + 1 (it was not among the original query's first
    ``candidates`` documents). Also what the ANN was (and, with ``check_ann``, its recall here)."""
    vectors = index.vectors()
    c = max(ANN_CANDIDATES, 10 * top)
    orig_cands, _ = ann[0].search(ref.original, c)
    orig_order, _ = exact_top(vectors, ref.original, orig_cands[0], c)
    orig_rank = {int(j): r + 1 for r, j in enumerate(orig_order)}
    new_cands, _ = ann[0].search(ref.refined, c)
    cands = new_cands[0]
    if verdicts_first:  # the judged-positive documents are candidates wherever the ANN puts them
        cands = np.union1d(cands[cands >= 0], ref.judged_positive)
    order, after = exact_top(vectors, ref.refined, cands, cands.size if verdicts_first else top)
    if verdicts_first:  # the judged positives first, in the original order
        positive = np.isin(order, ref.judged_positive)
        original = cosine_one(vectors[order], ref.original)
        first = np.argsort(-np.where(positive, original + LIFT, after), kind="stable")[:top]
        order, after = order[first], after[first]
    info = {
        "kind": ann[0].settings.kind,
        "candidates": c,
        **{key: ann[1][key] for key in ("recall@10", "recall@20", "recall@100") if key in ann[1]},
    }
    if check_ann:  # measure this query: the ANN top list against brute force
        exact = np.argsort(-corpus_scores(vectors, ref.refined), kind="stable")[:top]
        info["recall_this_query"] = round(float(np.intersect1d(exact, order).size) / max(1, exact.size), 4)
    return order, after, [orig_rank.get(int(j), c + 1) for j in order], info
