"""The judge kinds a sweep config (``judges: [{kind: ...}]``) and ``--judge`` can name.

One entry per kind, and everything that differs between kinds is here: the module that builds
the judge from its spec (each judge module has a ``from_spec(spec, bench)``), whether its calls
are paid (budgeted), which spec fields it needs, whether it reads a benchmark's gold labels (the
oracles: benchmarks only), how a local model is checked without loading it, what fingerprints a
local model's files (a replaced model is asked again), and whether it goes through Message
Batches. Adding a judge is its module and one entry in :data:`JUDGE_KINDS`.

Modules are named, not imported: ``import judging.kinds`` loads no SDK or model code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from judging.base import Judge


@dataclass(frozen=True)
class JudgeKind:
    """What the platform needs to know about one kind of judge.

    Attributes:
        name: the ``kind`` of a config's judge.
        module: the module with ``from_spec(spec, bench) -> Judge`` (``spec`` an
            :class:`evaluations.config.JudgeSpec`; ``bench`` the benchmark, or None for a user's corpus).
        paid: calls a remote service: every call counts against the budget.
        needs_model / needs_base_url: the spec must name them.
        gold_labels: reads the benchmark's gold labels (cannot judge a user's corpus).
        check: name of a function in ``module`` that checks the spec's model without loading it
            (the preflight); None: the preflight builds the judge.
        fingerprint: name of a function in ``module`` hashing the model's files (None: the spec
            names everything that changes the answers).
        batches: judged through Anthropic's Message Batches (:mod:`judging.batches`).
    """

    name: str
    module: str
    paid: bool = False
    needs_model: bool = False
    needs_base_url: bool = False
    gold_labels: bool = False
    check: str | None = None
    fingerprint: str | None = None
    batches: bool = False

    def _function(self, name: str) -> Any:
        return getattr(importlib.import_module(self.module), name)

    def build(self, spec: Any, bench: Any = None) -> Judge:
        """The judge ``spec`` describes (``bench``: the benchmark an oracle reads labels from)."""
        judge: Judge = self._function("from_spec")(spec, bench)
        return judge

    def preflight(self, spec: Any, bench: Any = None) -> None:
        """Check ``spec`` as far as possible without loading model weights."""
        if self.check is not None:
            self._function(self.check)(spec.model or "")
        else:
            self.build(spec, bench)

    def answers_fingerprint(self, model: str | None) -> str | None:
        """A hash of the local model's files, or None when the spec says everything."""
        return None if self.fingerprint is None else str(self._function(self.fingerprint)(model or ""))


JUDGE_KINDS: dict[str, JudgeKind] = {
    kind.name: kind
    for kind in (
        JudgeKind("oracle", "judging.oracle", gold_labels=True),
        JudgeKind("noisy-oracle", "judging.oracle", gold_labels=True),
        JudgeKind("anthropic", "judging.anthropic_judge", paid=True),
        JudgeKind("anthropic-batch", "judging.anthropic_judge", paid=True, batches=True),
        JudgeKind("openai-compatible", "judging.openai_compatible", paid=True, needs_model=True, needs_base_url=True),
        JudgeKind(
            "local-lm",
            "judging.local_lm",
            needs_model=True,
            check="check_local_model",
            fingerprint="model_fingerprint",
        ),
        JudgeKind(
            "cross-encoder",
            "judging.cross_encoder",
            needs_model=True,
            check="check_cross_encoder_model",
            fingerprint="weights_fingerprint",
        ),
    )
}


def judge_kind(name: str) -> JudgeKind:
    """The registered kind ``name`` (a ``ValueError`` lists the kinds there are)."""
    try:
        return JUDGE_KINDS[name]
    except KeyError:
        raise ValueError(f"unknown judge kind {name!r}; the kinds are {', '.join(JUDGE_KINDS)}") from None


def corpus_kinds() -> list[str]:
    """Kinds that can judge a user's own corpus (``--judge``): no gold labels, no batches."""
    return [k.name for k in JUDGE_KINDS.values() if not k.gold_labels and not k.batches]
