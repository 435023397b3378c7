"""A circuit breaker for a remote judge: stop asking a service that cannot answer.

A judge call that fails after the client's own retries is one of three kinds, read from the
failed verdicts' error text (:func:`failure_kind`):

* ``fatal`` — the service refused the request itself (HTTP 400, 401, 403, 404, 405, 410, 422: a
  wrong key, a model that does not exist, a malformed request). Asking again cannot help.
* ``down`` — the service did not answer usefully (HTTP 5xx or 529, a connection error, a timeout)
  even after the retries.
* anything else (an answer that did not parse, rate limiting, the budget) says nothing about
  whether the service is up.

:class:`CircuitBreaker` opens (the run stops asking) after :attr:`BreakerPolicy.fatal_after`
consecutive fatal calls, or after :attr:`BreakerPolicy.down_after` consecutive down calls.
Until the first call of a run succeeds it lets one call out at a time (a *probe*), sent with at
most :attr:`BreakerPolicy.probe_retries` client retries, so a dead service costs a handful of
requests instead of ``concurrency × (1 + max_retries)`` per round; after the first success the
full concurrency and retries apply and a run trips after ``down_after_success`` consecutive
down calls. Any successful call resets the counts.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from judging.base import Judgment

FATAL_STATUS = frozenset({400, 401, 403, 404, 405, 410, 422})
DOWN_STATUS = frozenset({500, 502, 503, 504, 529})
_STATUS = re.compile(r"\bHTTP (\d{3})\b")
_DOWN_NAMES = ("Timeout", "Connect", "Connection", "RemoteProtocolError", "ReadError", "NetworkError")
OPEN_ERROR = "CircuitOpen"


def failure_kind(error: str | None) -> str | None:
    """``"fatal"``, ``"down"`` or None (see the module's docstring) for a failed verdict's error."""
    if not error:
        return None
    match = _STATUS.search(error)
    if match:
        status = int(match.group(1))
        if status in FATAL_STATUS:
            return "fatal"
        if status in DOWN_STATUS:
            return "down"
        return None
    head = error.split(":", 1)[0]
    return "down" if any(name in head for name in _DOWN_NAMES) else None


@dataclass(frozen=True)
class BreakerPolicy:
    """When a run stops asking a failing judge.

    Args:
        fatal_after: consecutive calls refused by the service (``fatal``) that open the breaker.
        down_after: consecutive calls that found the service down, before any call of the run
            succeeded, that open the breaker.
        down_after_success: the same once a call has succeeded (a service that went down mid-run).
        probe_retries: the client's retries for a probe (a call sent before any success), at most.
    """

    fatal_after: int = 2
    down_after: int = 3
    down_after_success: int = 8
    probe_retries: int = 1

    def __post_init__(self) -> None:
        for name in ("fatal_after", "down_after", "down_after_success"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.probe_retries < 0:
            raise ValueError(f"probe_retries must be >= 0, got {self.probe_retries}")


class CircuitBreaker:
    """The breaker of one run of a judge (thread-safe); see the module's docstring."""

    def __init__(self, policy: BreakerPolicy | None = None, *, reason: str | None = None) -> None:
        self.policy = policy or BreakerPolicy()
        self.reason = reason  # set once open: one line saying why
        self.succeeded = False
        self._fatal = 0
        self._down = 0
        self._last_error = ""
        self._lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.reason is not None

    @property
    def probing(self) -> bool:
        """No call of this run has succeeded yet: one call at a time."""
        return not self.succeeded

    def record(self, verdicts: Sequence[Judgment]) -> bool:
        """Count one call's verdicts; returns True when this call opened the breaker."""
        with self._lock:
            if self.open:
                return False
            if any(v.ok for v in verdicts):
                self.succeeded, self._fatal, self._down = True, 0, 0
                return False
            kinds = {failure_kind(v.error) for v in verdicts}
            error = next((v.error for v in verdicts if v.error), "") or ""
            if kinds == {"fatal"}:
                self._fatal += 1
                self._down = 0
            elif kinds == {"down"}:
                self._down += 1
                self._fatal = 0
            else:
                return False  # an answer that did not parse, the budget: the service is up
            self._last_error = error
            limit = self.policy.down_after_success if self.succeeded else self.policy.down_after
            if self._fatal >= self.policy.fatal_after:
                self.reason = f"the service refused {self._fatal} calls in a row ({error}); asking again cannot help"
            elif self._down >= limit:
                self.reason = f"the service failed {self._down} calls in a row after retries ({error}); it looks down"
            return self.open


def open_verdict(reason: str) -> Judgment:
    """The verdict of a pair not asked because the breaker is open (never stored as an answer)."""
    return Judgment.failure(f"{OPEN_ERROR}: {reason}")
