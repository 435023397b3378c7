"""What every ``refine`` command module shares: the consoles, the one-line failure and the
errors that count as the user's (bad input), so command modules need not import each other."""

from __future__ import annotations

import sys
from typing import NoReturn

import typer
from rich.console import Console

console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def user_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean bad input: reported in one line with exit 2, never a traceback."""
    from evaluations.errors import DatasetError
    from refine_core.embedders import EmbeddingModelError
    from refine_core.judges import JudgeConfigError

    return (DatasetError, EmbeddingModelError, JudgeConfigError, ValueError, FileNotFoundError, PermissionError)
