"""A sentence-transformers CrossEncoder as the judge (the ReFIT setup).

The score is the model's own probability of relevance, fixed per model and never chosen from
the data: a one-logit head goes through the model's configured activation
(sentence-transformers' ``activation_fn``, a sigmoid by default; an identity activation is
replaced by the sigmoid so the score is a probability); a head with two or more classes goes
through a softmax over its classes and the "relevant" class (the last) is read. Pair it with
``refine(..., config=REFIT)`` (min-max normalisation, judge temperature 2).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from judging.base import JudgeConfigError, JudgeIdentity, JudgeResponse, Judgment, Usage


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
            raise JudgeConfigError(
                f"cross-encoder {model!r}: not a folder and not in the local Hugging Face cache (HF_HUB_OFFLINE is set)"
            )


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
        except Exception as exc:
            raise JudgeConfigError(
                f"cross-encoder {model!r} could not be loaded: {type(exc).__name__}: {exc}"
            ) from None
        import torch

        self.batch_size = batch_size
        self.num_labels = int(self.model.num_labels)
        own = self.model.activation_fn
        if self.num_labels >= 2:
            self.activation = "softmax"
        elif isinstance(own, torch.nn.Identity):
            self.activation = "sigmoid"  # a probability is needed; the model is configured for raw logits
        else:
            self.activation = type(own).__name__.lower()
        self._own = own
        self.identity = JudgeIdentity.of(
            "cross-encoder",
            model,
            f"cross-encoder-{self.activation}",
            "pair-v2",
            fingerprint=weights_fingerprint(model),
            labels=self.num_labels,
        )

    def logits(self, query: str, documents: Sequence[str]) -> np.ndarray:
        """The head's raw outputs, ``(n,)`` or ``(n, classes)``."""
        import torch

        return np.asarray(
            self.model.predict(
                [(query, d) for d in documents],
                batch_size=self.batch_size,
                show_progress_bar=False,
                activation_fn=torch.nn.Identity(),
            ),
            dtype=np.float64,
        )

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        import torch

        started = time.perf_counter()
        raw = self.logits(query, documents)
        if self.num_labels >= 2:
            shifted = raw - raw.max(axis=1, keepdims=True)
            probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
            scores, shown = probs[:, -1], raw[:, -1]
        elif self.activation == "sigmoid" and isinstance(self._own, torch.nn.Identity):
            shown = raw.reshape(-1)
            scores = 1.0 / (1.0 + np.exp(-shown))
        else:
            shown = raw.reshape(-1)
            scores = self._own(torch.from_numpy(shown)).numpy()
        verdicts = [
            Judgment(score=float(s), raw=f"logit={r:.6g}")
            if np.isfinite(s) and 0.0 <= s <= 1.0
            else Judgment.failure("ScoreOutsideUnitInterval", f"{self.activation}({r:.6g}) = {s!r}")
            for s, r in zip(scores, shown)
        ]
        return JudgeResponse(verdicts, Usage(requests=1, latency_s=time.perf_counter() - started))


def weights_fingerprint(model: str) -> str:
    """The weights' identity: the folder's files (configs whole, weights by size and ends); for a
    Hub id, its snapshot folder in the local cache (whose path names the revision)."""
    from pathlib import Path

    from embedders.models import model_fingerprint

    folder = Path(model).expanduser()
    if not folder.is_dir():
        from huggingface_hub import try_to_load_from_cache

        config = try_to_load_from_cache(model, "config.json")
        folder = Path(config).parent if isinstance(config, str) else folder
    return model_fingerprint(folder if folder.is_dir() else None, model)


def from_spec(spec: Any, bench: Any = None) -> CrossEncoderJudge:
    """The cross-encoder judge of a config's judge spec."""
    return CrossEncoderJudge(spec.model or "")
