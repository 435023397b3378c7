"""The old import paths of the services that left ``refine_core`` (kept for one release).

Before 0.2 the judges, the embedders, the HyDE generators and the corpus index lived inside
``refine_core``; they are now packages of their own (see the layers in pyproject.toml). Code
that still writes ``from refine_core.judges import OracleJudge`` gets the very same module as
``from judging import OracleJudge`` — one module object under two names, so ``isinstance`` and
monkeypatching agree — and a :class:`DeprecationWarning` naming the new path. The core itself
never imports a service: the names below are strings, resolved only when old code asks.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from types import ModuleType

# old prefix -> new module (longest first: a prefix matches whole dotted parts only)
MOVED: dict[str, str] = {
    "refine_core.judges": "judging",
    "refine_core.corpus": "corpus",
    "refine_core.ann": "corpus.ann",
    "refine_core.embedders": "embedders.models",
    "refine_core.embedding_cache": "embedders.cache",
    "refine_core.vector_files": "embedders.vector_files",
    "refine_core.hyde": "generators.hyde",
}


def new_name(old: str) -> str | None:
    """The module that ``old`` (a dotted path under ``refine_core``) now is, or None."""
    for prefix, target in MOVED.items():
        if old == prefix or old.startswith(prefix + "."):
            return target + old[len(prefix) :]
    return None


class MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers an old path with the module at its new one."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        target = new_name(spec.name)
        assert target is not None
        warnings.warn(f"{spec.name} moved to {target}; import it from there", DeprecationWarning, stacklevel=2)
        module = importlib.import_module(target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import machinery set the alias's spec on the real module: give it back its own
        module.__spec__ = self._spec


def install() -> None:
    """Put the finder on ``sys.meta_path`` once."""
    if not any(isinstance(finder, MovedFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, MovedFinder())  # before the path finder, which would load a second copy
