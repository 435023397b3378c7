"""User-facing errors of the data layer."""

from __future__ import annotations


class DatasetError(ValueError):
    """A dataset cannot be loaded or is malformed; the message names file, column and row."""


class DatasetNotFound(DatasetError):
    """The dataset's files are absent (and the Hub could not be used)."""
