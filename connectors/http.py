"""What the connectors' HTTP clients share: which answers are worth another try, how long to wait before it, and
JSON read with exact decimals. Each client keeps its own request loop (tenacity), pacing and error messages."""

from __future__ import annotations

import datetime as dt
import email.utils
import json
from decimal import Decimal
from typing import Any

import httpx
import tenacity

MAX_RETRY_AFTER = 120.0  # seconds: a longer Retry-After is cut to this (the next try is refused again, or not)


class Retryable(Exception):
    """An answer worth another try: a 429, a 5xx, or a source's transient error (Efimis' ``EXECUTION_TIMEOUT``).
    ``status`` is the HTTP status when there is one; ``what`` says what came back; ``wait`` is the answer's
    ``Retry-After`` in seconds, when it gave one."""

    def __init__(self, what: int | str, wait: float | None = None):
        super().__init__(f"HTTP {what}" if isinstance(what, int) else what)
        self.status = what if isinstance(what, int) else None
        self.what, self.wait = str(what), wait


def retry_after(response: httpx.Response) -> float | None:
    """The answer's ``Retry-After`` in seconds, in either of its forms (seconds, or an HTTP date); None when it has
    none or an unreadable one."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return max(0.0, (when - dt.datetime.now(dt.UTC)).total_seconds())


class RetryWait(tenacity.wait.wait_base):
    """The wait before the next try: the answer's ``Retry-After`` (at most MAX_RETRY_AFTER) when it gave one, else
    jittered exponential backoff from half a second up to 30 seconds. ``paced``: a 429 adds no wait of its own,
    because the client's pacer already holds every request until the 429's ``Retry-After`` has passed."""

    def __init__(self, *, paced: bool = False) -> None:
        self.paced = paced
        self.backoff = tenacity.wait_exponential_jitter(multiplier=0.5, max=30, jitter=0.5)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, Retryable):
            if self.paced and exc.status == 429:
                return 0.0
            if not self.paced and exc.wait is not None:
                return min(exc.wait, MAX_RETRY_AFTER)
        return self.backoff(retry_state)


def json_object(response: httpx.Response) -> dict[str, Any]:
    """The answer's JSON object, numbers with a fraction as ``Decimal`` (amounts stay exact); ``{}`` when the body
    is not a JSON object (an HTML error page from a load balancer, say)."""
    try:
        data = json.loads(response.content, parse_float=Decimal)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
