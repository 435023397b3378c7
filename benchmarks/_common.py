"""Shared bits of the benchmark scripts: machine description, timing, table output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def _numba_threads() -> int | None:
    try:
        import numba
    except ImportError:  # pragma: no cover
        return None
    return numba.get_num_threads()


def machine_info() -> dict[str, Any]:
    """Thread settings and load the numbers were measured under."""
    import torch

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "numba_threads": _numba_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "machine": platform.machine(),
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = sorted({f"{p['internal_api']}:{p['num_threads']}" for p in threadpool_info()})
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn/scipy stacks
        pass
    return info


def best_of(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Run ``fn`` ``repeats`` times; return (min, median) wall seconds."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times), statistics.median(times)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    print(" | ".join(str(h).rjust(w) for h, w in zip(headers, widths)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(str(c).rjust(w) for c, w in zip(row, widths)))


def emit_json(payload: dict[str, Any]) -> None:
    """The last line of a ``--json`` run: one JSON object."""
    print(json.dumps(payload, sort_keys=True))
