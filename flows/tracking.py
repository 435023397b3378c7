"""MLflow tracking through ``MlflowClient`` with explicit run ids (the fluent API is
thread-local). One experiment per sweep config name, a parent run per sweep and one child
run per cell. Nothing secret is ever passed here: params come from the validated config.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag

from refine_core.measures import from_mlflow_key, mlflow_key
from tasks.storage import state_dir

_BAD_KEY_CHARS = re.compile(r"[^0-9A-Za-z_\-. /]")


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI`` or a SQLite store in the state directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir() / 'mlflow.db'}"


def metric_key(name: str) -> str:
    """MLflow-safe metric name, measures spelled by the one documented mapping
    (:func:`refine_core.measures.mlflow_key`): ``ndcg@10`` -> ``ndcg_at_10``, ``precision@5`` -> ``precision_at_05``."""
    return _BAD_KEY_CHARS.sub("_", mlflow_key(name))


def measure_name(key: str) -> str:
    """The inverse of :func:`metric_key` for measure names: ``precision_at_05`` -> ``precision@5``
    (the spelling of per-query files, ``compare`` and ``--json``)."""
    return from_mlflow_key(key)


SHARED_VIEW = "refine-cells"
SHARED_VIEW_TAG = "mlflow.sharedViewState."
COORDINATE_COLUMNS = {"benchmark": "params.`benchmark.name`", "model": "params.`model`"}
"""The runs-table column of each sweep coordinate that is not a grid axis (those are params)."""


class Tracker:
    """Thin wrapper over MlflowClient for the sweep's parent and child runs."""

    def __init__(self, uri: str | None = None) -> None:
        from flows.stores import ensure_tracking_store

        self.uri = uri or tracking_uri()
        ensure_tracking_store(self.uri)  # a new store's schema is created once, under a lock
        self.client = MlflowClient(self.uri)

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        from mlflow.exceptions import MlflowException

        try:
            return self._create_experiment(name)
        except MlflowException:  # another command created it a moment ago
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def _create_experiment(self, name: str) -> str:
        location = None
        if self.uri.startswith("sqlite:") or self.uri.startswith("file:") or "://" not in self.uri:
            folder = state_dir() / "mlartifacts" / re.sub(r"[^0-9A-Za-z_.-]", "_", name)
            folder.mkdir(parents=True, exist_ok=True)
            location = folder.as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def start(
        self, experiment_id: str, name: str, *, parent: str | None = None, tags: dict[str, str] | None = None
    ) -> str:
        all_tags = {"refine.host": socket.gethostname(), "refine.pid": str(os.getpid()), **(tags or {})}
        if parent:
            all_tags["mlflow.parentRunId"] = parent
        return self.client.create_run(experiment_id, run_name=name, tags=all_tags).info.run_id

    def log_params(self, run_id: str, params: dict[str, object]) -> None:
        self.log_batch(run_id, params=params)

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.log_batch(run_id, metrics=metrics, step=step)

    def log_series(self, run_id: str, key: str, values: list[float]) -> None:
        self.log_batch(run_id, series={key: values})

    def log_batch(
        self,
        run_id: str,
        *,
        params: dict[str, object] | None = None,
        metrics: dict[str, float] | None = None,
        series: dict[str, list[float]] | None = None,
        step: int = 0,
    ) -> None:
        """Params, metrics (at ``step``) and metric series (one step per value) in as few
        requests as MLflow's limits allow (100 params and 1,000 entries per request): one for a
        cell. Metrics go in key order (the MLflow UI lists a run's metrics in the order they
        were written); non-finite values are left out."""
        now = int(time.time() * 1000)
        p = [Param(k, str(v)[:6000]) for k, v in sorted((params or {}).items())]
        m = sorted(
            (
                Metric(metric_key(k), float(v), now, step)
                for k, v in (metrics or {}).items()
                if v is not None and math.isfinite(float(v))
            ),
            key=lambda x: x.key,
        )
        for key, values in (series or {}).items():
            m += [Metric(metric_key(key), float(v), now, i) for i, v in enumerate(values) if math.isfinite(float(v))]
        while p or m:
            head_p, p = p[:100], p[100:]
            room = 1000 - len(head_p)
            head_m, m = m[:room], m[room:]
            self.client.log_batch(run_id, params=head_p, metrics=head_m)

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        self.client.log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def log_artifact(self, run_id: str, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_json(self, run_id: str, name: str, payload: object) -> None:
        self.client.log_dict(run_id, payload, name)  # type: ignore[arg-type]  # a list is fine too

    def log_text(self, run_id: str, name: str, text: str) -> None:
        self.client.log_text(run_id, text, name)

    def log_benchmark(self, run_id: str, counts: dict, source: str) -> None:
        """The benchmark as an MLflow dataset input, identified by its content hash; its source
        is the folder the tables were read from (no made-up URL)."""
        import warnings

        from mlflow.data.dataset_source_registry import resolve_dataset_source
        from mlflow.data.meta_dataset import MetaDataset

        with warnings.catch_warnings():  # the local-path source is registered twice inside MLflow
            warnings.simplefilter("ignore", UserWarning)
            origin = resolve_dataset_source(str(source), candidate_sources=None)
        dataset = MetaDataset(origin, name=str(counts["name"]), digest=str(counts["hash"]))  # type: ignore[abstract]
        entity = dataset._to_mlflow_entity()
        self.client.log_inputs(
            run_id,
            [
                DatasetInput(
                    entity, tags=[InputTag("mlflow.data.context", "evaluation"), InputTag("source", source[:500])]
                )
            ],
        )

    def finish(self, run_id: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run_id, status=status)

    @contextmanager
    def ends_run_on_error(self, run_id: str) -> Iterator[None]:
        """Mark the run KILLED on Ctrl-C and FAILED on any other exception, then re-raise."""
        try:
            yield
        except KeyboardInterrupt:
            self.finish(run_id, "KILLED")
            raise
        except BaseException:
            self.finish(run_id, "FAILED")
            raise

    def close_stale_runs(self, experiment_id: str) -> list[str]:
        """Mark as KILLED the RUNNING runs whose process on this host no longer exists.

        Runs record ``refine.host`` and ``refine.pid`` tags when they start; runs of other
        hosts or of live processes are left alone.
        """
        closed = []
        host = socket.gethostname()
        for run in self.client.search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=1000
        ):
            tags = run.data.tags
            if tags.get("refine.host") != host or not tags.get("refine.pid", "").isdigit():
                continue
            if not _alive(int(tags["refine.pid"])):
                self.client.set_terminated(run.info.run_id, status="KILLED")
                closed.append(run.info.run_id)
        return closed

    def run_url(self, experiment_id: str, run_id: str) -> str:
        """The run's page in the MLflow UI (``$REFINE_MLFLOW_UI_URL``, default the ``refine ui`` address),
        in the machine-learning workflow (MLflow 3 otherwise shows a run in its GenAI navigation)."""
        return f"{ui_base()}/#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"

    def runs_table_url(self, experiment_id: str) -> str:
        """The experiment's runs table: MLflow 3 opens an experiment in its GenAI view unless
        the URL asks for the machine-learning workflow; ``viewStateShareKey`` opens it with the
        columns :meth:`share_cells_view` chose (the UI reads the experiment's tag of that key)."""
        return f"{ui_base()}/#/experiments/{experiment_id}/runs?viewStateShareKey={SHARED_VIEW}&workflowType=machine_learning"

    def share_cells_view(self, experiment_id: str, coordinates: list[str], methods: list[str]) -> None:
        """Store the runs table's view for this experiment (MLflow's shared view state: the
        experiment tag ``mlflow.sharedViewState.<key>``, a JSON of the table's sort and columns):
        the newest runs first, the judge and every coordinate that varies, MAP of each method,
        refined ΔMAP and p (BH), failed judgments: a sweep's figures without adding columns."""
        columns = ["tags.`refine.judge`"]
        columns += [COORDINATE_COLUMNS.get(c, f"params.`{c}`") for c in coordinates if c != "judge"]
        columns += [f"metrics.`{m}.map`" for m in methods]
        columns += ["metrics.`refined.delta_map`", "metrics.`refined.p_bh`", "metrics.`judgments_failed`"]
        state = {"orderByKey": "attributes.start_time", "orderByAsc": False, "selectedColumns": columns}
        self.client.set_experiment_tag(experiment_id, SHARED_VIEW_TAG + SHARED_VIEW, json.dumps(state))

    def find_cell(self, experiment_id: str, content_key: str, *, exclude: str | None = None) -> str | None:
        """The first finished cell run with the same content key (same cell, inputs and code):
        the original that a cached re-run links to."""
        runs = self.client.search_runs(
            [experiment_id],
            f"tags.`refine.content_key` = '{content_key}' and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time ASC"],
            max_results=5,
        )
        for run in runs:
            if run.info.run_id != exclude:
                return run.data.tags.get("refine.original_run_id", run.info.run_id)
        return None


def prefect_run_url() -> str | None:
    """The current Prefect flow run's page in the Prefect UI (None without a UI, e.g. the
    ephemeral server the CLI starts)."""
    from prefect import runtime

    own = os.environ.get("REFINE_EPHEMERAL_API_URL")
    if own and own == os.environ.get("PREFECT_API_URL"):  # the CLI's own server, which has no UI
        return None
    url = runtime.flow_run.ui_url
    return url if isinstance(url, str) and url.startswith(("http://", "https://")) else None


def ui_base() -> str:
    return os.environ.get("REFINE_MLFLOW_UI_URL", "http://127.0.0.1:5000").rstrip("/")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dumps(payload: object) -> str:
    return json.dumps(payload, indent=1, default=float)
