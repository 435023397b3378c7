"""Secrets never reach a message: every text the platform shows or stores passes :func:`redact`.

Two kinds of secret are hidden:

* the password of any URI written ``scheme://user:password@host`` (SQLAlchemy, MLflow, Prefect,
  Redis, S3 endpoints …): shown as ``scheme://user:***@host``;
* the value of every environment variable whose name says it holds a secret (``*KEY*``,
  ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*CREDENTIAL*``), and the password part of every
  URI held by an environment variable, wherever the value appears in the text (an exception
  that quotes a key, a URL-encoded password …).

Example:
    >>> redact("postgresql+psycopg2://u:hunter2@db:5432/x is unreachable")
    'postgresql+psycopg2://u:***@db:5432/x is unreachable'
"""

from __future__ import annotations

import logging
import os
import re
from urllib.parse import quote, unquote

MASK = "***"
# scheme://user:password@  (the user part may be empty: redis://:pw@host)
_URI_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@'\"]*:)(?P<password>[^\s@'\"]+)(?=@)")
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
# Values too short to be secrets would mask ordinary words ("1", "true").
_MIN_SECRET_CHARS = 6


def secret_values(environ: dict[str, str] | None = None) -> set[str]:
    """The secret strings of the environment: values of secret-named variables and the passwords
    of URIs held by any variable (each also URL-quoted and unquoted)."""
    env = os.environ if environ is None else environ
    found: set[str] = set()
    for name, value in env.items():
        if not value:
            continue
        if _SECRET_NAME.search(name) and value.lower() not in ("true", "false", "0", "1"):
            found.add(value)
        for match in _URI_PASSWORD.finditer(value):
            found.add(match.group("password"))
    more = set()
    for value in found:
        more.update({unquote(value), quote(value, safe="")})
    return {v for v in found | more if len(v) >= _MIN_SECRET_CHARS}


def redact(text: str, environ: dict[str, str] | None = None) -> str:
    """``text`` with every URI password and every secret value of the environment masked."""
    if not text:
        return text
    out = _URI_PASSWORD.sub(lambda m: m.group("head") + MASK, str(text))
    for value in sorted(secret_values(environ), key=len, reverse=True):
        if value in out:
            out = out.replace(value, MASK)
    return out


class RedactingRecordFactory:
    """A logging record factory that redacts each record's message and traceback text as it is
    made, so every handler (console, file, Prefect's API log handler) sees only the redacted text."""

    def __init__(self, inner) -> None:
        self.inner = inner

    def __call__(self, *args, **kwargs) -> logging.LogRecord:
        record = self.inner(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # a malformed record: leave it to logging's own error path
            return record
        clean = redact(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and record.exc_info[0] is not None:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text)
        return record


def install_log_redaction() -> None:
    """Redact every log record this process makes from now on (idempotent)."""
    current = logging.getLogRecordFactory()
    if not isinstance(current, RedactingRecordFactory):
        logging.setLogRecordFactory(RedactingRecordFactory(current))


class RedactingWriter:
    """A text stream wrapper that redacts every write (``print``, tracebacks, warnings) before
    it reaches the wrapped stream; everything else is the wrapped stream's."""

    def __init__(self, inner) -> None:
        self._inner = inner

    def write(self, text: str) -> int:
        self._inner.write(redact(text))
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str):
        return getattr(self._inner, name)


def install_stream_redaction() -> None:
    """Wrap ``sys.stdout`` and ``sys.stderr`` of this process in :class:`RedactingWriter` (idempotent)."""
    import sys

    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not isinstance(stream, RedactingWriter):
            setattr(sys, name, RedactingWriter(stream))
