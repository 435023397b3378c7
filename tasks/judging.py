"""Building a judge from its configuration (glue between the sweep config and refine_core)."""

from __future__ import annotations

from evaluations.benchmark import Benchmark
from evaluations.config import HydeSpec, JudgeSpec
from judging import Judge, OracleJudge


def answers_fingerprint(kind: str, model: str | None) -> str | None:
    """What changes a judge's (or HyDE generator's) answers that its spec does not name: the
    files of a local model, so a model replaced at the same path is asked again rather than
    served from the task cache. None for API judges (the spec names model, base_url and prompt
    settings, and the ledger keys each answer by the judge's full identity) and the oracles."""
    if kind == "local-lm":
        from judging.local_lm import model_fingerprint

        return model_fingerprint(model or "")
    if kind == "cross-encoder":
        from judging.cross_encoder import weights_fingerprint

        return weights_fingerprint(model or "")
    return None


def build_judge(spec: JudgeSpec, bench: Benchmark | None = None) -> Judge:
    """The judge a :class:`JudgeSpec` describes; oracles read the benchmark's gold labels.

    Raises:
        JudgeConfigError: missing API key, unknown model, unreachable settings, or an oracle
            without a benchmark to read labels from.
    """
    if spec.kind in ("oracle", "noisy-oracle"):
        if bench is None:
            from judging import JudgeConfigError

            raise JudgeConfigError(
                f"the {spec.kind} judge reads gold labels and only works on a benchmark; "
                "for your own corpus use anthropic, openai-compatible, local-lm or cross-encoder"
            )
        return OracleJudge(
            bench.relevant_texts(),
            flip_rate=spec.flip_rate,
            seed=spec.seed,
            false_positive_rate=spec.false_positive_rate,
            false_negative_rate=spec.false_negative_rate,
        )
    if spec.kind in ("anthropic", "anthropic-batch"):
        from judging.anthropic_judge import DEFAULT_CLAUDE_MODEL, AnthropicJudge

        return AnthropicJudge(
            spec.model or DEFAULT_CLAUDE_MODEL,
            scheme=spec.scheme,
            max_retries=spec.max_retries,
            timeout=spec.timeout_s,
            base_url=spec.base_url,
        )
    if spec.kind == "openai-compatible":
        from judging.openai_compatible import OpenAICompatibleJudge

        return OpenAICompatibleJudge(
            spec.model or "", base_url=spec.base_url or "", max_retries=spec.max_retries, timeout=spec.timeout_s
        )
    if spec.kind == "local-lm":
        from judging.local_lm import LocalLMJudge

        return LocalLMJudge(spec.model or "")
    if spec.kind == "cross-encoder":
        from judging.cross_encoder import CrossEncoderJudge

        return CrossEncoderJudge(spec.model or "")
    raise ValueError(f"unknown judge kind {spec.kind!r}")


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
