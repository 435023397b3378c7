"""HyDE and HyDE-refined: generators, the generation store, and the methods in a sweep cell."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fakes.anthropic_server import FakeAnthropic, FaultPlan

from evaluations.config import BenchmarkSpec, Grid, HydeSpec, JudgeSpec, SweepConfig
from generators.hyde import ClaudeGenerator, GenerationStore, hyde_prompt, run_generator

KEY = "sk-ant-hyde-test-0000"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)


def test_prompt_carries_the_query_and_the_task() -> None:
    prompt = hyde_prompt("lost card", "Find utterances with this intent")
    assert prompt.endswith("Query: lost card\nPassage:")
    assert "Find utterances with this intent" in prompt and "terminology" in prompt
    assert "The search task" not in hyde_prompt("lost card")


def test_claude_generator_is_paid_once_and_sends_the_papers_sampling(tmp_path: Path) -> None:
    queries = ["lost card", "weather tomorrow", "play jazz"]
    with FakeAnthropic(
        lambda q, d: False, api_key=KEY, keep_bodies=True, passage=lambda q: f"My {q} passage."
    ) as server:
        generator = ClaudeGenerator(base_url=server.base_url)
        store = GenerationStore(tmp_path / "ledger.sqlite")
        first = run_generator(generator, queries, store=store, seed=0, concurrency=2)
        assert first.texts == [f"My {q} passage." for q in queries]
        assert first.generated == 3 and first.from_store == 0 and first.cost > 0
        body = server.stats.bodies[0]
        assert body["max_tokens"] == 256 and body["temperature"] == 0.7
        again = run_generator(
            ClaudeGenerator(base_url=server.base_url),
            [*queries, "new one"],
            store=GenerationStore(tmp_path / "ledger.sqlite"),
            seed=0,
        )
        assert again.from_store == 3 and again.generated == 1
        assert sum(server.stats.generations.values()) == 4  # nothing generated twice
        other_seed = run_generator(generator, queries[:1], store=store, seed=1)
        assert other_seed.generated == 1  # another sample is another generation
        assert "sk-ant" not in repr(generator)


def test_failed_generations_are_not_stored_and_are_asked_again(tmp_path: Path) -> None:
    with FakeAnthropic(lambda q, d: False, api_key=KEY, faults=FaultPlan(rates={"500": 1.0})) as server:
        report = run_generator(
            ClaudeGenerator(base_url=server.base_url, max_retries=0),
            ["q1", "q2"],
            store=GenerationStore(tmp_path / "l.sqlite"),
        )
        assert report.texts == [None, None] and report.failed == 2
    with FakeAnthropic(lambda q, d: False, api_key=KEY) as server:
        report = run_generator(
            ClaudeGenerator(base_url=server.base_url), ["q1", "q2"], store=GenerationStore(tmp_path / "l.sqlite")
        )
        assert report.generated == 2 and report.from_store == 0


@pytest.mark.data
@pytest.mark.integration
def test_hyde_and_hyde_refined_in_a_sweep_cell(
    platform: Path, data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    # A ledger of its own: judgments stored here must not answer another test's fault-injected requests.
    monkeypatch.setenv("REFINE_LEDGER_URL", str(tmp_path / "ledger.sqlite"))

    from evaluations.registry import load_benchmark
    from flows.sweep import sweep
    from flows.tracking import tracking_uri

    spec = BenchmarkSpec(name="clinc150", queries=6, max_documents=900)
    bench = load_benchmark("clinc150", queries=6, max_documents=900)
    relevant = bench.relevant_texts()
    by_query = {q: sorted(docs)[:3] for q, docs in relevant.items()}

    def passage(query: str) -> str:  # a helpful generator: three real examples of the intent
        for q, docs in by_query.items():
            if q in query or query in q:
                return " ".join(docs)
        return query

    with FakeAnthropic(lambda q, d: d in relevant.get(q, set()), api_key=KEY, passage=passage) as server:
        config = SweepConfig(
            name="hyde-test",
            benchmarks=[spec],
            judges=[JudgeSpec(kind="anthropic", base_url=server.base_url)],
            grid=Grid(lr=[1e-3]),
            hyde=HydeSpec(kind="anthropic", base_url=server.base_url),
        )
        result = sweep(config)
        generated = sum(server.stats.generations.values())
        assert generated == 6
        judged_queries = {q for q, _ in server.stats.pairs_answered}
        assert judged_queries <= set(bench.query_texts())  # the judge saw only original queries
        again = sweep(config)
        assert sum(server.stats.generations.values()) == generated  # cached: nothing generated again
    cell = result["cells"][0]
    m = cell["metrics"]
    assert {"hyde", "hyde_refined"} <= m.keys()
    assert m["hyde"]["map"] > m["baseline"]["map"]  # three real examples beat the bare description
    assert m["hyde_refined"]["map"] > m["hyde"]["map"]
    assert again["cells"][0]["metrics"] == m
    run = MlflowClient(tracking_uri()).get_run(cell["run_id"])
    for name in ("hyde.map", "hyde_refined.map", "hyde_refined.p_raw", "hyde_generations_paid", "hyde_cost_usd"):
        assert name in run.data.metrics, name
    assert run.data.params["hyde.kind"] == "anthropic" and run.data.params["hyde.temperature"] == "0.7"
    assert run.data.metrics["hyde_generations_paid"] == 6
    # HyDE passages go through the same query template as queries: the vectors differ from the queries'
    assert not np.isclose(m["hyde"]["map"], m["baseline"]["map"])


@pytest.mark.slow
def test_local_lm_generator_is_seeded() -> None:
    from generators.hyde import LocalLMGenerator

    generator = LocalLMGenerator("smollm2-135m", max_tokens=12)
    prompt = hyde_prompt("how do I reset my password")
    a = generator.generate(prompt, seed=3)
    b = generator.generate(prompt, seed=3)
    assert a.ok and a.text == b.text and a.usage.output_tokens <= 12
    assert generator.identity.kind == "local-lm-hyde" and generator.identity.model.endswith(".gguf")
