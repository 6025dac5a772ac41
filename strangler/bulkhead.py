"""Bulkhead per upstream: a cap on requests in flight, refusing at once past it (no queue)."""

from __future__ import annotations


class Bulkhead:
    """Counts requests in flight to one upstream and refuses new ones past the limit."""

    __slots__ = ("_max_concurrent", "_in_flight")

    def __init__(self, max_concurrent: int) -> None:
        self._max_concurrent = _checked(max_concurrent)
        self._in_flight = 0

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def try_acquire(self) -> bool:
        """Take a slot if one is free; False means refuse the request now."""
        if self._in_flight >= self._max_concurrent:
            return False
        self._in_flight += 1
        return True

    def release(self) -> None:
        """Give a slot back; never goes below zero."""
        if self._in_flight > 0:
            self._in_flight -= 1

    def resize(self, max_concurrent: int) -> None:
        """Change the limit on reload: requests in flight keep their slots, new ones see the new limit."""
        self._max_concurrent = _checked(max_concurrent)

    def __repr__(self) -> str:
        return f"<Bulkhead {self._in_flight}/{self._max_concurrent}>"


def _checked(max_concurrent: int) -> int:
    if max_concurrent < 1:
        raise ValueError(f"max_concurrent must be at least 1, not {max_concurrent}")
    return max_concurrent
