"""A retry budget: extra upstream attempts are capped at a share of traffic, so a failing fleet is not hammered.

Counts live in one-second buckets over a sliding window. A retry is allowed while the retries in the window
stay under ``ratio`` * requests in the window plus a small floor (``min_per_second`` * window), so a quiet
gateway can still retry at all.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable


class RetryBudget:
    def __init__(
        self,
        ratio: float = 0.2,
        min_per_second: float = 5.0,
        window_s: int = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ratio = ratio
        self._floor = min_per_second * window_s
        self._window = window_s
        self._clock = clock
        self._buckets: deque[list[int]] = deque()  # [second, requests, retries]
        self._requests = 0
        self._retries = 0

    def _bucket(self) -> list[int]:
        second = int(self._clock())
        while self._buckets and self._buckets[0][0] <= second - self._window:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries
        if not self._buckets or self._buckets[-1][0] != second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]

    def record_request(self) -> None:
        self._bucket()[1] += 1
        self._requests += 1

    def try_spend(self) -> bool:
        """Take one retry from the budget; False when the budget is spent."""
        bucket = self._bucket()
        if self._retries + 1 > self._ratio * self._requests + self._floor:
            return False
        bucket[2] += 1
        self._retries += 1
        return True
