"""Building a judge from its configuration (glue between the sweep config and refine_core)."""

from __future__ import annotations

from evaluations.benchmark import Benchmark
from evaluations.config import HydeSpec, JudgeSpec
from judging import Judge
from judging.kinds import JUDGE_KINDS, judge_kind


def answers_fingerprint(kind: str, model: str | None) -> str | None:
    """What changes a judge's (or HyDE generator's) answers that its spec does not name: the
    files of a local model, so a model replaced at the same path is asked again rather than
    served from the task cache. None for API judges (the spec names model, base_url and prompt
    settings, and the ledger keys each answer by the judge's full identity) and the oracles."""
    return JUDGE_KINDS[kind].answers_fingerprint(model) if kind in JUDGE_KINDS else None


def build_judge(spec: JudgeSpec, bench: Benchmark | None = None) -> Judge:
    """The judge a :class:`JudgeSpec` describes (:data:`judging.kinds.JUDGE_KINDS`); oracles read
    the benchmark's gold labels.

    Raises:
        JudgeConfigError: missing API key, unknown model, unreachable settings, or an oracle
            without a benchmark to read labels from.
    """
    return judge_kind(spec.kind).build(spec, bench)


def build_generator(spec: HydeSpec):
    """The HyDE passage generator a :class:`HydeSpec` describes."""
    from generators import hyde

    if spec.kind == "anthropic":
        return hyde.ClaudeGenerator(
            spec.model or "claude-haiku-4-5",
            base_url=spec.base_url,
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            max_retries=spec.max_retries,
            timeout=spec.timeout_s,
        )
    if spec.kind == "openai-compatible":
        return hyde.OpenAICompatibleGenerator(
            spec.model or "",
            base_url=spec.base_url or "",
            max_tokens=spec.max_tokens,
            temperature=spec.temperature,
            max_retries=spec.max_retries,
            timeout=spec.timeout_s,
        )
    if spec.kind == "local-lm":
        return hyde.LocalLMGenerator(spec.model or "", max_tokens=spec.max_tokens, temperature=spec.temperature)
    raise ValueError(f"unknown HyDE generator kind {spec.kind!r}")
