"""Refinement on a user's own corpus: index it, search it, classify every document.

Three operations, no Prefect needed:

* :func:`build_index` embeds a corpus (``id`` + ``text``) into a folder: the vectors
  (``vectors.npy``), the documents (``documents.parquet``) and ``index.json`` naming the model
  and a hash of the content. Embedding goes through the :class:`EmbeddingCache` in chunks, so
  an interrupted build resumes where it stopped and a rebuild of unchanged text is free.
* :func:`search` embeds a query, has the judge score the top ``k`` documents, refines the query
  vector (``rounds`` times) and re-ranks the whole corpus.
* :func:`classify` does the same for a criterion, then picks a decision threshold on the refined
  similarity from the judged documents (optionally judging documents near it to calibrate),
  and labels every document, with an estimate of the number of positives and an interval.

Example:
    >>> from corpus import build_index, search
    >>> index = build_index(["a cat", "a dog"], ids=["1", "2"], folder="idx", embedder=embedder)  # doctest: +SKIP
    >>> search(index, "kittens", judge=judge, k=2).top_ids  # doctest: +SKIP
"""

# One module per concern: index (reading a corpus, the index folder, ANN), query (the judged
# refinement loop on one query), search, classify. Everything is importable from here, as before
# the split; the calibration statistics are refine_core.calibration's, re-exported because they
# were part of this module's API.
from corpus.classify import Classification, classify, write_labels
from corpus.index import (
    ANN_CANDIDATES,
    INDEX_FORMAT,
    SCORE_CHUNK,
    CorpusError,
    CorpusIndex,
    build_ann,
    build_index,
    check_corpus,
    check_vectors,
    corpus_scores,
    documents_hash,
    read_corpus,
    read_vectors,
)
from corpus.query import (
    RECOMMENDED_LR,
    RECOMMENDED_ROCCHIO,
    RECOMMENDED_START,
    Refinement,
    refine_query,
)
from corpus.search import SearchHit, SearchResult, search
from refine_core.calibration import best_threshold_f1 as best_threshold_f1
from refine_core.calibration import binary_metrics as binary_metrics
from refine_core.calibration import choose_threshold as choose_threshold
from refine_core.calibration import label_documents as label_documents
from refine_core.calibration import positive_interval as positive_interval
from refine_core.calibration import rank_bands as rank_bands
from refine_core.calibration import stratified_estimate as stratified_estimate
from refine_core.calibration import stratified_sample as stratified_sample
from refine_core.calibration import tail_warning as tail_warning

__all__ = [
    "ANN_CANDIDATES",
    "INDEX_FORMAT",
    "RECOMMENDED_LR",
    "RECOMMENDED_ROCCHIO",
    "RECOMMENDED_START",
    "SCORE_CHUNK",
    "Classification",
    "CorpusError",
    "CorpusIndex",
    "Refinement",
    "SearchHit",
    "SearchResult",
    "best_threshold_f1",
    "binary_metrics",
    "build_ann",
    "build_index",
    "check_corpus",
    "check_vectors",
    "choose_threshold",
    "classify",
    "corpus_scores",
    "documents_hash",
    "label_documents",
    "positive_interval",
    "rank_bands",
    "read_corpus",
    "read_vectors",
    "refine_query",
    "search",
    "stratified_estimate",
    "stratified_sample",
    "tail_warning",
    "write_labels",
]
