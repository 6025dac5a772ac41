"""The client's answer, kept for a shadow copy's comparison while the pipeline streams it.

A `Copy` holds a reference to each chunk the client is sent (nothing is copied, nothing is held
back), up to `max_body`; once the answer went out whole it hands it to the copy's task, and
anything else (a proxy error, the client gone, an upstream failing mid-body) tells the task
there is nothing to compare. `NO_COPY` stands in for a request that is not copied.
"""

from __future__ import annotations

import asyncio

from .compare import Answer


class Skipped(Exception):
    """The copy cannot be compared; `args[0]` says why."""


class Copy:
    """The client's answer as the pipeline streams it, kept for the comparison up to `max_body`."""

    __slots__ = ("_limit", "_shadow", "_upstream", "_status", "_headers", "_chunks", "_size", "_done")

    def __init__(self, limit: int, shadow: str, loop: asyncio.AbstractEventLoop) -> None:
        self._limit = limit
        self._shadow = shadow
        self._upstream = ""
        self._status = 0
        self._headers: list[tuple[bytes, bytes]] = []
        self._chunks: list[bytes] | None = []
        self._size = 0
        # The client's upstream and answer, or why there is none to compare (a result either way, so
        # that a copy that ended first leaves no unretrieved exception behind).
        self._done: asyncio.Future[tuple[str, Answer] | str] = loop.create_future()

    def head(self, upstream: str, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self._upstream, self._status, self._headers = upstream, status, raw_headers
        if upstream == self._shadow:
            self._settle("shadow_answered")       # the fallback was the shadow upstream itself

    def keep(self, chunk: bytes) -> None:
        chunks = self._chunks
        if chunks is not None:
            self._size += len(chunk)
            if self._size <= self._limit:
                chunks.append(chunk)
            else:
                self._chunks = None

    def complete(self) -> None:
        """The client's answer went out whole."""
        if self._chunks is None:
            self._settle("body_too_large")
        else:
            self._settle((self._upstream, Answer(self._status, self._headers, b"".join(self._chunks))))
        self._chunks = None

    async def answer(self) -> tuple[str, Answer]:
        """The upstream that answered the client, and its answer; Skipped if there is none to compare."""
        outcome = await self._done
        if isinstance(outcome, str):
            raise Skipped(outcome)
        return outcome

    def _settle(self, outcome: tuple[str, Answer] | str) -> None:
        if not self._done.done():
            self._done.set_result(outcome)

    def abandon(self) -> None:
        """The client's request is over: unless its answer went out whole (a proxy error, the client
        gone, an upstream failing mid-body), there is nothing to compare."""
        self._settle("primary_incomplete")
        self._chunks = None


class _NoCopy(Copy):
    """For a request that is not copied: the pipeline streams through it at no cost."""

    __slots__ = ()

    def __init__(self) -> None:
        pass

    def head(self, upstream: str, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        pass

    def keep(self, chunk: bytes) -> None:
        pass

    def complete(self) -> None:
        pass

    def abandon(self) -> None:
        pass


NO_COPY = _NoCopy()
