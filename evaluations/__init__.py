"""What is evaluated: dataset loaders, the registry, the benchmark data model."""

from __future__ import annotations

from evaluations.benchmark import Benchmark
from evaluations.errors import DatasetError, DatasetNotFound
from evaluations.registry import REGISTRY, data_dir, load_benchmark, load_raw, missing_files

__all__ = [
    "REGISTRY",
    "Benchmark",
    "DatasetError",
    "DatasetNotFound",
    "data_dir",
    "load_benchmark",
    "load_raw",
    "missing_files",
]
