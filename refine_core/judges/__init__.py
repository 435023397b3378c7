"""Judges: what scores the feedback documents.

One protocol (:class:`Judge`), several implementations — Claude (:class:`AnthropicJudge`,
pointwise or listwise, optional Message Batches), any OpenAI-compatible server
(:class:`OpenAICompatibleJudge`), a local causal LM (:class:`LocalLMJudge`), a cross-encoder
(:class:`CrossEncoderJudge`) and the gold-label oracles — plus the durable
:class:`JudgmentLedger` and :func:`run_judge`, which never pays twice for a judgment.

Heavy implementations are imported lazily (``from refine_core.judges import AnthropicJudge``
loads the SDK only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from refine_core.judges.base import Judge, JudgeConfigError, JudgeCrashed, JudgeIdentity, JudgeResponse, Judgment, Usage
from refine_core.judges.ledger import JudgmentLedger
from refine_core.judges.oracle import OracleJudge, noisy_oracle_scores, oracle_scores
from refine_core.judges.runner import Budget, JudgeRequest, RunReport, estimate_cost, run_judge

if TYPE_CHECKING:
    from refine_core.judges.anthropic_judge import AnthropicJudge
    from refine_core.judges.cross_encoder import CrossEncoderJudge
    from refine_core.judges.local_lm import LocalLMJudge
    from refine_core.judges.openai_compatible import OpenAICompatibleJudge

_LAZY = {
    "AnthropicJudge": "refine_core.judges.anthropic_judge",
    "CrossEncoderJudge": "refine_core.judges.cross_encoder",
    "LocalLMJudge": "refine_core.judges.local_lm",
    "OpenAICompatibleJudge": "refine_core.judges.openai_compatible",
    "run_judge_batches": "refine_core.judges.batches",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(name)


__all__ = [
    "AnthropicJudge",
    "Budget",
    "CrossEncoderJudge",
    "Judge",
    "JudgeConfigError",
    "JudgeCrashed",
    "JudgeIdentity",
    "JudgeRequest",
    "JudgeResponse",
    "Judgment",
    "JudgmentLedger",
    "LocalLMJudge",
    "OpenAICompatibleJudge",
    "OracleJudge",
    "RunReport",
    "Usage",
    "estimate_cost",
    "noisy_oracle_scores",
    "oracle_scores",
    "run_judge",
    "run_judge_batches",
]
