"""A header or trailer section that never ends is refused by its raw size, and costs no memory.

httptools grows an unfinished field by concatenation on every read (quadratic), and the
header limits were checked only once a field was complete: one connection sending
`X-Big: aaaa...` forever grew the proxy by hundreds of MiB and stalled every other client.
"""

from __future__ import annotations

import socket
import threading

import pytest

from tests.hardening.conftest import Rig
from tests.support.faults import RecordingUpstream
from tests.support.rawhttp import RawConnection
from tests.support.servers import ProxyProcess

HOSTILE_CONNECTIONS = 8
# Each hostile client gives up after this much: far past the limit (64 KiB + 8 KiB + 1 KiB). What it
# sends after the refusal is read away by the lingering close, so it may well send all of it.
HOSTILE_BUDGET = 4 * 1024 * 1024
PIECE = b"a" * 16384
MiB = 1024 * 1024


class Unfinished:
    def __init__(self, proxy: ProxyProcess, quick: ProxyProcess, upstream: RecordingUpstream) -> None:
        self.proxy, self.quick, self.upstream = proxy, quick, upstream


@pytest.fixture(scope="module")
def unfinished(rig: Rig) -> Unfinished:
    upstream = rig.upstream()

    def proxy(body_idle_timeout: str) -> ProxyProcess:
        # Deadlines far away: only the size limit may stop the endless sections.
        return rig.proxy(f"""
version: 1
upstreams:
  app: {{url: "{upstream.url}", timeout: 30s}}
limits: {{header_timeout: 30s, body_idle_timeout: {body_idle_timeout}}}
routes:
  - name: all
    match: {{path: /}}
    to: app
""")
    return Unfinished(proxy("30s"), proxy("1s"), upstream)


class HostileClient:
    """Sends `start`, then `a` until the proxy stops it or the budget is spent; keeps what came back."""

    def __init__(self, port: int, start: bytes) -> None:
        self.connection = RawConnection(port, timeout_s=10.0)
        self.start = start
        self.sent = 0
        self.answer = b""
        self.stopped_by_proxy = False
        self.error: BaseException | None = None

    def send_first(self, size: int) -> None:
        self.connection.send(self.start)
        while self.sent < size:
            self.connection.send(PIECE)
            self.sent += len(PIECE)

    def push_until_stopped(self) -> None:
        sock = self.connection.sock
        try:
            while self.sent < HOSTILE_BUDGET:
                sock.sendall(PIECE)
                self.sent += len(PIECE)
        except (BrokenPipeError, ConnectionResetError):
            self.stopped_by_proxy = True
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error
        sock.settimeout(5.0)
        try:
            while chunk := sock.recv(65536):
                self.answer += chunk
            self.stopped_by_proxy = True
        except (ConnectionResetError, BrokenPipeError):
            self.stopped_by_proxy = True
        except (socket.timeout, TimeoutError):
            pass

    def close(self) -> None:
        self.connection.close()


def _hostile_round(port: int, start: bytes, normal_request: bytes) -> tuple[list[HostileClient], list[str]]:
    events: list[str] = []
    clients = [HostileClient(port, start) for _ in range(HOSTILE_CONNECTIONS)]
    try:
        for client in clients:
            client.send_first(32 * 1024)          # under the limit: all eight are open and unfinished
        events.append("hostile clients open")
        with RawConnection(port, timeout_s=10.0) as normal:
            normal.send(normal_request)
            response = normal.read_response()
        events.append(f"normal request answered {response.status}")
        threads = [threading.Thread(target=client.push_until_stopped) for client in clients]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30.0)
        events.append("hostile clients done")
    finally:
        for client in clients:
            client.close()
    return clients, events


ENDLESS = {
    "header": (b"GET /endless HTTP/1.1\r\nHost: x\r\nX-Big: ", (b"HTTP/1.1 431 ",)),
    # In trailers the answer may be a 431 or a plain close (the body is already on its way upstream).
    "trailer": (b"POST /endless HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX-T: ",
                (b"HTTP/1.1 431 ", b"")),
}


@pytest.mark.parametrize("section", ENDLESS)
def test_eight_endless_sections_are_stopped_with_flat_memory_while_others_are_served(unfinished: Unfinished,
                                                                                     section: str):
    start, answers = ENDLESS[section]
    proxy = unfinished.proxy
    before = proxy.rss_bytes()
    clients, events = _hostile_round(proxy.port, start, b"GET /normal HTTP/1.1\r\nHost: x\r\n\r\n")
    after = proxy.rss_bytes()
    assert events == ["hostile clients open", "normal request answered 200", "hostile clients done"]
    for client in clients:
        assert client.error is None, client.error
        assert client.stopped_by_proxy, f"still open after {client.sent} bytes"
        assert any(client.answer.startswith(answer) if answer else client.answer == b"" for answer in answers), \
            client.answer[:200]
    assert after - before < 20 * MiB, f"RSS {before / MiB:.1f} -> {after / MiB:.1f} MiB"
    # The upstream records whole requests only: none of these ever was one.
    assert not any(seen.target == "/endless" for seen in unfinished.upstream.requests())


def test_a_trickled_trailer_section_ends_with_body_idle_timeout(unfinished: Unfinished):
    """Under the size limit, a trailer that never ends is bounded in time by body_idle_timeout (1s here)."""
    with RawConnection(unfinished.quick.port, timeout_s=10.0) as connection:
        connection.send(b"POST /trickle HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                        b"1\r\na\r\n0\r\nX-T: ")
        sock = connection.sock
        sock.settimeout(0.2)
        answer = b""
        closed = False
        for _ in range(50):             # 1 byte every 0.2 s, for at most 10 s
            try:
                sock.sendall(b"a")
                chunk = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
            if not chunk:
                closed = True
                break
            answer += chunk
        assert closed or answer, "the trailer section was never cut off"
        if answer:
            assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert not any(seen.target == "/trickle" for seen in unfinished.upstream.requests())
