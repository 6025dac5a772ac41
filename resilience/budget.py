"""Retry budget per upstream: over the last window, retries stay under ratio * requests + min_retries."""

from __future__ import annotations

import time
from collections.abc import Callable

_BUCKETS = 10


class RetryBudget:
    """Counts first attempts and retries in a ring of fixed time buckets: O(1) per call, bounded memory."""

    # The ring holds _BUCKETS + 1 buckets: the current, partly filled one and
    # _BUCKETS full ones before it. Requests are counted over all but the oldest
    # bucket (a span of at most window_s) and retries over all of them (a span of
    # at least window_s), so the rule holds over every trailing window_s seconds
    # exactly, never loosened by bucket rounding.
    __slots__ = (
        "_ratio",
        "min_retries",
        "window_s",
        "_clock",
        "_bucket_s",
        "_requests",
        "_retries",
        "_current",
        "_requests_total",
        "_retries_total",
    )

    def __init__(
        self,
        ratio: float,
        *,
        window_s: float = 10.0,
        min_retries: int = 3,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s}")
        if min_retries < 0:
            raise ValueError(f"min_retries must not be negative, not {min_retries}")
        self.ratio = ratio
        self.window_s = window_s
        self.min_retries = min_retries
        self._clock = clock
        self._bucket_s = window_s / _BUCKETS
        self._requests = [0] * (_BUCKETS + 1)
        self._retries = [0] * (_BUCKETS + 1)
        self._current = self._bucket_index()
        self._requests_total = 0   # over the whole ring, the oldest bucket included
        self._retries_total = 0

    @property
    def ratio(self) -> float:
        """Share of extra load retries may add; settable on reload."""
        return self._ratio

    @ratio.setter
    def ratio(self, ratio: float) -> None:
        if not ratio >= 0:
            raise ValueError(f"ratio must not be negative, not {ratio}")
        self._ratio = ratio

    def record_request(self) -> None:
        """Count a first attempt."""
        self._advance()
        self._requests[self._current % (_BUCKETS + 1)] += 1
        self._requests_total += 1

    def try_spend(self) -> bool:
        """Count a retry and return True if the budget allows one now; otherwise False, counting nothing."""
        self._advance()
        size = _BUCKETS + 1
        oldest = (self._current + 1) % size
        requests = self._requests_total - self._requests[oldest]
        if self._retries_total + 1 > self._ratio * requests + self.min_retries:
            return False
        self._retries[self._current % size] += 1
        self._retries_total += 1
        return True

    def __repr__(self) -> str:
        return f"<RetryBudget ratio={self._ratio} retries={self._retries_total} requests={self._requests_total}>"

    def _bucket_index(self) -> int:
        return int(self._clock() // self._bucket_s)

    def _advance(self) -> None:
        """Empty the buckets that time has moved past, at most once round the ring."""
        now = self._bucket_index()
        steps = now - self._current
        if steps <= 0:
            return
        size = _BUCKETS + 1
        if steps >= size:
            self._requests = [0] * size
            self._retries = [0] * size
            self._requests_total = 0
            self._retries_total = 0
        else:
            requests, retries = self._requests, self._retries
            for index in range(self._current + 1, now + 1):
                slot = index % size
                self._requests_total -= requests[slot]
                self._retries_total -= retries[slot]
                requests[slot] = 0
                retries[slot] = 0
        self._current = now
