"""The registry of judge kinds: adding a judge is one module and one entry in JUDGE_KINDS."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from evaluations.config import ConfigError, JudgeSpec, SweepConfig, parse_config
from judging import JudgeRequest, JudgmentLedger, run_judge
from judging.kinds import JUDGE_KINDS, JudgeKind, corpus_kinds
from tasks.judging import build_judge

LENGTH_JUDGE = '''
from typing import Any

from judging.base import JudgeIdentity, JudgeResponse, Judgment


class LengthJudge:
    """Relevant when the document is longer than the query: a judge in one module."""

    documents_per_request = None

    def __init__(self, model: str) -> None:
        self.identity = JudgeIdentity.of("length", model, "pointwise", "v1")

    def judge(self, *, query, documents, task_instruction):
        return JudgeResponse([Judgment(score=float(len(d) > len(query))) for d in documents])


def from_spec(spec: Any, bench: Any = None) -> LengthJudge:
    return LengthJudge(spec.model)
'''


@pytest.fixture
def length_kind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JudgeKind:
    (tmp_path / "length_judge.py").write_text(textwrap.dedent(LENGTH_JUDGE), encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    kind = JudgeKind("length", "length_judge", needs_model=True)
    monkeypatch.setitem(JUDGE_KINDS, "length", kind)
    yield kind
    sys.modules.pop("length_judge", None)


def test_a_judge_added_as_one_module_and_one_entry_is_configured_built_and_asked(
    length_kind: JudgeKind, tmp_path: Path
) -> None:
    from flows.corpus_cli import judge_spec

    config = SweepConfig.model_validate(
        {"name": "x", "benchmarks": [{"name": "clinc150"}], "judges": [{"kind": "length", "model": "chars"}]}
    )
    spec = config.judges[0]
    assert spec.registered is length_kind and not spec.paid and spec.label == "length:chars"
    assert "length" in corpus_kinds() and judge_spec("length:chars", None, 4) == spec
    judge = build_judge(spec)
    report = run_judge(
        judge,
        [JudgeRequest(query="long query", documents=("short", "a much longer document"))],
        ledger=JudgmentLedger(f"sqlite:///{tmp_path / 'ledger.db'}"),
    )
    assert [j.score for j in report.judgments[0]] == [0.0, 1.0]
    with pytest.raises(ValueError, match="length needs model"):
        JudgeSpec(kind="length")


def test_an_unknown_kind_is_named_with_the_kinds_there_are() -> None:
    with pytest.raises(ValueError, match=r"unknown judge kind 'claude'; the kinds are oracle, noisy-oracle, anthropic"):
        JudgeSpec(kind="claude")
    with pytest.raises(ConfigError, match=r"judges.0.kind: Value error, unknown judge kind 'claude'"):
        parse_config({"name": "x", "benchmarks": [{"name": "clinc150"}], "judges": [{"kind": "claude"}]})


def test_the_registry_says_what_each_kind_is() -> None:
    """Paid kinds are budgeted, oracles cannot judge a user's corpus, only anthropic-batch uses
    Message Batches, and local models are checked and fingerprinted without an API."""
    assert {k for k, v in JUDGE_KINDS.items() if v.paid} == {"anthropic", "anthropic-batch", "openai-compatible"}
    assert corpus_kinds() == ["anthropic", "openai-compatible", "local-lm", "cross-encoder"]
    assert [k for k, v in JUDGE_KINDS.items() if v.batches] == ["anthropic-batch"]
    assert {k for k, v in JUDGE_KINDS.items() if v.check} == {"local-lm", "cross-encoder"}
    assert JudgeSpec(kind="openai-compatible", model="m", base_url="http://x").paid
    assert not JudgeSpec(kind="local-lm", model="m").paid
