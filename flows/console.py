"""What every ``refine`` command module shares: the consoles, the one-line failure and the
errors that count as the user's (bad input), so command modules need not import each other.

Both consoles write through :class:`RedactedStream`: no URI password or secret of the
environment reaches the terminal, whatever a message quotes (see :mod:`tasks.redaction`)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import IO, Any, NoReturn, TextIO, cast

import typer
from rich.console import Console

from tasks.redaction import redact


class RedactedStream:
    """A text stream that redacts what is written before passing it to ``sys.stdout`` or
    ``sys.stderr`` (looked up at each write, so pytest's capture and redirections still work)."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def target(self) -> TextIO:
        return getattr(sys, self.name)

    def write(self, text: str) -> int:
        self.target.write(redact(text))
        return len(text)

    def flush(self) -> None:
        self.target.flush()

    def isatty(self) -> bool:
        return self.target.isatty()

    def fileno(self) -> int:
        return self.target.fileno()

    @property
    def encoding(self) -> str:
        return getattr(self.target, "encoding", "utf-8")


# On a terminal, its width. Piped to a file or another program, no wrapping at all: a table is as
# wide as its content and every message one line (a fixed 160 columns cut wide tables mid-word).
PIPED_WIDTH = 10_000
console = Console(file=cast(IO[str], RedactedStream("stdout")), width=None if sys.stdout.isatty() else PIPED_WIDTH)
err_console = Console(file=cast(IO[str], RedactedStream("stderr")), width=None if sys.stderr.isatty() else PIPED_WIDTH)


def describe(exc: BaseException) -> str:
    """A user error in words. A pydantic ``ValidationError`` (a ValueError, so a user error too)
    would print three lines ending in a link to pydantic's docs; it reads as each failing
    field and its reason instead."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)
    reasons = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"])
        reasons.append(f"{where}: {reason(error)}" if where else reason(error))
    return f"{exc.title}: " + "; ".join(reasons)


def reason(error: Mapping[str, Any]) -> str:
    """One pydantic error's own words (its ``msg``, without the "Value error, " that pydantic puts
    before a validator's message)."""
    return str(error["msg"]).removeprefix("Value error, ")


def fail(message: str | BaseException) -> NoReturn:
    """One line on stderr (an exception as :func:`describe` words it), exit code 2."""
    text = describe(message) if isinstance(message, BaseException) else message
    err_console.print(f"[bold red]error:[/] {redact(text)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported in one line with exit 2, never a traceback."""
    from embedders.models import EmbeddingModelError
    from evaluations.errors import DatasetError
    from judging import JudgeConfigError

    return (DatasetError, EmbeddingModelError, JudgeConfigError, ValueError, FileNotFoundError, PermissionError)
