"""Claude judge throughput: pointwise vs listwise at concurrency 1, 4, 16.

The real anthropic SDK against the fake Messages API server (tests/fakes) adding a fixed
latency per request (default 200 ms, a realistic round trip for a small model). Prints
judgments per second and input tokens per query (as the fake server counts them: about
4 characters per token) for each scheme and concurrency, all measured in this run.

    python benchmarks/judge_throughput.py [--latency 0.2] [--queries 16] [--k 20] [--json]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake Messages API of the tests
from fakes.anthropic_server import FakeAnthropic  # noqa: E402

from benchmarks._common import emit_json, machine_info, print_table  # noqa: E402
from judging import JudgeRequest, run_judge  # noqa: E402
from judging.anthropic_judge import AnthropicJudge  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds the fake server waits per request")
    parser.add_argument("--queries", type=int, default=16)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    os.environ.setdefault("ANTHROPIC_API_KEY", "benchmark-key")
    requests = [
        JudgeRequest(
            query=f"customer question number {q} about a lost or stolen card",
            documents=tuple(
                f"utterance {q}-{i}: my card {'was stolen' if i % 3 == 0 else 'works fine'}" for i in range(args.k)
            ),
            task_instruction="Decide whether the utterance expresses the intent described in the query.",
        )
        for q in range(args.queries)
    ]
    rows, results = [], []
    with FakeAnthropic(
        lambda q, d: "stolen" in d, api_key=os.environ["ANTHROPIC_API_KEY"], latency=args.latency
    ) as server:
        for scheme in ("pointwise", "listwise"):
            for conc in (int(c) for c in args.concurrency.split(",")):
                server.reset_stats()
                judge = AnthropicJudge(scheme=scheme, base_url=server.base_url, max_retries=2)
                start = time.perf_counter()
                report = run_judge(judge, requests, concurrency=conc)
                elapsed = time.perf_counter() - start
                n = args.queries * args.k
                assert report.judged == n, f"{report.failed} judgments failed"
                tokens_per_query = report.usage.input_tokens / args.queries
                rows.append(
                    [
                        scheme,
                        conc,
                        report.usage.requests,
                        f"{elapsed:.2f}",
                        f"{n / elapsed:.1f}",
                        f"{tokens_per_query:.0f}",
                        server.stats.max_in_flight,
                    ]
                )
                results.append(
                    {
                        "scheme": scheme,
                        "concurrency": conc,
                        "requests": report.usage.requests,
                        "seconds": elapsed,
                        "judgments_per_s": n / elapsed,
                        "input_tokens_per_query": tokens_per_query,
                        "max_in_flight": server.stats.max_in_flight,
                    }
                )
    info = machine_info()
    print(f"machine: {info}")
    print(f"{args.queries} queries x K={args.k}; fake server latency {args.latency * 1000:.0f} ms per request")
    print_table(
        ["scheme", "concurrency", "requests", "seconds", "judgments/s", "input tokens/query", "max in flight"], rows
    )
    point = {r["concurrency"]: r for r in results if r["scheme"] == "pointwise"}
    lst = {r["concurrency"]: r for r in results if r["scheme"] == "listwise"}
    c = max(point)
    print(
        f"listwise sends {point[c]['input_tokens_per_query'] / lst[c]['input_tokens_per_query']:.1f}x fewer input "
        f"tokens per query; at concurrency {c} it judges {lst[c]['judgments_per_s'] / point[c]['judgments_per_s']:.1f}x "
        "as many documents per second"
    )
    if args.json:
        emit_json({"benchmark": "judge_throughput", "machine": info, "latency_s": args.latency, "results": results})


if __name__ == "__main__":
    main()
