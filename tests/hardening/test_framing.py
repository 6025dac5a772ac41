"""Request smuggling and framing, byte for byte over raw sockets.

strangler supports one HTTP/1.1 server implementation: uvicorn's httptools
(llhttp) protocol, through our `strangler.protocol.LimitedHttpToolsProtocol`
(`strangler.server.proxy_uvicorn_config` always passes it; h11 is not
supported). These tests pin what that combination does with hostile framing:
llhttp refuses most of it while parsing, and `strangler.headers.request_framing`
refuses what llhttp lets through (`Transfer-Encoding: ,chunked`, `identity, chunked`
...). Every refusal is a 400 problem+json after which the connection is closed,
and nothing of the request reaches an upstream. What is accepted reaches the
upstream with exactly one framing header, the proxy's own.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.hardening.conftest import Rig
from tests.hardening.wire import closes_after, converse
from tests.support.faults import RecordingUpstream
from tests.support.rawhttp import RawConnection
from tests.support.servers import ProxyProcess
from tests.support.toxiproxy import Latency, Toxiproxy


class Edge:
    def __init__(self, proxy: ProxyProcess, a: RecordingUpstream, b: RecordingUpstream, a_toxics: Toxiproxy) -> None:
        self.proxy, self.a, self.b, self.a_toxics = proxy, a, b, a_toxics

    @property
    def port(self) -> int:
        return self.proxy.port

    def reached(self, marker: str) -> list:
        """Requests either upstream received whose target or a header carries `marker`."""
        return [seen for upstream in (self.a, self.b) for seen in upstream.requests()
                if marker in seen.target or any(marker.encode() in value for _, value in seen.headers)]


@pytest.fixture(scope="module")
def edge(rig: Rig) -> Edge:
    a, b = rig.upstream(), rig.upstream()
    a_toxics = rig.toxiproxy(a, name="a")
    proxy = rig.proxy(f"""
version: 1
upstreams:
  a: {{url: "{a_toxics.url}", timeout: 5s}}
  b: {{url: "{b.url}", timeout: 5s}}
limits: {{header_timeout: 1s, body_idle_timeout: 1s}}
routes:
  - name: a
    match: {{path: /a}}
    to: a
  - name: b
    match: {{path: /b}}
    to: b
""")
    return Edge(proxy, a, b, a_toxics)


@pytest.fixture(autouse=True)
def _no_toxics(edge: Edge):
    yield
    edge.a_toxics.clear()


def _post(target: str, *header_lines: bytes, body: bytes = b"") -> bytes:
    return b"POST " + target.encode() + b" HTTP/1.1\r\nHost: shop.test\r\n" + b"".join(
        line + b"\r\n" for line in header_lines) + b"\r\n" + body


# Each is refused with 400 and a closed connection, and never reaches an upstream.
SMUGGLING = {
    # Both framings: which one the upstream would believe is the attack.
    "cl-and-te": _post("{t}", b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "te-and-cl": _post("{t}", b"Transfer-Encoding: chunked", b"Content-Length: 5", body=b"0\r\n\r\n"),
    # Obfuscated Transfer-Encoding.
    "te-identity": _post("{t}", b"Transfer-Encoding: identity", body=b"hello"),
    "te-xchunked": _post("{t}", b"Transfer-Encoding: xchunked", body=b"0\r\n\r\n"),
    "te-comma-chunked": _post("{t}", b"Transfer-Encoding: ,chunked", body=b"0\r\n\r\n"),
    "te-chunked-identity": _post("{t}", b"Transfer-Encoding: chunked, identity", body=b"0\r\n\r\n"),
    "te-identity-chunked": _post("{t}", b"Transfer-Encoding: identity, chunked", body=b"0\r\n\r\n"),
    "te-gzip-chunked": _post("{t}", b"Transfer-Encoding: gzip, chunked", body=b"0\r\n\r\n"),
    "te-twice": _post("{t}", b"Transfer-Encoding: chunked", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    "te-space-before-colon": _post("{t}", b"Transfer-Encoding : chunked", body=b"0\r\n\r\n"),
    "te-vertical-tab": _post("{t}", b"Transfer-Encoding: \x0bchunked", body=b"0\r\n\r\n"),
    "te-obs-fold": _post("{t}", b"Transfer-Encoding: gzip", b" ,chunked", body=b"0\r\n\r\n"),
    "te-with-cl-in-fold": _post("{t}", b"X-Pad: a", b" Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
    # Duplicate or malformed Content-Length.
    "cl-twice-same": _post("{t}", b"Content-Length: 5", b"Content-Length: 5", body=b"hello"),
    "cl-twice-different": _post("{t}", b"Content-Length: 5", b"Content-Length: 6", body=b"hello!"),
    "cl-list": _post("{t}", b"Content-Length: 5, 5", body=b"hello"),
    "cl-plus": _post("{t}", b"Content-Length: +5", body=b"hello"),
    "cl-negative": _post("{t}", b"Content-Length: -1", body=b"hello"),
    "cl-hex": _post("{t}", b"Content-Length: 0x5", body=b"hello"),
    "cl-inner-space": _post("{t}", b"Content-Length: 5 5", body=b"hello"),
    "cl-overflow": _post("{t}", b"Content-Length: 99999999999999999999999", body=b"hello"),
    "cl-empty": _post("{t}", b"Content-Length: ", body=b"hello"),
    "cl-arabic-digit": _post("{t}", "Content-Length: \u0665".encode(), body=b"hello"),
    # Invalid chunk framing.
    "chunk-size-not-hex": _post("{t}", b"Transfer-Encoding: chunked", body=b"zz\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-overflow": _post("{t}", b"Transfer-Encoding: chunked",
                                 body=b"ffffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
    "chunk-negative": _post("{t}", b"Transfer-Encoding: chunked", body=b"-5\r\nhello\r\n0\r\n\r\n"),
    "chunk-0x-prefix": _post("{t}", b"Transfer-Encoding: chunked", body=b"0x5\r\nhello\r\n0\r\n\r\n"),
    "chunk-size-space": _post("{t}", b"Transfer-Encoding: chunked", body=b"5 \r\nhello\r\n0\r\n\r\n"),
    "chunk-data-overruns": _post("{t}", b"Transfer-Encoding: chunked", body=b"5\r\nhelloXX\r\n0\r\n\r\n"),
    "chunk-bare-lf": _post("{t}", b"Transfer-Encoding: chunked", body=b"5\nhello\n0\n\n"),
    # Field syntax.
    "obs-fold": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nX-A: one\r\n two\r\n\r\n",
    "bare-cr-in-value": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nX-A: a\rb\r\n\r\n",
    "bare-lf-in-value": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nX-A: a\nX-B: b\r\n\r\n",
    "bare-lf-line-ends": b"GET {t} HTTP/1.1\nHost: shop.test\nX-A: b\n\n",
    "nul-in-value": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nX-A: a\x00b\r\n\r\n",
    "nul-in-name": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nX-\x00A: ab\r\n\r\n",
    "space-in-name": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nX A: ab\r\n\r\n",
    "cr-in-target": b"GET {t}\rx HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    "lowercase-method": b"get {t} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    # Targets that could pick another host, and ambiguous Host fields.
    "absolute-form": b"GET http://evil.test{t} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    "absolute-form-https": b"GET https://evil.test{t} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    # Authority-form with any method but CONNECT (which is 405, tests/hardening/test_request_hygiene.py).
    "authority-form": b"OPTIONS evil.test:443 HTTP/1.1\r\nHost: shop.test\r\nX-T: {t}\r\n\r\n",
    "asterisk-form": b"OPTIONS * HTTP/1.1\r\nHost: shop.test\r\nX-T: {t}\r\n\r\n",
    "two-hosts": b"GET {t} HTTP/1.1\r\nHost: shop.test\r\nHost: admin.internal\r\n\r\n",
    "no-host-http11": b"GET {t} HTTP/1.1\r\nX-A: b\r\n\r\n",
}


@pytest.mark.parametrize("case", SMUGGLING, ids=list(SMUGGLING))
def test_hostile_framing_is_refused_with_400_and_a_closed_connection(edge: Edge, test_id: str, case: str):
    target = f"/a/{test_id}"
    conversation = converse(edge.port, SMUGGLING[case].replace(b"{t}", target.encode()))
    assert conversation.statuses == [400] and conversation.closed, (conversation.statuses, conversation.closed)
    response = conversation.responses[0]
    assert response.header("content-type") == "application/problem+json"
    problem = json.loads(response.body)
    assert problem["status"] == 400 and problem["reason"] in ("bad_request", "bad_path")
    assert response.header("connection") == "close"
    assert edge.reached(test_id) == [], "a refused request reached an upstream"


def test_a_double_slash_target_never_becomes_a_host(edge: Edge, test_id: str):
    # `//evil.test/a/...` is origin-form whose path starts with an empty segment: normalized, it is
    # /evil.test/a/..., which no route takes. It must never reach evil.test (nor route /a).
    conversation = converse(edge.port, f"GET //evil.test/a/{test_id} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
    assert conversation.statuses == [404]
    assert edge.reached(test_id) == []


def _framing_at_upstream(edge: Edge, test_id: str) -> tuple[list[bytes], bytes]:
    [seen] = edge.reached(test_id)
    return seen.framing, seen.body


@pytest.mark.parametrize("header_lines,body,expected", [
    ([b"Content-Length: 5"], b"hello", b"hello"),
    ([b"Content-Length: 0"], b"", b""),
    ([b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", b"hello world"),
    ([b"Transfer-Encoding:\tChunked "], b"5\r\nhello\r\n0\r\n\r\n", b"hello"),
    ([b"Transfer-Encoding: chunked"], b"5;name=value\r\nhello\r\n0\r\n\r\n", b"hello"),
    ([b"Transfer-Encoding: chunked"], b"5\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n", b"hello"),
    ([b"Transfer-Encoding: chunked", b"Connection: Transfer-Encoding"], b"2\r\nok\r\n0\r\n\r\n", b"ok"),
], ids=["content-length", "content-length-0", "chunked", "chunked-tab-and-case", "chunk-extension",
        "trailer", "te-named-in-connection"])
def test_accepted_bodies_reach_the_upstream_with_exactly_one_framing_header(edge: Edge, test_id: str,
                                                                           header_lines, body, expected):
    conversation = converse(edge.port, _post(f"/a/{test_id}", *header_lines, b"Connection: close", body=body))
    assert conversation.statuses == [200]
    framing, received = _framing_at_upstream(edge, test_id)
    assert received == expected
    if expected:
        assert len(framing) == 1, framing
        assert framing in ([b"Content-Length: %d" % len(expected)], [b"Transfer-Encoding: chunked"])
    else:
        assert framing in ([], [b"Content-Length: 0"])
    [seen] = edge.reached(test_id)
    assert not seen.values("x-trailer"), "a trailer field became a header upstream"


@pytest.mark.parametrize("framing_line", [b"Content-Length: %d", b"Transfer-Encoding: chunked"])
def test_a_streamed_body_has_one_framing_header_upstream(edge: Edge, test_id: str, framing_line: bytes):
    payload = bytes(range(256)) * 1024          # 256 KiB: over the replay buffer, so it is streamed
    if b"%d" in framing_line:
        head, body = framing_line % len(payload), payload
    else:
        head = framing_line
        body = b"".join(b"%x\r\n" % len(part) + part + b"\r\n"
                        for part in (payload[i:i + 50_000] for i in range(0, len(payload), 50_000))) + b"0\r\n\r\n"
    conversation = converse(edge.port, _post(f"/a/{test_id}", head, b"Connection: close", body=body))
    assert conversation.statuses == [200]
    framing, received = _framing_at_upstream(edge, test_id)
    assert received == payload
    assert len(framing) == 1, framing


def test_a_bodiless_get_carries_no_framing_header_upstream(edge: Edge, test_id: str):
    assert converse(edge.port, f"GET /a/{test_id} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode()).statuses == [200]
    framing, _ = _framing_at_upstream(edge, test_id)
    assert framing in ([], [b"Content-Length: 0"])


def _get(target: str, test_id: str, *extra: str) -> bytes:
    lines = [f"GET {target} HTTP/1.1", "Host: shop.test", f"X-Test-Id: {test_id}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("slow_a", [False, True], ids=["both-fast", "first-upstream-slow"])
def test_pipelined_requests_are_answered_in_order_each_routed_on_its_own(edge: Edge, test_id: str, slow_a: bool):
    if slow_a:
        edge.a_toxics.add(Latency(seconds=0.3))      # a's answers come after b's would
    order = ["a", "b", "a", "b", "b", "a"]
    ids = [f"{test_id}-{i}" for i in range(len(order))]
    data = b"".join(_get(f"/{route}/{ids[i]}", ids[i]) for i, route in enumerate(order))
    conversation = converse(edge.port, data, expect=len(order))
    assert conversation.statuses == [200] * len(order)
    assert [r.header("x-echo-id") for r in conversation.responses] == ids
    assert [r.header("x-strangler-route") for r in conversation.responses] == order
    assert [r.header("x-strangler-upstream") for r in conversation.responses] == order
    assert [r.body.split(b" ")[0] for r in conversation.responses] == [f"id={i}".encode() for i in ids]
    # Each upstream received its own requests, and only those.
    assert sorted(s.test_id for s in edge.a.requests() if test_id in s.target) == sorted(
        ids[i] for i, route in enumerate(order) if route == "a")
    assert sorted(s.test_id for s in edge.b.requests() if test_id in s.target) == sorted(
        ids[i] for i, route in enumerate(order) if route == "b")
    assert not conversation.closed


@pytest.mark.parametrize("bad", [
    b"GET http://evil.test/a/{t} HTTP/1.1\r\nHost: shop.test\r\n\r\n",
    b"POST /a/{t} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST /a/{t} HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    b"POST /b/{t} HTTP/1.1\r\nHost: shop.test\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n",
], ids=["absolute-form", "duplicate-content-length", "bad-chunk", "te-comma-chunked"])
def test_a_bad_request_pipelined_behind_a_slow_one_is_refused_in_its_turn(edge: Edge, test_id: str, bad: bytes):
    # The refusal must not overtake the first response: the client would take it for that one's.
    edge.a_toxics.add(Latency(seconds=0.3))
    first = f"{test_id}-first"
    data = _get(f"/a/{first}", first) + bad.replace(b"{t}", f"{test_id}-bad".encode()) + _get(
        f"/b/{test_id}-after", f"{test_id}-after")
    conversation = converse(edge.port, data, expect=2)
    assert conversation.statuses == [200, 400], conversation.statuses
    assert conversation.responses[0].header("x-echo-id") == first
    assert conversation.closed
    assert [seen.test_id for seen in edge.reached(test_id)] == [first]


def test_slowloris_headers_behind_a_slow_request_get_408(edge: Edge, test_id: str):
    edge.a_toxics.add(Latency(seconds=1.5))            # longer than header_timeout (1 s)
    with RawConnection(edge.port) as connection:
        connection.send(_get(f"/a/{test_id}", test_id) + b"GET /b/" + test_id.encode() + b"-slow HTTP/1.1\r\n")
        first = connection.read_response()
        assert first.status == 200 and first.header("x-echo-id") == test_id
        # Keep trickling header lines (the slow client is the fault): the deadline counts from
        # when the slow answer went out, and must then cut the drip off.
        connection.sock.settimeout(0.1)
        deadline = time.monotonic() + 8
        while b"\r\n\r\n" not in connection._buffer and time.monotonic() < deadline:
            try:
                connection.send(b"X-Drip: 1\r\n")
                data = connection.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            connection._buffer += data
        connection.sock.settimeout(5)
        second = connection.read_response()
        assert second.status == 408
        assert closes_after(connection)
    assert [seen.test_id for seen in edge.reached(test_id)] == [test_id]


def test_an_h2c_upgrade_is_served_as_http_1_1_and_the_connection_stays_usable(edge: Edge, test_id: str):
    # What curl --http2 sends on http://. llhttp stops reading at an upgrade request; the proxy
    # reads on with a new parser, so the request behind it (pipelined here) is answered too.
    data = _get(f"/a/{test_id}", test_id, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA") + _get(f"/b/{test_id}-behind", f"{test_id}-behind")
    conversation = converse(edge.port, data, expect=2)
    assert conversation.statuses == [200, 200]
    assert not conversation.closed
    assert [response.header("x-echo-id") for response in conversation.responses] == [test_id, f"{test_id}-behind"]
    [seen] = [seen for seen in edge.reached(test_id) if seen.test_id == test_id]
    for name in ("upgrade", "http2-settings", "connection"):
        assert not seen.values(name), f"{name} reached the upstream"


def test_after_an_h2c_upgrade_a_second_request_on_the_same_connection_is_answered(edge: Edge, test_id: str):
    """Request, answer, then the next request on the same connection, as a keep-alive client sends them."""
    with RawConnection(edge.port) as connection:
        connection.send(_get(f"/a/{test_id}", test_id, "Connection: Upgrade, HTTP2-Settings", "Upgrade: h2c",
                             "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA"))
        first = connection.read_response()
        connection.send(_get(f"/b/{test_id}-2", f"{test_id}-2"))
        second = connection.read_response()
    assert (first.status, second.status) == (200, 200)
    assert first.header("connection") is None and second.header("x-echo-id") == f"{test_id}-2"


def test_a_request_line_without_version_0_9_style_is_not_smuggled(edge: Edge, test_id: str):
    # Whatever the parser makes of it, at most this one request reaches an upstream.
    conversation = converse(edge.port, f"GET /a/{test_id}\r\n\r\nGET /b/{test_id}-2 HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    assert 500 not in conversation.statuses
    assert {seen.target for seen in edge.reached(test_id)} <= {f"/a/{test_id}"}


@pytest.mark.parametrize("request_line", ["GET {t}", "GET {t} HTTP/0.9", "GET {t} HTTP/2.0"])
def test_a_request_line_of_another_http_version_gets_505_and_reaches_no_upstream(edge: Edge, test_id: str,
                                                                                request_line: str):
    line = request_line.format(t=f"/a/{test_id}")
    conversation = converse(edge.port, f"{line}\r\nHost: shop.test\r\n\r\n".encode())
    assert conversation.statuses == [505] and conversation.closed
    assert json.loads(conversation.responses[0].body)["reason"] == "http_version_not_supported"
    assert edge.reached(test_id) == []


def test_a_websocket_handshake_answered_200_passes_through_and_ends_the_connection(edge: Edge, test_id: str):
    # The handshake is forwarded with its upgrade fields; an upstream that answers 200 instead of
    # 101 has its answer passed on as it is, and bytes after the handshake are never a request.
    data = _get(f"/a/{test_id}", test_id, "Connection: keep-alive, Upgrade, X-Named", "Upgrade: websocket",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Version: 13", "X-Named: 1")
    conversation = converse(edge.port, data + _get(f"/b/{test_id}-behind", f"{test_id}-behind"))
    assert conversation.statuses == [200]
    assert conversation.responses[0].header("x-echo-id") == test_id
    assert conversation.closed
    [seen] = edge.reached(test_id)
    assert (seen.values("connection"), seen.values("upgrade")) == ([b"Upgrade"], [b"websocket"])
    assert seen.values("sec-websocket-key") == [b"dGhlIHNhbXBsZSBub25jZQ=="] and not seen.values("x-named")


@pytest.mark.parametrize("framing", [b"Content-Length: 5", b"Transfer-Encoding: chunked"])
def test_an_h2c_upgrade_with_a_body_is_forwarded_whole_and_the_connection_stays_usable(edge: Edge, test_id: str,
                                                                                      framing: bytes):
    # llhttp hands over at an upgrade request's head, its body unread: the proxy reads the body as
    # framed and the requests after it as requests.
    body = b"hello" if framing.startswith(b"Content") else b"5\r\nhello\r\n0\r\n\r\n"
    data = _post(f"/a/{test_id}", b"X-Test-Id: " + test_id.encode(), b"Connection: Upgrade", b"Upgrade: h2c",
                 framing, body=body)
    conversation = converse(edge.port, data + _get(f"/b/{test_id}-behind", f"{test_id}-behind"), expect=2)
    assert conversation.statuses == [200, 200] and not conversation.closed
    [seen] = [seen for seen in edge.reached(test_id) if seen.test_id == test_id]
    assert seen.body == b"hello" and not seen.values("upgrade")
