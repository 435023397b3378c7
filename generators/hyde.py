"""HyDE: embed a generated passage that would answer the query, instead of the query.

A :class:`Generator` writes the passage (the paper: up to 256 new tokens at temperature 0.7);
it is embedded with the query template and used as the query vector. *HyDE-refined* starts the
refinement from that vector: feedback documents come from the HyDE ranking while the judge
still sees the original query.

Generations are paid for once: :class:`GenerationStore` keeps every passage keyed by the
generator's identity (kind, model, prompt version, sampling settings), the query (with its
instruction) and the seed, in the same database as the judgment ledger.

Generators: :class:`ClaudeGenerator` (anthropic SDK), :class:`OpenAICompatibleGenerator`
(``/chat/completions``) and :class:`LocalLMGenerator` (a local causal LM folder or GGUF file).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from sqlalchemy import Column, Float, Integer, String, Table, Text, and_, select

from judging.base import JudgeConfigError, JudgeIdentity, Usage
from judging.http_retry import post_with_retries
from judging.ledger import METADATA, insert_new, open_engine
from judging.runner import DEFAULT_PRICES, estimate_cost

if TYPE_CHECKING:
    from judging.spend import SpendAccount

PROMPT_VERSION = "hyde-v1"
DEFAULT_MAX_TOKENS = 256
DEFAULT_TEMPERATURE = 0.7


def hyde_prompt(query: str, instruction: str | None = None) -> str:
    """The request for a hypothetical document (version :data:`PROMPT_VERSION`)."""
    task = f"The search task: {instruction}\n" if instruction else ""
    return (
        "Write a short passage that would be a relevant answer to the query below. Use the key concepts "
        "and the terminology that a document answering it would contain. Reply with the passage only.\n"
        f"{task}Query: {query}\nPassage:"
    )


@dataclass(frozen=True)
class Generation:
    text: str | None
    usage: Usage = field(default_factory=Usage)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.text is not None


@runtime_checkable
class Generator(Protocol):
    identity: JudgeIdentity

    def generate(self, prompt: str, *, seed: int) -> Generation: ...


# ---- the store --------------------------------------------------------------------------------
generations_table = Table(
    "generations",
    METADATA,
    Column("generator_key", String(64), primary_key=True),
    Column("query_hash", String(64), primary_key=True),
    Column("seed", Integer, primary_key=True),
    Column("text", Text, nullable=False),
    Column("input_tokens", Integer, nullable=False, default=0),
    Column("output_tokens", Integer, nullable=False, default=0),
    Column("cost", Float, nullable=False, default=0.0),
    Column("created_at", Float, nullable=False),
)


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()


class GenerationStore:
    """Durable generations, keyed by (generator identity, prompt hash, seed); any SQLAlchemy URL."""

    def __init__(self, url: str | Path) -> None:
        self.engine = open_engine(url)

    def lookup(self, generator_key: str, prompts: Sequence[str], seed: int) -> dict[str, str]:
        hashes = list(dict.fromkeys(prompt_hash(p) for p in prompts))
        t = generations_table
        found: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(hashes), 400):
                rows = conn.execute(
                    select(t.c.query_hash, t.c.text).where(
                        and_(
                            t.c.generator_key == generator_key,
                            t.c.seed == seed,
                            t.c.query_hash.in_(hashes[start : start + 400]),
                        )
                    )
                )
                found.update({h: text for h, text in rows})
        return found

    def store(self, generator_key: str, prompt: str, seed: int, generation: Generation, cost: float) -> None:
        """One transaction per generation, written before it is used; a repeat is ignored."""
        values = {
            "generator_key": generator_key,
            "query_hash": prompt_hash(prompt),
            "seed": seed,
            "text": generation.text,
            "input_tokens": generation.usage.input_tokens,
            "output_tokens": generation.usage.output_tokens,
            "cost": cost,
            "created_at": time.time(),
        }
        with self.engine.begin() as conn:
            insert_new(conn, generations_table, [values])


@dataclass
class GenerationReport:
    texts: list[str | None]
    usage: Usage = field(default_factory=Usage)
    cost: float = 0.0
    from_store: int = 0
    generated: int = 0
    failed: int = 0
    not_submitted: int = 0

    def as_metrics(self) -> dict[str, float]:
        return {
            "hyde_generations_paid": float(self.generated),
            "hyde_generations_from_store": float(self.from_store),
            "hyde_generations_failed": float(self.failed),
            "hyde_generations_not_submitted": float(self.not_submitted),
            "hyde_input_tokens": float(self.usage.input_tokens),
            "hyde_output_tokens": float(self.usage.output_tokens),
            "hyde_cost_usd": self.cost,
        }


def run_generator(
    generator: Generator,
    queries: Sequence[str],
    *,
    instruction: str | None = None,
    store: GenerationStore | None = None,
    seed: int = 0,
    concurrency: int = 4,
    prices: dict[str, tuple[float, float]] | None = None,
    progress: Callable[[int, int], None] | None = None,
    account: SpendAccount | None = None,
) -> GenerationReport:
    """A hypothetical document per query, generating only what the store lacks.

    Failed generations come back as None (the caller falls back to the query) and are not
    stored, so a re-run asks again. With a spend ``account`` each generation reserves one item
    and its estimated cost before it is sent; a refused one is not sent and counts as failed
    (``report.not_submitted``).
    """
    prompts = [hyde_prompt(q, instruction) for q in queries]
    key = generator.identity.key
    known = store.lookup(key, prompts, seed) if store else {}
    report = GenerationReport(texts=[known.get(prompt_hash(p)) for p in prompts])
    report.from_store = sum(t is not None for t in report.texts)
    todo = [i for i, t in enumerate(report.texts) if t is None]
    lock = threading.Lock()
    done = [0]

    def work(i: int) -> None:
        estimate = 0.0
        if account is not None:
            from judging.spend import estimate_usage

            estimate = estimate_cost(
                generator.identity.model,
                estimate_usage(len(prompts[i]), 1, getattr(generator, "max_tokens", 512)),
                prices or DEFAULT_PRICES,
            )
            if not account.reserve(1, estimate):
                with lock:
                    report.failed += 1
                    report.not_submitted += 1
                    done[0] += 1
                return
        generation = generator.generate(prompts[i], seed=seed)
        cost = estimate_cost(generator.identity.model, generation.usage, prices or DEFAULT_PRICES)
        if account is not None:
            account.settle(1, estimate, int(generation.ok), cost)
        if generation.ok and store is not None:
            store.store(key, prompts[i], seed, generation, cost)
        with lock:
            report.usage.add(generation.usage)
            report.cost += cost
            if generation.ok:
                report.texts[i] = generation.text
                report.generated += 1
            else:
                report.failed += 1
            done[0] += 1
            if progress:
                progress(done[0], len(todo))

    if concurrency <= 1 or len(todo) <= 1:
        for i in todo:
            work(i)
    else:
        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(work, todo))
    return report


# ---- generators ---------------------------------------------------------------------------------
class ClaudeGenerator:
    """Passages from Claude through the anthropic SDK (key from the environment only)."""

    def __init__(
        self,
        model: str = "claude-haiku-4-5",
        *,
        base_url: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        max_retries: int = 4,
        timeout: float = 60.0,
    ) -> None:
        import anthropic

        from judging.anthropic_judge import read_api_key

        self.model = model
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.client = anthropic.Anthropic(
            api_key=read_api_key(), base_url=base_url, max_retries=max_retries, timeout=timeout
        )
        self.identity = JudgeIdentity.of(
            "anthropic-hyde", model, "passage", PROMPT_VERSION, temperature=temperature, max_tokens=max_tokens
        )

    def __repr__(self) -> str:  # never show the client: it holds the key
        return f"ClaudeGenerator(model={self.model!r})"

    def generate(self, prompt: str, *, seed: int) -> Generation:
        import anthropic

        started = time.perf_counter()
        try:
            # The Messages API has no seed: the seed only names the stored sample.
            message = self.client.messages.create(
                model=self.model,
                max_tokens=self.max_tokens,
                messages=[{"role": "user", "content": prompt}],
                extra_body={"temperature": self.temperature},
            )
        except anthropic.APIError as exc:
            return Generation(None, Usage(requests=1, latency_s=time.perf_counter() - started), type(exc).__name__)
        text = "".join(getattr(block, "text", "") for block in message.content).strip()
        u = message.usage
        usage = Usage(
            requests=1,
            input_tokens=int(u.input_tokens or 0),
            output_tokens=int(u.output_tokens or 0),
            latency_s=time.perf_counter() - started,
        )
        return Generation(text or None, usage, None if text else "EmptyPassage")


class OpenAICompatibleGenerator:
    """Passages from any server speaking the OpenAI ``/chat/completions`` protocol (vLLM, llama.cpp, ...)."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        max_retries: int = 4,
        timeout: float = 120.0,
        api_key_env: str = "OPENAI_API_KEY",
    ) -> None:
        import httpx

        if not base_url:
            raise JudgeConfigError("the OpenAI-compatible generator needs base_url (e.g. http://localhost:8000/v1)")
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.max_retries = max_retries
        key = os.environ.get(api_key_env, "")
        self._client = httpx.Client(timeout=timeout, headers={"Authorization": f"Bearer {key}"} if key else {})
        self.identity = JudgeIdentity.of(
            "openai-compatible-hyde", model, "passage", PROMPT_VERSION, temperature=temperature, max_tokens=max_tokens
        )

    def __repr__(self) -> str:
        return f"OpenAICompatibleGenerator(model={self.model!r}, base_url={self.base_url!r})"

    def generate(self, prompt: str, *, seed: int) -> Generation:
        body = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "seed": seed,
        }
        started = time.perf_counter()
        response, error, _ = post_with_retries(
            self._client, f"{self.base_url}/chat/completions", body, max_retries=self.max_retries
        )
        if response is not None:
            try:
                payload = response.json()
                text = (payload["choices"][0]["message"]["content"] or "").strip()
                u = payload.get("usage") or {}
            except (ValueError, KeyError, IndexError, TypeError):
                return Generation(None, Usage(requests=1), "MalformedBody")
            usage = Usage(
                requests=1,
                input_tokens=int(u.get("prompt_tokens", 0)),
                output_tokens=int(u.get("completion_tokens", 0)),
                latency_s=time.perf_counter() - started,
            )
            return Generation(text or None, usage, None if text else "EmptyPassage")
        return Generation(None, Usage(requests=1, latency_s=time.perf_counter() - started), error)


class LocalLMGenerator:
    """Passages from a local causal LM (folder, ``.gguf`` file or alias such as ``smollm2-135m``).

    Sampling is seeded per call (``torch.manual_seed(seed)``), so a (query, seed) pair always
    yields the same passage on the same machine.
    """

    def __init__(
        self,
        model: str,
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_TEMPERATURE,
        device: str | None = None,
    ) -> None:
        from judging.local_lm import load_causal_lm

        self.tokenizer, self.model, self.device, name = load_causal_lm(model, device, role="generator")
        self.max_tokens = max_tokens
        self.temperature = temperature
        self._lock = threading.Lock()  # one generation at a time: the seed is process-global
        self.identity = JudgeIdentity.of(
            "local-lm-hyde", name, "passage", PROMPT_VERSION, temperature=temperature, max_tokens=max_tokens
        )

    def __repr__(self) -> str:
        return f"LocalLMGenerator(model={self.identity.model!r}, device={self.device!r})"

    def generate(self, prompt: str, *, seed: int) -> Generation:
        import torch

        started = time.perf_counter()
        if getattr(self.tokenizer, "chat_template", None):
            text = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        else:
            text = prompt
        inputs = self.tokenizer(text, return_tensors="pt").to(self.device)
        with self._lock, torch.no_grad():
            torch.manual_seed(seed)
            output = self.model.generate(
                **inputs,
                max_new_tokens=self.max_tokens,
                do_sample=self.temperature > 0,
                temperature=self.temperature if self.temperature > 0 else None,
                pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id,
            )
        new = output[0, inputs["input_ids"].shape[1] :]
        passage = self.tokenizer.decode(new, skip_special_tokens=True).strip()
        usage = Usage(
            requests=1,
            input_tokens=int(inputs["input_ids"].shape[1]),
            output_tokens=int(new.shape[0]),
            latency_s=time.perf_counter() - started,
        )
        return Generation(passage or None, usage, None if passage else "EmptyPassage")
