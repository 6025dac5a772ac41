"""The client's request body: streamed to the upstream, kept for replay while small."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .config.model import MAX_REPLAY_BODY_BYTES
from .errors import BadRequest, ClientDisconnected, ProxyError, Reason
from .headers import RequestFraming

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyTooLarge(ProxyError):
    reason = Reason.BODY_TOO_LARGE


class BodyNotReplayable(Exception):
    """A body already streamed upstream and too large to have been kept."""


class RequestBody:
    """One request's body. `for_attempt()` gives what to send on each attempt."""

    __slots__ = ("_receive", "_framing", "_max_bytes", "_idle_timeout_s", "_kept", "_kept_bytes",
                 "_started", "_complete")

    def __init__(self, receive: Receive, framing: RequestFraming, *, max_bytes: int, idle_timeout_s: float) -> None:
        self._receive = receive
        self._framing = framing
        self._max_bytes = max_bytes
        self._idle_timeout_s = idle_timeout_s
        self._kept: list[bytes] | None = []
        self._kept_bytes = 0
        self._started = False
        self._complete = not framing.has_body

    @property
    def replayable(self) -> bool:
        return not self._started or (self._complete and self._kept is not None)

    @property
    def small(self) -> bool:
        length = self._framing.content_length
        return length is not None and length <= MAX_REPLAY_BODY_BYTES

    @property
    def kept(self) -> bytes | None:
        """The whole body when it was read and kept (b"" when there is none); None while it streams."""
        if not self._framing.has_body:
            return b""
        if self._complete and self._kept is not None:
            return b"".join(self._kept)
        return None

    async def read_small(self) -> None:
        """Read a small body whole before the first attempt: one write upstream, always replayable."""
        async for _ in self._stream():
            pass

    def for_attempt(self) -> bytes | AsyncIterator[bytes] | None:
        if not self._framing.has_body:
            return None
        if self._complete and self._kept is not None:
            return b"".join(self._kept)
        if self._started:
            raise BodyNotReplayable()
        return self._stream()

    async def _next_message(self) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self._idle_timeout_s):
                return await self._receive()
        except TimeoutError:
            # A 408 for the client (a bare disconnect here left uvicorn to answer 500).
            raise ProxyError(f"request body idle for over {self._idle_timeout_s:g}s",
                             reason=Reason.REQUEST_TIMEOUT) from None

    async def _stream(self) -> AsyncIterator[bytes]:
        self._started = True
        total = 0
        expected = self._framing.content_length
        while True:
            message = await self._next_message()
            if message["type"] == "http.disconnect":
                # An incomplete body is an aborted request, never a shorter one.
                raise ClientDisconnected("client went away during the request body")
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > self._max_bytes:
                raise BodyTooLarge(f"request body over {self._max_bytes} bytes")
            if expected is not None and total > expected:
                raise ClientDisconnected("request body longer than its Content-Length")
            if self._kept is not None:
                if self._kept_bytes + len(chunk) <= MAX_REPLAY_BODY_BYTES:
                    self._kept.append(chunk)
                    self._kept_bytes += len(chunk)
                else:
                    self._kept = None
            if chunk:
                yield chunk
            if not message.get("more_body", False):
                if expected is not None and total != expected:
                    # Only when the parser stopped at an upgrade request (a gone client is an
                    # http.disconnect above): the body can never be read, so refuse it.
                    raise BadRequest("request body not readable (an upgrade request with a body)")
                self._complete = True
                return
