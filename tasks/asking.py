"""The stages that ask a model and may be paid: the judge (through the ledger and the spend
account) and HyDE's passage generation, with the embedding of the passages."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import numpy as np
from prefect import task
from prefect.tasks import exponential_backoff

from embedders.cache import EmbeddingCache
from evaluations.config import BudgetSpec, HydeSpec, JudgeSpec
from judging import Budget, JudgeCrashed, JudgeRequest, JudgmentLedger, run_judge
from judging.spend import SpendAccount
from tasks import progress
from tasks.judging import answers_fingerprint, build_judge
from tasks.prepare import embedder_for
from tasks.refs import CACHE_EXPIRATION, ArrayRef, BenchmarkRef, JudgmentsRef, task_key
from tasks.storage import digest, embedding_cache_dir, ledger_url, load_arrays, save_array, save_arrays, state_dir


# ---- judge (the LLM stage) --------------------------------------------------------------------------
def judge_cache_key(context, parameters) -> str:
    spec: JudgeSpec = parameters["judge"]
    return task_key(
        "judge",
        spec.model_dump(),
        answers_fingerprint(spec.kind, spec.model),
        parameters["bench"].hash,
        parameters["feedback"].digest,
    )


def spend_account(account: str | None, budget: BudgetSpec | None) -> SpendAccount | None:
    """The run's spend account in the ledger database (None without an account id)."""
    if account is None:
        return None
    return SpendAccount(
        ledger_url(),
        account,
        max_items=budget.max_judgments if budget else None,
        max_cost=budget.max_cost_usd if budget else None,
    )


def retry_unless_judge_bug(task, task_run, state) -> bool:
    """Retry a judge task after transient errors, never after a judge bug (it would only repeat)."""
    return not isinstance(state.data, JudgeCrashed)


@task(
    name="judge",
    cache_key_fn=judge_cache_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
    retries=2,
    retry_delay_seconds=exponential_backoff(backoff_factor=5),
    retry_jitter_factor=0.5,
    retry_condition_fn=retry_unless_judge_bug,
)
def judge_task(
    bench: BenchmarkRef,
    feedback: ArrayRef,
    judge: JudgeSpec,
    budget: BudgetSpec | None = None,
    account: str | None = None,
) -> JudgmentsRef:
    """Scores for every feedback document; failures are recorded, never raised.

    The ledger makes a re-run free for every pair already judged; the flow drops this
    task's cache entry when some judgments failed, so a re-run retries exactly those.
    ``account`` names the run's spend account (created with ``budget``'s limits if missing):
    every paid call reserves from it first. Without one, ``budget`` applies to this call alone.
    """
    start = time.perf_counter()
    b = bench.load()
    idx = load_arrays(feedback.path)["idx"]
    queries = b.query_texts()
    docs = b.document_texts()
    judge_obj = build_judge(judge, b)
    requests = [
        JudgeRequest(
            query=queries[i], documents=tuple(docs[j] for j in row if j >= 0), task_instruction=bench.judge_instruction
        )
        for i, row in enumerate(idx)
    ]
    ledger = JudgmentLedger(ledger_url())
    if judge.registered.batches:
        from judging.batches import run_judge_batches

        report = run_judge_batches(
            judge_obj,  # type: ignore[arg-type]  # an AnthropicJudge: build_judge makes one for this kind
            requests,
            ledger=ledger,
            account=spend_account(account, budget),
        )
    else:
        report = run_judge(
            judge_obj,
            requests,
            ledger=ledger,
            concurrency=judge.concurrency,
            budget=Budget(max_judgments=budget.max_judgments, max_cost=budget.max_cost_usd)
            if budget and not account and judge.paid
            else None,
            progress=progress.callback(f"judging with {judge.label}"),
            account=spend_account(account, budget) if judge.paid else None,  # local judges are free
        )
    scores = np.full(idx.shape, np.nan, dtype=np.float32)
    for i, row in enumerate(idx):
        positions = np.flatnonzero(row >= 0)
        for p, verdict in zip(positions, report.judgments[i]):
            if verdict.ok:
                scores[i, p] = verdict.score
    mask = np.isfinite(scores)
    missing = (~mask) & (idx >= 0)
    failed_queries = int(missing.any(axis=1).sum())
    fallback_queries = int((missing.any(axis=1) & ~(mask & (idx >= 0)).any(axis=1)).sum())
    errors: dict[str, int] = {}
    for verdicts in report.judgments:
        for verdict in verdicts:
            if not verdict.ok:
                errors[verdict.error or "unknown"] = errors.get(verdict.error or "unknown", 0) + 1
    content = hashlib.sha256(np.nan_to_num(scores, nan=-1.0).tobytes() + mask.tobytes()).hexdigest()
    name = digest("judgments", judge_obj.identity.key, bench.hash, feedback.digest, content)
    path = save_arrays(f"judgments-{name}", scores=np.nan_to_num(scores, nan=0.0), mask=mask)
    metrics = report.as_metrics()
    metrics["judge_failed_queries"] = float(failed_queries)
    metrics["judge_fallback_queries"] = float(fallback_queries)
    return JudgmentsRef(
        path=path,
        digest=name,
        judge_key=judge_obj.identity.key,
        metrics=metrics,
        failed_queries=failed_queries,
        seconds=time.perf_counter() - start,
        errors=errors,
        fallback_queries=fallback_queries,
        failed_rows=tuple(int(r) for r in np.flatnonzero(missing.any(axis=1))),
        stopped=report.stopped,
    )


# ---- HyDE ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PassagesRef:
    """HyDE passages of a benchmark's queries (parquet: query_id, passage or null)."""

    path: str
    digest: str
    generator_key: str
    metrics: dict = field(default_factory=dict)
    failed: int = 0


def hyde_cache_key(context, parameters) -> str:
    spec: HydeSpec = parameters["spec"]
    return task_key("hyde", spec.model_dump(), answers_fingerprint(spec.kind, spec.model), parameters["bench"].hash)


@task(
    name="generate-hyde",
    cache_key_fn=hyde_cache_key,
    persist_result=True,
    cache_expiration=CACHE_EXPIRATION,
    retries=1,
    retry_delay_seconds=10,
)
def generate_hyde_task(
    bench: BenchmarkRef, spec: HydeSpec, budget: BudgetSpec | None = None, account: str | None = None
) -> PassagesRef:
    """A hypothetical document per query; paid once (the generation store), failures left null.
    Each paid generation reserves from the run's spend ``account`` first (see :func:`judge_task`)."""
    import polars as pl

    from generators.hyde import GenerationStore, run_generator
    from tasks.judging import build_generator

    b = bench.load()
    generator = build_generator(spec)
    report = run_generator(
        generator,
        b.query_texts(),
        instruction=bench.embed_instruction,
        store=GenerationStore(ledger_url()),
        seed=spec.seed,
        concurrency=spec.concurrency,
        progress=progress.callback(f"HyDE passages with {spec.label}"),
        account=spend_account(account, budget) if spec.paid else None,
    )
    content = digest("hyde", generator.identity.key, bench.hash, spec.seed, report.texts)
    path = state_dir() / "arrays" / f"hyde-{content}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pl.DataFrame(
        {"query_id": b.queries["query_id"].to_list(), "passage": pl.Series(report.texts, dtype=pl.String)}
    ).write_parquet(path)
    return PassagesRef(str(path), content, generator.identity.key, report.as_metrics(), report.failed)


def _hyde_embed_key(context, parameters) -> str:
    e = embedder_for(parameters["model"], parameters.get("query_template"))
    return task_key(
        "embed-hyde",
        parameters["passages"].digest,
        parameters["bench"].hash,
        e.cache_key,
        e.query_template,
        parameters["bench"].embed_instruction,
    )


@task(name="embed-hyde", cache_key_fn=_hyde_embed_key, persist_result=True, cache_expiration=CACHE_EXPIRATION)
def embed_hyde_task(
    bench: BenchmarkRef, model: str, passages: PassagesRef, query_template: str | None = None
) -> ArrayRef:
    """HyDE vectors: each passage embedded with the query template (the query itself where generation failed)."""
    import polars as pl

    start = time.perf_counter()
    texts = pl.read_parquet(passages.path)["passage"].to_list()
    queries = bench.load().query_texts()
    embedder = embedder_for(model, query_template)
    vectors = embedder.embed_queries(
        [t if t is not None else q for t, q in zip(texts, queries)],
        instruction=bench.embed_instruction,
        cache=EmbeddingCache(embedding_cache_dir()),
    )
    name = digest("hyde-vectors", passages.digest, embedder.cache_key, embedder.query_template)
    return ArrayRef(save_array(f"hyde-{name}", vectors), name, time.perf_counter() - start)
