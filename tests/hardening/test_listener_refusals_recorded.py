"""Requests refused while parsing (before any route is matched) still show in metrics and the access log."""

from __future__ import annotations

import socket

from tests.support.metrics import scrape
from tests.support.servers import wait_until


def _raw(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        out = b""
        while chunk := sock.recv(65536):
            out += chunk
    return out


def test_a_request_refused_by_the_parser_is_counted_and_logged(start_proxy):
    proxy = start_proxy("""
version: 1
upstreams:
  legacy: {url: "http://127.0.0.1:9"}
routes:
  - {name: all, match: {path: /}, to: legacy}
limits: {max_header_count: 3}
""")
    answer = _raw(proxy.port, b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(5)) + b"\r\n")
    assert answer.startswith(b"HTTP/1.1 431 ")
    metrics = scrape(proxy.admin_url)
    assert metrics.value("strangler_requests_total", route="", upstream="", method="", code="431") == 1
    assert metrics.value("strangler_proxy_errors_total", route="", upstream="", reason="headers_too_large") == 1
    wait_until(lambda: "status=431" in proxy.log() and "reason=headers_too_large" in proxy.log(),
               what="the refusal's access log line")
