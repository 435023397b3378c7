"""The options the corpus commands share and how they become settings: the judge (``--judge``),
the refinement (``--lr``, ``--start``, ``--keep-verdicts``, ...), the index and its ANN structure."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

JUDGE_HELP = (
    "judge as KIND[:MODEL]: anthropic (default model claude-haiku-4-5), anthropic:claude-sonnet-4-5, "
    "local-lm:smollm2-135m, openai-compatible:MODEL (with --base-url), cross-encoder:MODEL"
)
# the refinement's options, shared by search, classify and evaluate-classification
LrOption = Annotated[
    float | None,
    typer.Option(
        help="learning rate of the refinement (default: 3e-4; 1e-4, the paper's, with --start query --no-keep-verdicts)"
    ),
]
PullOption = Annotated[float, typer.Option(help="pull toward the judged-positive centroid (0 = the paper's objective)")]
StartOption = Annotated[
    str,
    typer.Option(
        help="refine from the query (the paper's step; safe on every data shape measured) or from the Rocchio "
        "vector (Rocchio → KL: far better on data with many relevant documents per query, worse than "
        "rerank-only with one or two and a judge that errs): query or rocchio"
    ),
]
VerdictsOption = Annotated[
    bool,
    typer.Option(
        "--keep-verdicts/--no-keep-verdicts",
        help="rank the documents the judge called relevant first and refine only when it called at least 35% of "
        "the judged ones relevant (the default, refine_core.recommended); --no-keep-verdicts: the refined "
        "vector's ranking alone, always refined, as the paper",
    ),
]
BetaOption = Annotated[float, typer.Option(help="Rocchio's weight of the judged-positive centroid (--start rocchio)")]
GammaOption = Annotated[float, typer.Option(help="Rocchio's weight of the judged-negative centroid (--start rocchio)")]


def describe_refinement(settings: dict) -> str:
    """What ran, in words: ``Rocchio → KL (β 1.5, γ 0.5), lr 0.0003`` or ``the paper's refinement, lr
    0.0001, judged-relevant documents first``."""
    method = (
        f"Rocchio → KL (β {settings['rocchio_beta']:g}, γ {settings['rocchio_gamma']:g})"
        if settings.get("start") == "rocchio"
        else "the paper's refinement"
    )
    pull = f", pull {settings['pull']:g}" if settings.get("pull") else ""
    kept = ", judged-relevant documents first" if settings.get("verdicts_first") else ""
    return f"{method}, lr {settings['lr']:g}{pull}{kept}"


def kept_positives(keep_verdicts: bool) -> int:
    """``min_positives`` of the default refinement (:data:`refine_core.recommended.RECOMMENDED`) with
    ``--keep-verdicts``, 0 (the paper: always refine) without."""
    from refine_core.recommended import RECOMMENDED

    return RECOMMENDED.min_positives if keep_verdicts else 0


def kept_share(keep_verdicts: bool) -> float:
    """``min_share`` of the default refinement with ``--keep-verdicts``, 0 without."""
    from refine_core.recommended import RECOMMENDED

    return RECOMMENDED.min_share if keep_verdicts else 0.0


def refinement_settings(
    start: str, lr: float | None, pull: float, beta: float, gamma: float, keep_verdicts: bool = False
):
    """The refinement the options ask for: ``(RefineConfig, RocchioParams)``, the lr defaulting to
    the default refinement's (:data:`refine_core.recommended.RECOMMENDED`) with ``--keep-verdicts``
    from its start, else to the start's (:data:`corpus.RECOMMENDED_LR`: the paper's 1e-4
    from the query); an unknown start is a user error."""
    from corpus import RECOMMENDED_LR, CorpusError
    from corpus.query import STARTS
    from refine_core.baselines import RocchioParams
    from refine_core.recommended import RECOMMENDED
    from refine_core.refinement import RefineConfig

    if start not in STARTS:
        raise CorpusError(f"--start must be one of {', '.join(STARTS)}, got {start!r}")
    if lr is None:
        lr = RECOMMENDED.lr if keep_verdicts and start == RECOMMENDED.start else RECOMMENDED_LR[start]
    if beta < 0 or gamma < 0:
        raise CorpusError(f"--rocchio-beta and --rocchio-gamma must be >= 0, got {beta:g} and {gamma:g}")
    return RefineConfig(lr=lr, pull=pull), RocchioParams(beta=beta, gamma=gamma)


def index_folder(name_or_path: str) -> Path:
    """An index given by folder path, else by name under ``$REFINE_HOME/indexes``."""
    from tasks.storage import state_dir

    path = Path(name_or_path).expanduser()
    if (path / "index.json").is_file():
        return path
    return state_dir() / "indexes" / name_or_path


def judge_spec(text: str, base_url: str | None, concurrency: int):
    from pydantic import ValidationError

    from evaluations.config import ConfigError, JudgeSpec
    from flows.console import reason
    from judging.kinds import JUDGE_KINDS, corpus_kinds

    kind, _, model = text.partition(":")
    allowed = corpus_kinds()
    if kind in JUDGE_KINDS and JUDGE_KINDS[kind].gold_labels:
        raise ConfigError(
            f"--judge {text}: oracle judges read gold labels and only work on benchmarks; use one of {', '.join(allowed)}"
        )
    if kind not in allowed:
        raise ConfigError(f"--judge {text!r}: unknown judge kind {kind!r}; use one of {', '.join(allowed)}")
    try:
        return JudgeSpec(kind=kind, model=model or None, base_url=base_url, concurrency=concurrency)
    except ValidationError as exc:
        # pydantic's text ends with a link to its docs; the reason is the error's own message
        why = reason(exc.errors()[0])
        form = f" (write it as {kind}:MODEL, e.g. local-lm:smollm2-135m)" if not model and "model" in why else ""
        raise ConfigError(f"--judge {text}: {why}{form}") from None


# `--ann auto` builds an HNSW structure from this corpus size on. The default is none: measured by
# benchmarks/scale.py (2026-11-27, 2 cores), brute force selects the top 20 of 1M documents in
# 22 ms per query, while HNSW takes 80 s to build at 100k documents and 309 s at 300k (recall@20
# 0.95 / 0.85) and IVF at nprobe 16 recalls only 0.55 / 0.31 / 0.13 at 100k / 300k / 1M.
ANN_AUTO_FROM = 200_000


def ann_kind(text: str, documents: int) -> str | None:
    """The ANN kind ``--ann`` asks for (None: no ANN structure); a bad value is a user error."""
    from corpus import CorpusError
    from corpus.ann import ANN_KINDS

    value = text.strip().lower()
    if value == "auto":
        return "hnsw" if documents >= ANN_AUTO_FROM else None
    if value == "none":
        return None
    if value not in ANN_KINDS:
        raise CorpusError(f"--ann must be none, auto or one of {', '.join(ANN_KINDS)}, got {text!r}")
    return value


def ensure_ann(index, kind: str | None) -> dict | None:
    """The index's ANN record, building the structure when ``kind`` asks for one it does not have yet."""
    from corpus import build_ann
    from corpus.ann import AnnSettings

    if kind is None:
        return None
    existing = index.ann()
    if existing is not None and existing[0].settings.kind == kind:
        return existing[1]
    return build_ann(index, AnnSettings(kind=kind))
