"""The refinement loop on one query of an index: embed, judge the top ``k``, refine, repeat.

Shared by :func:`corpus.search` and :func:`corpus.classify`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from corpus.ann import exact_top
from corpus.index import ANN_CANDIDATES, CorpusError, CorpusIndex, corpus_scores
from embedders.models import SentenceTransformerEmbedder
from judging.ledger import JudgmentLedger
from judging.runner import JudgeRequest, RunReport, run_judge
from refine_core.baselines import RocchioParams
from refine_core.feedback import top_k_indices
from refine_core.recommended import RECOMMENDED, positives
from refine_core.refinement import RefineConfig, refine
from refine_core.rocchio_kl import rocchio_kl
from refine_core.rounds import run_rounds

STARTS = ("query", "rocchio")
"""Where each round's refinement starts: the current vector (the paper) or the Rocchio vector."""

RECOMMENDED_START = RECOMMENDED.start
"""What ``refine search`` and ``refine classify`` run unless told otherwise
(:data:`refine_core.recommended.RECOMMENDED`: the judge's relevant verdicts first, the rest by the
paper's refinement from the query, no move without a relevant verdict)."""
RECOMMENDED_ROCCHIO = RocchioParams(beta=RECOMMENDED.rocchio_beta, gamma=RECOMMENDED.rocchio_gamma)
"""Rocchio's weights for ``--start rocchio``: the pair the tuning halves chose most often (benchmarks/beyond.py)."""
RECOMMENDED_LR = {"query": 1e-4, "rocchio": 3e-4}
"""The commands' lr for each start without ``--keep-verdicts`` (with it, the default's own
:data:`refine_core.recommended.RECOMMENDED` lr): the paper's from the query; from the Rocchio
vector, the lr the unseen-data check measured with :data:`RECOMMENDED_ROCCHIO` (dense data only: on
the sparse variants Rocchio → KL falls below rerank-only, docs/results.md section 10)."""


@dataclass
class Refinement:
    """What one query's judged refinement produced."""

    query: str
    original: np.ndarray  # query vector as embedded
    refined: np.ndarray  # after the last round
    judged_idx: np.ndarray  # document rows judged, in order
    judged_scores: np.ndarray  # judge scores in [0, 1] (NaN where the judge failed)
    report: RunReport = field(default_factory=lambda: RunReport(judgments=[]))
    settings: dict = field(default_factory=dict)  # start, lr, pull (and Rocchio's weights) that ran

    @property
    def judged_ok(self) -> np.ndarray:
        return np.isfinite(self.judged_scores)

    @property
    def judged_positive(self) -> np.ndarray:
        """The document rows the judge called relevant."""
        return self.judged_idx[positives(self.judged_scores, self.judged_ok, RECOMMENDED.threshold)]

    def warnings(self, top: int | None = None) -> list[str]:
        """What the judge's answers say about trusting this refinement (empty when nothing stands out).

        The case measured to hurt (docs/results.md section 10): few relevant verdicts, spread down the
        original ranking, which on one-relevant-document data are mostly the judge's mistakes.
        """
        judged = int(self.judged_ok.sum())
        if judged == 0:
            return ["the judge answered no judgment: the ranking is the original one"]
        found = self.judged_positive
        if found.size == 0:
            return [
                f"the judge called none of the {judged} judged documents relevant: the query vector was "
                "not refined (nothing to refine from); the ranking is the original one"
            ]
        out: list[str] = []
        order = {int(j): r for r, j in enumerate(self.judged_idx[: min(judged, self.judged_idx.size)])}
        ranks = np.array([order.get(int(j), judged) for j in found], dtype=float)
        if found.size <= max(1, round(0.15 * judged)) and (found.size > 1 or ranks.min() >= judged / 2):
            out.append(
                f"only {found.size} of {judged} judged documents were called relevant, spread down the ranking "
                f"(original ranks {', '.join(str(int(r) + 1) for r in np.sort(ranks))}): with one or two "
                "relevant documents per query and a judge that errs, such verdicts are often wrong and moving "
                "the query toward them hurts; "
                + (
                    "--start rocchio moves it far (it fell below rerank-only on such data); the default does not"
                    if self.settings.get("start") == "rocchio"
                    else (
                        "the query was not moved (fewer than "
                        f"{self.settings['min_share']:.0%} of the judged documents called relevant): the judged "
                        "relevant documents come first, the rest in the original order"
                        if found.size < self.settings.get("min_share", 0.0) * judged
                        else "the query was moved toward them; the default would have kept it (--keep-verdicts)"
                    )
                )
            )
        return out


def check_text(value: str, what: str) -> str:
    """``value`` itself, or a CorpusError when it is empty or whitespace (``what``: query or criterion)."""
    if not isinstance(value, str) or not value.strip():
        raise CorpusError(
            f"the {what} is empty or whitespace; give the text to {'search for' if what == 'query' else 'classify by'}"
        )
    return value


def judge_rows(
    judge,
    query: str,
    rows: np.ndarray,
    texts: list[str],
    instruction: str | None,
    ledger: JudgmentLedger | None,
    concurrency: int,
    report: RunReport,
) -> np.ndarray:
    """The judge's scores for documents ``rows`` (NaN where it failed); its usage, cost and counts
    are added to ``report``."""
    request = JudgeRequest(query=query, documents=tuple(texts[int(j)] for j in rows), task_instruction=instruction)
    result = run_judge(judge, [request], ledger=ledger, concurrency=concurrency)
    report.usage.add(result.usage)
    report.cost += result.cost
    report.judged += result.judged
    report.from_ledger += result.from_ledger
    report.failed += result.failed
    report.free = result.free
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
    start: str = "query",
    rocchio: RocchioParams | None = None,
    min_positives: int = 0,
    min_share: float = 0.0,
) -> Refinement:
    """Embed ``query``, then ``rounds`` times: judge the top ``k`` unjudged documents and refine.

    ``start="query"`` (the paper) refines from the current vector each round; ``start="rocchio"``
    (the ``rocchio_kl`` method) refines from Rocchio's update (weights ``rocchio``, default SMART)
    of the original query with every judgment so far, like :func:`refine_core.rounds.rocchio_rounds`
    with ``then_refine``. The commands use :data:`RECOMMENDED_START`, :data:`RECOMMENDED_ROCCHIO`
    and :data:`RECOMMENDED_LR`; this function keeps the paper's defaults.

    ``instruction`` goes into the query template; the judge gets ``judge_instruction``
    (default: the same text). ``optimise=False`` judges the same way but keeps the query vector
    (the control the evaluation compares with). With an ANN structure in the index (and
    ``use_ann``), each round's top ``k`` is chosen by exact cosine among ANN candidates.
    ``min_positives`` / ``min_share``: refine only once the judgments hold that many relevant
    verdicts, making at least that share of the valid ones (the commands:
    :data:`refine_core.recommended.RECOMMENDED`'s; the paper: 0, always refine).
    """
    check_text(query, what)
    if k < 2:
        raise CorpusError(f"k must be >= 2 (the refinement compares judged documents), got {k}")
    if rounds < 1:
        raise CorpusError(f"rounds must be >= 1, got {rounds}")
    if start not in STARTS:
        raise CorpusError(f"start must be one of {', '.join(STARTS)}, got {start!r}")
    if k * rounds > index.count:
        raise CorpusError(f"k={k} x rounds={rounds} is more than the {index.count} documents of the index")
    index.check_model(embedder)
    config = config or RefineConfig()
    rocchio = rocchio or RocchioParams()
    if start == "rocchio" and (rocchio.beta < 0 or rocchio.gamma < 0):
        raise CorpusError(f"Rocchio's weights must be >= 0, got beta {rocchio.beta:g}, gamma {rocchio.gamma:g}")
    settings: dict = {"start": start, "lr": config.lr, "pull": config.pull, "min_positives": min_positives}
    if min_share:
        settings["min_share"] = min_share
    if start == "rocchio":
        settings.update(rocchio_beta=rocchio.beta, rocchio_gamma=rocchio.gamma)
    vectors = index.vectors()
    _, texts = index.documents()
    original = embedder.embed_queries([query], instruction=instruction)[0]
    report = RunReport(judgments=[])
    ann = index.ann() if use_ann else None

    def select(current: np.ndarray, earlier: Sequence[np.ndarray]) -> np.ndarray:
        judged = np.concatenate(earlier) if earlier else np.empty(0, dtype=np.int64)
        if ann is not None:  # ANN candidates, exact cosine on them
            cands, _ = ann[0].search(current, max(ANN_CANDIDATES, 10 * k + judged.size))
            return exact_top(vectors, current, cands[0], k, exclude=judged)[0]
        sims = corpus_scores(vectors, current)
        sims[judged] = -np.inf
        return top_k_indices(sims[None, :], k)[0]

    def judge_top(top: np.ndarray) -> np.ndarray:
        return judge_rows(judge, query, top, texts, judge_instruction or instruction, ledger, concurrency, report)

    def update(current: np.ndarray, chosen: Sequence[np.ndarray], verdicts: Sequence[np.ndarray]) -> np.ndarray:
        judged_idx, judged_scores = np.concatenate(chosen), np.concatenate(verdicts)
        ok = np.isfinite(judged_scores)
        found = int(positives(judged_scores, ok, RECOMMENDED.threshold).sum())
        if ok.sum() < 2 or not optimise or found < min_positives or found < min_share * ok.sum():
            return current  # nothing to learn from (or asked not to): keep the current vector
        one = (judged_idx[None, :], np.nan_to_num(judged_scores)[None, :], ok[None, :])
        if start == "rocchio":
            _, result = rocchio_kl(original[None, :], np.asarray(vectors), *one, rocchio=rocchio, config=config)
        else:
            result = refine(current[None, :], one[0], one[1], mask=one[2], documents=np.asarray(vectors), config=config)
        return result.vectors[0]

    went = run_rounds(original.copy(), rounds, select=select, judge=judge_top, update=update)
    current = went.states[-1]
    judged_idx, judged_scores = np.concatenate(went.chosen), np.concatenate(went.verdicts)
    return Refinement(
        query=query,
        original=original,
        refined=current,
        judged_idx=judged_idx,
        judged_scores=judged_scores,
        report=report,
        settings=settings,
    )
