"""Fault-injecting upstreams on 127.0.0.1, each counting what it received.

Every server here is a small HTTP/1.1 server on raw asyncio streams, run in a
thread with its own event loop, so that a test controls the bytes on the wire:
a reset after part of the body, an answer that never comes, a 503 with its own
body and headers. Waiting is done on events released at teardown, never on
sleeps: a hanging upstream hangs until `release()` or `stop()`.

- `RefusedPort`       a port that refuses connections (bound, never listening)
- `Scripted`          answers a script of statuses (503, 503, then 200...), optionally slowly
- `Hanging`           reads the request and never answers until released
- `ResetBeforeAnswer` reads the request, then resets the connection without answering
- `ResetMidResponse`  sends the status, headers and part of the body, then resets (SO_LINGER 0)
"""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import pytest

_HEAD_LIMIT = 64 * 1024


@dataclass(frozen=True)
class Received:
    """One request as an upstream saw it."""

    method: str
    target: str
    headers: dict[str, str]          # lower-case names; the last value wins
    body: bytes


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]] = field(default_factory=list)

    def header(self, name: str) -> str | None:
        for key, value in reversed(self.headers):
            if key == name:
                return value
        return None


class _Gate:
    """A latch that coroutines on the server's loop wait on and any thread opens."""

    def __init__(self) -> None:
        self._opened = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    @property
    def is_open(self) -> bool:
        return self._opened.is_set()

    def open(self) -> None:
        with self._lock:
            self._opened.set()
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._opened.is_set():
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()


class RefusedPort:
    """A port on 127.0.0.1 where connections are refused.

    The socket is bound but never listens, so the kernel answers every SYN with
    a reset (ECONNREFUSED) and no other test can take the port meanwhile.
    Nothing is ever received: `count` is always 0.
    """

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.count = 0

    def start(self) -> "RefusedPort":
        return self

    def stop(self) -> None:
        self._sock.close()


class FaultServer:
    """A raw HTTP/1.1 server in a thread. Subclasses decide how to answer in `respond`."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(256)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"{type(self).__name__}:{self.port}")
        self._released = _Gate()

    # Counting.

    @property
    def count(self) -> int:
        """Requests received (head read), whatever became of them."""
        with self._lock:
            return len(self.received)

    def methods(self) -> list[str]:
        with self._lock:
            return [request.method for request in self.received]

    # Life cycle.

    def start(self) -> "FaultServer":
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise AssertionError(f"{type(self).__name__} did not start")
        return self

    def release(self) -> None:
        """Let every held answer go (and any later one through at once)."""
        self._released.open()

    def stop(self) -> None:
        """Release what is held, drop every connection, stop the loop and join the thread."""
        self.release()
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
            future.result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "FaultServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(asyncio.start_server(self._connection, sock=self._sock))
            self._ready.set()
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # Serving.

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        with self._lock:
            self.connections += 1
        try:
            while True:
                request = await _read_head(reader)
                if request is None:
                    return
                body = await _read_body(reader, request)
                with self._lock:
                    index = len(self.received)
                    self.received.append(Received(request.method, request.target,
                                                  {k: v for k, v in request.headers}, body))
                keep_alive = await self.respond(index, request, writer)
                if not keep_alive or (request.header("connection") or "").lower() == "close":
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            return
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            if not writer.transport.is_closing():
                writer.close()

    async def respond(self, index: int, request: _Request, writer: asyncio.StreamWriter) -> bool:
        """Answer request number `index` (from 0); return False to close the connection."""
        raise NotImplementedError

    async def held(self) -> None:
        """Wait until the test releases held answers (or the server stops)."""
        await self._released.wait()


class Scripted(FaultServer):
    """Answers `statuses[i]` to the i-th request and `then` after the script runs out.

    Error answers carry the upstream's own body and headers (`X-Upstream-Own`,
    `Retry-After: 7`, text/plain) so a test can tell them from proxy-made ones.
    `delay_s` makes every answer slow; `hold_from=i` holds the answers to request
    i and later ones until `release()`.
    """

    def __init__(self, statuses: Sequence[int] = (), then: int = 200, *, delay_s: float = 0.0,
                 hold_from: int | None = None, body: bytes = b"ok") -> None:
        super().__init__()
        self.statuses = list(statuses)
        self.then = then
        self.delay_s = delay_s
        self.hold_from = hold_from
        self.body = body

    def status_for(self, index: int) -> int:
        return self.statuses[index] if index < len(self.statuses) else self.then

    async def respond(self, index: int, request: _Request, writer: asyncio.StreamWriter) -> bool:
        if self.hold_from is not None and index >= self.hold_from:
            await self.held()
        if self.delay_s:
            await asyncio.sleep(self.delay_s)      # the fault itself: a slow upstream
        status = self.status_for(index)
        if status >= 500:
            body = f"upstream's own {status} for request {index}".encode()
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("X-Upstream-Own", str(status)),
                       ("Retry-After", "7")]
        else:
            body = self.body
            headers = [("Content-Type", "text/plain; charset=utf-8"), ("X-Upstream-Request", str(index))]
        await _write_response(writer, status, headers, body, head_only=request.method == "HEAD")
        return True


class Hanging(FaultServer):
    """Reads each request and answers nothing until `release()` (then 200) or `stop()`."""

    async def respond(self, index: int, request: _Request, writer: asyncio.StreamWriter) -> bool:
        await self.held()
        await _write_response(writer, 200, [("Content-Type", "text/plain")], b"released")
        return True


class ResetMidResponse(FaultServer):
    """For the first `resets` requests: status, headers and part of the body, then a TCP reset.

    `chunked=False` announces a Content-Length of `length` and sends `sent` bytes
    of it; `chunked=True` sends one chunk of `sent` bytes and no terminator.
    Later requests get a complete 200 with body b"whole".
    """

    def __init__(self, resets: int = 1, *, chunked: bool = False, length: int = 10_000, sent: int = 1_000) -> None:
        super().__init__()
        self.resets = resets
        self.chunked = chunked
        self.length = length
        self.sent = sent

    async def respond(self, index: int, request: _Request, writer: asyncio.StreamWriter) -> bool:
        if index >= self.resets:
            await _write_response(writer, 200, [("Content-Type", "text/plain")], b"whole")
            return True
        part = b"x" * self.sent
        if self.chunked:
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
            payload = head + f"{len(part):x}\r\n".encode() + part + b"\r\n"
        else:
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {self.length}\r\n\r\n".encode()
            payload = head + part
        writer.write(payload)
        await writer.drain()
        _reset(writer)
        return False


class ResetBeforeAnswer(FaultServer):
    """Reads each request whole, then resets the connection without a byte of answer."""

    async def respond(self, index: int, request: _Request, writer: asyncio.StreamWriter) -> bool:
        _reset(writer)
        return False


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _read_head(reader: asyncio.StreamReader) -> _Request | None:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as eof:
        if eof.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ConnectionError("request head too large") from None
    if len(raw) > _HEAD_LIMIT:
        raise ConnectionError("request head too large")
    lines = raw.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ", 2)
    request = _Request(method, target, version)
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            request.headers.append((name.strip().lower(), value.strip()))
    return request


async def _read_body(reader: asyncio.StreamReader, request: _Request) -> bytes:
    if (request.header("transfer-encoding") or "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")      # no trailers expected
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
    length = request.header("content-length")
    return await reader.readexactly(int(length)) if length else b""


_REASONS = {200: "OK", 500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable",
            504: "Gateway Timeout"}


async def _write_response(writer: asyncio.StreamWriter, status: int, headers: list[tuple[str, str]], body: bytes,
                          *, head_only: bool = False) -> None:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}", *(f"{k}: {v}" for k, v in headers),
             f"Content-Length: {len(body)}", "", ""]
    writer.write("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
    await writer.drain()


async def eventually(condition: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """`wait_until` for async tests: poll without blocking the test's event loop."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
def faults(start_proxy: Callable[..., object]) -> Iterator[Callable[[FaultServer | RefusedPort], object]]:
    """Start fault servers; stopped at the end of the test.

    It depends on `start_proxy` only for the teardown order: fault servers stop
    (held answers released, connections dropped) before the proxy gets SIGTERM,
    so the proxy never waits out its graceful timeout on a hanging upstream.
    """
    started: list[FaultServer | RefusedPort] = []

    def start(server):  # type: ignore[no-untyped-def]
        server.start()
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()
