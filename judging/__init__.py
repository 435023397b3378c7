"""Judges: what scores the feedback documents.

One protocol (:class:`Judge`), several implementations — Claude (:class:`AnthropicJudge`,
pointwise or listwise, optional Message Batches), any OpenAI-compatible server
(:class:`OpenAICompatibleJudge`), a local causal LM (:class:`LocalLMJudge`), a cross-encoder
(:class:`CrossEncoderJudge`) and the gold-label oracles — plus the durable
:class:`JudgmentLedger` and :func:`run_judge`, which never pays twice for a judgment.

Heavy implementations are imported lazily (``from judging import AnthropicJudge``
loads the SDK only then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from judging.base import Judge, JudgeConfigError, JudgeCrashed, JudgeIdentity, JudgeResponse, Judgment, Usage
from judging.oracle import OracleJudge, noisy_oracle_scores, oracle_scores

if TYPE_CHECKING:
    from judging.anthropic_judge import AnthropicJudge
    from judging.cross_encoder import CrossEncoderJudge
    from judging.ledger import JudgmentLedger
    from judging.local_lm import LocalLMJudge
    from judging.openai_compatible import OpenAICompatibleJudge
    from judging.runner import Budget, JudgeRequest, RunReport, estimate_cost, run_judge

_LAZY = {
    # the ledger and the runner load SQLAlchemy: only where judgments are stored or asked for
    "JudgmentLedger": "judging.ledger",
    "Budget": "judging.runner",
    "JudgeRequest": "judging.runner",
    "RunReport": "judging.runner",
    "estimate_cost": "judging.runner",
    "run_judge": "judging.runner",
    "AnthropicJudge": "judging.anthropic_judge",
    "CrossEncoderJudge": "judging.cross_encoder",
    "LocalLMJudge": "judging.local_lm",
    "OpenAICompatibleJudge": "judging.openai_compatible",
    "run_judge_batches": "judging.batches",
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
