"""Strict readers for the raw publisher files: every problem names file, line and column."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from evaluations.errors import DatasetError, DatasetNotFound


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DatasetNotFound(f"missing file {path}")
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line} is not valid UTF-8 (byte offset {exc.start})") from None


def _lines(text: str) -> list[str]:
    """Split on newlines only: ``str.splitlines`` would also split on U+2028 and friends,
    which may occur inside a record."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_csv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """Rows of a CSV with a header that contains ``columns``; rows must have every field."""
    text = _read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{path}: file is empty (expected a header with columns {list(columns)})") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: line 1: malformed CSV header: {exc}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; the header has {header}")
    positions = [header.index(c) for c in columns]
    rows: list[dict[str, str]] = []
    try:
        for record in reader:
            if not record:
                continue
            if len(record) != len(header):
                raise DatasetError(f"{path}: line {reader.line_num}: expected {len(header)} fields, got {len(record)}")
            rows.append({c: record[p] for c, p in zip(columns, positions)})
    except csv.Error as exc:
        raise DatasetError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    return rows


def read_jsonl(path: Path, keys: tuple[str, ...]) -> list[dict[str, Any]]:
    """Objects of a JSON-lines file, each holding ``keys``."""
    return [row for _, row in read_jsonl_lines(path, keys)]


def read_jsonl_lines(path: Path, keys: tuple[str, ...]) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) of a JSON-lines file, each object holding ``keys``."""
    rows: list[tuple[int, dict[str, Any]]] = []
    for line_no, line in enumerate(_lines(_read_text(path)), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: line {line_no}: malformed JSON ({exc.msg})") from None
        if not isinstance(obj, dict):
            raise DatasetError(f"{path}: line {line_no}: expected a JSON object, got {type(obj).__name__}")
        missing = [k for k in keys if k not in obj]
        if missing:
            raise DatasetError(f"{path}: line {line_no}: missing key(s) {missing}")
        rows.append((line_no, obj))
    if not rows:
        raise DatasetError(f"{path}: no records")
    return rows


def read_tsv(path: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """A tab-separated file with a header (BEIR qrels)."""
    lines = _lines(_read_text(path))
    if not lines:
        raise DatasetError(f"{path}: file is empty")
    header = lines[0].split("\t")
    missing = [c for c in columns if c not in header]
    if missing:
        raise DatasetError(f"{path}: missing column(s) {missing}; the header has {header}")
    positions = [header.index(c) for c in columns]
    rows = []
    for line_no, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise DatasetError(f"{path}: line {line_no}: expected {len(header)} fields, got {len(fields)}")
        rows.append({c: fields[p] for c, p in zip(columns, positions)})
    if not rows:
        raise DatasetError(f"{path}: no data rows")
    return rows


def read_lines(path: Path) -> list[str]:
    """Lines of a plain text file (trailing whitespace stripped)."""
    return [line.rstrip() for line in _lines(_read_text(path))]


def read_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}: line {exc.lineno}: malformed JSON ({exc.msg})") from None


def parse_number(value: str, *, path: Path, line: int, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DatasetError(f"{path}: line {line}: column {column!r} must be a number, got {value!r}") from None
