"""Message Batches mode for the Claude judge: submit, poll, collect; resumable by batch id.

For large sweeps the Batches API halves the price and removes rate-limit pressure. Every
submitted batch id is written to the ledger before polling starts, so a process killed while
waiting picks the same batch up on the next run instead of paying again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from anthropic.types.messages.batch_create_params import Request

import json
import time
from collections.abc import Callable, Sequence

from judging.anthropic_judge import AnthropicJudge
from judging.base import Judgment, Usage
from judging.ledger import JudgmentLedger, doc_hash, query_hash
from judging.runner import JudgeRequest, RunReport, estimate_cost
from judging.spend import SpendAccount, estimate_call_cost


def _collect(
    judge: AnthropicJudge,
    ledger: JudgmentLedger,
    batch_id: str,
    payload: dict[str, list],
    poll_interval: float,
    max_wait: float | None,
    sleep: Callable[[float], None],
) -> Usage:
    started = time.monotonic()
    while True:
        batch = judge.client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            break
        if max_wait is not None and time.monotonic() - started > max_wait:
            raise TimeoutError(
                f"message batch {batch_id} still {batch.processing_status} after {max_wait} s; "
                "run again later to collect it (its id is in the ledger)"
            )
        sleep(poll_interval)
    usage = Usage()
    key = judge.identity.key
    for item in judge.client.messages.batches.results(batch_id):
        qh, dhs = payload[item.custom_id]
        result = item.result
        if result.type != "succeeded":
            verdicts = [Judgment.failure(f"Batch{result.type.capitalize()}")] * len(dhs)
        else:
            message = result.message
            u = message.usage
            usage.add(Usage(requests=1, input_tokens=u.input_tokens, output_tokens=u.output_tokens))
            verdicts = (
                [judge.parse_pointwise(message)]
                if judge.scheme == "pointwise"
                else judge.parse_listwise(message, len(dhs))
            )
        ledger.record(key, [(qh, dh, v) for dh, v in zip(dhs, verdicts)])
    ledger.close_batch(batch_id)
    return usage


def run_judge_batches(
    judge: AnthropicJudge,
    requests: Sequence[JudgeRequest],
    *,
    ledger: JudgmentLedger,
    poll_interval: float = 30.0,
    max_wait: float | None = None,
    sleep: Callable[[float], None] = time.sleep,
    account: SpendAccount | None = None,
) -> RunReport:
    """Judge through the Message Batches API (see the module docstring).

    Args:
        judge: a configured :class:`AnthropicJudge` (its scheme decides one request per
            document or per query).
        requests: one per query.
        ledger: required: it holds the batch ids and every collected verdict.
        poll_interval: seconds between status checks.
        max_wait: give up waiting after this long (the batch stays resumable).
        account: a spend account: each entry of the new batch reserves its documents and
            estimated cost (at the batch price) before the batch is created; entries the
            account refuses are left out (``BudgetExceeded``). Batches resumed from an earlier
            run were reserved by that run.
    """
    key = judge.identity.key
    usage = Usage()
    for batch_id, saved in ledger.open_batches(key):  # resume what an earlier run submitted
        usage.add(_collect(judge, ledger, batch_id, json.loads(saved), poll_interval, max_wait, sleep))
    hashes = [(query_hash(r.query, r.task_instruction), [doc_hash(d) for d in r.documents]) for r in requests]
    stored = ledger.lookup(key, [(qh, dh) for qh, dhs in hashes for dh in dhs])
    batch_requests: list[dict[str, Any]] = []
    payload: dict[str, list[Any]] = {}
    reserved = [0, 0.0]  # items, estimated USD taken from the account for this batch
    refused: set[int] = set()

    def take(i: int, texts: list[str]) -> bool:
        if account is None:
            return True
        estimate = estimate_call_cost(judge.model, requests[i].query, requests[i].task_instruction, texts) / 2
        if not account.reserve(len(texts), estimate):
            refused.add(i)
            return False
        reserved[0] += len(texts)
        reserved[1] += estimate
        return True

    for i, (request, (qh, dhs)) in enumerate(zip(requests, hashes)):
        seen: set[str] = set()
        todo = []
        for j, dh in enumerate(dhs):
            if (qh, dh) not in stored and dh not in seen:
                seen.add(dh)
                todo.append(j)
        if not todo:
            continue
        if judge.scheme == "pointwise":
            for j in todo:
                if not take(i, [request.documents[j]]):
                    continue
                custom_id = f"q{i}-d{j}"
                payload[custom_id] = [qh, [dhs[j]]]
                params = judge.pointwise_params(request.query, request.documents[j], request.task_instruction)
                batch_requests.append({"custom_id": custom_id, "params": _batch_params(params)})
        else:
            if not take(i, [request.documents[j] for j in todo]):
                continue
            custom_id = f"q{i}"
            payload[custom_id] = [qh, [dhs[j] for j in todo]]
            params = judge.listwise_params(
                request.query, [request.documents[j] for j in todo], request.task_instruction
            )
            batch_requests.append({"custom_id": custom_id, "params": _batch_params(params)})
    answered_before = len(ledger.lookup(key, [(qh, dh) for qh, dhs in hashes for dh in dhs]))
    if batch_requests:
        batch = judge.client.messages.batches.create(requests=cast("list[Request]", batch_requests))
        ledger.save_batch(batch.id, key, json.dumps(payload))
        new_usage = _collect(judge, ledger, batch.id, payload, poll_interval, max_wait, sleep)
        usage.add(new_usage)
        if account is not None:
            answered = len(ledger.lookup(key, [(qh, dh) for qh, dhs in hashes for dh in dhs])) - answered_before
            account.settle(int(reserved[0]), reserved[1], answered, estimate_cost(judge.model, new_usage) / 2)
    stored = ledger.lookup(key, [(qh, dh) for qh, dhs in hashes for dh in dhs])
    report = RunReport(
        judgments=[
            [
                Judgment(score=stored[(qh, dh)], raw="ledger")
                if (qh, dh) in stored
                else Judgment.failure("BudgetExceeded" if i in refused else "NotJudged")
                for dh in dhs
            ]
            for i, (qh, dhs) in enumerate(hashes)
        ]
    )
    report.usage = usage
    # Batches are billed at half the standard price.
    report.cost = estimate_cost(judge.model, usage) / 2
    report.judged = sum(v.ok for row in report.judgments for v in row)
    report.failed = sum(not v.ok for row in report.judgments for v in row)
    return report


def _batch_params(params: dict[str, object]) -> dict[str, object]:
    """Request params for a batch entry: ``extra_body`` fields are inlined."""
    out = {k: v for k, v in params.items() if k != "extra_body"}
    out.update(params.get("extra_body") or {})  # type: ignore[call-overload]
    return out
