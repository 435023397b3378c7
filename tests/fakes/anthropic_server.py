"""A fake Anthropic Messages API on 127.0.0.1 that speaks the real wire protocol.

It answers the requests the Claude judge sends (pointwise text ratings, listwise forced tool
calls) from gold labels, implements the Message Batches endpoints, counts every request per
(query, document) pair, tracks concurrency, checks that every document arrived inside its
delimiters, and injects faults on demand (HTTP 429 with retry-after, 529, 500, responses
slower than the client timeout, malformed bodies, malformed ratings, tool calls with missing
or extra indices, truncated responses).

Used by the tests and by ``benchmarks/judge_throughput.py``; the real ``anthropic`` SDK is
pointed at it with ``base_url``.
"""

from __future__ import annotations

import html
import itertools
import json
import random
import re
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_QUERY = re.compile(r"<query>(.*?)</query>", re.S)
_DOC = re.compile(r"<document(?: index=\"(\d+)\")?>(.*?)</document>", re.S)
_HYDE_QUERY = re.compile(r"\nQuery: (.*?)\nPassage:\s*$", re.S)

FAULTS = ("429", "529", "500", "slow", "malformed_body", "bad_text", "missing_index", "extra_index", "truncated")


@dataclass
class FaultPlan:
    """Which faults to inject: ``queue`` is consumed first (one fault per request), then
    ``rates`` draw at random (seeded); ``fail_queries`` always get HTTP 500."""

    rates: dict[str, float] = field(default_factory=dict)
    queue: deque[str] = field(default_factory=deque)
    fail_queries: set[str] = field(default_factory=set)
    seed: int = 0
    retry_after: str = "0"
    slow_seconds: float = 2.0

    def __post_init__(self) -> None:
        unknown = set(self.rates) - set(FAULTS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        self._rng = random.Random(self.seed)
        self._lock = threading.Lock()

    def draw(self) -> str | None:
        with self._lock:
            if self.queue:
                return self.queue.popleft()
            u = self._rng.random()
            acc = 0.0
            for kind, rate in sorted(self.rates.items()):
                acc += rate
                if u < acc:
                    return kind
        return None


@dataclass
class Stats:
    requests: int = 0
    message_requests: int = 0
    batches_created: int = 0
    status: Counter[int] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    pairs_answered: Counter[tuple[str, str]] = field(default_factory=Counter)
    pairs_requested: Counter[tuple[str, str]] = field(default_factory=Counter)
    late_answers: Counter[tuple[str, str]] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    delimiter_violations: list[str] = field(default_factory=list)
    generations: Counter[str] = field(default_factory=Counter)
    bodies: list[dict] = field(default_factory=list)
    auth_headers: list[str] = field(default_factory=list)


class FakeAnthropic:
    """The fake server. ``gold(query, document) -> bool`` decides relevance.

    Example::

        with FakeAnthropic(lambda q, d: "card" in d) as server:
            client = anthropic.Anthropic(api_key="test-key", base_url=server.base_url)
    """

    def __init__(
        self,
        gold: Callable[[str, str], bool],
        *,
        api_key: str = "test-key",
        latency: float = 0.0,
        faults: FaultPlan | None = None,
        keep_bodies: bool = False,
        batch_polls_before_end: int = 1,
        passage: Callable[[str], str] | None = None,
    ) -> None:
        self.gold = gold
        # HyDE requests (a prompt ending in "Passage:") get passage(query); default: a bland one.
        self.passage = passage or (lambda query: f"A passage about {query}.")
        self.api_key = api_key
        self.latency = latency
        self.faults = faults or FaultPlan()
        self.keep_bodies = keep_bodies
        self.batch_polls_before_end = batch_polls_before_end
        self.stats = Stats()
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._batches: dict[str, dict] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> FakeAnthropic:
        server = _QuietServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset_stats(self) -> None:
        with self._lock:
            self.stats = Stats()

    # ---- the Messages API ---------------------------------------------------------------------
    def parse_prompt(self, body: dict) -> tuple[str, list[tuple[int | None, str]]]:
        """(query, [(index, document)]) as the judge sent them, unescaped."""
        blocks = body["messages"][0]["content"]
        text = "".join(b.get("text", "") for b in blocks) if isinstance(blocks, list) else str(blocks)
        match = _QUERY.search(text)
        query = html.unescape(match.group(1)) if match else ""
        docs = [(int(i) if i else None, html.unescape(d)) for i, d in _DOC.findall(text)]
        # Delimiting check: every document opened is closed, and nothing inside looks like a tag.
        opened = len(re.findall(r"<document[ >]", text))
        closed = text.count("</document>")
        if opened != closed or opened != len(docs):
            self.stats.delimiter_violations.append(text[:300])
        for _, raw in _DOC.findall(text):
            if "<" in raw or ">" in raw:
                self.stats.delimiter_violations.append(raw[:300])
        return query, docs

    def hyde_message(self, body: dict, text: str) -> tuple[int, dict]:
        match = _HYDE_QUERY.search(text)
        query = match.group(1).strip() if match else ""
        with self._lock:
            self.stats.generations[query] += 1
            if self.keep_bodies:
                self.stats.bodies.append(body)
        passage = self.passage(query)
        usage = {
            "input_tokens": len(text) // 4 + 10,
            "output_tokens": len(passage) // 4 + 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        return 200, {
            "id": f"msg_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "stop_sequence": None,
            "usage": usage,
            "content": [{"type": "text", "text": passage}],
            "stop_reason": "end_turn",
        }

    def message(self, body: dict, fault: str | None) -> tuple[int, dict | str]:
        content = body["messages"][0]["content"]
        text = "".join(b.get("text", "") for b in content) if isinstance(content, list) else str(content)
        if text.rstrip().endswith("Passage:"):
            return self.hyde_message(body, text)
        query, docs = self.parse_prompt(body)
        with self._lock:
            for _, d in docs:
                self.stats.pairs_requested[(query, d)] += 1
        if query in self.faults.fail_queries:
            return 500, _error("api_error", "injected failure for this query")
        usage = {
            "input_tokens": sum(len(b.get("text", "")) for b in body["messages"][0]["content"]) // 4 + 50,
            "output_tokens": 3 if not body.get("tools") else 8 * len(docs),
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }
        base = {
            "id": f"msg_{next(self._ids)}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "fake"),
            "stop_sequence": None,
            "usage": usage,
        }
        if body.get("tools"):
            scores = [
                {"index": i if i is not None else k, "relevance": 90 if self.gold(query, d) else 10}
                for k, (i, d) in enumerate(docs)
            ]
            if fault == "missing_index" and scores:
                scores = scores[1:]
            if fault == "extra_index":
                scores = [*scores, {"index": len(docs) + 5, "relevance": 50}]
            if fault == "truncated":
                return 200, {**base, "content": [{"type": "text", "text": "I will rate"}], "stop_reason": "max_tokens"}
            answered = docs if fault != "missing_index" else docs[1:]
            content = [
                {
                    "type": "tool_use",
                    "id": f"toolu_{next(self._ids)}",
                    "name": body["tools"][0]["name"],
                    "input": {"scores": scores},
                }
            ]
            stop = "tool_use"
        else:
            ((_, doc),) = docs
            rating = "90" if self.gold(query, doc) else "10"
            answered = docs
            if fault == "bad_text":
                rating, answered = f"Sure! The rating is {rating}.", []
            if fault == "truncated":
                return 200, {**base, "content": [{"type": "text", "text": ""}], "stop_reason": "max_tokens"}
            content = [{"type": "text", "text": rating}]
            stop = "end_turn"
        with self._lock:
            for _, d in answered:
                # An answer computed for a request the client has already given up on (a "slow"
                # fault) is counted apart: the client never receives it.
                target = self.stats.late_answers if fault == "slow" else self.stats.pairs_answered
                target[(query, d)] += 1
        return 200, {**base, "content": content, "stop_reason": stop}

    # ---- batches ---------------------------------------------------------------------------------
    def create_batch(self, body: dict) -> dict:
        batch_id = f"msgbatch_{next(self._ids)}"
        with self._lock:
            self.stats.batches_created += 1
        results = []
        for item in body["requests"]:
            status, payload = self.message(item["params"], None)
            if status == 200:
                results.append({"custom_id": item["custom_id"], "result": {"type": "succeeded", "message": payload}})
            else:
                results.append({"custom_id": item["custom_id"], "result": {"type": "errored", "error": payload}})
        self._batches[batch_id] = {"results": results, "polls": 0}
        return self._batch_object(batch_id)

    def _batch_object(self, batch_id: str) -> dict:
        info = self._batches[batch_id]
        ended = info["polls"] >= self.batch_polls_before_end
        n = len(info["results"])
        ok = sum(r["result"]["type"] == "succeeded" for r in info["results"])
        return {
            "id": batch_id,
            "type": "message_batch",
            "processing_status": "ended" if ended else "in_progress",
            "request_counts": {
                "processing": 0 if ended else n,
                "succeeded": ok if ended else 0,
                "errored": (n - ok) if ended else 0,
                "canceled": 0,
                "expired": 0,
            },
            "created_at": "2026-11-26T00:00:00Z",
            "expires_at": "2026-11-27T00:00:00Z",
            "ended_at": "2026-11-26T00:00:01Z" if ended else None,
            "archived_at": None,
            "cancel_initiated_at": None,
            "results_url": f"{self.base_url}/v1/messages/batches/{batch_id}/results" if ended else None,
        }


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up (timeouts, killed processes) are expected here: no traceback."""

    def handle_error(self, request, client_address) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


def _error(kind: str, message: str) -> dict:
    return {"type": "error", "error": {"type": kind, "message": message}}


def _handler(fake: FakeAnthropic) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # keep test output clean
            return

        def _send(
            self,
            status: int,
            payload: dict | str,
            headers: dict[str, str] | None = None,
            content_type: str = "application/json",
        ) -> None:
            data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", f"req_{next(fake._ids)}")
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout): that is the point of a slow fault
            with fake._lock:
                fake.stats.status[status] += 1

        def _authorised(self) -> bool:
            header = self.headers.get("Authorization", "") or self.headers.get("x-api-key", "")
            with fake._lock:
                fake.stats.auth_headers.append(header)
            return header in (f"Bearer {fake.api_key}", fake.api_key)

        def do_GET(self) -> None:
            with fake._lock:
                fake.stats.requests += 1
            if not self._authorised():
                return self._send(401, _error("authentication_error", "invalid x-api-key"))
            parts = self.path.split("?")[0].strip("/").split("/")
            if len(parts) >= 4 and parts[:3] == ["v1", "messages", "batches"] and parts[3] in fake._batches:
                batch_id = parts[3]
                if len(parts) == 5 and parts[4] == "results":
                    lines = "\n".join(json.dumps(r) for r in fake._batches[batch_id]["results"]) + "\n"
                    return self._send(200, lines, content_type="application/binary")
                fake._batches[batch_id]["polls"] += 1
                return self._send(200, fake._batch_object(batch_id))
            return self._send(404, _error("not_found_error", self.path))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            raw = self.rfile.read(length)
            with fake._lock:
                fake.stats.requests += 1
                fake.stats.in_flight += 1
                fake.stats.max_in_flight = max(fake.stats.max_in_flight, fake.stats.in_flight)
            try:
                if not self._authorised():
                    return self._send(401, _error("authentication_error", "invalid x-api-key"))
                body = json.loads(raw)
                if fake.keep_bodies:
                    with fake._lock:
                        fake.stats.bodies.append(body)
                path = self.path.split("?")[0].rstrip("/")
                if path == "/v1/messages/batches":
                    return self._send(200, fake.create_batch(body))
                if path != "/v1/messages":
                    return self._send(404, _error("not_found_error", path))
                with fake._lock:
                    fake.stats.message_requests += 1
                if fake.latency:
                    time.sleep(fake.latency)
                fault = fake.faults.draw()
                if fault:
                    with fake._lock:
                        fake.stats.faults[fault] += 1
                if fault == "429":
                    return self._send(
                        429, _error("rate_limit_error", "slow down"), {"retry-after": fake.faults.retry_after}
                    )
                if fault == "529":
                    return self._send(529, _error("overloaded_error", "overloaded"))
                if fault == "500":
                    return self._send(500, _error("api_error", "internal"))
                if fault == "slow":
                    time.sleep(fake.faults.slow_seconds)
                if fault == "malformed_body":
                    return self._send(200, '{"id": "msg_broken", "content": [')
                status, payload = fake.message(body, fault)
                return self._send(status, payload)
            finally:
                with fake._lock:
                    fake.stats.in_flight -= 1

    return Handler
