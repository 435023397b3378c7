"""Unseen data: the settings chosen on the five benchmarks, run unchanged where no choice looked.

Every setting below was fixed from measurements on the five shipped benchmarks (docs/results.md)
before this script ran on anything else:

* Rocchio (beta 1.5, gamma 0.5): the weights the tuning halves of section 8 chose most often at
  20 judgments (7 of 15 dataset × judge settings);
* refined at lr 3e-4: the best single fixed lr of the lr section (within 0.01 of the best lr in
  17 of 25 settings); the paper's lr 1e-4 beside it;
* Rocchio → KL at (1.5, 0.5, lr 3e-4): the setting its tuning halves chose most often;
* refined + pull at (lr 3e-3, pull 0.1): the setting the tuning halves chose most often, and the
  fixed setting of ``benchmarks/lr_rules.py`` that stays within 0.03 of the best of everything;
* Rocchio → KL + pull at (1.5, 0.5, lr 1e-3, pull 0.03): the setting its tuning halves chose most
  often at 20 judgments (6 of 15).

The data sets are built from files already under ``REFINE_DATA_DIR`` that no benchmark uses:

* ``nfcorpus-dev`` and ``nfcorpus-train``: NFCorpus's BEIR dev and train qrels — query sets
  disjoint from the test queries of the ``nfcorpus`` benchmark (checked below), the same corpus;
* ``clinc150-test``: CLINC150's test utterances (4,500 documents no benchmark contains) with the
  150 intent descriptions as queries — new documents, the same queries as ``clinc150``.

Judges: the oracle and the noisy oracle at accuracy 0.9 and 0.8 (seed 3), at 20, 40 and 60
judgments per query (1–3 rounds). On every query: MAP per method, and paired one-sided t-tests
of the three new methods against Rocchio (same budget) and rerank-only (20 judgments),
Benjamini–Hochberg over the whole table, queries won / tied / lost.

    REFINE_DATA_DIR=... python benchmarks/unseen.py [--datasets nfcorpus-dev ...] [--json]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from benchmarks._common import emit_json
from benchmarks.beyond import ROUNDS, TIE, K, adjust_tests, judge_label, new_method_tests, per_query_ap
from refine_core.baselines import RocchioParams, rerank_only_scores
from refine_core.feedback import select_feedback
from refine_core.metrics import evaluate_rankings
from refine_core.refinement import RefineConfig
from refine_core.rounds import refine_rounds, rocchio_rounds

ACCURACIES = (1.0, 0.9, 0.8)
JUDGE_SEED = 3
ROCCHIO = RocchioParams(beta=1.5, gamma=0.5)
REFINED_LR = 3e-4
KL = RefineConfig(lr=3e-4)
PULL = RefineConfig(lr=3e-3, pull=0.1)
KL_PULL = RefineConfig(lr=1e-3, pull=0.03)
DATASETS = ("nfcorpus-dev", "nfcorpus-train", "clinc150-test")
METHODS = (
    ("rerank_only", "rerank-only"),
    ("rocchio", "Rocchio (1.5, 0.5)"),
    ("refined_paper", "refined (lr 1e-4)"),
    ("refined", "refined (lr 3e-4)"),
    ("rocchio_kl", "Rocchio → KL"),
    ("pull", "refined + pull"),
    ("rocchio_kl_pull", "Rocchio → KL + pull"),
)
NEW = ("pull", "rocchio_kl", "rocchio_kl_pull")


def unseen_benchmark(name: str, root: Path):
    """One of :data:`DATASETS`, built from the files under ``root`` (REFINE_DATA_DIR)."""
    from evaluations.loaders import PAPER_INSTRUCTIONS, intent_benchmark, load_beir
    from evaluations.readers import read_csv, read_json

    if name.startswith("nfcorpus-"):
        split = name.split("-", 1)[1]
        bench = load_beir(root / "nfcorpus", split=split, name=name)
        shipped = set(load_beir(root / "nfcorpus", split="test").queries["query_id"].to_list())
        overlap = shipped & set(bench.queries["query_id"].to_list())
        if overlap:
            raise ValueError(f"{name}: {len(overlap)} queries are also in the nfcorpus benchmark, e.g. {min(overlap)}")
        return bench
    if name == "clinc150-test":
        folder = root / "clinc150"
        data = read_json(folder / "data_full.json")
        mapping = read_csv(folder / "clinc150_intent_mapping.csv", ("intent_name", "intent_description"))
        return intent_benchmark(
            name=name,
            version="1",
            pairs=[(text, intent) for text, intent in data["test"]],
            query_text={r["intent_name"]: r["intent_description"] for r in mapping},
            embed_instruction=PAPER_INSTRUCTIONS["clinc150"],
            source=str(folder),
            doc_prefix="test-",
            dedupe=False,
        )
    raise ValueError(f"unknown unseen data set {name!r}; choose from {', '.join(DATASETS)}")


def run_setting(q, d, labels, pool, judge) -> dict[str, dict[int, np.ndarray]]:
    """Per-query AP of every method at every budget (1..ROUNDS rounds), on all queries."""
    from benchmarks.harness import pooled_scores

    rows = np.arange(q.shape[0])
    base_scores = pooled_scores(q, d, pool)
    fb = select_feedback(base_scores, k=K)
    scores, mask = judge(rows, fb)
    rerank = rerank_only_scores(base_scores, fb, np.nan_to_num(scores), mask=mask)

    def per_round(result) -> dict[int, np.ndarray]:
        return {r + 1: per_query_ap(result.round_vectors[r], d, labels, pool) for r in range(ROUNDS)}

    return {
        "baseline": {0: per_query_ap(q, d, labels, pool)},
        "rerank_only": {1: evaluate_rankings(rerank, labels, pool=pool, ks=(10,)).per_query["ap"]},
        "rocchio": per_round(rocchio_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, params=ROCCHIO)),
        "refined_paper": per_round(refine_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, config=RefineConfig())),
        "refined": per_round(
            refine_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, config=RefineConfig(lr=REFINED_LR))
        ),
        "rocchio_kl": per_round(
            rocchio_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, params=ROCCHIO, then_refine=KL)
        ),
        "pull": per_round(refine_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, config=PULL)),
        "rocchio_kl_pull": per_round(
            rocchio_rounds(q, d, judge, rounds=ROUNDS, k=K, pool=pool, params=ROCCHIO, then_refine=KL_PULL)
        ),
    }


def compare(ap: dict[str, dict[int, np.ndarray]]) -> dict:
    """MAP of every method and budget, and the paired tests of the new methods (raw p)."""
    table = {m: {b: float(np.nanmean(v)) for b, v in per.items()} for m, per in ap.items()}
    return {"map": table, "tests": new_method_tests(ap, NEW, "rocchio")}


def run(names: tuple[str, ...], root: Path) -> dict:
    from benchmarks.harness import embed, judge_of
    from tasks.storage import embedding_cache_dir

    out: dict = {}
    for name in names:
        bench = unseen_benchmark(name, root)
        q, d = embed(bench, embedding_cache_dir())
        labels, pool = bench.label_matrix()
        texts = (bench.query_texts(), bench.document_texts())
        print(f"{name}: {q.shape[0]} queries x {d.shape[0]} documents", flush=True)
        out[name] = {"queries": int(q.shape[0]), "documents": int(d.shape[0]), "judges": {}}
        for acc in ACCURACIES:
            ap = run_setting(q, d, labels, pool, judge_of(labels, texts, acc, seed=JUDGE_SEED))
            out[name]["judges"][str(acc)] = compare(ap)
    adjust_tests([cell for per in out.values() for cell in per["judges"].values()])
    return out


def render(result: dict) -> list[str]:
    lines = [
        "| data | judge | judgments | original | " + " | ".join(label for _, label in METHODS) + " |",
        "|---|---|---|---|" + "---|" * len(METHODS),
    ]
    for name, per in result.items():
        for acc, cell in per["judges"].items():
            for b in range(1, ROUNDS + 1):
                values = [cell["map"][m].get(b) for m, _ in METHODS]
                shown = ["" if v is None else f"{v:.3f}" for v in values]
                original = f"{cell['map']['baseline'][0]:.3f}" if b == 1 else ""
                lines.append(f"| {name} | {judge_label(acc)} | {b * K} | {original} | " + " | ".join(shown) + " |")
    lines += ["", "| data | judge | comparison | ΔMAP | p (BH) | W / T / L |", "|---|---|---|---|---|---|"]
    labels = dict(METHODS)
    for name, per in result.items():
        for acc, cell in per["judges"].items():
            for key, t in cell["tests"].items():
                method, rest = key.split(" vs ")
                against, budget = rest.split(" @")
                star = " *" if t["p_bh"] < 0.05 else ""
                lines.append(
                    f"| {name} | {judge_label(acc)} | {labels[method]} vs {labels[against]} at {int(budget) * K} "
                    f"| {t['delta']:+.4f} | {t['p_bh']:.2g}{star} | {t['wins']} / {t['ties']} / {t['losses']} |"
                )
    return lines


def render_unseen(result: dict) -> list[str]:
    """Section 9 of docs/results.md."""
    return [
        "## 9. Unseen data: the settings of section 8, fixed, on sets no choice looked at",
        "",
        "`benchmarks/unseen.py`. Settings fixed from sections 3 and 8 before this ran: Rocchio (beta 1.5, gamma 0.5), "
        f"refined at lr {REFINED_LR:g}, Rocchio → KL at lr {KL.lr:g} from that Rocchio vector, refined + pull at "
        f"lr {PULL.lr:g}, pull {PULL.pull:g}, Rocchio → KL + pull at lr {KL_PULL.lr:g}, pull {KL_PULL.pull:g} from "
        "the Rocchio vector. Data: NFCorpus's BEIR dev and train query sets (disjoint from the "
        "nfcorpus benchmark's test queries; the same corpus) and CLINC150's 4,500 test utterances with the 150 intent "
        "descriptions (new documents, the same queries). Every query is reported; p: one-sided paired t-test, "
        "Benjamini–Hochberg over every test of this section; W / T / L: queries won / tied / lost "
        f"(|ΔAP| < {TIE:g} is a tie).",
        "",
        *render(result),
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=None, choices=DATASETS)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from evaluations.registry import data_dir

    started = time.perf_counter()
    result = run(tuple(args.datasets or DATASETS), data_dir())
    print("\n".join(render(result)))
    print(f"({time.perf_counter() - started:.0f} s)")
    if args.json:
        emit_json(result)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
