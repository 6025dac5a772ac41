"""Raw-socket conversations with the proxy: exact bytes out, every response back, and whether it hung up."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from tests.support.rawhttp import RawConnection, RawResponse


@dataclass
class Conversation:
    responses: list[RawResponse] = field(default_factory=list)
    closed: bool = False          # the proxy closed the connection (EOF or reset) after the last response
    leftover: bytes = b""         # bytes that were not a whole response

    @property
    def statuses(self) -> list[int]:
        return [response.status for response in self.responses]


def converse(port: int, data: bytes, *, expect: int = 1, timeout_s: float = 5.0) -> Conversation:
    """Send `data` in one write; read responses until the proxy closes, `expect` arrived and the
    line went quiet, or `timeout_s` passed."""
    conversation = Conversation()
    with RawConnection(port, timeout_s=timeout_s) as connection:
        connection.send(data)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # After the expected responses, wait only briefly for a close (or a stray extra response).
            wait = 0.2 if len(conversation.responses) >= expect else deadline - time.monotonic()
            connection.sock.settimeout(max(wait, 0.01))
            try:
                conversation.responses.append(connection.read_response())
            except (ConnectionError, OSError) as error:
                if isinstance(error, (socket.timeout, TimeoutError)):
                    break
                conversation.closed = True
                conversation.leftover = connection._buffer
                break
    return conversation


def closes_after(connection: RawConnection, timeout_s: float = 3.0) -> bool:
    """True when the proxy closes `connection` (EOF or reset) within `timeout_s`, with nothing more sent."""
    connection.sock.settimeout(timeout_s)
    try:
        return connection.sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except (socket.timeout, TimeoutError):
        return False


@dataclass
class Fetched:
    """One response read off the wire, whole or not."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    complete: bool                # False: the connection ended before the framing said the body was over

    def header(self, name: str) -> str | None:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return None


def fetch(port: int, method: str, target: str, *, test_id: str = "-", body: bytes = b"",
          timeout_s: float = 10.0) -> Fetched:
    """One request on a new connection; the response as far as it came (`complete` says if whole)."""
    head = [f"{method} {target} HTTP/1.1", "Host: shop.test", f"X-Test-Id: {test_id}", "Connection: close"]
    if body or method in ("POST", "PUT"):
        head.append(f"Content-Length: {len(body)}")
    with RawConnection(port, timeout_s=timeout_s) as connection:
        connection.send(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw_head = connection._read_until(b"\r\n\r\n")
        status_line, *lines = raw_head[:-4].decode("latin-1").split("\r\n")
        headers = [(name, value.strip()) for name, _, value in (line.partition(":") for line in lines)]
        fetched = Fetched(int(status_line.split(" ")[1]), headers, b"", True)
        length = fetched.header("content-length")
        chunked = (fetched.header("transfer-encoding") or "").lower() == "chunked"
        if method == "HEAD" or fetched.status in (204, 304):
            return fetched
        try:
            if chunked:
                out = bytearray()
                while True:
                    size = int(connection._read_until(b"\r\n").split(b";")[0], 16)
                    if size == 0:
                        connection._read_until(b"\r\n")
                        break
                    out += connection._read_exactly(size + 2)[:-2]
                    fetched.body = bytes(out)
                fetched.body = bytes(out)
            elif length is not None:
                fetched.body = connection._read_exactly(int(length))
            else:
                while connection._fill():
                    pass
                fetched.body = connection._buffer
        except (ConnectionError, OSError):
            fetched.complete = False
            if not chunked:
                fetched.body = connection._buffer
        return fetched
