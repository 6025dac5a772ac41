"""HTTP/1.1 over a plain socket: exact request bytes out, exact response bytes back.

Client libraries normalize paths, re-encode queries and add headers of their
own; tests of what the proxy does with such things must not go through one.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass



@dataclass
class RawResponse:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes                        # de-chunked when the response was chunked
    raw_body: bytes = b""              # as it came on the wire
    chunked: bool = False

    def header_values(self, name: str) -> list[str]:
        return [value for key, value in self.headers if key.lower() == name.lower()]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        return values[0] if values else None


class RawConnection:
    """One client connection to 127.0.0.1:`port`, kept open across requests."""

    def __init__(self, port: int, timeout_s: float = 10.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self._buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, method: str, target: str | bytes, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", *, host: str = "test.local") -> RawResponse:
        target_bytes = target.encode("latin-1") if isinstance(target, str) else target
        lines = [method.encode() + b" " + target_bytes + b" HTTP/1.1"]
        given = headers or []
        if not any(name.lower() == "host" for name, _ in given):
            lines.append(b"Host: " + host.encode())
        lines += [f"{name}: {value}".encode("latin-1") for name, value in given]
        if body and not any(name.lower() in ("content-length", "transfer-encoding") for name, _ in given):
            lines.append(b"Content-Length: %d" % len(body))
        self.send(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        return self.read_response(head=method == "HEAD")

    def _fill(self) -> bool:
        data = self.sock.recv(65536)
        if not data:
            return False
        self._buffer += data
        return True

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            if not self._fill():
                raise ConnectionError(f"connection closed before {marker!r}; got {self._buffer[:200]!r}")
        index = self._buffer.index(marker) + len(marker)
        out, self._buffer = self._buffer[:index], self._buffer[index:]
        return out

    def _read_exactly(self, count: int) -> bytes:
        while len(self._buffer) < count:
            if not self._fill():
                raise ConnectionError(f"connection closed after {len(self._buffer)} of {count} body bytes")
        out, self._buffer = self._buffer[:count], self._buffer[count:]
        return out

    def read_response(self, *, head: bool = False) -> RawResponse:
        head_bytes = self._read_until(b"\r\n\r\n")
        status_line, *header_lines = head_bytes[:-4].decode("latin-1").split("\r\n")
        _, status, *reason = status_line.split(" ", 2)
        headers = []
        for line in header_lines:
            name, _, value = line.partition(":")
            headers.append((name, value.strip()))
        response = RawResponse(int(status), reason[0] if reason else "", headers, b"")
        code = response.status
        if head or code in (204, 304) or 100 <= code < 200:
            return response
        encoding = (response.header("transfer-encoding") or "").lower()
        if encoding == "chunked":
            response.chunked = True
            raw, body = bytearray(), bytearray()
            while True:
                size_line = self._read_until(b"\r\n")
                raw += size_line
                size = int(size_line.split(b";")[0].strip(), 16)
                if size == 0:
                    raw += self._read_until(b"\r\n")       # no trailers expected
                    break
                data = self._read_exactly(size + 2)
                raw += data
                body += data[:-2]
            response.body, response.raw_body = bytes(body), bytes(raw)
        elif response.header("content-length") is not None:
            response.body = response.raw_body = self._read_exactly(int(response.header("content-length") or 0))
        else:
            while self._fill():
                pass
            response.body = response.raw_body = self._buffer
            self._buffer = b""
        return response

    def leftover(self) -> bytes:
        """Bytes received past the last response (there should be none)."""
        self.sock.setblocking(False)
        try:
            while self._fill():
                pass
        except (BlockingIOError, InterruptedError):
            pass
        finally:
            self.sock.setblocking(True)
        return self._buffer

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> "RawConnection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def raw_request(port: int, method: str, target: str | bytes, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", *, host: str = "test.local") -> RawResponse:
    with RawConnection(port) as connection:
        return connection.request(method, target, headers, body, host=host)


class ThreadedEvent:
    """An asyncio.Event for an app running on another thread's loop, settable from the test thread.

    The app calls `await gate.wait()`; the test (or its teardown) calls `gate.set()`.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._set = False

    async def wait(self) -> None:
        event = asyncio.Event()
        with self._lock:
            if self._set:
                return
            self._waiters.append((asyncio.get_running_loop(), event))
        await event.wait()

    def set(self) -> None:
        with self._lock:
            self._set = True
            waiters, self._waiters = self._waiters, []
        for loop, event in waiters:
            if not loop.is_closed():
                loop.call_soon_threadsafe(event.set)

    @property
    def waiting(self) -> int:
        with self._lock:
            return len(self._waiters)
