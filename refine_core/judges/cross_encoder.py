"""A sentence-transformers CrossEncoder as the judge (the ReFIT setup).

Scores pass through a sigmoid when the model outputs raw logits, so they lie in [0, 1];
pair it with ``refine(..., config=REFIT)`` (min-max normalisation, judge temperature 2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np

from refine_core.judges.base import JudgeConfigError, JudgeIdentity, Judgment, JudgeResponse, Usage


def check_cross_encoder_model(model: str) -> None:
    """Raise :class:`JudgeConfigError` unless ``model`` is a local folder with a config, or a Hub
    id that can be had (in the local cache when ``HF_HUB_OFFLINE`` is set), without loading it."""
    import os
    from pathlib import Path

    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise JudgeConfigError(f"cross-encoder {model!r}: the folder has no config.json")
        return
    if model.startswith((".", "/", "~")):
        raise JudgeConfigError(f"cross-encoder {model!r}: no such folder")
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model, "config.json"), str):
            raise JudgeConfigError(f"cross-encoder {model!r}: not a folder and not in the local Hugging Face cache "
                                   "(HF_HUB_OFFLINE is set)")


class CrossEncoderJudge:
    """Cross-encoder relevance scores for (query, document) pairs.

    Args:
        model: Hub id or local folder of a sentence-transformers CrossEncoder.
        batch_size: pairs per forward pass.
        device: torch device.
    """

    documents_per_request: int | None = None

    def __init__(self, model: str, *, batch_size: int = 32, device: str | None = None) -> None:
        from sentence_transformers import CrossEncoder

        try:
            self.model = CrossEncoder(model, device=device)
        except Exception as exc:  # noqa: BLE001
            raise JudgeConfigError(f"cross-encoder {model!r} could not be loaded: {type(exc).__name__}: {exc}") from None
        self.batch_size = batch_size
        self.identity = JudgeIdentity.of("cross-encoder", model, "cross-encoder-sigmoid", "pair-v1")

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        started = time.perf_counter()
        raw = np.asarray(self.model.predict([(query, d) for d in documents], batch_size=self.batch_size,
                                            show_progress_bar=False), dtype=np.float64)
        if raw.ndim == 2:  # a two-class head: take the "relevant" column
            raw = raw[:, -1]
        scores = raw if ((raw >= 0) & (raw <= 1)).all() else 1.0 / (1.0 + np.exp(-raw))
        verdicts = [Judgment(score=float(s), raw=f"{r:.6g}") if np.isfinite(s) else Judgment.failure("NonFiniteScore")
                    for s, r in zip(scores, raw)]
        return JudgeResponse(verdicts, Usage(requests=1, latency_s=time.perf_counter() - started))
