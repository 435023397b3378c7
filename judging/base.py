"""The judge protocol: (query, task instruction, documents) -> one score in [0, 1] per document.

A judge returns, per document, either a score or a recorded failure, plus the usage of the
call (tokens, latency) and the raw response. Its :class:`JudgeIdentity` (kind, model, prompt
template + version, scoring scheme, parameters) names exactly what produced a score: it keys
the judgment ledger and is logged as run parameters.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable


class JudgeConfigError(ValueError):
    """A judge is misconfigured (missing API key, bad option); raised before anything is paid."""


class JudgeCrashed(RuntimeError):
    """A judge raised instead of returning failed verdicts: a bug, not a transport or answer
    error. The run stops submitting calls, records what the calls in flight paid for, and raises
    this (the original exception is its ``__cause__``); retrying would only repeat it."""


@dataclass(frozen=True)
class JudgeIdentity:
    """What produced a score. Two judges with equal identities are interchangeable."""

    kind: str
    model: str
    scheme: str
    prompt_version: str
    params: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, kind: str, model: str, scheme: str, prompt_version: str, **params: object) -> JudgeIdentity:
        return cls(kind, model, scheme, prompt_version, tuple(sorted((k, str(v)) for k, v in params.items())))

    @property
    def key(self) -> str:
        """Stable hash of the identity (the ledger key)."""
        payload = json.dumps([self.kind, self.model, self.scheme, self.prompt_version, list(self.params)])
        return hashlib.sha256(payload.encode()).hexdigest()[:24]

    @property
    def name(self) -> str:
        """Short human-readable label, e.g. ``anthropic:claude-haiku-4-5/listwise``."""
        return f"{self.kind}:{self.model}/{self.scheme}"

    def as_params(self) -> dict[str, str]:
        """Flat view for run parameters (``judge.kind``, ``judge.model``, ...)."""
        out = {
            "judge.kind": self.kind,
            "judge.model": self.model,
            "judge.scheme": self.scheme,
            "judge.prompt_version": self.prompt_version,
            "judge.key": self.key,
        }
        out.update({f"judge.{k}": v for k, v in self.params})
        return out


@dataclass
class Usage:
    """Resources one or more judge calls used."""

    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    latency_s: float = 0.0

    def add(self, other: Usage) -> None:
        self.requests += other.requests
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens
        self.latency_s += other.latency_s


@dataclass(frozen=True)
class Judgment:
    """One document's verdict: a score in [0, 1], or a failure with its reason."""

    score: float | None
    error: str | None = None
    raw: str = ""

    def __post_init__(self) -> None:
        if self.score is None and not self.error:
            raise ValueError("a Judgment without a score must carry an error")
        if self.score is not None and not (0.0 <= self.score <= 1.0):
            raise ValueError(f"judge score must lie in [0, 1], got {self.score!r}")

    @property
    def ok(self) -> bool:
        return self.score is not None

    @classmethod
    def failure(cls, error: str, raw: str = "") -> Judgment:
        return cls(score=None, error=error, raw=raw[:2000])


@dataclass
class JudgeResponse:
    """Verdicts for the documents of one call, in order, and the call's usage."""

    judgments: list[Judgment]
    usage: Usage = field(default_factory=Usage)


@runtime_checkable
class Judge(Protocol):
    """Scores documents for a query. Implementations never raise for a failed call (transport
    errors, HTTP errors, unreadable answers): they return failed :class:`Judgment` objects.
    Configuration errors are raised up front; anything else a judge raises is a bug and fails
    the run (:class:`JudgeCrashed`)."""

    identity: JudgeIdentity
    documents_per_request: int | None
    """How many documents one call may take (1 for pointwise, None for all of a query's)."""

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse: ...


PAPER_PROMPT_VERSION = "paper-yes-no-v2"  # v2: an instruction ending in "." no longer gets a second one


def paper_prompt(query: str, document: str, task_instruction: str | None) -> str:
    """The paper's yes/no judge prompt (task instruction for classification datasets only).

    The paper's instructions end with a full stop and go in as written; one without final
    punctuation gets a full stop, so the sentence before "Answer with ..." is always closed once.
    """
    if task_instruction:
        instruction = task_instruction.strip()
        closed = instruction if instruction.endswith((".", "?", "!")) else f"{instruction}."
        task = f" Judge the relevance according to the following task: {closed}"
    else:
        task = ""
    return (
        "Here is a user query and a document. Is this document relevant for this query?"
        f"{task} Answer with only yes/no, without any preceding tokens. "
        f"Query: {query}\nDocument: {document}\nRelevant? (Yes/No):"
    )


def truncate_document(document: str, max_chars: int) -> tuple[str, bool]:
    """Cut a document to ``max_chars`` characters for the judge; returns (text, truncated)."""
    if len(document) <= max_chars:
        return document, False
    return document[:max_chars], True


def check_scores(judgments: Sequence[Judgment]) -> None:
    """Raise if a judge produced an invalid score (guards third-party judges)."""
    for i, j in enumerate(judgments):
        if j.score is not None and not (0.0 <= j.score <= 1.0):
            raise ValueError(f"judge returned score {j.score!r} for document {i}; scores must lie in [0, 1]")
