"""Scale: one evaluation cell on synthetic corpora of growing size, and the corpus embedding scale-out.

Part 1 (default): memory and time of one cell — select the top K = 20 documents, judge them with
the oracle, refine, evaluate every method (original, rerank-only, Rocchio, refined) on the full
corpus — on synthetic unit vectors (d = 384) with a planted relevant set per query, for growing
corpus sizes N and query counts Q. Each stage's wall time and peak RSS (the kernel's VmHWM, reset
before the stage) are printed, with the growth exponents fitted over N and over Q. The pipeline
holds sparse qrels and one query block of scores at a time, never a (Q, N) array.

Part 1b (``--real``): the select stage through FAISS on *real* embeddings — every document and
query of the shipped benchmarks (MiniLM, the embedding cache of quality.py) in one corpus — with
recall@20 against brute force: a recall measured only on synthetic vectors says little about a
user's corpus (run part 1 with ``--sizes`` equal to the real corpus's size to compare the two).

Part 2 (``--embedding``): corpus embedding of CLINC150 documents through the platform's chunked,
cached tasks: this process with the local runner (2 torch threads), a local Dask cluster of 1 and
of 2 workers; then a 10M-document projection from the measured rates.

    python benchmarks/scale.py [--sizes 100000 1000000] [--queries 1000] [--json]
    REFINE_DATA_DIR=... python benchmarks/scale.py --real [--ann flat ivf hnsw]
    REFINE_DATA_DIR=... python benchmarks/scale.py --embedding [--documents 6000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks._common import emit_json, machine_info, print_table

# The projection's job.
from benchmarks.scale_projection import CORPUS, QUERIES, K, embedding_runs, per_query_costs, projection

# ---- part 1: one cell on a synthetic corpus ------------------------------------------------------
RELEVANT_PER_QUERY = 50
# HNSW is measured up to this corpus size: its build inserts about 1,000-1,500 vectors/s here
# (d = 384, M = 32, efConstruction = 80, 2 cores; an aborted run had 262,144 of 1M in after ~4 min).
HNSW_MAX_DOCUMENTS = 300_000


def _peak_reset() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # pragma: no cover - not Linux
        pass


def _peak_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # pragma: no cover

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synthetic(n_docs: int, n_queries: int, dim: int = 384, seed: int = 0):
    """Unit document and query vectors with ``RELEVANT_PER_QUERY`` planted relevant documents per query.

    Query q has a topic t_q; its query vector and its relevant documents are t_q plus noise, every
    other document is a random direction. Written in chunks: peak memory is the corpus itself.
    """
    import numpy as np

    from refine_core.metrics import UnitDocuments
    from refine_core.qrels import Qrels

    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((n_queries, dim), dtype=np.float32)
    topics /= np.linalg.norm(topics, axis=1, keepdims=True)
    docs = np.empty((n_docs, dim), dtype=np.float32)
    for lo in range(0, n_docs, 1 << 17):
        hi = min(lo + (1 << 17), n_docs)
        docs[lo:hi] = rng.standard_normal((hi - lo, dim), dtype=np.float32)
    relevant = rng.choice(n_docs, size=n_queries * RELEVANT_PER_QUERY, replace=False)
    owner = np.repeat(np.arange(n_queries), RELEVANT_PER_QUERY)
    noise = docs[relevant] / np.sqrt(dim)
    docs[relevant] = topics[owner] + 2.0 * noise  # relevant: the topic, noisily
    docs /= np.linalg.norm(docs, axis=1, keepdims=True)
    queries = topics + 2.0 * rng.standard_normal((n_queries, dim), dtype=np.float32) / np.sqrt(dim)
    qrels = Qrels.from_pairs(
        owner, relevant, np.ones(relevant.size, np.float32), n_queries=n_queries, n_documents=n_docs
    )
    return UnitDocuments(docs), queries, qrels


def ann_side_by_side(docs, queries, brute_idx, k: int, kinds: tuple[str, ...]) -> list[dict[str, Any]]:
    """The select stage through FAISS: build, then ANN candidates (10·k) rescored by exact cosine;
    recall@k of the selection against the brute-force selection of the same run."""
    import numpy as np

    from corpus.ann import AnnIndex, AnnSettings, exact_top

    rows = []
    for kind in kinds:
        if kind == "hnsw" and docs.shape[0] > HNSW_MAX_DOCUMENTS:
            continue  # see HNSW_MAX_DOCUMENTS
        _peak_reset()
        start = time.perf_counter()
        ann = AnnIndex.build(docs, AnnSettings(kind=kind))
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        cands, _ = ann.search(queries, 10 * k)
        chosen = np.stack([exact_top(docs, q, c, k)[0] for q, c in zip(queries, cands)])
        select_s = time.perf_counter() - start
        found = sum(np.intersect1d(a, b).size for a, b in zip(chosen, brute_idx))
        rows.append(
            {
                "kind": kind,
                "build_s": round(build_s, 1),
                "select_s": round(select_s, 2),
                "peak_rss_mb": round(_peak_mb(), 0),
                f"recall@{k}": round(found / brute_idx.size, 4),
            }
        )
        del ann
    return rows


REAL_DATASETS = ("clinc150", "banking77", "nfcorpus", "snips")


def real_ann(kinds: tuple[str, ...], names: tuple[str, ...] = REAL_DATASETS) -> dict[str, Any]:
    """ANN recall on real embeddings: the documents of ``names`` as one corpus, all their queries."""
    import numpy as np

    from benchmarks.harness import load_data
    from refine_core.feedback import select_feedback_blocks
    from refine_core.metrics import UnitDocuments

    data, _ = load_data(names)
    docs = UnitDocuments(np.concatenate([d for (_, d, *_rest) in data.values()]).astype(np.float32))
    queries = np.concatenate([q for (q, *_rest) in data.values()]).astype(np.float32)
    start = time.perf_counter()
    brute = select_feedback_blocks(queries, docs, k=K)
    brute_s = time.perf_counter() - start
    return {
        "datasets": list(names),
        "documents": int(docs.vectors.shape[0]),
        "queries": int(queries.shape[0]),
        "brute_select_s": round(brute_s, 2),
        "ann": ann_side_by_side(docs.vectors, queries, brute, K, kinds),
    }


def one_cell(
    n_docs: int,
    n_queries: int,
    k: int = K,
    ann_kinds: tuple[str, ...] = (),
    corpus_shard: int | None = None,
    one_pass: bool = False,
) -> dict[str, Any]:
    """Time and peak RSS of each stage of one cell on a synthetic corpus; with ``corpus_shard``, the
    evaluate stage once more over corpus shards of that size (counts merged, as Dask workers do)."""
    import numpy as np

    from judging import oracle_scores
    from refine_core.evaluation import score_methods
    from refine_core.feedback import select_feedback_blocks
    from refine_core.refinement import refine

    stages: dict[str, tuple[float, float]] = {}
    out: dict[str, Any] = {}

    def timed(name: str, fn):
        _peak_reset()
        start = time.perf_counter()
        value = fn()
        stages[name] = (time.perf_counter() - start, _peak_mb())
        return value

    docs, queries, qrels = timed("generate (not in the cell)", lambda: synthetic(n_docs, n_queries))
    idx = timed("select top-K", lambda: select_feedback_blocks(queries, docs, k=k))
    scores, mask = timed("judge (oracle)", lambda: oracle_scores(qrels, idx))
    refined = timed("refine", lambda: refine(queries, idx, scores, mask=mask, documents=docs.vectors).vectors)

    def evaluate(documents, corpus_shard: int | str | None = "auto"):
        """Every method's measures over the whole corpus (the cell's inputs; corpus read as asked)."""
        return score_methods(
            queries,
            documents,
            qrels,
            feedback_idx=idx,
            judge_scores=scores,
            judge_mask=mask,
            round_vectors=[refined],
            corpus_shard=corpus_shard,
        )[0]

    def largest_change_of_a_mean(other) -> float:
        return max(
            abs(other[m].means[key] - v) for m, r in metrics.items() for key, v in r.means.items() if np.isfinite(v)
        )

    metrics = timed("evaluate 4 methods", lambda: evaluate(docs))
    if one_pass:
        # the whole corpus in one pass per query block, as before automatic shards (AUTO_SHARD_DOCUMENTS)
        idx_one = timed(
            "select top-K, one pass (not in the cell)",
            lambda: select_feedback_blocks(queries, docs, k=k, corpus_shard=None),
        )
        whole = timed("evaluate 4 methods, one pass (not in the cell)", lambda: evaluate(docs, None))
        out["one_pass_same_selection"] = float((np.sort(idx_one, axis=1) == np.sort(idx, axis=1)).mean())
        out["one_pass_max_abs_diff_of_means"] = largest_change_of_a_mean(whole)
    if corpus_shard:
        sharded = timed(
            f"evaluate, shards of {corpus_shard:,} (not in the cell)", lambda: evaluate(docs.vectors, corpus_shard)
        )
        diffs = [
            (float(np.nanmax(np.abs(sharded[m].per_query[name] - r.per_query[name]))), f"{m} {name}")
            for m, r in metrics.items()
            for name in r.per_query
            if np.isfinite(r.per_query[name]).any()
        ]
        out["sharded_max_abs_diff"], out["sharded_worst"] = max(diffs)
        out["sharded_max_abs_diff_of_means"] = largest_change_of_a_mean(sharded)
    if ann_kinds:
        out["ann"] = ann_side_by_side(docs.vectors, queries, idx, k, ann_kinds)
    cell = sum(s for name, (s, _) in stages.items() if "(not in the cell)" not in name)
    out.update(
        {
            "documents": n_docs,
            "queries": n_queries,
            "cell_s": round(cell, 1),
            "peak_rss_mb": round(max(m for _, m in stages.values()), 0),
            "corpus_mb": round(docs.vectors.nbytes / 2**20, 0),
            "qrels_mb": round(qrels.nbytes / 2**20, 2),
        }
    )
    out["stages"] = {name: {"s": round(s, 2), "peak_rss_mb": round(m, 0)} for name, (s, m) in stages.items()}
    out["map"] = {m: round(r.means["map"], 4) for m, r in metrics.items()}
    return out


def growth_exponent(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log y against log x (the exponent b of y ~ x^b)."""
    import numpy as np

    return float(np.polyfit(np.log(xs), np.log(ys), 1)[0]) if len(xs) >= 2 else float("nan")


def growth(
    sizes: list[int],
    queries: int,
    query_sizes: list[int],
    fixed_docs: int,
    ann_kinds: tuple[str, ...] = (),
    corpus_shard: int | None = None,
    one_pass: bool = False,
) -> dict[str, Any]:
    import gc

    one_cell(5_000, 50, corpus_shard=1_000 if corpus_shard else None)  # compile the kernels first
    runs = []
    for n in sizes:
        runs.append(one_cell(n, queries, ann_kinds=ann_kinds, corpus_shard=corpus_shard, one_pass=one_pass))
        gc.collect()
    q_runs = []
    for q in query_sizes:
        q_runs.append(one_cell(fixed_docs, q))
        gc.collect()
    head = (
        ["documents", "queries", "cell s", "peak RSS MB", "corpus MB", "qrels MB"]
        + [name for name in runs[0]["stages"]]
        + ["MAP orig → refined"]
    )
    if corpus_shard:
        head.append("sharded vs whole: max |Δ| per query (measure) / of a mean")
    if one_pass:
        head.append("one pass vs the cell: same selection / max |Δ| of a mean")
    table = []
    for r in runs + q_runs:
        table.append(
            [f"{r['documents']:,}", f"{r['queries']:,}", r["cell_s"], r["peak_rss_mb"], r["corpus_mb"], r["qrels_mb"]]
            + [f"{v['s']} s / {v['peak_rss_mb']:.0f} MB" for v in r["stages"].values()]
            + [f"{r['map']['baseline']:.3f} → {r['map']['refined']:.3f}"]
            + (
                [
                    f"{r['sharded_max_abs_diff']:.1e} ({r['sharded_worst']}) / {r['sharded_max_abs_diff_of_means']:.1e}"
                    if "sharded_max_abs_diff" in r
                    else ""
                ]
                if corpus_shard
                else []
            )
            + (
                [f"{r['one_pass_same_selection']:.4f} / {r['one_pass_max_abs_diff_of_means']:.1e}"]
                if "one_pass_same_selection" in r
                else ([""] if one_pass else [])
            )
        )
    exps = {
        "time_in_N": growth_exponent([r["documents"] for r in runs], [r["cell_s"] for r in runs]),
        "peak_rss_in_N": growth_exponent([r["documents"] for r in runs], [r["peak_rss_mb"] for r in runs]),
        "time_in_Q": growth_exponent([r["queries"] for r in q_runs], [r["cell_s"] for r in q_runs]),
        "peak_rss_in_Q": growth_exponent([r["queries"] for r in q_runs], [r["peak_rss_mb"] for r in q_runs]),
    }
    ann_table = [
        [
            f"{r['documents']:,}",
            a["kind"],
            a["build_s"],
            a["select_s"],
            a[f"recall@{K}"],
            a["peak_rss_mb"],
            r["stages"]["select top-K"]["s"],
        ]
        for r in runs
        for a in r.get("ann", [])
    ]
    return {
        "runs": runs,
        "query_runs": q_runs,
        "head": head,
        "table": table,
        "ann_table": ann_table,
        "exponents": {k: round(v, 2) for k, v in exps.items()},
    }


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="+",
        default=[100_000, 300_000, 1_000_000],
        help="corpus sizes N for the growth in N (queries fixed at --queries)",
    )
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument(
        "--query-sizes",
        type=int,
        nargs="*",
        default=[250, 500, 1000],
        help="query counts Q for the growth in Q (corpus fixed at --fixed-documents)",
    )
    parser.add_argument("--fixed-documents", type=int, default=300_000)
    parser.add_argument(
        "--ann",
        nargs="*",
        default=["ivf", "hnsw"],
        choices=["flat", "ivf", "hnsw"],
        help="FAISS kinds measured beside brute force for the select stage (none: --ann)",
    )
    parser.add_argument(
        "--corpus-shard",
        type=int,
        default=None,
        help="also evaluate over corpus shards of this many documents (merged counts, as on Dask)",
    )
    parser.add_argument(
        "--one-pass",
        action="store_true",
        help="also select and evaluate with the whole corpus in one pass per query block (no automatic shards)",
    )
    parser.add_argument(
        "--real", action="store_true", help="part 1b: FAISS recall on the shipped benchmarks' real embeddings"
    )
    parser.add_argument("--embedding", action="store_true", help="part 2: corpus embedding scale-out and projection")
    parser.add_argument("--documents", type=int, default=6000, help="CLINC150 documents to embed per run (part 2)")
    parser.add_argument("--chunk-size", type=int, default=1000)
    parser.add_argument("--doc-tokens", type=int, default=150, help="assumed tokens per judged document")
    parser.add_argument("--prompt-tokens", type=int, default=400, help="assumed prompt + query tokens per judge call")
    parser.add_argument("--json", action="store_true")
    return parser.parse_args()


def main() -> None:
    args = _arguments()

    info = machine_info()
    print(f"machine: {info}")
    result: dict[str, Any] = {"machine": info}
    if args.real:
        real = real_ann(tuple(args.ann) or ("flat", "ivf", "hnsw"))
        print(
            f"\nthe select stage through FAISS on real embeddings ({', '.join(real['datasets'])} in one corpus: "
            f"{real['documents']:,} documents, {real['queries']} queries; {10 * K} candidates, exact cosine on "
            f"them); recall@{K} against brute force ({real['brute_select_s']} s):"
        )
        print_table(list(real["ann"][0]), [list(r.values()) for r in real["ann"]])
        if args.json:
            emit_json({**result, "real": real})
        return
    if not args.embedding:
        g = growth(
            args.sizes,
            args.queries,
            args.query_sizes,
            args.fixed_documents,
            tuple(args.ann),
            args.corpus_shard,
            args.one_pass,
        )
        print(
            f"\none cell (select K={K}, oracle judge, refine, evaluate 4 methods), synthetic d=384, "
            f"{RELEVANT_PER_QUERY} relevant per query; time / peak RSS per stage:"
        )
        print_table(g["head"], g["table"])
        if g["ann_table"]:
            print(
                f"\nthe select stage through FAISS ({10 * K} candidates, exact cosine on them) beside brute force, "
                f"{args.queries} queries; recall@{K} against the brute-force selection:"
            )
            print_table(
                ["documents", "ANN", "build s", "select s", f"recall@{K}", "peak RSS MB", "brute-force select s"],
                g["ann_table"],
            )
        print(f"\ngrowth exponents (y ~ x^b): {g['exponents']}")
        result["growth"] = {k: v for k, v in g.items() if k not in ("head", "table", "ann_table")}
        if args.json:
            emit_json(result)
        return
    rows = embedding_runs(args.documents, args.chunk_size)
    print(f"\ncorpus embedding of {args.documents} CLINC150 documents, chunks of {args.chunk_size}, nothing cached:")
    print_table(list(rows[0]), [list(r.values()) for r in rows])
    costs = {dim: per_query_costs(dim) for dim in (384, 4096)}
    machine_rate = max(float(r["texts_per_s"]) for r in rows)
    table = projection(machine_rate, costs, args.doc_tokens, args.prompt_tokens)
    print(f"\nprojection: {CORPUS:,} documents, {QUERIES:,} queries, K={K} (from the rates measured above)")
    print_table(["what", "estimate", "note"], table)
    if args.json:
        emit_json(
            {
                **result,
                "embedding": rows,
                "per_query": {str(k): v for k, v in costs.items()},
                "projection": [dict(zip(("what", "estimate", "note"), r)) for r in table],
            }
        )


if __name__ == "__main__":
    main()
