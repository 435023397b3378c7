"""The corpus operations as Prefect flows (chunked), and the classification evaluation in MLflow."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from fakes.anthropic_server import FakeAnthropic
from servers import task_states_since

from evaluations.config import BenchmarkSpec, JudgeSpec

pytestmark = [pytest.mark.data, pytest.mark.integration]
KEY = "sk-ant-corpus-flow-0000"


def test_index_and_classify_flows_match_the_library(
    platform: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, minilm
) -> None:
    from corpus import CorpusIndex, classify
    from evaluations.registry import load_benchmark
    from flows.corpus import classify_corpus_flow, index_corpus_flow
    from judging import JudgmentLedger
    from judging.anthropic_judge import AnthropicJudge
    from refine_core.refinement import RefineConfig
    from tasks.storage import ledger_url

    bench = load_benchmark("clinc150", queries=2, max_documents=500, corpus_seed=9)
    path = tmp_path / "notes.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"id": i, "text": t})
            for i, t in zip(bench.documents["doc_id"].to_list(), bench.document_texts())
        )
        + "\n"
    )
    t0 = time.time()
    built = index_corpus_flow(str(path), name="notes-flow", chunk_size=128)
    index = CorpusIndex.open(built["index"])
    assert built["documents"] == 500 and index.count == 500
    np.testing.assert_allclose(index.vectors(), minilm.embed_documents(bench.document_texts()), atol=1e-6)
    chunks = [state for name, state in task_states_since(t0) if name == "embed-texts-chunk"]
    assert len(chunks) == 4
    t1 = time.time()
    assert index_corpus_flow(str(path), name="notes-flow", chunk_size=128)["documents_hash"] == index.documents_hash
    assert [s for n, s in task_states_since(t1) if n == "embed-texts-chunk"] == ["Cached"] * 4

    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.setenv("REFINE_LEDGER_URL", str(tmp_path / "ledger.sqlite"))  # not shared with other tests
    relevant = bench.relevant_texts()
    criterion = bench.query_texts()[1]
    with FakeAnthropic(lambda q, d: d in relevant.get(q, set()), api_key=KEY) as server:
        judge = JudgeSpec(kind="anthropic", base_url=server.base_url, max_retries=1)
        out = tmp_path / "labels.parquet"
        summary = classify_corpus_flow(
            str(index.folder), criterion, judge, str(out), k=10, calibrate=6, lr=1e-3, score_chunk=150
        )
        paid = server.stats.message_requests
        direct = classify(
            index,
            criterion,
            judge=AnthropicJudge(base_url=server.base_url),
            embedder=minilm,
            k=10,
            calibrate=6,
            config=RefineConfig(lr=1e-3),
            ledger=JudgmentLedger(ledger_url()),
        )
        assert server.stats.message_requests == paid  # the library run found every judgment in the ledger
    frame = pl.read_parquet(out)
    assert frame.height == 500 and frame["id"].to_list() == index.documents()[0]
    np.testing.assert_allclose(frame["score"].to_numpy(), direct.scores, atol=1e-6)
    assert frame["label"].to_list() == direct.labels.tolist()
    assert frame["judged"].to_list() == direct.judged.tolist()
    assert frame["judged"].sum() == 16 == summary["judged"]
    assert summary["positives"] == direct.positives == frame["label"].sum()
    judged_scores = frame.filter(pl.col("judged"))["judge_score"].to_numpy()
    assert np.isfinite(judged_scores).all()


def test_classification_evaluation_is_logged_to_mlflow(platform: Path) -> None:
    from mlflow import MlflowClient

    from flows.corpus import evaluate_classification
    from flows.tracking import tracking_uri

    result = evaluate_classification(
        BenchmarkSpec(name="clinc150", queries=4, max_documents=800),
        JudgeSpec(kind="oracle"),
        k=20,
        calibrate=10,
        lr=1e-3,
        experiment="classification-test",
    )
    m = result["metrics"]
    assert m["queries"] == 4
    for prefix in ("refined", "baseline"):
        assert 0 <= m[f"{prefix}.f1"] <= m[f"{prefix}.best_f1"] + 1e-12 <= 1 + 1e-12
    assert m["refined.best_f1"] >= m["baseline.best_f1"]  # the oracle's refined scores separate better
    run = MlflowClient(tracking_uri()).get_run(result["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["benchmark.name"] == "clinc150" and run.data.params["calibrate"] == "10"
    assert run.data.metrics["refined.f1"] == pytest.approx(m["refined.f1"])
    # the share of criteria whose calibrated count came with refine_core.calibration.tail_warning's warning
    assert m["refined.warned"] in (0, 0.25, 0.5, 0.75, 1) and run.data.metrics["refined.warned"] == m["refined.warned"]
    arts = {a.path for a in MlflowClient(tracking_uri()).list_artifacts(result["run_id"], "per_query")}
    assert arts == {"per_query/per_query_classification.parquet"}
