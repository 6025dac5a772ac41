"""A recording HTTP/1.1 upstream on raw asyncio streams, well-behaved or broken on request.

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

After a broken answer the connection stays open and keeps serving, so a client
that reused it would read the stray response (`X-Stray: 1`, body `STRAY!`) as
the answer to its next request.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nX-Stray: 1\r\n\r\nSTRAY!"
_HEAD_LIMIT = 256 * 1024


@dataclass(frozen=True)
class Seen:
    """One request as the upstream received it."""

    conn: int
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


class RecordingUpstream:
    """Serve in a thread of its own on 127.0.0.1; `stop()` closes every connection."""

    def __init__(self) -> None:
        self.port = 0
        self.url = ""
        self.seen: list[Seen] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="recording-upstream")

    def start(self) -> "RecordingUpstream":
        self._thread.start()
        if not self._ready.wait(timeout=10):
            raise AssertionError("recording upstream did not start")
        return self

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)

    def __enter__(self) -> "RecordingUpstream":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # What was received.

    def requests(self) -> list[Seen]:
        with self._lock:
            return list(self.seen)

    def with_id(self, test_id: str) -> list[Seen]:
        return [seen for seen in self.requests() if seen.test_id == test_id]

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.seen)

    # Serving.

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0, limit=_HEAD_LIMIT, backlog=1024))
            self.port = self._server.sockets[0].getsockname()[1]
            self.url = f"http://127.0.0.1:{self.port}"
            self._ready.set()
            loop.run_forever()
        finally:
            loop.close()

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
            conn = self.connections
        self._writers.add(writer)
        try:
            while True:
                seen = await _read_request(reader, conn)
                if seen is None:
                    return
                with self._lock:
                    self.seen.append(seen)
                if not await _answer(seen, writer):
                    return
                if any(value.lower() == b"close" for value in seen.values("connection")):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            return
        finally:
            self._writers.discard(writer)
            writer.transport.close()


async def _read_request(reader: asyncio.StreamReader, conn: int) -> Seen | None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as eof:
        if eof.partial.strip():
            raise
        return None
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
    return Seen(conn, method, target, tuple(headers), body)


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


async def _answer(seen: Seen, writer: asyncio.StreamWriter) -> bool:
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
