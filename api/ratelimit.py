"""Failed API key attempts, counted per client address in a sliding window.

After ``limit`` failures within ``window`` seconds an address is refused (429, with ``Retry-After``) until its
oldest counted failure leaves the window; a correct key is never delayed, and failures by one address do not
affect another. The counts live in the process: with several API processes each counts on its own, so an
address gets up to ``limit`` tries per process in a window. Addresses are forgotten once their failures expire,
and the table is capped so that a flood of addresses cannot grow it without end.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable

LIMIT = 100
WINDOW_SECONDS = 300.0
MAX_ADDRESSES = 100_000


class FailedKeyLimiter:
    def __init__(self, limit: int = LIMIT, window: float = WINDOW_SECONDS,
                 clock: Callable[[], float] = time.monotonic, max_addresses: int = MAX_ADDRESSES):
        if limit < 1 or window <= 0:
            raise ValueError("the limit must be at least 1 and the window positive")
        self.limit, self.window, self.clock, self.max_addresses = limit, window, clock, max_addresses
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures

    def retry_after(self, address: str) -> int | None:
        """Seconds until ``address`` may try a key again, or None if it may now."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if failures is None or len(failures) < self.limit:
                return None
            return max(1, math.ceil(failures[-self.limit] + self.window - now))

    def failed(self, address: str) -> None:
        """Count one failed attempt by ``address``."""
        with self._lock:
            now = self.clock()
            failures = self._recent(address, now)
            if failures is None:
                if len(self._failures) >= self.max_addresses:
                    self._prune(now)
                failures = self._failures.setdefault(address, deque(maxlen=self.limit))
            failures.append(now)

    def _prune(self, now: float) -> None:
        for address in list(self._failures):
            self._recent(address, now)
        if len(self._failures) >= self.max_addresses:  # all still counting: drop the oldest half
            oldest = sorted(self._failures, key=lambda a: self._failures[a][-1])
            for address in oldest[: len(oldest) // 2]:
                del self._failures[address]
