"""A judge behind any OpenAI-compatible ``/v1/chat/completions`` server (vLLM, Ollama,
LiteLLM, llama.cpp server), with the paper's exact prompt and score: P(yes)/(P(yes)+P(no))
from the top log-probabilities of the first generated token.

Talks HTTP with ``httpx`` directly (no extra SDK needed). Retries 408/409/429/5xx and
connection errors with exponential backoff and jitter, honouring ``retry-after``. The API key,
if the server needs one, comes from ``$OPENAI_API_KEY`` (or the variable named by
``api_key_env``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import httpx

from judging.base import (
    PAPER_PROMPT_VERSION,
    JudgeConfigError,
    JudgeIdentity,
    JudgeResponse,
    Judgment,
    Usage,
    paper_prompt,
)
from judging.http_retry import post_with_retries
from judging.yes_no import yes_probability


class OpenAICompatibleJudge:
    """Yes/no judge over an OpenAI-compatible chat completions endpoint.

    Args:
        model: model name the server knows.
        base_url: e.g. ``http://localhost:8000/v1``.
        top_logprobs: how many alternatives the server returns for the first token.
        max_retries, timeout: per request.
        api_key_env: environment variable holding the key (unset = no auth header).
    """

    documents_per_request: int | None = 1

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        top_logprobs: int = 20,
        max_retries: int = 4,
        timeout: float = 60.0,
        api_key_env: str = "OPENAI_API_KEY",
    ) -> None:
        if not base_url:
            raise JudgeConfigError("the OpenAI-compatible judge needs base_url (e.g. http://localhost:8000/v1)")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.top_logprobs = top_logprobs
        self.max_retries = max_retries
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(timeout=timeout, headers=headers)
        # The server is part of the identity: two servers may serve different weights under one name.
        self.identity = JudgeIdentity.of(
            "openai-compatible",
            model,
            "yes-no-logprob",
            PAPER_PROMPT_VERSION,
            top_logprobs=top_logprobs,
            base_url=self.base_url,
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleJudge(model={self.model!r}, base_url={self.base_url!r})"

    def request_body(self, prompt: str) -> dict[str, object]:
        return {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": 1,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": self.top_logprobs,
        }

    def _post(self, body: dict[str, object]) -> tuple[dict | None, str | None]:
        response, error, exhausted = post_with_retries(
            self._client, f"{self.base_url}/chat/completions", body, max_retries=self.max_retries
        )
        if response is None:
            return None, f"RetriesExhausted: {error}" if exhausted else error
        try:
            return response.json(), None
        except ValueError:
            return None, "MalformedBody"

    @staticmethod
    def parse(payload: dict) -> tuple[Judgment, Usage]:
        usage_data = payload.get("usage") or {}
        usage = Usage(
            requests=1,
            input_tokens=int(usage_data.get("prompt_tokens", 0) or 0),
            output_tokens=int(usage_data.get("completion_tokens", 0) or 0),
        )
        try:
            first = payload["choices"][0]["logprobs"]["content"][0]
            pairs = [(alt["token"], alt["logprob"]) for alt in first.get("top_logprobs") or []]
            if not pairs:  # a server that returns only the sampled token
                pairs = [(first["token"], first["logprob"])]
        except (KeyError, IndexError, TypeError):
            return Judgment.failure("NoLogprobs", str(payload)[:500]), usage
        score = yes_probability(pairs)
        if score is None:
            return Judgment.failure("NoYesNoToken", str(pairs)[:500]), usage
        return Judgment(score=score, raw=str(pairs[:5])), usage

    def with_max_retries(self, retries: int) -> OpenAICompatibleJudge:
        """The same judge (same identity, same ledger answers) that retries at most ``retries`` times."""
        import copy

        probe = copy.copy(self)
        probe.max_retries = min(retries, self.max_retries)
        return probe

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        usage = Usage()
        verdicts = []
        for document in documents:
            started = time.perf_counter()
            payload, error = self._post(self.request_body(paper_prompt(query, document, task_instruction)))
            if error:
                verdicts.append(Judgment.failure(error))
                usage.add(Usage(requests=1, latency_s=time.perf_counter() - started))
                continue
            verdict, u = self.parse(payload)  # type: ignore[arg-type]
            u.latency_s = time.perf_counter() - started
            usage.add(u)
            verdicts.append(verdict)
        return JudgeResponse(verdicts, usage)


def from_spec(spec: Any, bench: Any = None) -> OpenAICompatibleJudge:
    """The OpenAI-compatible judge of a config's judge spec."""
    return OpenAICompatibleJudge(
        spec.model or "", base_url=spec.base_url or "", max_retries=spec.max_retries, timeout=spec.timeout_s
    )
