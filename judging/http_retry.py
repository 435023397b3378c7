"""One retry policy for the OpenAI-compatible endpoints (the judge and the HyDE generator).

The Anthropic SDK retries by itself (``max_retries``); for plain HTTP endpoints this module does
the same: transport errors and the statuses that mean "try again" (timeouts, conflicts, rate
limits, server errors, overload) are retried with exponential backoff from 0.5 s, doubled up to
30 s, with up to 25 % random jitter, and a ``Retry-After`` header is honoured as a lower bound.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0


def post_with_retries(
    client: Any, url: str, body: dict[str, object], *, max_retries: int, sleep: Callable[[float], None] = time.sleep
) -> tuple[Any | None, str | None, bool]:
    """POST ``body`` as JSON with up to ``max_retries`` retries.

    Returns ``(response, None, False)`` for HTTP 200; otherwise ``(None, error, exhausted)``,
    ``error`` naming the last failure (``HTTP 503``, ``ConnectTimeout``) and ``exhausted`` True
    when it was retryable but the retries ran out (False: a status not worth retrying).
    """
    import httpx

    delay = FIRST_DELAY_S
    error = "unknown"
    for attempt in range(max_retries + 1):
        try:
            response = client.post(url, json=body)
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        else:
            if response.status_code == 200:
                return response, None, False
            error = f"HTTP {response.status_code}"
            if response.status_code not in RETRY_STATUS:
                return None, error, False
            retry_after = response.headers.get("retry-after")
            if retry_after:
                try:
                    delay = max(delay, float(retry_after))
                except ValueError:
                    pass
        if attempt < max_retries:
            sleep(delay * (1 + random.random() * 0.25))
            delay = min(delay * 2, MAX_DELAY_S)
    return None, error, True
