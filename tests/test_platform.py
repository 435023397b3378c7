"""The platform end to end: real Prefect (one ephemeral server per session), real MLflow
(SQLite in a temp dir), the real default sweep on a CLINC150 subset, caching, retries,
and that no secret reaches any store."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from conftest import FIXTURES
from fakes.anthropic_server import FakeAnthropic, FaultPlan
from servers import flow_run_events, flow_run_log, task_runs_since, task_states_since

from evaluations.config import BenchmarkSpec, Grid, JudgeSpec, SweepConfig, default_config
from tasks.storage import embedding_cache_dir

pytestmark = pytest.mark.integration

SENTINEL_KEY = "sk-ant-SENTINEL-7f3a9c1e-do-not-log"
SUBSET = BenchmarkSpec(name="clinc150", queries=12, max_documents=1500)


def test_default_sweep_end_to_end_and_cached_rerun(platform: Path) -> None:
    from mlflow import MlflowClient

    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations.registry import load_benchmark
    from flows.sweep import run_sweep, sweep
    from flows.tracking import tracking_uri
    from judging import oracle_scores
    from refine_core import RefineConfig
    from refine_core.evaluation import evaluate_cell_arrays

    config = default_config().model_copy(update={"benchmarks": [SUBSET], "name": "platform-test"})
    assert len(config.cells()) == 4  # oracle + noisy oracle at lr 1e-4 and 1e-3
    t_cold = time.perf_counter()
    result = sweep(config)
    cold = time.perf_counter() - t_cold
    assert result["failures"] == [] and len(result["cells"]) == 4

    client = MlflowClient(tracking_uri())
    parent = client.get_run(result["parent_run_id"])
    assert parent.info.status == "FINISHED"
    children = client.search_runs([result["experiment_id"]], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert len(children) == 4
    parent_artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    # the state hooks that `refine serve` announces runs with are not attached elsewhere: Prefect
    # logged two lines per hook call into every sweep's flow-run log ("Running hook ...")
    logs = flow_run_log(parent.data.params["prefect.flow_run_id"])
    assert not [line for line in logs if "hook" in line.lower()], logs
    assert {"summary.md", "summary.json", "summary.csv", "summary_map.png", "config.yaml"} <= parent_artifacts
    # the plot of MAP per method against what varies is a real PNG
    (platform / "downloads").mkdir(exist_ok=True)
    png = Path(client.download_artifacts(parent.info.run_id, "summary_map.png", str(platform / "downloads")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    for child in children:
        assert child.info.status == "FINISHED"
        for method in ("baseline", "rerank_only", "rocchio", "refined"):
            for name in ("map", "ndcg_at_10", "recall_at_50", "precision_at_10", "roc_auc", "separation"):
                assert np.isfinite(child.data.metrics[f"{method}.{name}"]), (method, name)
        for name in (
            "refined.delta_map",
            "refined.relative_gain",
            "refined.p_raw",
            "refined.p_bh",
            "judge_cost_usd",
            "judgments_failed",
            "judgments_paid",
            "judgments_cached",
            "refined.queries_improved",
            "time.judge_s",
            "time.refine_s",
        ):
            assert name in child.data.metrics
        # the run's description (above its metrics in the UI) has the key figures: no search among them
        note = child.data.tags["mlflow.note.content"]
        assert (
            f"| refined | {child.data.metrics['refined.map']:.4f} | {child.data.metrics['refined.delta_map']:+.4f} |"
            in note
        )
        # the sweep embeds once for all cells: those timings are on the parent, not ~0 on each child
        assert "time.embed_corpus_s" not in child.data.metrics
        assert child.data.metrics["refined.p_bh"] >= child.data.metrics["refined.p_raw"]
        params = child.data.params
        assert params["benchmark.name"] == "clinc150" and len(params["benchmark.hash"]) == 16
        assert params["model"] == "all-MiniLM-L6-v2" and params["prefect.flow_run_id"]
        assert {"lr", "steps", "k", "judge.kind", "code_version"} <= params.keys()
        arts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"per_query", "plots", "cell.json"} <= arts
        plots = {a.path for a in client.list_artifacts(child.info.run_id, "plots")}
        assert plots == {"plots/ap_before_after.png", "plots/score_separation.png", "plots/loss_curves.png"}
        assert [d.dataset.digest for d in child.inputs.dataset_inputs] == [params["benchmark.hash"]]
        assert "refine-eval.local" not in child.inputs.dataset_inputs[0].dataset.source  # the real source
        per_query_files = {a.path for a in client.list_artifacts(child.info.run_id, "per_query")}
        assert {Path(f).suffix for f in per_query_files} == {".parquet", ".csv"}
    assert {"time.embed_corpus_s", "time.embed_queries_s", "time.load_s", "time.cells_s"} <= parent.data.metrics.keys()
    assert parent.info.run_name.startswith("platform-test 20") and "mlflow.note.content" in parent.data.tags
    # child names lead with what differs between the cells (judge and lr here)
    assert {c.info.run_name.split(" · ")[0].split("=")[0] for c in children} <= {"oracle", "noisy-oracle-0.2"}

    # MAP equals a direct refine_core computation on the same inputs.
    bench = load_benchmark("clinc150", queries=12, max_documents=1500)
    embedder = SentenceTransformerEmbedder()
    cache = EmbeddingCache(embedding_cache_dir())
    docs = embedder.embed_documents(bench.document_texts(), cache=cache)
    queries = embedder.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache)
    assert embedder.forward_calls == 0  # the flow's embeddings are in the cache
    labels, _ = bench.label_matrix()
    by_label = {(c["judge"], c["params"]["lr"]): c for c in result["cells"]}
    for lr in (1e-4, 1e-3):
        direct = evaluate_cell_arrays(
            queries, docs, labels, lambda r, i: oracle_scores(labels[r], i), config=RefineConfig(lr=lr)
        ).summary()
        for method, value in direct.items():
            assert by_label[("oracle", lr)]["metrics"][method]["map"] == pytest.approx(value, abs=1e-6)
    # the noisy oracle of the flow (hash-based flips per pair) is worse than the exact one at lr 1e-3
    assert (
        by_label[("noisy-oracle-0.2", 1e-3)]["metrics"]["refined"]["map"]
        < by_label[("oracle", 1e-3)]["metrics"]["refined"]["map"]
    )

    # A second identical run computes nothing: every cell is logged from its stored outcome
    # (no cell sub-flow, no embedding, judging or refinement task) as a run tagged cached that
    # links to the original and carries the same params, metrics, series, dataset and files.
    t0 = time.time()
    t_warm = time.perf_counter()
    again = run_sweep(config)  # as `refine run` calls it: the flow runs tagged with host and pid
    warm = time.perf_counter() - t_warm
    expensive = {"embed-corpus-chunk", "embed-queries", "judge", "refine-block", "select-feedback", "evaluate"}
    task_runs = task_runs_since(t0)
    ran = [(r.name.rsplit("-", 1)[0], r.state.name) for r in task_runs]
    ran = [s for s in ran if s[0] in expensive]
    assert {name for name, _ in ran} <= {"embed-queries"} and all(state == "Cached" for _, state in ran), ran
    # task runs carry no tags: a tagged task asks the server for a concurrency slot per tag
    # before it starts (about 2 s of the default sweep's cached re-run went to the sweep's own
    # load and query tasks); the command's host and pid tags are on the flow runs
    assert {r.name.rsplit("-", 1)[0] for r in task_runs} >= {"load-benchmark", "embed-queries"}
    assert [(r.name, r.tags) for r in task_runs if r.tags] == []
    # a command's flow runs send Prefect no heartbeats (joining the heartbeat thread cost up to
    # a second at the end of each flow run; the watchdog marks a killed command's runs): the
    # sweep called directly above sent one as its run began, the one `refine run` starts none
    first_events = flow_run_events(parent.data.params["prefect.flow_run_id"])
    assert "prefect.flow-run.heartbeat" in first_events, first_events
    again_run = client.get_run(again["parent_run_id"]).data.params["prefect.flow_run_id"]
    again_events = flow_run_events(again_run)
    assert "prefect.flow-run.Completed" in again_events and "prefect.flow-run.heartbeat" not in again_events
    assert [c["metrics"] for c in again["cells"]] == [c["metrics"] for c in result["cells"]]
    assert [c["original_run_id"] for c in again["cells"]] == [c["run_id"] for c in result["cells"]]
    assert all(c["cached"] and c["judge_usage"]["judgments_paid"] == 0 for c in again["cells"])
    for first, second in zip(result["cells"], again["cells"]):
        a, b = client.get_run(first["run_id"]), client.get_run(second["run_id"])
        assert b.data.tags["refine.cached"] == "true" and b.data.tags["refine.original_run_id"] == first["run_id"]
        assert b.data.tags["mlflow.parentRunId"] == again["parent_run_id"] and b.info.status == "FINISHED"
        assert b.info.run_name == a.info.run_name
        stable = lambda run: {k: v for k, v in run.data.params.items() if k != "prefect.flow_run_id"}  # noqa: E731
        assert stable(a) == stable(b)
        paid = {
            "judgments_paid",
            "judgments_free",
            "judgments_cached",
            "judge_requests",
            "judge_input_tokens",
            "judge_output_tokens",
            "judge_cost_usd",
            "judgments_from_ledger",
        }

        def same(run, paid=paid):
            return {k: v for k, v in run.data.metrics.items() if not k.startswith("time.") and k not in paid}

        assert same(a) == same(b)
        assert b.data.metrics["judgments_paid"] == 0
        assert (
            b.data.metrics["judgments_cached"]
            == a.data.metrics["judgments_paid"]
            + a.data.metrics["judgments_free"]
            + a.data.metrics["judgments_cached"]
            + a.data.metrics["judgments_from_ledger"]
        )
        assert [m.value for m in client.get_metric_history(b.info.run_id, "refine.mean_loss")] == [
            m.value for m in client.get_metric_history(a.info.run_id, "refine.mean_loss")
        ]
        assert [d.dataset.digest for d in b.inputs.dataset_inputs] == [
            d.dataset.digest for d in a.inputs.dataset_inputs
        ]
        for folder in (None, "plots", "per_query"):
            assert [f.path for f in client.list_artifacts(b.info.run_id, folder)] == [
                f.path for f in client.list_artifacts(a.info.run_id, folder)
            ]
    # Without the stored outcomes the cells run again, every expensive task from Prefect's cache.
    import shutil

    shutil.rmtree(platform / "cells")
    t0 = time.time()
    third = sweep(config)
    states = [s for s in task_states_since(t0) if s[0] in expensive]
    assert states and all(state == "Cached" for _, state in states), states
    assert [c["metrics"] for c in third["cells"]] == [c["metrics"] for c in result["cells"]]
    print(f"\ndefault sweep on the subset: cold {cold:.1f} s, fully cached re-run {warm:.1f} s")


def test_judge_failures_fall_back_and_a_rerun_judges_only_them(platform: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from evaluations.registry import load_benchmark
    from flows.sweep import run_sweep

    monkeypatch.setenv("ANTHROPIC_API_KEY", SENTINEL_KEY)
    bench = load_benchmark("clinc150", queries=4, max_documents=600)
    relevant = bench.relevant_texts()
    broken_query = bench.query_texts()[2]
    with FakeAnthropic(
        lambda q, d: d in relevant.get(q, set()), api_key=SENTINEL_KEY, faults=FaultPlan(fail_queries={broken_query})
    ) as server:
        judge = JudgeSpec(kind="anthropic", scheme="listwise", base_url=server.base_url, max_retries=1, concurrency=2)
        config = SweepConfig(
            name="retry-test",
            benchmarks=[BenchmarkSpec(name="clinc150", queries=4, max_documents=600)],
            judges=[judge],
            grid=Grid(k=[10]),
        )
        first = run_sweep(config)
        cell = first["cells"][0]
        assert cell["failed_queries"] == 1 and len(first["judgment_failures"]) == 1
        assert "HTTP 500" in first["judgment_failures"][0]
        per_query = pl.read_parquet(_per_query_path(first))
        flagged = per_query.filter(pl.col("judge_failed"))["query_id"].to_list()
        assert flagged == [bench.queries["query_id"][2]]
        # the failed query falls back to the baseline ranking in every method
        row = per_query.filter(pl.col("judge_failed"))
        assert row["ap_refined"][0] == pytest.approx(row["ap_baseline"][0])
        assert row["ap_rerank_only"][0] == pytest.approx(row["ap_baseline"][0])
        # an incomplete sweep is no result: its parent run is FAILED, `refine experiments` names no
        # best cell from it and `refine compare` leaves its cell out (and counts it)
        from mlflow import MlflowClient
        from typer.testing import CliRunner

        from flows.cli import app
        from flows.tracking import tracking_uri

        mlflow = MlflowClient(tracking_uri())
        assert mlflow.get_run(first["parent_run_id"]).info.status == "FAILED"
        listed = CliRunner().invoke(app, ["experiments", "--json"])
        (row_exp,) = [e for e in json.loads(listed.stdout)["experiments"] if e["name"] == "retry-test"]
        assert row_exp["best_refined_map"] is None and row_exp["incomplete_cells"] == 1
        shown = CliRunner().invoke(app, ["compare", "--experiment", "retry-test", "--json"])
        out = json.loads(shown.stdout.strip().splitlines()[-1])
        assert out["cells"] == [] and [c["run_id"] for c in out["degraded_cells"]] == [cell["run_id"]]
        assert "1 cells left out: their judgments are incomplete" in shown.stderr
        server.faults = FaultPlan()
        server.reset_stats()
        second = run_sweep(config)
        assert second["cells"][0]["failed_queries"] == 0 and second["judgment_failures"] == []
        assert mlflow.get_run(second["parent_run_id"]).info.status == "FINISHED"
        listed = CliRunner().invoke(app, ["experiments", "--json"])
        (row_exp,) = [e for e in json.loads(listed.stdout)["experiments"] if e["name"] == "retry-test"]
        assert row_exp["best_refined_map"] == pytest.approx(second["cells"][0]["metrics"]["refined"]["map"])
        assert {q for (q, _) in server.stats.pairs_requested} == {
            broken_query
        }  # only the failed query was judged again
        assert server.stats.message_requests == 1
        assert second["cells"][0]["metrics"]["refined"]["map"] >= cell["metrics"]["refined"]["map"] - 1e-9
        # a cell with failed judgments stored no outcome (it ran again above); the complete one did
        assert not second["cells"][0]["cached"]
        third = run_sweep(config)
        assert third["cells"][0]["cached"] and third["cells"][0]["original_run_id"] == second["cells"][0]["run_id"]
        assert third["cells"][0]["metrics"] == second["cells"][0]["metrics"] and server.stats.message_requests == 1
    # the sentinel key reached no store: MLflow db and artifacts, Prefect results, arrays, ledger
    # (all under REFINE_HOME) and the Prefect database (flow/task parameters, logs, states)
    from prefect.settings import get_current_settings

    url = str(
        get_current_settings().server.database.connection_url.get_secret_value()
        if hasattr(get_current_settings().server.database.connection_url, "get_secret_value")
        else get_current_settings().server.database.connection_url
    )
    places = [str(platform)]
    if url.startswith("sqlite"):
        db = Path(url.split("///", 1)[1])
        places += [str(p) for p in db.parent.glob(db.name + "*")]
        assert db.exists()
    hits = subprocess.run(["grep", "-rl", SENTINEL_KEY, *places], capture_output=True, text=True)
    assert hits.stdout == "", f"secret found in: {hits.stdout}"


def _per_query_path(result: dict) -> str:
    from mlflow import MlflowClient

    from flows.tracking import tracking_uri

    client = MlflowClient(tracking_uri())
    run_id = result["cells"][0]["run_id"]
    (artifact,) = [a for a in client.list_artifacts(run_id, "per_query") if a.path.endswith(".parquet")]
    return client.download_artifacts(run_id, artifact.path)


def test_cli_run_json_shape_and_compare(platform: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from flows.cli import app

    config = tmp_path / "sweep.yaml"
    config.write_text(
        "name: cli-test\n"
        f"benchmarks:\n  - name: files:{FIXTURES / 'userdata'}\n"
        "judges:\n  - kind: oracle\n"
        "grid:\n  lr: [0.01]\n  k: [5]\n"
    )
    runner = CliRunner()
    res = runner.invoke(app, ["run", str(config), "--json"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.output.strip().splitlines()[-1])
    assert {"experiment_id", "parent_run_id", "cells"} <= out.keys()
    (cell,) = out["cells"]
    assert {"run_id", "benchmark", "model", "judge", "params", "metrics"} <= cell.keys()
    assert set(cell["metrics"]) >= {"baseline", "rerank_only", "rocchio", "refined"}
    assert cell["params"]["lr"] == 0.01 and cell["metrics"]["refined"]["map"] > 0
    res = runner.invoke(app, ["compare", "--experiment", "cli-test", "--json"])
    assert res.exit_code == 0, res.output
    compared = json.loads(res.output.strip().splitlines()[-1])
    assert compared["parent_run_id"] == out["parent_run_id"]
    assert compared["cells"][0]["metrics"]["refined"]["map"] == pytest.approx(cell["metrics"]["refined"]["map"])
    assert compared["cells"][0]["metrics"]["baseline"]["ndcg@10"] == pytest.approx(
        cell["metrics"]["baseline"]["ndcg@10"]
    )
    res = runner.invoke(app, ["compare", "--experiment", "cli-test", "--format", "csv"])
    assert res.exit_code == 0 and res.output.splitlines()[0].startswith("run_id,benchmark,model,judge")


@pytest.mark.parametrize(
    "yaml_text,message",
    [
        ("name: x\nbenchmarks: [{name: clinc150}]\nbogus: 1\n", "unknown key 'bogus'"),
        (
            "name: x\nbenchmarks: [{name: clinc150}]\nmethods: [rochio_kl]\n",
            "methods.0: Input should be 'recommended' or 'rocchio_kl'",
        ),
        (
            "name: x\nbenchmarks: [{name: clinc150}]\ngrid: {lr: [-0.1]}\n",
            "grid.lr: Value error, lr values must be in (0, 1], got -0.1",
        ),
        ("name: x\nbenchmarks: [{name: clinc150}]\ngrid: {steps: [0]}\n", "steps values must be integers >= 1"),
        (
            "name: x\nbenchmarks: [{name: clinc150}]\ngrid: {pull: [0.1, -1]}\n",
            "grid.pull: Value error, pull values must be finite numbers >= 0",
        ),
        ("name: x\nbenchmarks: [{name: nope}]\n", "unknown dataset 'nope'"),
        ("name: x\nbenchmarks: [{name: clinc150}]\ngrid: {k: [20000]}\n", "is larger than the smallest pool"),
        ("name: x\nbenchmarks: [{name: clinc150}]\njudges: [{kind: anthropic}]\n", "ANTHROPIC_API_KEY is not set"),
        ("name: x\nbenchmarks: [{name: clinc150}]\nmodels: [/no/such/model]\n", "no such folder"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("name: x\nbenchmarks: [{name: clinc150}]\nrunner: spark\n", "runner 'spark' is not known"),
        ("name: x\nbenchmarks: [{name: clinc150}]\nrunner: dask://127.0.0.1\n", "expected dask://host:port"),
        (
            "name: x\nbenchmarks: [{name: clinc150}]\nrunner: dask://127.0.0.1:9\n",
            "no Dask scheduler answers at 127.0.0.1:9",
        ),
        ("name: x\nbenchmarks: [{name: clinc150}]\nexecution: {chunk_size: 0}\n", "execution.chunk_size"),
        (
            "name: x\nbenchmarks: [{name: clinc150}]\nquery_templates: {all-MiniLM-L6-v2: 'Q: {text}'}\n",
            "must contain {query}",
        ),
        (
            "name: x\nbenchmarks: [{name: clinc150}]\nquery_templates: {other-model: '{query}'}\n",
            "query_templates names 'other-model', which is not in models",
        ),
        (
            "name: x\nbenchmarks: [{name: clinc150, document_vectors: {path: /no/such.npy, model: all-MiniLM-L6-v2}}]\n",
            "benchmark clinc150: document_vectors /no/such.npy: no such file",
        ),
        (
            "name: x\nbenchmarks: [{name: clinc150, document_vectors: {path: /etc/passwd, model: all-MiniLM-L6-v2}}]\n",
            "unknown format '' (.npy or .parquet)",
        ),
    ],
)
def test_cli_config_errors_exit_2_with_one_line(tmp_path: Path, data_root: Path, yaml_text: str, message: str) -> None:
    import sys

    config = tmp_path / "bad.yaml"
    config.write_text(yaml_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANTHROPIC_")}
    env["REFINE_HOME"] = str(tmp_path / ".refine")
    res = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", str(config)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


def test_judge_cache_invalidation_works_on_local_and_remote_result_storage(
    platform: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import prefect.results
    from prefect.filesystems import LocalFileSystem, RemoteFileSystem

    from flows.cell import invalidate_task_cache

    local = LocalFileSystem(basepath=str(platform / "results-test"))
    local.write_path("refine-local", b"x")
    monkeypatch.setattr(prefect.results, "get_default_result_storage", lambda: local)
    assert invalidate_task_cache("refine-local") and not invalidate_task_cache("refine-local")
    remote = RemoteFileSystem(basepath="memory://team-bucket/results")  # any fsspec URL, e.g. s3://
    remote.write_path("refine-remote", b"x")
    monkeypatch.setattr(prefect.results, "get_default_result_storage", lambda: remote)
    assert invalidate_task_cache("refine-remote")
    assert not remote.filesystem.exists(remote._resolve_path("refine-remote"))


def test_a_per_model_query_template_reaches_the_query_embeddings(platform: Path) -> None:
    from mlflow import MlflowClient

    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations.registry import load_benchmark
    from flows.sweep import sweep
    from flows.tracking import tracking_uri
    from refine_core.metrics import cosine_scores, evaluate_rankings

    config = SweepConfig(
        name="template-test",
        benchmarks=[BenchmarkSpec(name="clinc150", queries=5, max_documents=600)],
        query_templates={"all-MiniLM-L6-v2": "{query}"},
    )
    result = sweep(config)
    bench = load_benchmark("clinc150", queries=5, max_documents=600)
    bare = SentenceTransformerEmbedder(query_template="{query}")
    cache = EmbeddingCache(embedding_cache_dir())
    direct = evaluate_rankings(
        cosine_scores(
            bare.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache),
            bare.embed_documents(bench.document_texts(), cache=cache),
        ),
        bench.label_matrix()[0],
    ).means["map"]
    cell = result["cells"][0]
    assert cell["metrics"]["baseline"]["map"] == pytest.approx(direct, abs=1e-6)
    templated = sweep(config.model_copy(update={"name": "template-default", "query_templates": {}}))
    assert templated["cells"][0]["metrics"]["baseline"]["map"] != pytest.approx(direct, abs=1e-3)
    assert MlflowClient(tracking_uri()).get_run(cell["run_id"]).data.params["query_template"] == "{query}"


def test_a_benchmark_with_its_own_vectors_is_evaluated_without_embedding_the_corpus(
    platform: Path, tmp_path: Path
) -> None:
    """Vectors computed elsewhere (.npy in document order, or parquet by doc_id) give the figures the
    sweep gets when it embeds the corpus itself; bad files are named before anything runs."""
    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations.config import VectorsSpec
    from evaluations.registry import load_benchmark
    from flows.sweep import run_sweep

    spec = BenchmarkSpec(name="clinc150", queries=4, max_documents=500, corpus_seed=11)
    bench = load_benchmark("clinc150", queries=4, max_documents=500, corpus_seed=11)
    vectors = SentenceTransformerEmbedder().embed_documents(
        bench.document_texts(), cache=EmbeddingCache(embedding_cache_dir())
    )
    npy = tmp_path / "docs.npy"
    np.save(npy, vectors)
    order = np.random.default_rng(0).permutation(len(vectors))  # parquet rows in any order, matched by doc_id
    parquet = tmp_path / "docs.parquet"
    pl.DataFrame(
        {
            "doc_id": [bench.documents["doc_id"][int(i)] for i in order],
            "vector": [vectors[int(i)].tolist() for i in order],
        }
    ).write_parquet(parquet)
    embedded = run_sweep(SweepConfig(name="own-vectors-reference", benchmarks=[spec], grid=Grid(k=[10])))
    for path in (npy, parquet):
        own = spec.model_copy(update={"document_vectors": VectorsSpec(path=str(path), model="all-MiniLM-L6-v2")})
        result = run_sweep(SweepConfig(name=f"own-vectors-{path.suffix[1:]}", benchmarks=[own], grid=Grid(k=[10])))
        assert result["cells"][0]["metrics"] == embedded["cells"][0]["metrics"], path
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, vectors[:, :100])
    bad = spec.model_copy(update={"document_vectors": VectorsSpec(path=str(wrong), model="all-MiniLM-L6-v2")})
    with pytest.raises(Exception, match=r"dimension 100, but all-MiniLM-L6-v2 embeds queries in 384"):
        run_sweep(SweepConfig(name="own-vectors-bad", benchmarks=[bad], grid=Grid(k=[10])))
    with pytest.raises(
        ValueError, match="its document_vectors were computed with 'all-MiniLM-L6-v2', so models must be"
    ):
        SweepConfig(name="x", benchmarks=[bad], models=["other-model"])


def test_a_multi_round_cell_of_the_flow_equals_the_librarys_rounds(platform: Path) -> None:
    """The flow runs rounds as cached tasks (select excluding earlier judgments, judge, refine from
    the last round's vector on every judgment so far); refine_core.rounds does the same in one
    process. Both must give the same numbers for every round's method, and for ``rocchio_kl``
    (the sweep's ``methods``: refinement from the Rocchio vector on the first round's judgments),
    with the paper's objective and with the pull toward the judged-positive centroid (grid ``pull``)."""
    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations.registry import load_benchmark
    from flows.sweep import sweep
    from judging import oracle_scores
    from refine_core import RefineConfig
    from refine_core.evaluation import evaluate_cell_arrays

    config = SweepConfig(
        name="rounds-vs-library",
        benchmarks=[SUBSET],
        judges=[JudgeSpec(kind="oracle")],
        grid=Grid(lr=[1e-3], rounds=[3], k=[10], pull=[0.0, 0.1]),
        methods=["recommended", "rocchio_kl"],
    )
    cells = sweep(config)["cells"]
    assert [c["params"]["pull"] for c in cells] == [0.0, 0.1]
    bench = load_benchmark("clinc150", queries=12, max_documents=1500)
    embedder = SentenceTransformerEmbedder()
    cache = EmbeddingCache(embedding_cache_dir())
    docs = embedder.embed_documents(bench.document_texts(), cache=cache)
    queries = embedder.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache)
    labels, _ = bench.label_matrix()
    direct, pulled = (
        evaluate_cell_arrays(
            queries,
            docs,
            labels,
            lambda r, i: oracle_scores(labels[r], i),
            k=10,
            rounds=3,
            config=RefineConfig(lr=1e-3, pull=pull),
            variants=("rocchio_kl",),
        )
        for pull in (0.0, 0.1)
    )
    cell = cells[0]
    paper = {"baseline", "rerank_only", "rocchio", "refined", "refined_r2", "refined_r3"}
    assert set(direct.metrics) == paper | {"rocchio_kl", "rocchio_kl_r2", "rocchio_kl_r3"}
    # the platform adds the one-round variant only (later rounds of it would need judgments of their own)
    assert set(cell["metrics"]) == paper | {"rocchio_kl", "recommended"}
    # `recommended` is what `refine search` runs (refine_core.recommended), whatever the cell's lr and pull
    from refine_core.evaluation import score_methods
    from refine_core.recommended import RECOMMENDED, recommended_vectors

    first = (direct.feedback_idx[:, :10], np.nan_to_num(direct.judge_scores[:, :10]), direct.judge_mask[:, :10])
    mine, _ = score_methods(
        queries,
        docs,
        labels,
        feedback_idx=first[0],
        judge_scores=first[1],
        judge_mask=first[2],
        round_vectors=[queries],
        extra_vectors={"recommended": recommended_vectors(queries, docs, *first)},
    )
    for c in cells:
        assert c["metrics"]["recommended"]["map"] == pytest.approx(mine["recommended"].means["map"], abs=1e-6)
        assert "recommended" in c["tests"]
    for method in paper | {"rocchio_kl"}:
        result = direct.metrics[method]
        for name in ("map", "ndcg@10", "roc_auc"):
            assert cell["metrics"][method][name] == pytest.approx(result.means[name], abs=1e-6), (method, name)
    assert direct.metrics["refined_r3"].means["map"] != direct.metrics["refined"].means["map"]  # the rounds differ
    for method in paper | {"rocchio_kl"}:
        assert cells[1]["metrics"][method]["map"] == pytest.approx(pulled.metrics[method].means["map"], abs=1e-6)
    assert pulled.metrics["refined"].means["map"] != direct.metrics["refined"].means["map"]  # the pull acts
    # MLflow has the method and the setting that asked for it; `refine compare` reads it back
    from mlflow import MlflowClient

    from flows.report import metrics_from_run
    from flows.tracking import tracking_uri

    run = MlflowClient(tracking_uri()).get_run(cell["run_id"])
    assert run.data.params["methods"] == "recommended,rocchio_kl"
    assert run.data.params["recommended.lr"] == str(RECOMMENDED.lr) and run.data.params["recommended.start"] == "query"
    pulled_run = MlflowClient(tracking_uri()).get_run(cells[1]["run_id"])
    assert pulled_run.data.params["pull"] == "0.1" and pulled_run.info.run_name.startswith("pull=0.1 · ")
    assert metrics_from_run(run)["rocchio_kl"]["map"] == pytest.approx(
        direct.metrics["rocchio_kl"].means["map"], abs=1e-6
    )


def test_rocchios_weights_are_grid_keys(platform: Path) -> None:
    """``grid: {rocchio_beta, rocchio_gamma}``: the cell's ``rocchio`` method and the start of
    ``rocchio_kl`` use those weights (logged as params, in the cell's label), not SMART's."""
    from mlflow import MlflowClient

    from embedders.cache import EmbeddingCache
    from embedders.models import SentenceTransformerEmbedder
    from evaluations.registry import load_benchmark
    from flows.sweep import sweep
    from flows.tracking import tracking_uri
    from judging import oracle_scores
    from refine_core import RefineConfig
    from refine_core.baselines import RocchioParams
    from refine_core.evaluation import evaluate_cell_arrays

    config = SweepConfig(
        name="rocchio-weights",
        benchmarks=[SUBSET],
        judges=[JudgeSpec(kind="oracle")],
        grid=Grid(lr=[1e-3], k=[10], rocchio_beta=[1.5], rocchio_gamma=[0.5]),
        methods=["rocchio_kl"],
    )
    (cell,) = sweep(config)["cells"]
    bench = load_benchmark("clinc150", queries=12, max_documents=1500)
    embedder = SentenceTransformerEmbedder()
    cache = EmbeddingCache(embedding_cache_dir())
    docs = embedder.embed_documents(bench.document_texts(), cache=cache)
    queries = embedder.embed_queries(bench.query_texts(), instruction=bench.embed_instruction, cache=cache)
    labels, _ = bench.label_matrix()
    outcomes = {
        weights: evaluate_cell_arrays(
            queries,
            docs,
            labels,
            lambda r, i: oracle_scores(labels[r], i),
            k=10,
            config=RefineConfig(lr=1e-3),
            rocchio_params=RocchioParams(beta=weights[0], gamma=weights[1]),
            variants=("rocchio_kl",),
        )
        for weights in ((1.5, 0.5), (0.75, 0.15))
    }
    for method in ("rocchio", "rocchio_kl"):
        want = outcomes[(1.5, 0.5)].metrics[method].means["map"]
        assert cell["metrics"][method]["map"] == pytest.approx(want, abs=1e-6), method
        assert want != pytest.approx(outcomes[(0.75, 0.15)].metrics[method].means["map"], abs=1e-6)
    run = MlflowClient(tracking_uri()).get_run(cell["run_id"])
    assert run.data.params["rocchio_beta"] == "1.5" and run.data.params["rocchio_gamma"] == "0.5"
    assert "Rocchio β 1.5 γ 0.5" in run.data.tags["refine.cell"]
