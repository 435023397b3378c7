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

    def as_metrics(self) -> dict[str, float]:
        return {
            "judge_requests": float(self.usage.requests),
            "judge_input_tokens": float(self.usage.input_tokens),
            "judge_output_tokens": float(self.usage.output_tokens),
            "judge_cache_read_tokens": float(self.usage.cache_read_tokens),
            "judge_cost_usd": self.cost,
            "judgments_from_ledger": float(self.from_ledger),
            "judgments_paid": float(self.judged),
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
    key = judge.identity.key
    report = RunReport(judgments=[[Judgment.failure("NotJudged")] * len(r.documents) for r in requests])
    breaker = breaker if breaker is not None else CircuitBreaker()
    if account is not None and not breaker.open:
        breaker.reason = account.stopped(key)  # an earlier cell of this run stopped asking this judge
    # A probe (a call sent before any call of the run succeeded) goes alone and with few retries.
    with_retries = getattr(judge, "with_max_retries", None)
    probe_judge: Judge = with_retries(breaker.policy.probe_retries) if callable(with_retries) else judge
    hashes = [(query_hash(r.query, r.task_instruction), [doc_hash(d) for d in r.documents]) for r in requests]
    if ledger is not None:
        wanted = [(qh, dh) for qh, dhs in hashes for dh in dhs]
        stored = ledger.lookup(key, wanted)
    else:
        stored = {}
    failed_earlier: dict[tuple[str, str], str] = {}
    if account is not None:
        failed_earlier = account.failed_pairs(
            key, [(qh, dh) for qh, dhs in hashes for dh in dhs if (qh, dh) not in stored]
        )
    # Plan the calls: (request index, document positions).
    calls: list[tuple[int, list[int]]] = []
    per_call = judge.documents_per_request
    for i, (qh, dhs) in enumerate(hashes):
        todo: list[int] = []
        seen: dict[str, int] = {}
        for j, dh in enumerate(dhs):
            if (qh, dh) in stored:
                report.judgments[i][j] = Judgment(score=stored[(qh, dh)], raw="ledger")
                report.from_ledger += 1
            elif (qh, dh) in failed_earlier:
                report.judgments[i][j] = Judgment.failure(failed_earlier[(qh, dh)])
                report.failed_earlier += 1
                report.failed += 1
            elif dh in seen:
                continue  # duplicate document within a query: judged once, copied below
            else:
                seen[dh] = j
                todo.append(j)
        size = per_call or max(len(todo), 1)
        calls.extend((i, todo[s : s + size]) for s in range(0, len(todo), size))

    in_flight = 0
    lock = threading.Lock()

    def one_call(i: int, positions: list[int]) -> JudgeResponse:
        nonlocal in_flight
        with lock:
            in_flight += 1
            report.max_in_flight = max(report.max_in_flight, in_flight)
        try:
            docs = []
            for j in positions:
                text, cut = truncate_document(requests[i].documents[j], max_document_chars)
                docs.append(text)
                if cut:
                    with lock:
                        report.truncated_documents += 1
            # Judges turn transport and answer errors into failed verdicts; an exception here is
            # a bug: it propagates (the loop below drains the calls in flight, then raises).
            response = (probe_judge if breaker.probing else judge).judge(
                query=requests[i].query, documents=docs, task_instruction=requests[i].task_instruction
            )
            if len(response.judgments) != len(docs):
                response = JudgeResponse([Judgment.failure("WrongNumberOfVerdicts")] * len(docs), response.usage)
            check_scores(response.judgments)
            return response
        finally:
            with lock:
                in_flight -= 1

    def over_budget(extra: int) -> bool:
        if budget is None:
            return False
        if budget.max_judgments is not None and report.judged + report.failed + extra > budget.max_judgments:
            return True
        return budget.max_cost is not None and report.cost >= budget.max_cost

    done = 0
    crash: BaseException | None = None
    pending: dict[Future[JudgeResponse], tuple[int, list[int]]] = {}
    reserved: dict[tuple[int, int], float] = {}  # (request, first position) -> estimated cost reserved

    def reserve(i: int, positions: list[int]) -> bool:
        if account is None:
            return True
        request = requests[i]
        estimate = estimate_call_cost(
            judge.identity.model,
            request.query,
            request.task_instruction,
            [request.documents[j][:max_document_chars] for j in positions],
            prices,
        )
        if not account.reserve(len(positions), estimate):
            return False
        reserved[(i, positions[0])] = estimate
        return True

    queue = list(reversed(calls))
    submitted_docs = 0
    # Claims: this run's mark on the pairs it is paying for, so another process sharing the ledger
    # waits for the answer instead of paying again (and takes over a claim left to expire).
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deferred: list[tuple[int, list[int]]] = []

    def pairs_of(i: int, positions: list[int]) -> list[tuple[str, str]]:
        return [(hashes[i][0], hashes[i][1][j]) for j in positions]

    def from_ledger_now(i: int, positions: list[int]) -> list[int]:
        """Fill what the ledger holds now; the positions still to judge."""
        now = ledger.lookup(key, pairs_of(i, positions)) if ledger is not None else {}
        qh, dhs = hashes[i]
        for j in positions:
            if (qh, dhs[j]) in now:
                report.judgments[i][j] = Judgment(score=now[(qh, dhs[j])], raw="ledger")
                report.from_ledger += 1
        return [j for j in positions if (qh, dhs[j]) not in now]

    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="judge") as pool:
        while queue or pending or deferred:
            while (
                crash is None and not breaker.open and queue and len(pending) < (1 if breaker.probing else concurrency)
            ):
                i, positions = queue[-1]
                if ledger is not None:
                    # Another process sharing this ledger may be paying for these pairs, or have
                    # paid since the plan was made. Claim them first (pairs claimed elsewhere are
                    # deferred), then look in the ledger: an answer stored before our claim is seen,
                    # and none can be stored after it (its writer would need the claim).
                    claimed = ledger.claim(key, pairs_of(i, positions), owner, claim_ttl)
                    waiting = [j for j in positions if (hashes[i][0], hashes[i][1][j]) not in claimed]
                    if waiting:
                        deferred.append((i, waiting))
                    mine = [j for j in positions if (hashes[i][0], hashes[i][1][j]) in claimed]
                    positions = from_ledger_now(i, mine)
                    answered = [j for j in mine if j not in positions]
                    if answered:
                        ledger.release(key, pairs_of(i, answered), owner)
                    if not positions:
                        queue.pop()
                        continue
                    queue[-1] = (i, positions)
                if over_budget(submitted_docs - report.judged - report.failed + len(positions)) or not reserve(
                    i, positions
                ):
                    if ledger is not None:
                        ledger.release(key, pairs_of(i, positions), owner)
                    break
                queue.pop()
                submitted_docs += len(positions)
                pending[pool.submit(one_call, i, positions)] = (i, positions)
            if not pending:
                if crash is None and not breaker.open and not queue and deferred:
                    # Wait for the other processes' answers (or for their claims to lapse), then look again.
                    time.sleep(claim_poll_s)
                    queue.extend(reversed(deferred))
                    deferred = []
                    continue
                break  # budget reached or a call crashed: leave the rest unsubmitted
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                i, positions = pending.pop(future)
                try:
                    response = future.result()
                except Exception as exc:
                    crash = crash or exc
                    if ledger is not None:
                        ledger.release(key, pairs_of(i, positions), owner)
                    continue
                cost = estimate_cost(judge.identity.model, response.usage, prices)
                qh, dhs = hashes[i]
                if account is not None:  # failed verdicts go back to the account; the estimate becomes the cost
                    account.settle(
                        len(positions), reserved.pop((i, positions[0])), sum(j.ok for j in response.judgments), cost
                    )
                if ledger is not None:
                    ok = sum(j.ok for j in response.judgments)
                    # pairs another process stored while this call was in flight: paid twice, reported
                    report.paid_twice += ledger.record(
                        key,
                        [(qh, dhs[j], v) for j, v in zip(positions, response.judgments)],
                        cost_each=cost / ok if ok else 0.0,
                    )
                    ledger.release(key, pairs_of(i, positions), owner)
                report.usage.add(response.usage)
                report.cost += cost
                if breaker.record(response.judgments) and account is not None:
                    account.stop(key, str(breaker.reason))
                if account is not None:
                    account.note_failures(
                        key,
                        [(qh, dhs[j], v.error or "unknown") for j, v in zip(positions, response.judgments) if not v.ok],
                    )
                for j, verdict in zip(positions, response.judgments):
                    report.judgments[i][j] = verdict
                    if verdict.ok:
                        report.judged += 1
                    else:
                        report.failed += 1
                done += 1
                if progress is not None:
                    progress(min(done, len(calls)), len(calls))
    left = open_verdict(str(breaker.reason)) if breaker.open else Judgment.failure("BudgetExceeded")
    report.stopped = breaker.reason
    for i, positions in deferred:  # left when the run stopped early: take what the other process stored
        for j in from_ledger_now(i, positions):
            report.judgments[i][j] = left if crash is None else Judgment.failure("NotJudged")
            report.not_submitted += 1
    if crash is not None:
        raise JudgeCrashed(
            f"judge {judge.identity.kind} ({judge.identity.model}) raised {type(crash).__name__}: {crash} — a bug in "
            f"the judge, not a failed call; {report.judged} verdicts paid before it are in the ledger"
        ) from crash
    for i, positions in queue:
        for j in positions:
            report.judgments[i][j] = left
            report.not_submitted += 1
    # Copy verdicts to duplicate documents of the same query.
    for i, (_, dhs) in enumerate(hashes):
        first: dict[str, int] = {}
        for j, dh in enumerate(dhs):
            if dh in first and report.judgments[i][j].error == "NotJudged":
                report.judgments[i][j] = report.judgments[i][first[dh]]
            first.setdefault(dh, j)
    return report
