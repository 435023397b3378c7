"""Load: 10,000 pointwise judgments at concurrency 32 against the fake server (100 ms each).

Checks that the concurrency bound holds (at the server), that memory stays flat (peak RSS
sampled during the run), and that nothing is lost (every judgment is in the ledger once).

    python benchmarks/judge_load.py [--judgments 10000] [--concurrency 32] [--latency 0.1] [--json]
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the fake Messages API of the tests
from fakes.anthropic_server import FakeAnthropic  # noqa: E402

from benchmarks._common import emit_json, machine_info, print_table  # noqa: E402
from judging import JudgeRequest, JudgmentLedger, run_judge  # noqa: E402
from judging.anthropic_judge import AnthropicJudge  # noqa: E402


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--judgments", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.1)
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def _print_load(m: dict, latency: float) -> None:
    """The load test's one-row table."""
    print_table(
        [
            "judgments",
            "concurrency",
            "latency ms",
            "seconds",
            "judgments/s",
            "max in flight (server)",
            "stored in ledger",
            "failed",
            "answered twice",
            "RSS start MB",
            "RSS early/late max MB",
            "peak RSS MB",
        ],
        [
            [
                m["judgments"],
                m["concurrency"],
                f"{latency * 1000:.0f}",
                f"{m['seconds']:.1f}",
                f"{m['judgments'] / m['seconds']:.0f}",
                m["max_in_flight"],
                m["stored"],
                m["failed"],
                m["answered_twice"],
                f"{m['rss_start_mb']:.0f}",
                f"{m['rss_early_max_mb']:.0f}/{m['rss_late_max_mb']:.0f}",
                f"{m['peak_rss_mb']:.0f}",
            ]
        ],
    )


def main() -> None:
    args = _arguments()

    os.environ.setdefault("ANTHROPIC_API_KEY", "load-test-key")
    k = 20
    requests = [
        JudgeRequest(query=f"query {q}: a lost card", documents=tuple(f"doc {q}-{i} card {i % 2}" for i in range(k)))
        for q in range(args.judgments // k)
    ]
    samples: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            samples.append(rss_mb())
            time.sleep(0.5)

    with (
        tempfile.TemporaryDirectory() as tmp,
        FakeAnthropic(
            lambda q, d: d.endswith("1"), api_key=os.environ["ANTHROPIC_API_KEY"], latency=args.latency
        ) as server,
    ):
        ledger = JudgmentLedger(Path(tmp) / "ledger.sqlite")
        judge = AnthropicJudge(scheme="pointwise", base_url=server.base_url, max_retries=2)
        before = rss_mb()
        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        start = time.perf_counter()
        report = run_judge(judge, requests, ledger=ledger, concurrency=args.concurrency)
        elapsed = time.perf_counter() - start
        stop.set()
        sampler.join()
        stored = ledger.count()
        answered_twice = sum(1 for c in server.stats.pairs_answered.values() if c > 1)
        max_in_flight = server.stats.max_in_flight
    n = len(requests) * k
    quarter = max(1, len(samples) // 4)
    early, late = max(samples[:quarter]), max(samples[-quarter:])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    info = machine_info()
    print(f"machine: {info}")
    measured = {
        "judgments": n,
        "concurrency": args.concurrency,
        "seconds": elapsed,
        "max_in_flight": max_in_flight,
        "stored": stored,
        "failed": report.failed,
        "answered_twice": answered_twice,
        "rss_start_mb": before,
        "rss_early_max_mb": early,
        "rss_late_max_mb": late,
        "peak_rss_mb": peak,
    }
    _print_load(measured, args.latency)
    ok = max_in_flight <= args.concurrency and stored == n and report.failed == 0 and answered_twice == 0
    print("bound held, nothing lost, nothing paid twice" if ok else "CHECK FAILED")
    if args.json:
        emit_json({"benchmark": "judge_load", "machine": info, **measured, "ok": ok})
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
