"""Input checks shared by the engine's public functions.

Every check raises ``ValueError`` whose message names the offending argument and
what is wrong with it, so that a caller several layers up can show it verbatim.
"""

from __future__ import annotations

import numpy as np


def as_float_array(value: object, name: str, *, ndim: int) -> np.ndarray:
    """Return ``value`` as a float32 array of rank ``ndim`` with only finite entries."""
    try:
        array = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a numeric array: {exc}") from None
    if array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
    if array.size and not np.isfinite(array).all():
        bad = np.argwhere(~np.isfinite(array))[0]
        raise ValueError(f"{name} contains NaN or inf (first at index {tuple(int(i) for i in bad)})")
    return array


# Vectors shorter than this are numerically zero: normalising them overflows float32.
MIN_NORM = 1e-30


def check_no_zero_rows(array: np.ndarray, name: str) -> None:
    """Reject vectors of (numerically) zero length: their cosine similarity is undefined."""
    norms = np.linalg.norm(array.reshape(-1, array.shape[-1]).astype(np.float64), axis=1)
    if (norms < MIN_NORM).any():
        flat = int(np.flatnonzero(norms < MIN_NORM)[0])
        where = np.unravel_index(flat, array.shape[:-1])
        raise ValueError(f"{name} contains a zero vector at index {tuple(int(i) for i in where)}")


def as_mask(value: object, name: str, *, shape: tuple[int, ...]) -> np.ndarray:
    """Return a boolean mask of exactly ``shape``."""
    mask = np.asarray(value)
    if mask.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {mask.shape}")
    if mask.dtype != np.bool_:
        if not np.isin(mask, (0, 1)).all():
            raise ValueError(f"{name} must be boolean (or 0/1), got values outside {{0, 1}}")
        mask = mask.astype(bool)
    return mask


def check_positive(value: float, name: str) -> None:
    if not np.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")


def check_positive_int(value: int, name: str, *, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
