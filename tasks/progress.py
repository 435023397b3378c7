"""Progress reporting from inside tasks without touching their parameters (cache keys).

The CLI installs a reporter (rich progress bars); tasks call :func:`report` with a stage name
and (done, total). With no reporter installed (a worker, the tests) it does nothing.
"""

from __future__ import annotations

from collections.abc import Callable

Reporter = Callable[[str, int, int], None]
_reporter: Reporter | None = None


def install(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter


def report(stage: str, done: int, total: int) -> None:
    if _reporter is not None:
        _reporter(stage, done, total)


def callback(stage: str) -> Callable[[int, int], None]:
    """A (done, total) callback for one stage."""
    return lambda done, total: report(stage, done, total)
