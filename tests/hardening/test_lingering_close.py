"""A connection closed while the client still sends closes lingering, so the answer is not lost.

A plain close with unread bytes in the socket makes the kernel answer them with a
reset; a client still uploading then fails with ECONNRESET and, across a real
network, may lose the 413 that was already on its way. The proxy half-closes after
the answer and reads the rest away (for `strangler.protocol.LINGER_S` at most).
"""

from __future__ import annotations

import json
import socket
import time

import pytest

from strangler.protocol import LINGER_S
from tests.hardening.conftest import Rig
from tests.support.servers import ProxyProcess

UPLOAD_BYTES = 20 * 1024 * 1024     # far more than the socket buffers on both sides hold


@pytest.fixture(scope="module")
def proxy(rig: Rig) -> ProxyProcess:
    upstream = rig.upstream()
    return rig.proxy(f"""
version: 1
upstreams:
  a: {{url: "{upstream.url}"}}
limits:
  max_header_size: 8KiB
  max_body_size: 1MiB
routes:
  - name: all
    match: {{path: /}}
    to: a
""")


def _upload(port: int, head: bytes, body_bytes: int) -> tuple[bytes, str]:
    """Send `head` and `body_bytes` of body in full, then read to the end: (what came back, how it ended)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        chunk = b"x" * 65536
        left = body_bytes
        while left > 0:
            sent = sock.send(chunk[:left])   # raises ConnectionResetError/BrokenPipeError on a reset
            left -= sent
        received = b""
        while True:
            data = sock.recv(65536)
            if not data:
                return received, "eof"
            received += data


def _status_and_problem(received: bytes) -> tuple[int, dict]:
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_a_413_answered_before_the_body_lets_the_client_finish_its_upload_and_read_it(proxy: ProxyProcess):
    head = b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % UPLOAD_BYTES
    received, ended = _upload(proxy.port, head, UPLOAD_BYTES)
    status, problem = _status_and_problem(received)
    assert (status, problem["reason"], ended) == (413, "body_too_large", "eof")
    assert b"connection: close" in received.lower()


def test_a_431_refusal_with_a_body_behind_it_is_read_whole_too(proxy: ProxyProcess):
    head = (b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nX-Big: " + b"a" * 16384
            + b"\r\nContent-Length: %d\r\n\r\n" % UPLOAD_BYTES)
    received, ended = _upload(proxy.port, head, UPLOAD_BYTES)
    status, problem = _status_and_problem(received)
    assert (status, problem["reason"], ended) == (431, "headers_too_large", "eof")


def test_a_client_that_never_stops_sending_is_cut_off_after_the_linger_time(proxy: ProxyProcess):
    deadline = time.monotonic() + LINGER_S + 8
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 999999999999\r\n\r\n")
        with pytest.raises((ConnectionResetError, BrokenPipeError)):
            while time.monotonic() < deadline:
                sock.send(b"x" * 65536)
        assert time.monotonic() < deadline


def test_keep_alive_requests_with_bodies_under_the_limit_are_unaffected(proxy: ProxyProcess):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        for number in range(3):
            body = b"%d" % number * 1000
            sock.sendall(b"POST /keep HTTP/1.1\r\nHost: shop.test\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            status_line = reader.readline()
            assert status_line.startswith(b"HTTP/1.1 200"), status_line
            length = 0
            while (line := reader.readline()) != b"\r\n":
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            reader.read(length)
