"""Fault-injecting upstreams on 127.0.0.1, each recording what it received.

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
- `RecordingUpstream` answers by the path it receives, well-behaved or broken on request
                      (the hardening and fuzz tests' upstream; see its docstring)
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.support.loopserver import LoopServer
from tests.support.loopserver import reset as _reset


@dataclass(frozen=True)
class Received:
    """One request as an upstream received it."""

    conn: int                                     # the connection it came on, from 1
    method: str
    target: str
    headers: tuple[tuple[bytes, bytes], ...]      # as on the wire, in order
    body: bytes

    def values(self, name: str) -> list[bytes]:
        lower = name.lower().encode()
        return [value for key, value in self.headers if key.lower() == lower]

    @property
    def test_id(self) -> str | None:
        found = self.values("x-test-id")
        return found[0].decode("latin-1") if found else None

    @property
    def framing(self) -> list[bytes]:
        """Every Content-Length and Transfer-Encoding line, name and value."""
        return [key + b": " + value for key, value in self.headers
                if key.lower() in (b"content-length", b"transfer-encoding")]


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


class FaultServer(LoopServer):
    """A raw HTTP/1.1 server in a thread. Subclasses decide how to answer in `respond`."""

    head_limit = 64 * 1024          # a longer request head drops the connection
    backlog = 256

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(self.backlog)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.received: list[Received] = []
        self.connections = 0
        self._lock = threading.Lock()
        super().__init__(f"{type(self).__name__}:{self.port}")
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

    def requests(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def with_id(self, test_id: str) -> list[Received]:
        return [request for request in self.requests() if request.test_id == test_id]

    # Life cycle (start, stop: LoopServer).

    def release(self) -> None:
        """Let every held answer go (and any later one through at once)."""
        self._released.open()

    def stop(self) -> None:
        """Release what is held, drop every connection, stop the loop and join the thread."""
        self.release()
        super().stop()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._connection, sock=self._sock, limit=self.head_limit)

    # Serving.

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._tracked(writer):
            with self._lock:
                self.connections += 1
                conn = self.connections
            try:
                while True:
                    request = await _read_request(reader, conn, self.head_limit)
                    if request is None:
                        return
                    with self._lock:
                        index = len(self.received)
                        self.received.append(request)
                    keep_alive = await self.respond(index, request, writer)
                    if not keep_alive or any(value.lower() == b"close" for value in request.values("connection")):
                        return
            except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
                    asyncio.CancelledError):
                return
            finally:
                if not writer.transport.is_closing():
                    writer.close()

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
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

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
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

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
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

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
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

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
        _reset(writer)
        return False


class RecordingUpstream(FaultServer):
    """A recording upstream, well-behaved or broken on request.

    It keeps every request exactly as it came on the wire (header lines in order,
    repeated ones too, the connection it came on), so a test can check that the
    upstream received exactly one framing header, that a request never arrived,
    or that a broken connection was not used again.


    What it answers depends on the path it receives (a marker may come anywhere in it,
    so `/route/<test id>/bad/extra` works):

    - anything else          200, `X-Echo-Id` = the request's X-Test-Id, body `id=<id> conn=<n>` (padded to
                             `?size=N` bytes), Content-Length framed; `?chunked=1` frames it chunked
    - `.../status/<code>`    that status; 204/304 with no body (the 304 with a Content-Length, as allowed)
    - `.../bad/garbage`      bytes that are not HTTP, then the connection closes
    - `.../bad/extra`        Content-Length 5 and more bytes than that: a whole stray response follows
    - `.../bad/204-body`, `.../bad/304-body`, HEAD on `.../bad/head-body`
                             a bodyless answer followed by the same stray response
    - `.../bad/trailers`     a chunked 200 whose trailer section sets `Set-Cookie` and
                             `X-Strangler-Upstream`, all in one write
    - `.../bad/status-999`   `HTTP/1.1 999 Weird`, Content-Length framed
    - `.../bad/endless-trailer`  a chunked 200 whose trailer field goes on (`a` x 16 KiB, 256 times)
    - `.../early-hints`      `103 Early Hints` (two Link fields, a Connection-named field) then the usual 200

    After a broken answer the connection stays open and keeps serving, so a client
    that reused it would read the stray response (`X-Stray: 1`, body `STRAY!`) as
    the answer to its next request.
    """

    head_limit = 256 * 1024
    backlog = 1024

    async def respond(self, index: int, request: Received, writer: asyncio.StreamWriter) -> bool:
        return await _answer(request, writer)


STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nSTRAY!"


def _response(status: int, headers: list[tuple[str, str]], body: bytes, *, head: bool = False,
              chunked: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} Status", *(f"{k}: {v}" for k, v in headers)]
    if chunked:
        lines.append("Transfer-Encoding: chunked")
        payload = b"" if head else (b"%x\r\n" % len(body) + body + b"\r\n" if body else b"") + b"0\r\n\r\n"
    else:
        lines.append(f"Content-Length: {len(body)}")
        payload = b"" if head else body
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + payload


async def _answer(seen: Received, writer: asyncio.StreamWriter) -> bool:
    """Write the answer; False closes the connection."""
    split = urlsplit(seen.target)
    path, query = split.path, parse_qs(split.query)
    for marker in ("/bad/", "/status/"):
        if marker in path:
            path = marker + path.split(marker, 1)[1]
    head = seen.method == "HEAD"
    echo = [("Content-Type", "text/plain"), ("X-Echo-Id", seen.test_id or "-"), ("X-Conn", str(seen.conn))]
    if path == "/bad/garbage":
        writer.write(b"THIS IS NOT HTTP\r\n\x00\x01\x02\r\n\r\n")
        await writer.drain()
        return False
    if path == "/bad/extra":
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Echo-Id: %s\r\n\r\nhello" % (
            (seen.test_id or "-").encode()) + STRAY)
        await writer.drain()
        return True
    if path in ("/bad/204-body", "/bad/304-body") or (path == "/bad/head-body" and head):
        status = {"/bad/204-body": 204, "/bad/304-body": 304}.get(path, 200)
        length = b"" if status == 204 else b"Content-Length: 5\r\n"
        writer.write(b"HTTP/1.1 %d Status\r\n%sX-Echo-Id: %s\r\n\r\nhello" % (
            status, length, (seen.test_id or "-").encode()) + STRAY)
        await writer.drain()
        return True
    if path == "/bad/trailers":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Echo-Id: %s\r\n\r\n"
                     b"2\r\n{}\r\n0\r\nSet-Cookie: session=attacker\r\nX-Strangler-Upstream: forged\r\n\r\n"
                     % (seen.test_id or "-").encode())
        await writer.drain()
        return True
    if path == "/bad/endless-trailer":
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: ")
        try:
            for _ in range(256):
                writer.write(b"a" * 16384)
                await writer.drain()
        except ConnectionError:
            pass
        return False
    if path == "/bad/status-999":
        writer.write(b"HTTP/1.1 999 Weird\r\nContent-Length: 5\r\n\r\nweird")
        await writer.drain()
        return True
    if path.endswith("/early-hints"):
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload; as=style\r\n"
                     b"Link: </app.js>; rel=preload; as=script\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n")
        await writer.drain()
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        if status in (204, 304):
            extra = [("Content-Length", "42")] if status == 304 else []
            lines = [f"HTTP/1.1 {status} Status", *(f"{k}: {v}" for k, v in echo + extra)]
            writer.write("\r\n".join(lines).encode() + b"\r\n\r\n")
        else:
            writer.write(_response(status, echo, b"status %d" % status, head=head))
        await writer.drain()
        return True
    body = f"id={seen.test_id} conn={seen.conn}".encode()
    size = int(query.get("size", ["0"])[0])
    if size > len(body):
        body += b"." * (size - len(body))
    writer.write(_response(200, echo, body, head=head, chunked=bool(query.get("chunked"))))
    await writer.drain()
    return True


async def _read_request(reader: asyncio.StreamReader, conn: int, head_limit: int) -> Received | None:
    """The next request on the connection, body and all; None at a clean EOF between requests."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as eof:
        if eof.partial.strip():
            raise
        return None
    except asyncio.LimitOverrunError:
        raise ConnectionError("request head too large") from None
    if len(head) > head_limit:
        raise ConnectionError("request head too large")
    lines = head[:-4].split(b"\r\n")
    method, target, _version = lines[0].decode("latin-1").split(" ", 2)
    headers = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers.append((name, value.strip(b" \t")))
    lengths = [v for k, v in headers if k.lower() == b"content-length"]
    chunked = any(v.lower() == b"chunked" for k, v in headers if k.lower() == b"transfer-encoding")
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while (await reader.readuntil(b"\r\n")) != b"\r\n":    # trailers, if any
                    pass
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        body = b"".join(parts)
    elif lengths:
        body = await reader.readexactly(int(lengths[0]))
    else:
        body = b""
    return Received(conn, method, target, tuple(headers), body)


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
