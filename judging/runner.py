"""Running a judge over many queries: ledger first, bounded concurrency, budget, cost.

:func:`run_judge` turns a list of :class:`JudgeRequest` (query, documents, task
instruction) into verdicts. For each request it serves what the ledger already holds, splits
the rest into calls of ``judge.documents_per_request`` documents, runs at most
``concurrency`` calls at a time, and writes each call's verdicts to the ledger, in one
transaction, as soon as it returns and before anything uses them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from judging.base import Judge, JudgeCrashed, JudgeResponse, Judgment, Usage, check_scores, truncate_document
from judging.breaker import CircuitBreaker, open_verdict
from judging.ledger import JudgmentLedger, doc_hash, query_hash
from judging.prices import DEFAULT_PRICES as DEFAULT_PRICES  # re-exported: judging's cost names
from judging.prices import estimate_cost as estimate_cost
from judging.spend import estimate_call_cost

if TYPE_CHECKING:
    from judging.spend import SpendAccount


@dataclass(frozen=True)
class JudgeRequest:
    """The documents to judge for one query."""

    query: str
    documents: tuple[str, ...]
    task_instruction: str | None = None


@dataclass(frozen=True)
class Budget:
    """Stop submitting new calls once either limit is reached (calls in flight finish)."""

    max_judgments: int | None = None
    max_cost: float | None = None


@dataclass
class RunReport:
    """Verdicts per request (one per document, in order) and what they cost."""

    judgments: list[list[Judgment]]
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    from_ledger: int = 0
    judged: int = 0
    failed: int = 0
    not_submitted: int = 0
    truncated_documents: int = 0
    max_in_flight: int = 0
    paid_twice: int = 0
    failed_earlier: int = 0  # failed earlier in the same run (another cell): not asked again
    stopped: str | None = None  # why the run stopped asking this judge (its breaker opened)
    free: bool = False  # a local judge (oracle, local LM, cross-encoder): its verdicts cost nothing

    @property
    def paid(self) -> int:
        """Verdicts a paid judge gave in this run (0 for a free judge)."""
        return 0 if self.free else self.judged

    def as_metrics(self) -> dict[str, float]:
        """``judgments_paid`` counts only a paid judge's verdicts; a free judge's are
        ``judgments_free``."""
        return {
            "judge_requests": float(self.usage.requests),
            "judge_input_tokens": float(self.usage.input_tokens),
            "judge_output_tokens": float(self.usage.output_tokens),
            "judge_cache_read_tokens": float(self.usage.cache_read_tokens),
            "judge_cost_usd": self.cost,
            "judgments_from_ledger": float(self.from_ledger),
            "judgments_paid": float(self.paid),
            "judgments_free": float(self.judged - self.paid),
            "judgments_failed": float(self.failed),
            "judgments_not_submitted": float(self.not_submitted),
            "documents_truncated_for_judge": float(self.truncated_documents),
            "judgments_paid_twice": float(self.paid_twice),
            "judgments_failed_earlier_in_run": float(self.failed_earlier),
            "judge_stopped": float(self.stopped is not None),
        }


ProgressFn = Callable[[int, int], None]


def run_judge(
    judge: Judge,
    requests: Sequence[JudgeRequest],
    *,
    ledger: JudgmentLedger | None = None,
    concurrency: int = 4,
    budget: Budget | None = None,
    prices: dict[str, tuple[float, float]] | None = None,
    max_document_chars: int = 20_000,
    progress: ProgressFn | None = None,
    account: SpendAccount | None = None,
    claim_ttl: float = 600.0,
    claim_poll_s: float = 0.2,
    breaker: CircuitBreaker | None = None,
) -> RunReport:
    """Judge every document of every request, paying only for what the ledger lacks.

    Args:
        judge: any :class:`~judging.base.Judge`.
        requests: one per query.
        ledger: durable store consulted first and written after every call.
        concurrency: maximum calls in flight.
        budget: optional limits on judgments and estimated cost for this run.
        prices: price table for the cost estimate (default :data:`DEFAULT_PRICES`).
        max_document_chars: documents are cut to this length before they reach the judge
            (the count is reported); their identity in the ledger is the full text.
        progress: called with (calls done, calls planned).
        account: a :class:`~judging.spend.SpendAccount` shared by the whole run
            (every cell, round and process): each call reserves its documents and estimated
            cost there before it is sent and settles after; a refused call is not sent.
        claim_ttl: with a ledger, each call first claims its pairs there; a pair another process
            has claimed is not sent but waited for (its answer is read from the ledger), unless
            that claim is older than this many seconds (its process may be gone).
        claim_poll_s: how often to look for the answers of pairs another process is judging.
        breaker: the run's :class:`~judging.breaker.CircuitBreaker` (default a new
            one): once it opens no call is sent, here or, through ``account``, in any later cell
            of the run. With ``account``, pairs that failed earlier in the run are not asked again.

    Returns:
        A :class:`RunReport`. Calls never submitted because of the budget yield failed
        verdicts with error ``BudgetExceeded`` that are not stored.

    Raises:
        JudgeCrashed: the judge raised (a bug). No new call is sent after it; the calls
            already in flight finish and are written to the ledger first.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    run = _JudgeRun(
        judge,
        requests,
        ledger=ledger,
        concurrency=concurrency,
        budget=budget,
        prices=prices,
        max_document_chars=max_document_chars,
        progress=progress,
        account=account,
        claim_ttl=claim_ttl,
        claim_poll_s=claim_poll_s,
        breaker=breaker if breaker is not None else CircuitBreaker(),
    )
    return run.run()


Call = tuple[int, list[int]]
"""One call to the judge: (request index, positions of the documents it judges)."""


@dataclass
class _JudgeRun:
    """The state of one :func:`run_judge`: the plan, the calls in flight, the report."""

    judge: Judge
    requests: Sequence[JudgeRequest]
    ledger: JudgmentLedger | None
    concurrency: int
    budget: Budget | None
    prices: dict[str, tuple[float, float]] | None
    max_document_chars: int
    progress: ProgressFn | None
    account: SpendAccount | None
    claim_ttl: float
    claim_poll_s: float
    breaker: CircuitBreaker
    report: RunReport = field(init=False)
    key: str = field(init=False)
    hashes: list[tuple[str, list[str]]] = field(init=False)
    probe_judge: Judge = field(init=False)
    calls: list[Call] = field(init=False, default_factory=list)
    queue: list[Call] = field(init=False, default_factory=list)
    deferred: list[Call] = field(init=False, default_factory=list)
    pending: dict[Future[JudgeResponse], Call] = field(init=False, default_factory=dict)
    reserved: dict[tuple[int, int], float] = field(
        init=False, default_factory=dict
    )  # (request, first position) -> estimate
    submitted_docs: int = 0
    done: int = 0
    in_flight: int = 0
    crash: BaseException | None = None

    def __post_init__(self) -> None:
        self.key = self.judge.identity.key
        self.report = RunReport(judgments=[[Judgment.failure("NotJudged")] * len(r.documents) for r in self.requests])
        self.report.free = judge_is_free(self.judge)
        if self.account is not None and not self.breaker.open:
            self.breaker.reason = self.account.stopped(self.key)  # an earlier cell of this run stopped asking
        # A probe (a call sent before any call of the run succeeded) goes alone and with few retries.
        with_retries = getattr(self.judge, "with_max_retries", None)
        self.probe_judge = with_retries(self.breaker.policy.probe_retries) if callable(with_retries) else self.judge
        self.hashes = [
            (query_hash(r.query, r.task_instruction), [doc_hash(d) for d in r.documents]) for r in self.requests
        ]
        self.lock = threading.Lock()
        # Claims: this run's mark on the pairs it is paying for, so another process sharing the ledger
        # waits for the answer instead of paying again (and takes over a claim left to expire).
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    # ---- the plan ---------------------------------------------------------------------------------
    def plan(self) -> None:
        """Serve what the ledger holds (and what failed earlier in the run), then split the rest
        into calls of ``judge.documents_per_request`` documents."""
        report, pairs = self.report, [(qh, dh) for qh, dhs in self.hashes for dh in dhs]
        stored = self.ledger.lookup(self.key, pairs) if self.ledger is not None else {}
        failed_earlier: dict[tuple[str, str], str] = {}
        if self.account is not None:
            failed_earlier = self.account.failed_pairs(self.key, [p for p in pairs if p not in stored])
        per_call = self.judge.documents_per_request
        for i, (qh, dhs) in enumerate(self.hashes):
            todo: list[int] = []
            seen: set[str] = set()
            for j, dh in enumerate(dhs):
                if (qh, dh) in stored:
                    report.judgments[i][j] = Judgment(score=stored[(qh, dh)], raw="ledger")
                    report.from_ledger += 1
                elif (qh, dh) in failed_earlier:
                    report.judgments[i][j] = Judgment.failure(failed_earlier[(qh, dh)])
                    report.failed_earlier += 1
                    report.failed += 1
                elif dh not in seen:  # a duplicate document within a query is judged once, copied at the end
                    seen.add(dh)
                    todo.append(j)
            size = per_call or max(len(todo), 1)
            self.calls.extend((i, todo[s : s + size]) for s in range(0, len(todo), size))
        self.queue = list(reversed(self.calls))

    def pairs_of(self, i: int, positions: list[int]) -> list[tuple[str, str]]:
        return [(self.hashes[i][0], self.hashes[i][1][j]) for j in positions]

    def from_ledger_now(self, i: int, positions: list[int]) -> list[int]:
        """Fill what the ledger holds now; the positions still to judge."""
        now = self.ledger.lookup(self.key, self.pairs_of(i, positions)) if self.ledger is not None else {}
        qh, dhs = self.hashes[i]
        for j in positions:
            if (qh, dhs[j]) in now:
                self.report.judgments[i][j] = Judgment(score=now[(qh, dhs[j])], raw="ledger")
                self.report.from_ledger += 1
        return [j for j in positions if (qh, dhs[j]) not in now]

    # ---- sending ----------------------------------------------------------------------------------
    def claim_next(self) -> list[int]:
        """Claim the pairs of the next call in the ledger and return the positions this run must
        judge (possibly none: the rest is deferred to another process or already answered)."""
        i, positions = self.queue[-1]
        if self.ledger is None:
            return positions
        # Another process sharing this ledger may be paying for these pairs, or have paid since the
        # plan was made. Claim them first (pairs claimed elsewhere are deferred), then look in the
        # ledger: an answer stored before our claim is seen, and none can be stored after it (its
        # writer would need the claim).
        claimed = self.ledger.claim(self.key, self.pairs_of(i, positions), self.owner, self.claim_ttl)
        qh, dhs = self.hashes[i]
        waiting = [j for j in positions if (qh, dhs[j]) not in claimed]
        if waiting:
            self.deferred.append((i, waiting))
        mine = [j for j in positions if (qh, dhs[j]) in claimed]
        positions = self.from_ledger_now(i, mine)
        answered = [j for j in mine if j not in positions]
        if answered:
            self.ledger.release(self.key, self.pairs_of(i, answered), self.owner)
        self.queue[-1] = (i, positions)
        return positions

    def over_budget(self, extra: int) -> bool:
        budget, report = self.budget, self.report
        if budget is None:
            return False
        if budget.max_judgments is not None and report.judged + report.failed + extra > budget.max_judgments:
            return True
        return budget.max_cost is not None and report.cost >= budget.max_cost

    def reserve(self, i: int, positions: list[int]) -> bool:
        """Reserve the call's documents and estimated cost in the run's spend account."""
        if self.account is None:
            return True
        request = self.requests[i]
        estimate = estimate_call_cost(
            self.judge.identity.model,
            request.query,
            request.task_instruction,
            [request.documents[j][: self.max_document_chars] for j in positions],
            self.prices,
        )
        if not self.account.reserve(len(positions), estimate):
            return False
        self.reserved[(i, positions[0])] = estimate
        return True

    def may_send(self) -> bool:
        """Room for one more call: none crashed, the breaker is closed (a probe goes alone)."""
        limit = 1 if self.breaker.probing else self.concurrency
        return self.crash is None and not self.breaker.open and bool(self.queue) and len(self.pending) < limit

    def fill(self, pool: ThreadPoolExecutor) -> None:
        """Submit calls while there is room, work and budget."""
        while self.may_send():
            i, _ = self.queue[-1]
            positions = self.claim_next()
            if not positions:
                self.queue.pop()
                continue
            in_flight_docs = self.submitted_docs - self.report.judged - self.report.failed
            if self.over_budget(in_flight_docs + len(positions)) or not self.reserve(i, positions):
                if self.ledger is not None:
                    self.ledger.release(self.key, self.pairs_of(i, positions), self.owner)
                return
            self.queue.pop()
            self.submitted_docs += len(positions)
            self.pending[pool.submit(self.one_call, i, positions)] = (i, positions)

    def one_call(self, i: int, positions: list[int]) -> JudgeResponse:
        with self.lock:
            self.in_flight += 1
            self.report.max_in_flight = max(self.report.max_in_flight, self.in_flight)
        try:
            docs = []
            for j in positions:
                text, cut = truncate_document(self.requests[i].documents[j], self.max_document_chars)
                docs.append(text)
                if cut:
                    with self.lock:
                        self.report.truncated_documents += 1
            # Judges turn transport and answer errors into failed verdicts; an exception here is
            # a bug: it propagates (run() drains the calls in flight, then raises).
            response = (self.probe_judge if self.breaker.probing else self.judge).judge(
                query=self.requests[i].query, documents=docs, task_instruction=self.requests[i].task_instruction
            )
            if len(response.judgments) != len(docs):
                response = JudgeResponse([Judgment.failure("WrongNumberOfVerdicts")] * len(docs), response.usage)
            check_scores(response.judgments)
            return response
        finally:
            with self.lock:
                self.in_flight -= 1

    # ---- answers ----------------------------------------------------------------------------------
    def settle(self, i: int, positions: list[int], response: JudgeResponse) -> None:
        """Store a call's verdicts (ledger first), settle its cost, feed the breaker, report."""
        report, account, key = self.report, self.account, self.key
        cost = estimate_cost(self.judge.identity.model, response.usage, self.prices)
        qh, dhs = self.hashes[i]
        if account is not None:  # failed verdicts go back to the account; the estimate becomes the cost
            ok_count = sum(j.ok for j in response.judgments)
            account.settle(len(positions), self.reserved.pop((i, positions[0])), ok_count, cost)
        if self.ledger is not None:
            ok = sum(j.ok for j in response.judgments)
            # pairs another process stored while this call was in flight: paid twice, reported
            report.paid_twice += self.ledger.record(
                key,
                [(qh, dhs[j], v) for j, v in zip(positions, response.judgments)],
                cost_each=cost / ok if ok else 0.0,
            )
            self.ledger.release(key, self.pairs_of(i, positions), self.owner)
        report.usage.add(response.usage)
        report.cost += cost
        if self.breaker.record(response.judgments) and account is not None:
            account.stop(key, str(self.breaker.reason))
        if account is not None:
            failures = [(qh, dhs[j], v.error or "unknown") for j, v in zip(positions, response.judgments) if not v.ok]
            account.note_failures(key, failures)
        for j, verdict in zip(positions, response.judgments):
            report.judgments[i][j] = verdict
            if verdict.ok:
                report.judged += 1
            else:
                report.failed += 1
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, len(self.calls)), len(self.calls))

    def collect(self) -> None:
        """Wait for at least one call in flight and settle what finished."""
        finished, _ = wait(self.pending, return_when=FIRST_COMPLETED)
        for future in finished:
            i, positions = self.pending.pop(future)
            try:
                response = future.result()
            except Exception as exc:
                self.crash = self.crash or exc
                if self.ledger is not None:
                    self.ledger.release(self.key, self.pairs_of(i, positions), self.owner)
                continue
            self.settle(i, positions, response)

    # ---- the loop ---------------------------------------------------------------------------------
    def run(self) -> RunReport:
        self.plan()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="judge") as pool:
            while self.queue or self.pending or self.deferred:
                self.fill(pool)
                if not self.pending:
                    if self.crash is None and not self.breaker.open and not self.queue and self.deferred:
                        # Wait for the other processes' answers (or for their claims to lapse), then look again.
                        time.sleep(self.claim_poll_s)
                        self.queue.extend(reversed(self.deferred))
                        self.deferred = []
                        continue
                    break  # budget reached or a call crashed: leave the rest unsubmitted
                self.collect()
        return self.finish()

    def finish(self) -> RunReport:
        """Mark what was never sent (and why), raise for a crashed judge, copy duplicates' verdicts."""
        report = self.report
        left = open_verdict(str(self.breaker.reason)) if self.breaker.open else Judgment.failure("BudgetExceeded")
        report.stopped = self.breaker.reason
        for i, positions in self.deferred:  # left when the run stopped early: take what the other process stored
            for j in self.from_ledger_now(i, positions):
                report.judgments[i][j] = left if self.crash is None else Judgment.failure("NotJudged")
                report.not_submitted += 1
        if self.crash is not None:
            identity = self.judge.identity
            raise JudgeCrashed(
                f"judge {identity.kind} ({identity.model}) raised {type(self.crash).__name__}: {self.crash} — a bug "
                f"in the judge, not a failed call; {report.judged} verdicts paid before it are in the ledger"
            ) from self.crash
        for i, positions in self.queue:
            for j in positions:
                report.judgments[i][j] = left
                report.not_submitted += 1
        for i, (_, dhs) in enumerate(self.hashes):  # copy verdicts to duplicate documents of the same query
            first: dict[str, int] = {}
            for j, dh in enumerate(dhs):
                if dh in first and report.judgments[i][j].error == "NotJudged":
                    report.judgments[i][j] = report.judgments[i][first[dh]]
                first.setdefault(dh, j)
        return report


def judge_is_free(judge: Judge) -> bool:
    """Whether ``judge`` is a registered free kind (:data:`judging.kinds.JUDGE_KINDS`); a judge of a
    kind not registered counts as paid."""
    from judging.kinds import JUDGE_KINDS

    kind = JUDGE_KINDS.get(judge.identity.kind)
    return kind is not None and not kind.paid
