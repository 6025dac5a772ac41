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
            wait = 0.5 if len(conversation.responses) >= expect else deadline - time.monotonic()
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
