"""What did not go as paid for in a sweep, in words: the budget's line, failed judgments per cell
with the commonest reason, and what the user can do about each reason."""

from __future__ import annotations


def judgment_counts(results: list[dict]) -> dict[str, float]:
    """What the sweep's judges did in this run, each count apart: verdicts paid for (remote
    judges), verdicts of free local judges, judgments failed, held back by the budget, and the
    requests sent to paid judges (a failed request is sent, and may be charged, too)."""
    from judging.kinds import JUDGE_KINDS

    def usage(r: dict, key: str) -> float:
        return float((r.get("judge_usage") or {}).get(key, 0))

    def paid_judge(r: dict) -> bool:
        kind = JUDGE_KINDS.get(str((r.get("params") or {}).get("judge.kind", "")))
        return kind is None or kind.paid

    held = sum(n for r in results for e, n in (r.get("judge_errors") or {}).items() if e.startswith("BudgetExceeded"))
    return {
        "paid": sum(usage(r, "judgments_paid") for r in results),
        "free": sum(usage(r, "judgments_free") for r in results),
        "failed": sum(float(r.get("judgments_failed", 0)) for r in results) - held,
        "held_back": float(held),
        "requests": sum(usage(r, "judge_requests") for r in results if paid_judge(r)),
        "cost_usd": sum(usage(r, "judge_cost_usd") for r in results),
    }


def judgments_line(results: list[dict]) -> str:
    """``judgments: 60 paid, 1,200 free (local judges), 0 failed; 6 requests to paid judges, est. $0.01``."""
    n = judgment_counts(results)
    parts = [f"{int(n['paid']):,} paid", f"{int(n['free']):,} free (local judges)", f"{int(n['failed']):,} failed"]
    if n["held_back"]:
        parts.append(f"{int(n['held_back']):,} held back by the budget")
    return (
        f"judgments in this run: {', '.join(parts)}; {int(n['requests']):,} requests sent to paid judges, "
        f"estimated ${n['cost_usd']:.2f}"
    )


def budget_line(spend, results: list[dict]) -> str:
    """The account's line, then what was not paid for and why: judgments that failed, judgments
    and HyDE passages held back by the budget, judgments not asked because the judge was stopped."""
    from judging.breaker import OPEN_ERROR

    def errors_like(prefix: str) -> int:
        return sum(n for r in results for e, n in (r.get("judge_errors") or {}).items() if e.startswith(prefix))

    held, stopped = errors_like("BudgetExceeded"), errors_like(OPEN_ERROR)
    failed = sum(int(r.get("judgments_failed", 0)) for r in results) - held - stopped
    hyde_held = sum(int((r.get("hyde_usage") or {}).get("hyde_generations_not_submitted", 0)) for r in results)
    hyde_failed = sum(int((r.get("hyde_usage") or {}).get("hyde_generations_failed", 0)) for r in results)
    extra = [
        f"{failed} judgments failed" if failed else "",
        f"{held} judgments held back by the budget" if held else "",
        f"{stopped} judgments not asked (the judge was stopped)" if stopped else "",
        f"{hyde_failed} HyDE passages failed" if hyde_failed else "",
        f"{hyde_held} HyDE passages held back by the budget" if hyde_held else "",
    ]
    return "; ".join([spend.line(), *(x for x in extra if x)])


_HINTS = (
    ("401", "check the API key (ANTHROPIC_API_KEY for Claude)"),
    ("AuthenticationError", "check the API key (ANTHROPIC_API_KEY for Claude)"),
    ("403", "the key is not allowed to use this model"),
    ("PermissionDenied", "the key is not allowed to use this model"),
    ("404", "check the judge's model name and base_url"),
    ("NotFound", "check the judge's model name and base_url"),
    ("429", "rate limited: lower concurrency or raise max_retries"),
    ("RateLimit", "rate limited: lower concurrency or raise max_retries"),
    ("BudgetExceeded", "the sweep's budget is spent: raise budget.max_judgments / max_cost_usd"),
    ("Timeout", "the server did not answer in time: raise timeout_s"),
    ("Connection", "the judge server cannot be reached: check base_url and the network"),
    ("HTTP 5", "the judge server failed: retry later"),
    ("529", "the judge server is overloaded: retry later"),
)


def hint(error: str) -> str:
    """What a user can do about a judge failure reason (empty when nothing specific helps)."""
    for needle, text in _HINTS:
        if needle in error:
            return text
    return "the judge's answer could not be read: see the ledger's raw responses"


def failure_lines(results: list[dict]) -> list[str]:
    """One line per judge whose breaker opened (the run stopped asking it, and why), then one
    line per cell with failed judgments: how many, the commonest reason and what to do."""
    from judging.breaker import OPEN_ERROR

    lines = []
    stopped: dict[str, str] = {}
    for r in results:
        for error in r.get("judge_errors") or {}:
            if error.startswith(f"{OPEN_ERROR}: "):
                stopped.setdefault(r["judge"], error.removeprefix(f"{OPEN_ERROR}: "))
    for judge, reason in stopped.items():
        lines.append(f"judge {judge} stopped: {reason}; no cell of this run asked it again: {hint(reason)}")
    for r in results:
        errors = r.get("judge_errors") or {}
        if not errors:
            continue
        # the commonest reason the judge gave; pairs not asked once it was stopped are counted apart
        asked = {e: n for e, n in errors.items() if not e.startswith(f"{OPEN_ERROR}: ")}
        not_asked = sum(errors.values()) - sum(asked.values())
        reason, _ = max((asked or errors).items(), key=lambda kv: kv[1])
        total = r["judgments_failed"]
        others = f" (and {len(asked) - 1} other reasons)" if len(asked) > 1 else ""
        if asked and not_asked:
            others += f" ({not_asked} not asked once the judge was stopped)"
        queries = r["failed_queries"]
        lines.append(
            f"{r.get('label') or r['benchmark'] + ' · ' + r['judge'] + ' · lr ' + format(r['params']['lr'], 'g')}: "
            f"{total} judgment"
            f"{'s' if total != 1 else ''} failed in {queries} quer{'ies' if queries != 1 else 'y'}: "
            f"{reason}{others}: {hint(reason)}"
        )
    return lines
