"""The ``refine`` command line.

User errors (unknown dataset, missing files, bad options, a model that does not exist) print
one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="LLM-guided test-time query refinement: evaluate and use it.")
datasets_app = typer.Typer(help="List the registered benchmarks, or show one.", invoke_without_command=True)
app.add_typer(datasets_app, name="datasets")

console = Console()
err_console = Console(stderr=True)

STATE_DIR_ENV = "REFINE_HOME"


def state_dir() -> Path:
    """Project-local folder for caches and tracking state (``$REFINE_HOME`` or ``./.refine``)."""
    return Path(os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".refine")


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from evaluations.errors import DatasetError
    from refine_core.embedders import EmbeddingModelError

    return (DatasetError, EmbeddingModelError, ValueError, FileNotFoundError, PermissionError)


# ---------------------------------------------------------------------------------------
# refine datasets
# ---------------------------------------------------------------------------------------
@datasets_app.callback()
def datasets_list(ctx: typer.Context,
                  as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False) -> None:
    """List the registered benchmarks and whether their files are present."""
    if ctx.invoked_subcommand is not None:
        return
    from evaluations.registry import PARAMETRIC, REGISTRY, data_dir, missing_files

    root = data_dir()
    rows = []
    for name, spec in REGISTRY.items():
        missing = missing_files(name, root)
        rows.append({"name": name, "present": not missing, "folder": str(spec.path(root)),
                     "hub": spec.hub_loader is not None, "description": spec.description, "licence": spec.licence})
    if as_json:
        print(json.dumps({"data_dir": str(root), "datasets": rows, "parametric": [f"{k}:<folder>" for k in PARAMETRIC]}))
        return
    table = Table(title=f"datasets (data dir: {root})")
    for column in ("name", "files", "hub", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], "[green]present[/]" if row["present"] else "[yellow]missing[/]",
                      "yes" if row["hub"] else "-", row["description"])
    console.print(table)
    console.print("Also: " + ", ".join(f"{k}:<folder>" for k in PARAMETRIC) + "  (see README: Datasets)")


@datasets_app.command("show")
def datasets_show(
    name: Annotated[str, typer.Argument(help="registry name or kind:<folder>")],
    queries: Annotated[int | None, typer.Option(help="keep the first N queries (or random with --seed)")] = None,
    seed: Annotated[int | None, typer.Option(help="seed for a random query subset")] = None,
    max_documents: Annotated[int | None, typer.Option(help="subsample the corpus, keeping every positive")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
) -> None:
    """Print a benchmark's counts and content hash."""
    from evaluations.registry import load_benchmark

    try:
        benchmark = load_benchmark(name, queries=queries, query_seed=seed, max_documents=max_documents)
    except _user_errors() as exc:
        fail(str(exc))
    counts = benchmark.counts()
    if as_json:
        print(json.dumps(counts))
        return
    table = Table(title=f"{name}")
    table.add_column("field")
    table.add_column("value")
    for key, value in counts.items():
        table.add_row(key, str(value))
    console.print(table)


# ---------------------------------------------------------------------------------------
# refine demo
# ---------------------------------------------------------------------------------------
@app.command()
def demo(
    dataset: Annotated[str, typer.Option(help="benchmark name")] = "clinc150",
    model: Annotated[str, typer.Option(help="embedding model (alias, Hub id or folder)")] = "all-MiniLM-L6-v2",
    queries: Annotated[int | None, typer.Option(help="evaluate only the first N queries")] = None,
    k: Annotated[int, typer.Option(help="documents judged per query")] = 20,
    lr: Annotated[float, typer.Option(help="Adam learning rate (paper 1e-4)")] = 1e-4,
    steps: Annotated[int, typer.Option(help="optimisation steps (paper 100)")] = 100,
    rounds: Annotated[int, typer.Option(help="refinement rounds (paper 1)")] = 1,
    flip_rate: Annotated[float, typer.Option(help="noisy oracle: probability of flipping each gold judgment")] = 0.0,
    seed: Annotated[int, typer.Option(help="seed of the noisy oracle")] = 0,
    threads: Annotated[int, typer.Option(help="torch threads for embedding")] = 2,
    as_json: Annotated[bool, typer.Option("--json", help="end with one JSON object")] = False,
) -> None:
    """Embed a real benchmark, judge the top-K with the (noisy) oracle, and compare the methods.

    The oracle judge is the gold labels (the ceiling of what a judge can give); with
    --flip-rate it errs at random. Embeddings are cached under .refine/embeddings.
    """
    from evaluations.registry import load_benchmark
    from refine_core import RefineConfig, benjamini_hochberg
    from refine_core.embedders import SentenceTransformerEmbedder
    from refine_core.embedding_cache import EmbeddingCache
    from refine_core.evaluation import evaluate_cell_arrays
    from refine_core.judges import noisy_oracle_scores

    try:
        config = RefineConfig(lr=lr, steps=steps)
        if k < 2:
            raise ValueError(f"--k must be at least 2, got {k}")
        if rounds < 1:
            raise ValueError(f"--rounds must be at least 1, got {rounds}")
        if not 0 <= flip_rate <= 1:
            raise ValueError(f"--flip-rate must be in [0, 1], got {flip_rate}")
        benchmark = load_benchmark(dataset, queries=queries)
        embedder = SentenceTransformerEmbedder(model, threads=threads)
        cache = EmbeddingCache(state_dir() / "embeddings")
        t0 = time.perf_counter()
        with console.status(f"embedding {benchmark.n_documents} documents with {embedder.model_id} ..."):
            docs = embedder.embed_documents(benchmark.document_texts(), cache=cache)
            qvecs = embedder.embed_queries(benchmark.query_texts(), instruction=benchmark.embed_instruction, cache=cache)
        t_embed = time.perf_counter() - t0
        labels, pool = benchmark.label_matrix()
        min_pool = int(pool.sum(1).min()) if pool is not None else benchmark.n_documents
        if k * rounds > min_pool:
            raise ValueError(f"--k {k} x --rounds {rounds} exceeds the smallest query pool ({min_pool} documents)")

        def judge(rows, idx):  # noqa: ANN001, ANN202 - JudgeFn
            return noisy_oracle_scores(labels[rows], idx, flip_rate=flip_rate, seed=seed)

        t1 = time.perf_counter()
        outcome = evaluate_cell_arrays(qvecs, docs, labels, judge, pool=pool, k=k, rounds=rounds, config=config)
        t_eval = time.perf_counter() - t1
    except _user_errors() as exc:
        fail(str(exc))

    methods = list(outcome.metrics)
    adjusted = dict(zip([m for m in methods if m in outcome.tests],
                        benjamini_hochberg([outcome.tests[m].pvalue for m in methods if m in outcome.tests])))
    judge_name = "oracle" if flip_rate == 0 else f"noisy-oracle (flip {flip_rate:g})"
    table = Table(title=f"{benchmark.name}: {benchmark.n_queries} queries x {benchmark.n_documents} documents, "
                        f"{embedder.model_id}, judge {judge_name}, K={k}, lr={lr:g}, steps={steps}")
    for column in ("method", "MAP", "nDCG@10", "R@50", "ROC-AUC", "ΔMAP", "p (BH)"):
        table.add_column(column, justify="right" if column != "method" else "left")
    base_map = outcome.metrics["baseline"].means["map"]
    for method in methods:
        m = outcome.metrics[method].means
        p = adjusted.get(method)
        table.add_row(method, f"{m['map']:.4f}", f"{m['ndcg@10']:.4f}", f"{m['recall@50']:.4f}", f"{m['roc_auc']:.4f}",
                      "" if method == "baseline" else f"{m['map'] - base_map:+.4f}",
                      "" if p is None else f"{p:.2g}")
    console.print(table)
    console.print(f"embedding {t_embed:.1f} s (cache: {state_dir() / 'embeddings'}), judging + refinement + "
                  f"scoring {t_eval:.1f} s; {int(outcome.judge_mask.sum())} judgments")
    if as_json:
        print(json.dumps({
            "benchmark": benchmark.counts(),
            "model": embedder.model_id,
            "judge": judge_name,
            "params": {"k": k, "rounds": rounds, **config.as_params()},
            "metrics": {m: outcome.metrics[m].means for m in methods},
            "p_values_bh": adjusted,
        }, default=float))


def main() -> None:  # pragma: no cover - console entry point alias
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
