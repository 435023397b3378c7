"""The references tasks pass between them (small records naming ``.npy``/``.npz`` files, never
the arrays), the cache lifetime and the cache-key helper of every task."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta

from evaluations.benchmark import Benchmark
from tasks.storage import code_version, digest

CACHE_EXPIRATION = timedelta(days=30)


@dataclass(frozen=True)
class BenchmarkRef:
    name: str
    hash: str
    documents_hash: str
    folder: str
    counts: dict
    embed_instruction: str
    judge_instruction: str | None
    source: str = ""  # where the raw data came from (files or Hub ids)

    def load(self) -> Benchmark:
        return Benchmark.load(self.folder)


@dataclass(frozen=True)
class ArrayRef:
    """A path to an .npy/.npz file and the digest that names its content."""

    path: str
    digest: str
    seconds: float = 0.0


@dataclass(frozen=True)
class JudgmentsRef:
    path: str
    digest: str
    judge_key: str
    metrics: dict = field(default_factory=dict)
    failed_queries: int = 0  # queries with at least one failed judgment
    seconds: float = 0.0
    errors: dict = field(default_factory=dict)  # failure reason -> how many judgments
    fallback_queries: int = 0  # queries with no judgment at all (they keep the baseline ranking)
    failed_rows: tuple[int, ...] = ()  # the benchmark rows of those queries (rounds of a cell share rows)
    stopped: str | None = None  # why the run stopped asking the judge (its breaker opened), if it did

    @property
    def failed_judgments(self) -> int:
        return int(sum(self.errors.values()))


def task_key(*parts: object) -> str:
    return f"refine-{digest(*parts, code_version())}"
