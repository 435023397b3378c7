"""refine_core: the pure library behind refine-eval.

Arrays in, arrays out: no network, database, file format, model or orchestration library (the
import contracts in pyproject.toml keep it so). The entry point is :func:`refine`. The services
are packages of their own: ``judging`` (the judges, their ledger and spend), ``embedders``
(models, the embedding cache, vectors from files), ``generators`` (HyDE) and ``corpus`` (a
user's corpus index: index, search, classify).
"""

from __future__ import annotations

from refine_core import _moved
from refine_core.baselines import rerank_only_scores, rocchio
from refine_core.feedback import FeedbackStrategy, TopK, TopKPlusRandom, select_feedback
from refine_core.metrics import MetricsResult, cosine_scores, evaluate_rankings
from refine_core.qrels import Qrels
from refine_core.refinement import PAPER, REFIT, RefineConfig, RefineResult, refine
from refine_core.rounds import RoundsResult, refine_rounds
from refine_core.statistics import PairedTest, benjamini_hochberg, bootstrap_delta_ci, paired_ttest

_moved.install()  # the old refine_core.judges / .corpus / ... paths, for one release

__all__ = [
    "PAPER",
    "REFIT",
    "FeedbackStrategy",
    "MetricsResult",
    "PairedTest",
    "Qrels",
    "RefineConfig",
    "RefineResult",
    "RoundsResult",
    "TopK",
    "TopKPlusRandom",
    "benjamini_hochberg",
    "bootstrap_delta_ci",
    "cosine_scores",
    "evaluate_rankings",
    "paired_ttest",
    "refine",
    "refine_rounds",
    "rerank_only_scores",
    "rocchio",
    "select_feedback",
]
