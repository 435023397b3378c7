"""Multi-round refinement: judge, refine, look again, judge more.

One loop, :func:`run_rounds`, for everything that runs rounds: the array methods here
(:func:`feedback_rounds` and the methods built on it, which differ only in their update), the
platform's cell flow (its select / judge / refine are cached Prefect tasks) and the corpus
commands (one query against an index, with a real judge). Each passes its own three steps.

Round 1 is exactly the paper: the top-K documents of the original vector are judged and the
vector is refined from the original. Round r >= 2 ranks the pool with the current refined
vector, judges the K best documents not judged yet, and refines from the previous round's
vector using every score gathered so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np

from refine_core._validation import as_float_array, check_positive_int
from refine_core.baselines import RocchioParams
from refine_core.feedback import FeedbackStrategy, TopK, select_feedback_blocks
from refine_core.metrics import UnitDocuments, document_array
from refine_core.qrels import Qrels
from refine_core.refinement import RefineConfig, refine
from refine_core.rocchio_kl import rocchio_kl, rocchio_start

State = TypeVar("State")
Chosen = TypeVar("Chosen")
Verdicts = TypeVar("Verdicts")


@dataclass
class Rounds(Generic[State, Chosen, Verdicts]):
    """What :func:`run_rounds` went through: the state after each round, what each round chose
    and the judge's answer to it, in round order."""

    states: list[State] = field(default_factory=list)
    chosen: list[Chosen] = field(default_factory=list)
    verdicts: list[Verdicts] = field(default_factory=list)


def run_rounds(
    start: State,
    rounds: int,
    *,
    select: Callable[[State, Sequence[Chosen]], Chosen],
    judge: Callable[[Chosen], Verdicts],
    update: Callable[[State, Sequence[Chosen], Sequence[Verdicts]], State],
) -> Rounds[State, Chosen, Verdicts]:
    """The feedback-round loop, on whatever the caller's state and judgments are.

    Each of ``rounds`` rounds: ``select(current, chosen_before)`` picks what to judge (never what
    an earlier round chose: those are passed to exclude), ``judge(chosen)`` answers, and
    ``update(current, every_chosen, every_verdict)`` gives the next state from everything judged
    so far. Round 1 from ``start`` with nothing excluded is the paper's single round.
    """
    check_positive_int(rounds, "rounds")
    out: Rounds[State, Chosen, Verdicts] = Rounds()
    current = start
    for _ in range(rounds):
        chosen = select(current, tuple(out.chosen))
        verdicts = judge(chosen)
        out.chosen.append(chosen)
        out.verdicts.append(verdicts)
        current = update(current, tuple(out.chosen), tuple(out.verdicts))
        out.states.append(current)
    return out


JudgeFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``judge(query_rows, doc_idx)`` -> ``(scores, mask)``, all ``(n, k)``.

``query_rows`` are the query positions (n,), ``doc_idx`` the documents to judge (``-1`` is
padding and must come back with mask False). ``mask`` is False for failed judgments.
"""


def ask_judge(judge: JudgeFn, query_rows: np.ndarray, doc_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``judge(query_rows, doc_idx)`` as float32 scores and a bool mask of ``doc_idx``'s shape
    (a ``ValueError`` names a judge that answers in another shape); padding (``-1``) is never valid."""
    scores, mask = judge(query_rows, doc_idx)
    scores, mask = np.asarray(scores, dtype=np.float32), np.asarray(mask, dtype=bool)
    if scores.shape != doc_idx.shape or mask.shape != doc_idx.shape:
        raise ValueError(f"judge returned scores {scores.shape} / mask {mask.shape}, expected {doc_idx.shape}")
    return scores, mask & (doc_idx >= 0)


def remembering(judge: JudgeFn) -> JudgeFn:
    """``judge`` with a memory: a (query row, document) pair it has answered is answered again from
    memory, so methods that run their own rounds beside the refinement (:func:`rocchio_rounds`)
    pay only for documents nobody has judged yet.

    Only rows with at least one new pair reach ``judge``, and in them only the new pairs (the rest
    is ``-1`` padding). A failed judgment (mask False) is remembered as failed: every method
    sees the same verdicts, as it would from one judge stage. Meant for one evaluation: the
    memory grows with the pairs judged and is dropped with the returned function.
    """
    memory: dict[tuple[int, int], tuple[float, bool]] = {}

    def ask(query_rows: np.ndarray, doc_idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, idx = np.asarray(query_rows), np.asarray(doc_idx)
        scores = np.zeros(idx.shape, dtype=np.float32)
        mask = np.zeros(idx.shape, dtype=bool)
        new = np.zeros(idx.shape, dtype=bool)
        for (i, c), j in np.ndenumerate(idx):
            if j < 0:
                continue
            known = memory.get((int(rows[i]), int(j)))
            if known is None:
                new[i, c] = True
            else:
                scores[i, c], mask[i, c] = known
        need = np.flatnonzero(new.any(axis=1))
        if need.size:
            got_scores, got_mask = ask_judge(judge, rows[need], np.where(new[need], idx[need], -1))
            for a, i in enumerate(need.tolist()):
                for c in np.flatnonzero(new[i]).tolist():
                    verdict = (float(got_scores[a, c]), bool(got_mask[a, c]))
                    memory[(int(rows[i]), int(idx[i, c]))] = verdict
                    scores[i, c], mask[i, c] = verdict
        return scores, mask

    return ask


@dataclass(frozen=True)
class RoundsResult:
    """Outcome of :func:`refine_rounds`.

    Attributes:
        vectors: final refined vectors ``(n, d)``.
        feedback_idx: every judged document ``(n, rounds*k)``, in the order judged (-1 = none).
        scores: their judge scores ``(n, rounds*k)`` (NaN where missing).
        mask: True where a judgment exists.
        round_vectors: the vector after each round, ``(rounds, n, d)``.
        losses: per round, the ``(n, steps)`` loss curve.
    """

    vectors: np.ndarray
    feedback_idx: np.ndarray
    scores: np.ndarray
    mask: np.ndarray
    round_vectors: np.ndarray
    losses: list[np.ndarray]


UpdateFn = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
"""``update(current, feedback_idx, scores, mask)`` -> ``(vectors, losses)``.

Called after each round with every judgment so far (``feedback_idx`` clipped to >= 0, ``scores``
0 where ``mask`` is False); returns the next query vectors ``(n, d)`` and the round's loss
curves ``(n, steps)`` (``(n, 0)`` for an update that optimises nothing)."""


def feedback_rounds(
    queries: np.ndarray,
    documents: np.ndarray | UnitDocuments,
    judge: JudgeFn,
    update: UpdateFn,
    *,
    rounds: int = 1,
    k: int = 20,
    pool: np.ndarray | Qrels | None = None,
    strategy: FeedbackStrategy | None = None,
) -> RoundsResult:
    """``rounds`` rounds of select → judge → ``update``: the loop every multi-round method shares.

    Each round ranks the pool with the current vector, judges the ``k`` best documents not judged
    yet and calls ``update`` with every judgment gathered so far, so methods that differ only in
    their update spend the same budget (``rounds * k`` judgments per query) the same way.
    """
    check_positive_int(rounds, "rounds")
    check_positive_int(k, "k")
    q0 = as_float_array(queries, "queries", ndim=2)
    docs = as_float_array(document_array(documents), "documents", ndim=2)
    n = q0.shape[0]
    if pool is not None and not isinstance(pool, Qrels):
        if np.asarray(pool).shape != (n, docs.shape[0]):
            raise ValueError(f"pool must have shape {(n, docs.shape[0])}, got {np.asarray(pool).shape}")
        pool = Qrels.from_dense(np.zeros(np.shape(pool), np.float32), np.asarray(pool, dtype=bool))
    elif pool is not None and pool.shape != (n, docs.shape[0]):
        raise ValueError(f"pool must cover {(n, docs.shape[0])} (queries, documents), got {pool.shape}")
    strategy = strategy or TopK()
    rows = np.arange(n)
    losses: list[np.ndarray] = []

    def select(current: np.ndarray, earlier: Sequence[np.ndarray]) -> np.ndarray:
        exclude = np.concatenate(earlier, axis=1) if earlier else np.empty((n, 0), dtype=np.int64)
        return select_feedback_blocks(current, documents, k=k, strategy=strategy, pool=pool, exclude_idx=exclude)

    def step(
        current: np.ndarray, chosen: Sequence[np.ndarray], verdicts: Sequence[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        idx = np.concatenate(chosen, axis=1)
        mask = np.concatenate([m for _, m in verdicts], axis=1)
        scores = np.concatenate([np.where(m, s, 0.0) for s, m in verdicts], axis=1)
        vectors, round_losses = update(current, np.maximum(idx, 0), scores, mask)
        losses.append(round_losses)
        return vectors

    went = run_rounds(q0, rounds, select=select, judge=lambda idx: ask_judge(judge, rows, idx), update=step)
    return RoundsResult(
        vectors=went.states[-1],
        feedback_idx=np.concatenate(went.chosen, axis=1),
        scores=np.concatenate([np.where(m, s, np.nan) for s, m in went.verdicts], axis=1),
        mask=np.concatenate([m for _, m in went.verdicts], axis=1),
        round_vectors=np.stack(went.states),
        losses=losses,
    )


def refine_rounds(
    queries: np.ndarray,
    documents: np.ndarray | UnitDocuments,
    judge: JudgeFn,
    *,
    rounds: int = 1,
    k: int = 20,
    pool: np.ndarray | Qrels | None = None,
    strategy: FeedbackStrategy | None = None,
    config: RefineConfig | None = None,
) -> RoundsResult:
    """Run ``rounds`` rounds of select → judge → refine (each round refines from the previous
    round's vector with every score so far; :func:`feedback_rounds`).

    Args:
        queries: ``(n, d)`` original query vectors.
        documents: ``(N, d)`` document matrix.
        judge: callback returning scores for chosen documents (see :data:`JudgeFn`).
        rounds: number of rounds (1 = the paper).
        k: documents judged per query per round.
        pool: each query's candidate pool: ``(n, N)`` bool or pooled :class:`Qrels` (all documents if None).
        strategy: feedback selection (default top-K).
        config: refinement hyperparameters (default the paper's).

    Returns:
        A :class:`RoundsResult`.
    """
    config = config or RefineConfig()
    docs = document_array(documents)  # checked once by feedback_rounds, and by refine itself

    def update(
        current: np.ndarray, idx: np.ndarray, scores: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        result = refine(current, idx, scores, mask=mask, documents=docs, config=config)
        return result.vectors, result.losses

    return feedback_rounds(queries, documents, judge, update, rounds=rounds, k=k, pool=pool, strategy=strategy)


def rocchio_rounds(
    queries: np.ndarray,
    documents: np.ndarray | UnitDocuments,
    judge: JudgeFn,
    *,
    rounds: int = 1,
    k: int = 20,
    pool: np.ndarray | Qrels | None = None,
    strategy: FeedbackStrategy | None = None,
    params: RocchioParams | None = None,
    then_refine: RefineConfig | None = None,
) -> RoundsResult:
    """Rocchio at the budget of ``rounds`` rounds: after each round the vector is Rocchio's update
    of the *original* query with every judgment so far, and the next round judges the top ``k``
    unjudged documents of that vector — the same selection as :func:`refine_rounds`, so both
    spend ``rounds * k`` judgments per query.

    ``then_refine``: the KL refinement (:func:`refine_core.refinement.refine`) is run on the
    judgments from the Rocchio vector instead of from the original one (the ``rocchio_kl``
    method): Rocchio moves the query toward the judged-positive centroid in one step, the KL
    objective then fits the similarities of the judged documents to the judge's scores.
    """
    rp = params or RocchioParams()
    docs = document_array(documents)  # checked once by feedback_rounds; rocchio checks what it reads

    def update(
        current: np.ndarray, idx: np.ndarray, scores: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        if then_refine is None:
            moved = rocchio_start(queries, docs, idx, scores, mask, rp)
            return moved, np.zeros((moved.shape[0], 0), dtype=np.float32)
        _, result = rocchio_kl(queries, docs, idx, scores, mask, rocchio=rp, config=then_refine)
        return result.vectors, result.losses

    return feedback_rounds(queries, documents, judge, update, rounds=rounds, k=k, pool=pool, strategy=strategy)
