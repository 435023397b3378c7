"""Sweep configuration: a YAML file validated by pydantic (unknown keys are errors).

A sweep is the grid ``benchmarks x models x judges x lr x steps x k x temperatures x rounds
x optimizer x normalize``; each point is one *cell*. Example::

    name: my-sweep                  # the MLflow experiment
    benchmarks:
      - {name: clinc150, queries: 50}
    models: [all-MiniLM-L6-v2]
    judges:
      - {kind: oracle}
      - {kind: noisy-oracle, flip_rate: 0.2}
      - {kind: noisy-oracle, false_positive_rate: 0.3, false_negative_rate: 0.1}  # asymmetric
      - {kind: anthropic, model: claude-haiku-4-5, scheme: listwise}
    grid:
      lr: [1.0e-4, 1.0e-3]
      k: [20]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from evaluations.errors import DatasetError
from judging.kinds import JUDGE_KINDS, JudgeKind, judge_kind
from refine_core.baselines import RocchioParams
from refine_core.refinement import PAPER, RefineConfig

# The defaults of a cell are the library's, written once: the paper's refinement and SMART's
# Rocchio weights (refine_core.refinement.PAPER, refine_core.baselines.RocchioParams).
SMART = RocchioParams()


class ConfigError(ValueError):
    """A sweep configuration is invalid; the message names the key."""


class _Strict(BaseModel):
    # allow_inf_nan=False: every float setting is finite (inf and nan are refused before anything is paid)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class VectorsSpec(_Strict):
    """Document vectors computed elsewhere (e.g. a GPU job): evaluated without embedding the corpus.

    ``path``: a ``.npy`` matrix in the benchmark's document order, or a ``.parquet`` file with a
    ``doc_id`` column and a list column ``vector``. ``model``: the model that produced them (the
    sweep's cells must use it, and its dimension must match); queries are embedded by that model.
    """

    path: str
    model: str


class BenchmarkSpec(_Strict):
    name: str
    queries: Annotated[int, Field(ge=1)] | None = None
    query_seed: int | None = None
    max_documents: Annotated[int, Field(ge=1)] | None = None
    corpus_seed: int = 42
    document_vectors: VectorsSpec | None = None


# Judges and generators that call a remote service (every call is paid and budgeted).
PAID_KINDS = tuple(name for name, kind in JUDGE_KINDS.items() if kind.paid)


class JudgeSpec(_Strict):
    kind: str  # a name of judging.kinds.JUDGE_KINDS
    model: str | None = None
    scheme: Literal["pointwise", "listwise"] = "listwise"
    flip_rate: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # noisy-oracle only: an asymmetric judge's rate of a wrong "relevant" on a non-relevant pair and
    # of a missed relevant pair; each defaults to flip_rate (judging.oracle.error_rates)
    false_positive_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    false_negative_rate: Annotated[float, Field(ge=0.0, le=1.0)] | None = None
    seed: int = 0
    base_url: str | None = None
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    max_retries: Annotated[int, Field(ge=0, le=20)] = 4
    timeout_s: Annotated[float, Field(gt=0)] = 60.0

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, value: str) -> str:
        judge_kind(value)  # a ValueError lists the kinds
        return value

    @model_validator(mode="after")
    def _check(self) -> JudgeSpec:
        rates = (self.flip_rate, self.false_positive_rate or 0.0, self.false_negative_rate or 0.0)
        if self.kind == "noisy-oracle" and not any(rates):
            raise ValueError("noisy-oracle needs flip_rate > 0 (or false_positive_rate / false_negative_rate > 0)")
        asymmetric = self.false_positive_rate is not None or self.false_negative_rate is not None
        if asymmetric and self.kind != "noisy-oracle":
            raise ValueError("false_positive_rate and false_negative_rate belong to the noisy-oracle judge")
        if self.registered.needs_base_url and not self.base_url:
            raise ValueError(f"{self.kind} needs base_url")
        if self.registered.needs_model and not self.model:
            raise ValueError(f"{self.kind} needs model")
        return self

    @property
    def registered(self) -> JudgeKind:
        """This kind's entry in :data:`judging.kinds.JUDGE_KINDS`."""
        return JUDGE_KINDS[self.kind]

    @property
    def label(self) -> str:
        if self.kind == "oracle":
            return "oracle"
        if self.kind == "noisy-oracle":
            fpr, fnr = self.error_rates
            return f"noisy-oracle-{fpr:g}" if fpr == fnr else f"noisy-oracle-fp{fpr:g}-fn{fnr:g}"
        return f"{self.kind}:{self.model or 'default'}" + (
            f"/{self.scheme}" if self.kind.startswith("anthropic") else ""
        )

    @property
    def error_rates(self) -> tuple[float, float]:
        """A noisy oracle's (false-positive rate, false-negative rate)."""
        fpr = self.flip_rate if self.false_positive_rate is None else self.false_positive_rate
        fnr = self.flip_rate if self.false_negative_rate is None else self.false_negative_rate
        return fpr, fnr

    @property
    def paid(self) -> bool:
        """A remote LLM service: its calls count against the budget (local judges are free)."""
        return self.registered.paid


class HydeSpec(_Strict):
    """The generator of HyDE passages; when a sweep has one, every cell adds ``hyde`` and
    ``hyde_refined`` (refinement from the HyDE vector, judged on the original query)."""

    kind: Literal["anthropic", "openai-compatible", "local-lm"]
    model: str | None = None
    base_url: str | None = None
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 0.7
    max_tokens: Annotated[int, Field(ge=1, le=4096)] = 256
    seed: int = 0
    concurrency: Annotated[int, Field(ge=1, le=256)] = 4
    max_retries: Annotated[int, Field(ge=0, le=20)] = 4
    timeout_s: Annotated[float, Field(gt=0)] = 120.0

    @model_validator(mode="after")
    def _check(self) -> HydeSpec:
        if self.kind == "openai-compatible" and not self.base_url:
            raise ValueError("openai-compatible needs base_url")
        if self.kind in ("openai-compatible", "local-lm") and not self.model:
            raise ValueError(f"{self.kind} needs model")
        return self

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.model or 'default'}"

    @property
    def paid(self) -> bool:
        """A remote LLM service: its generations count against the budget."""
        return self.kind in PAID_KINDS


# The largest value each positive float axis accepts: beyond it a value is a typo, not a setting
# (Adam with lr > 1 leaves the unit sphere in one step; a temperature of 1e4 makes every softmax flat).
_UPPER = {"lr": 1.0, "score_temperature": 1000.0, "similarity_temperature": 1000.0}


def _positive_list(name: str):
    def check(values: list[float]) -> list[float]:
        if not values:
            raise ValueError(f"{name} must list at least one value")
        top = _UPPER.get(name, math.inf)
        for v in values:
            if not (math.isfinite(v) and 0 < v <= top):
                bound = f"in (0, {top:g}]" if math.isfinite(top) else "finite and > 0"
                raise ValueError(f"{name} values must be {bound}, got {v}")
        return values

    return check


class Grid(_Strict):
    lr: list[float] = [PAPER.lr]
    steps: list[int] = [PAPER.steps]
    k: list[int] = [20]
    score_temperature: list[float] = [PAPER.score_temperature]
    similarity_temperature: list[float] = [PAPER.similarity_temperature]
    rounds: list[int] = [1]
    optimizer: list[Literal["adam", "sgd"]] = [PAPER.optimizer]
    normalize: list[Literal["none", "minmax"]] = [PAPER.normalize]
    pull: list[float] = [PAPER.pull]
    # Rocchio's weights (SMART defaults) for the `rocchio` method and the start of `rocchio_kl`
    rocchio_beta: list[float] = [SMART.beta]
    rocchio_gamma: list[float] = [SMART.gamma]

    @field_validator("rocchio_beta", "rocchio_gamma")
    @classmethod
    def _weights(cls, values: list[float], info) -> list[float]:
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"{info.field_name} values must be finite numbers >= 0, got {values}")
        return values

    @field_validator("lr", "score_temperature", "similarity_temperature")
    @classmethod
    def _positive_floats(cls, values: list[float], info) -> list[float]:
        return _positive_list(info.field_name)(values)

    @field_validator("pull")
    @classmethod
    def _pulls(cls, values: list[float]) -> list[float]:
        if not values or any(not math.isfinite(v) or v < 0 for v in values):
            raise ValueError(f"pull values must be finite numbers >= 0 (0 = the paper's objective), got {values}")
        return values

    @field_validator("steps", "rounds")
    @classmethod
    def _at_least_one(cls, values: list[int], info) -> list[int]:
        if not values or any(v < 1 for v in values):
            raise ValueError(f"{info.field_name} values must be integers >= 1, got {values}")
        return values

    @field_validator("k")
    @classmethod
    def _k(cls, values: list[int]) -> list[int]:
        if not values or any(v < 2 for v in values):
            raise ValueError(f"k values must be integers >= 2, got {values}")
        return values


class BudgetSpec(_Strict):
    max_judgments: Annotated[int, Field(ge=1)] | None = None
    max_cost_usd: Annotated[float, Field(gt=0)] | None = None


class ExecutionSpec(_Strict):
    """How the work is split: corpus embedding in chunks, refinement in query blocks, and
    (optionally) feedback selection and evaluation in corpus shards.

    Each chunk, block and shard is a cached task; with a Dask runner they run in parallel on the
    cluster's workers. ``workers`` is the size of the local cluster ``runner: dask`` starts.
    ``corpus_shard``: documents per shard; each shard task reads only its rows of the corpus and
    returns the best documents and rank counts per query, merged exactly in the cell (None: the
    whole corpus in one task).
    """

    chunk_size: Annotated[int, Field(ge=1)] = 4096
    query_block: Annotated[int, Field(ge=1)] = 1024
    workers: Annotated[int, Field(ge=1, le=64)] = 2
    corpus_shard: Annotated[int | None, Field(ge=1)] = None


RUNNER_HELP = (
    "'local' (threads in this process), 'dask' (a local Dask cluster) or 'dask://host:port' (an existing scheduler)"
)


def check_runner(value: str) -> str:
    """Validate a runner string; returns it unchanged."""
    if value in ("local", "dask"):
        return value
    if value.startswith(("dask://", "tcp://", "tls://")):
        rest = value.split("://", 1)[1]
        host, _, port = rest.rpartition(":")
        if host and port.isdigit() and 0 < int(port) < 65536:
            return value
        raise ValueError(f"runner {value!r}: expected dask://host:port with a numeric port")
    raise ValueError(f"runner {value!r} is not known; use {RUNNER_HELP}")


ExtraMethod = Literal["recommended", "rocchio_kl"]
"""A method a sweep can add beside baseline, rerank-only, Rocchio and refined (docs/findings.md)."""


class SweepConfig(_Strict):
    name: str = "default-sweep"
    benchmarks: list[BenchmarkSpec]
    models: list[str] = ["all-MiniLM-L6-v2"]
    judges: list[JudgeSpec] = [JudgeSpec(kind="oracle")]
    grid: Grid = Grid()
    budget: BudgetSpec = BudgetSpec()
    runner: str = "local"
    execution: ExecutionSpec = ExecutionSpec()
    hyde: HydeSpec | None = None
    # Methods beyond the paper's, scored in every cell on the same judgments (no extra judge calls):
    # "recommended", exactly what `refine search` / `classify` run by default, with their settings
    # (refine_core.recommended.RECOMMENDED, whatever the cell's grid says); "rocchio_kl", the KL
    # refinement started from the Rocchio vector (SMART weights, the cell's lr). Both on by default;
    # `methods: []` scores the paper's methods only.
    methods: list[ExtraMethod] = ["recommended", "rocchio_kl"]
    # Per model, the string its queries are embedded as ({instruction}, {query}); default: the
    # paper's "Instruct: {instruction}\nQuery: {query}" (or the model's own convention).
    query_templates: dict[str, str] = {}
    schedule: str | None = None

    @field_validator("query_templates")
    @classmethod
    def _templates(cls, value: dict[str, str]) -> dict[str, str]:
        for model, template in value.items():
            if "{query}" not in template:
                raise ValueError(f"the template of {model!r} must contain {{query}}, got {template!r}")
            try:
                template.format(query="q", instruction="i")
            except (KeyError, IndexError, ValueError) as exc:
                raise ValueError(
                    f"the template of {model!r} has a placeholder other than {{query}} and {{instruction}}: {exc}"
                ) from None
        return value

    @field_validator("benchmarks", "models", "judges")
    @classmethod
    def _non_empty(cls, values: list, info) -> list:
        if not values:
            raise ValueError(f"{info.field_name} must not be empty")
        return values

    @field_validator("runner")
    @classmethod
    def _runner(cls, value: str) -> str:
        return check_runner(value)

    @model_validator(mode="after")
    def _templates_name_models(self) -> SweepConfig:
        for bench in self.benchmarks:
            vectors = bench.document_vectors
            if vectors is not None and set(self.models) != {vectors.model}:
                raise ValueError(
                    f"benchmark {bench.name}: its document_vectors were computed with {vectors.model!r}, "
                    f"so models must be [{vectors.model!r}], not {self.models}"
                )
        unknown = sorted(set(self.query_templates) - set(self.models))
        if unknown:
            raise ValueError(f"query_templates names {unknown[0]!r}, which is not in models {self.models}")
        return self

    def cells(self) -> list[CellSpec]:
        """Every point of the grid, in a stable order."""
        # the grid's axes, each named as CellSpec's field, in the order the cells vary (last fastest)
        axes: dict[str, list[Any]] = {name: list(getattr(self.grid, name)) for name in GRID_AXES}
        out = []
        for bench, model, judge in itertools.product(self.benchmarks, self.models, self.judges):
            for values in itertools.product(*axes.values()):
                out.append(
                    CellSpec(
                        benchmark=bench,
                        model=model,
                        judge=judge,
                        **dict(zip(axes, values)),
                        hyde=self.hyde,
                        query_template=self.query_templates.get(model),
                        methods=list(self.methods),
                    )
                )
        return out


GRID_AXES = (
    "lr",
    "steps",
    "k",
    "score_temperature",
    "similarity_temperature",
    "rounds",
    "optimizer",
    "normalize",
    "pull",
    "rocchio_beta",
    "rocchio_gamma",
)


class CellSpec(_Strict):
    """One (benchmark, model, judge, hyperparameters) combination."""

    benchmark: BenchmarkSpec
    model: str
    judge: JudgeSpec
    lr: float = PAPER.lr
    steps: int = PAPER.steps
    k: int = 20
    score_temperature: float = PAPER.score_temperature
    similarity_temperature: float = PAPER.similarity_temperature
    rounds: int = 1
    optimizer: Literal["adam", "sgd"] = PAPER.optimizer
    normalize: Literal["none", "minmax"] = PAPER.normalize
    pull: float = PAPER.pull
    rocchio_beta: float = SMART.beta
    rocchio_gamma: float = SMART.gamma
    hyde: HydeSpec | None = None
    query_template: str | None = None
    methods: list[ExtraMethod] = []

    def hyperparameters(self) -> dict[str, object]:
        """The cell's grid coordinates (:data:`GRID_AXES`), as logged."""
        return {name: getattr(self, name) for name in GRID_AXES}

    @property
    def smart_rocchio(self) -> bool:
        """Rocchio's weights are the SMART defaults (the evaluation computes that Rocchio itself)."""
        return (self.rocchio_beta, self.rocchio_gamma) == (SMART.beta, SMART.gamma)

    def refine_config(self) -> RefineConfig:
        """The cell's refinement as the library's typed settings (the grid axes that are
        :class:`refine_core.refinement.RefineConfig` fields; the rest keeps the paper's)."""
        return RefineConfig(**{name: getattr(self, name) for name in GRID_AXES if name in _REFINE_FIELDS})


_REFINE_FIELDS = frozenset(f.name for f in dataclasses.fields(RefineConfig))


def default_config() -> SweepConfig:
    """The built-in sweep of ``refine run``: offline, CLINC150 with the bundled model, the
    oracle and a noisy oracle (and Claude when ``ANTHROPIC_API_KEY`` is set)."""
    judges = [JudgeSpec(kind="oracle"), JudgeSpec(kind="noisy-oracle", flip_rate=0.2, seed=0)]
    if os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_API_KEY_FILE"):
        judges.append(JudgeSpec(kind="anthropic", scheme="listwise"))
    return SweepConfig(
        name="default-sweep", benchmarks=[BenchmarkSpec(name="clinc150")], judges=judges, grid=Grid(lr=[1e-4, 1e-3])
    )


def _describe(error: ValidationError, source: str) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {where!r}"
    if first["type"] == "missing":
        return f"{source}: missing key {where!r}"
    return f"{source}: {where}: {first['msg']}"


def parse_config(data: object, *, source: str = "config") -> SweepConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None


def load_config(path: str | Path) -> SweepConfig:
    """Read and validate a YAML sweep config."""
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"config file {p} is a folder: give the sweep's YAML file")
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"config file {p} cannot be read: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: not valid YAML ({str(exc).splitlines()[0]})") from None
    from evaluations.paths import relative_to_config

    return parse_config(relative_to_config(data, p.parent), source=str(p))


__all__ = [
    "BenchmarkSpec",
    "BudgetSpec",
    "CellSpec",
    "ConfigError",
    "DatasetError",
    "ExecutionSpec",
    "Grid",
    "HydeSpec",
    "JudgeSpec",
    "SweepConfig",
    "default_config",
    "load_config",
    "parse_config",
]
