"""Paths in a sweep config file, read from the file's folder."""

from __future__ import annotations

from pathlib import Path


def relative_to_config(data: object, folder: Path) -> object:
    """A config's relative data paths (``files:data/mine``, ``beir:...``, ``document_vectors.path``)
    read from the config file's folder when they exist there, so the config runs from any working
    directory; a path that exists only from the working directory is kept as written."""
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        return data

    def near(path: str) -> str:
        p = Path(path).expanduser()
        return str(folder / p) if not p.is_absolute() and (folder / p).exists() else path

    benchmarks = []
    for bench in data["benchmarks"]:
        if isinstance(bench, dict):
            bench = dict(bench)
            kind, sep, rest = str(bench.get("name", "")).partition(":")
            if sep and rest:
                bench["name"] = f"{kind}:{near(rest)}"
            vectors = bench.get("document_vectors")
            if isinstance(vectors, dict) and isinstance(vectors.get("path"), str):
                bench["document_vectors"] = {**vectors, "path": near(vectors["path"])}
        benchmarks.append(bench)
    return {**data, "benchmarks": benchmarks}
