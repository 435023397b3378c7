"""Where the platform keeps its state, and how arrays travel between tasks (as .npy paths).

Everything lives under the state directory (``$REFINE_HOME``, default ``./.refine``):

    .refine/arrays/        task outputs (.npy / .npz / parquet), content-addressed names
    .refine/benchmarks/    benchmark tables as parquet, one folder per content hash
    .refine/embeddings/    the embedding cache (or $REFINE_EMBEDDING_CACHE, e.g. one folder for many homes)
    .refine/judgments.sqlite  the judgment ledger (or $REFINE_LEDGER_URL)
    .refine/prefect/       Prefect home, database and persisted task results
    .refine/mlflow.db, .refine/mlartifacts/   MLflow tracking store and artifacts
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np


def state_dir() -> Path:
    return Path(os.environ.get("REFINE_HOME") or Path.cwd() / ".refine").resolve()


def embedding_cache_dir() -> Path:
    """The embedding cache: ``$REFINE_EMBEDDING_CACHE``, else ``embeddings/`` in the state folder.

    Embeddings depend only on the model and the exact text, so one cache can serve many state
    folders (a team's homes, every test of a session) and a corpus is embedded once for all."""
    configured = os.environ.get("REFINE_EMBEDDING_CACHE")
    return Path(configured).resolve() if configured else state_dir() / "embeddings"


def torch_threads() -> int:
    """Intra-op threads for embedding in this process: ``$REFINE_TORCH_THREADS``, default 2.

    Dask workers started by the platform get 1 each, so two workers on two cores do not
    oversubscribe them (a descheduled OpenMP thread stalls its siblings).
    """
    value = os.environ.get("REFINE_TORCH_THREADS", "2")
    try:
        threads = int(value)
    except ValueError:
        raise ValueError(f"REFINE_TORCH_THREADS must be a positive integer, got {value!r}") from None
    if threads < 1:
        raise ValueError(f"REFINE_TORCH_THREADS must be a positive integer, got {value!r}")
    return threads


def arrays_dir() -> Path:
    path = state_dir() / "arrays"
    path.mkdir(parents=True, exist_ok=True)
    return path


def ledger_url() -> str:
    """The judgment ledger: ``REFINE_LEDGER_URL`` (default SQLite under the state folder). A
    password comes from the file ``REFINE_LEDGER_PASSWORD_FILE`` names (a Compose secret), so
    the URL itself, which settings and deployments carry, holds none."""
    url = os.environ.get("REFINE_LEDGER_URL") or str(state_dir() / "judgments.sqlite")
    secret = os.environ.get("REFINE_LEDGER_PASSWORD_FILE")
    if secret and "://" in url:
        from sqlalchemy.engine import make_url

        try:
            password = Path(secret).read_text().strip()
        except OSError as exc:
            raise ValueError(f"REFINE_LEDGER_PASSWORD_FILE={secret} cannot be read: {exc.strerror}") from None
        url = make_url(url).set(password=password).render_as_string(hide_password=False)
    return url


def digest(*parts: object) -> str:
    """Stable short hash of JSON-serialisable parts (the cache keys)."""
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


# Every package or module whose code can change a cached task result: the library, the data
# readers, the task bodies, and flows/corpus.py (it defines the cached corpus-embedding task).
# tests/test_tracking.py checks that every module defining a cached task is listed here.
CACHED_CODE = ("refine_core", "evaluations", "tasks", "flows/corpus.py")


def code_version(root: Path | None = None) -> str:
    """Hash of the code that computes cached results (:data:`CACHED_CODE`): a change there
    invalidates the task caches and the cell content keys. ``root``: another checkout (uncached)."""
    return _installed_code_version() if root is None else _hash_code(root)


@lru_cache(maxsize=1)
def _installed_code_version() -> str:
    return _hash_code(Path(__file__).resolve().parents[1])


def _hash_code(root: Path) -> str:
    h = hashlib.sha256()
    for entry in CACHED_CODE:
        path = root / entry
        for file in sorted(path.rglob("*.py")) if path.is_dir() else [path]:
            h.update(str(file.relative_to(root)).encode())
            h.update(file.read_bytes())
    return h.hexdigest()[:12]


@contextmanager
def atomic_target(path: Path) -> Iterator[str]:
    """A temporary file beside ``path`` to write; once the block ends it is synced to disk and
    renamed onto ``path`` (readers see the old file or the whole new one), or removed on error."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write(path: Path, data: bytes) -> None:
    with atomic_target(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def save_arrays(name: str, **arrays: np.ndarray) -> str:
    """Write named arrays to ``arrays/<name>.npz`` atomically; returns the path."""
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]  # numpy's stub types **kwds as its own flags
    path = arrays_dir() / f"{name}.npz"
    atomic_write(path, buffer.getvalue())
    return str(path)


def load_arrays(path: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def save_array(name: str, array: np.ndarray) -> str:
    """Write one array to ``arrays/<name>.npy`` atomically; returns the path."""
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array))
    path = arrays_dir() / f"{name}.npy"
    atomic_write(path, buffer.getvalue())
    return str(path)


def save_stacked(name: str, parts: list[str]) -> str:
    """Stack the ``.npy`` files ``parts`` (same columns and dtype) row-wise into ``arrays/<name>.npy``.

    Streams one part at a time into the file (then renames it into place), so a corpus larger
    than this process's memory can be joined from its chunks."""
    arrays = [np.load(p, mmap_mode="r") for p in parts]
    if not arrays:
        raise ValueError("no array to stack")
    width, dtype = arrays[0].shape[1:], arrays[0].dtype
    if any(a.shape[1:] != width or a.dtype != dtype for a in arrays):
        raise ValueError(
            f"cannot stack arrays of different columns or dtypes: {[(a.shape, str(a.dtype)) for a in arrays]}"
        )
    path = arrays_dir() / f"{name}.npy"
    with atomic_target(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=dtype, shape=(sum(a.shape[0] for a in arrays), *width))
        row = 0
        for a in arrays:
            out[row : row + a.shape[0]] = a
            row += a.shape[0]
        out.flush()
        del out
    return str(path)


def load_array(path: str, *, mmap: bool = True) -> np.ndarray:
    return np.load(path, mmap_mode="r" if mmap else None)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``path`` (created if missing) for the block: processes on
    this host that take the same lock run the block one at a time. The lock ends with the block,
    or with the process if it dies inside it."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
