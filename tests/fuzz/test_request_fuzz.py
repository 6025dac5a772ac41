"""Fuzzing the request path.

In process, with hypothesis: `normalize_path`, `request_framing` and
`upstream_request_headers` take anything a parser could hand them and either
refuse it (BadPath/BadRequest, a 400) or return something safe to route on and
to forward: a path the upstream cannot decode into another one, one framing,
no hop-by-hop field, forwarding fields that are the proxy's own.

Against a running proxy (uvicorn's httptools through LimitedHttpToolsProtocol),
over raw sockets: generated request lines, header blocks and bodies never get
a 500, never crash the process, and whatever reaches the upstream carries at
most one framing header.
"""

from __future__ import annotations

import re
import socket
import time
from collections.abc import Iterator
from urllib.parse import unquote_to_bytes

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from strangler.errors import BadPath, BadRequest
from strangler.headers import HOP_BY_HOP, is_valid_host, request_framing, upstream_request_headers
from strangler.paths import normalize_path
from tests.fuzz.budget import fuzz_settings
from tests.hardening.conftest import Rig
from tests.support.faults import RecordingUpstream
from tests.support.metrics import scrape
from tests.support.servers import ProxyProcess

# -- normalize_path ------------------------------------------------------------------------------

_PATH_PIECES = [b"/", b"//", b".", b"..", b"%2e", b"%2E", b"%2e%2e", b".%2e", b"%2f", b"%2F", b"%5c", b"\\", b"%",
                b"%4", b"%41", b"%7e", b"%00", b"%1f", b"%7f", b"%80", b"%ff", b"%25", b"%252e", b"a", b"api",
                b"orders", b"~", b"-", b"_", b";", b"=", b":", b"@", b"!", b"$", b"'", b"(", b"*", b"+", b",",
                b" ", b"\"", b"<", b"{", b"|", b"^", b"`", b"\x00", b"\x7f", b"\xe9", b"\xff", b"?", b"#"]
_raw_paths = st.one_of(
    st.lists(st.sampled_from(_PATH_PIECES), max_size=20).map(lambda parts: b"/" + b"".join(parts)),
    st.binary(max_size=40),
)


def _upstream_view(path: str) -> list[bytes]:
    """The segments an upstream that percent-decodes sees."""
    return [unquote_to_bytes(segment) for segment in path.split("/")[1:]]


@fuzz_settings(300)
@given(_raw_paths)
@example(b"/public/%2e%2e/admin")
@example(b"/a/.%2E/%2e./b")
@example(b"//evil.example/x")
def test_normalize_path_refuses_or_returns_a_path_no_upstream_reads_differently(raw: bytes):
    try:
        path = normalize_path(raw)
    except BadPath:
        return
    assert path.startswith("/") and path.isascii()
    assert "//" not in path
    assert normalize_path(path.encode()) == path                  # a fixed point: matched as forwarded
    for segment in _upstream_view(path)[:-1] + [s for s in _upstream_view(path)[-1:] if s]:
        assert segment not in (b".", b".."), path                # no dot segment, even once decoded
        assert b"/" not in segment and b"\\" not in segment      # no hidden separator
        assert not any(byte < 0x20 or byte == 0x7F for byte in segment)
    assert re.fullmatch(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*", path)
    for escape in re.findall(r"%(..)", path):
        assert re.fullmatch(r"[0-9A-F]{2}", escape)


# -- request_framing -----------------------------------------------------------------------------

_framing_names = st.sampled_from([b"Content-Length", b"content-length", b"CONTENT-LENGTH", b"Transfer-Encoding",
                                  b"transfer-encoding", b"Content-Length ", b"X-Other", b"Content-Lengthx"])
_framing_values = st.one_of(
    st.sampled_from([b"0", b"5", b"05", b" 5 ", b"+5", b"-5", b"5, 5", b"0x5", b"", b"5 5", b"1e3",
                     b"999999999999999999", b"9999999999999999999", "\u0665".encode(), b"chunked", b"Chunked ",
                     b"chunked, chunked", b",chunked", b"identity", b"gzip, chunked", b"xchunked", b"chunked\t"]),
    st.binary(max_size=8),
)


@fuzz_settings(300)
@given(st.lists(st.tuples(_framing_names, _framing_values), max_size=4))
def test_request_framing_is_unambiguous_or_refused(headers: list[tuple[bytes, bytes]]):
    try:
        framing = request_framing(headers)
    except BadRequest:
        return
    lengths = [value for name, value in headers if name.lower() == b"content-length"]
    encodings = [value for name, value in headers if name.lower() == b"transfer-encoding"]
    assert not (lengths and encodings)
    if framing.chunked:
        assert framing.content_length is None
        assert len(encodings) == 1 and encodings[0].strip().lower() == b"chunked"
    elif framing.content_length is not None:
        assert len(lengths) == 1
        digits = lengths[0].strip()
        assert digits.isdigit() and digits.isascii() and int(digits) == framing.content_length
        assert 0 <= framing.content_length < 10**18
    else:
        assert not lengths and not encodings


# -- upstream_request_headers -------------------------------------------------------------------

_TOKEN = st.from_regex(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,12}", fullmatch=True)
_field_names = st.one_of(
    st.sampled_from([b"Host", b"Connection", b"connection", b"Keep-Alive", b"TE", b"Trailer", b"Upgrade",
                     b"Transfer-Encoding", b"Content-Length", b"Expect", b"Proxy-Authorization", b"Proxy-Foo",
                     b"X-Forwarded-For", b"x-forwarded-for", b"X-Forwarded-Proto", b"X-Forwarded-Host",
                     b"Forwarded", b"Via", b"X-Request-ID", b"Cookie", b"Authorization", b"X-Custom"]),
    _TOKEN,
)
# What llhttp lets through in a value: visible bytes, obs-text, space and tab (never CR, LF or NUL).
_field_values = st.one_of(
    st.sampled_from([b"close", b"keep-alive, X-Custom", b"X-Forwarded-For", b"x-forwarded-for, via", b"Upgrade",
                     b"10.0.0.1", b"1.2.3.4, 10.0.0.9", b"https", b"caf\xc3\xa9", b"caf\xe9", b"\xff", b""]),
    st.binary(max_size=16).map(lambda b: bytes(c for c in b if c not in (0, 10, 13))),
)


@fuzz_settings(300)
@given(st.lists(st.tuples(_field_names, _field_values), max_size=10), st.booleans(),
       st.sampled_from(["10.1.2.3", "::1"]), st.sampled_from(["http", "https"]))
def test_upstream_request_headers_forward_only_what_is_safe(headers, trusted: bool, peer: str, scheme: str):
    try:
        forwarded = upstream_request_headers(headers, client_ip=peer, scheme=scheme, trusted_client=trusted)
    except BadRequest:
        # Only undecodable values are refused, and a trusted X-Forwarded-Host that is not host[:port].
        assert any(not _utf8(value) for _, value in headers) or (trusted and any(
            name.lower() == b"x-forwarded-host" and not all(is_valid_host(part.strip(b" \t")) for part in value.split(b","))
            for name, value in headers))
        return
    out = [_text(name, value) for name, value in forwarded]
    names = [name.lower() for name, _ in out]
    named = {token.strip().lower() for name, value in headers if name.lower() == b"connection"
             for token in value.split(b",")}
    for name in names:
        encoded = name.encode("latin-1")
        assert encoded not in HOP_BY_HOP and not encoded.startswith(b"proxy-")
        assert encoded not in (b"content-length", b"expect")
        # A field the client named in Connection is dropped, unless it is one the proxy sets itself.
        assert encoded not in named or encoded in (b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host",
                                                   b"via")
    # The forwarding fields are the proxy's, once each.
    assert names.count("x-forwarded-for") == 1 and names.count("x-forwarded-proto") == 1 and names.count("via") == 1
    forwarded_for = dict((n.lower(), v) for n, v in out)["x-forwarded-for"]
    if trusted:
        assert forwarded_for.endswith(peer)
    else:
        assert forwarded_for == peer                                # a client's own value is never kept
        assert "forwarded" not in names
        assert dict((n.lower(), v) for n, v in out)["x-forwarded-proto"] == scheme
    # What is passed on arrives byte for byte, in order.
    passed = [(n.encode("latin-1"), v.encode("utf-8")) for n, v in out
              if n.lower() not in ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via", "forwarded")]
    originals = [(n, v) for n, v in headers if n.lower() not in (
        b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host", b"via", b"forwarded")]
    assert all(pair in originals for pair in passed)


def _text(name: str | bytes, value: str | bytes) -> tuple[str, str]:
    """A forwarded field as text, whether the function gives text or bytes."""
    return (name.decode("latin-1") if isinstance(name, bytes) else name,
            value.decode("utf-8") if isinstance(value, bytes) else value)


def _utf8(value: bytes) -> bool:
    try:
        value.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# -- raw requests against a running proxy -------------------------------------------------------

_GOOD_PIECES = [b"/", b"//", b".", b"..", b"%2e", b"%2E%2e", b"%2f", b"%5c", b"%41", b"%7e", b"%00", b"%80", b"%ff",
                b"%25", b"a", b"api", b"orders", b"~", b"-", b";", b"=", b":", b"@", b"!", b"$", b"'", b"*", b"+",
                b",", b"?q=1", b"?a=%zz&b", b"?x=/../y", b"%"]
_BAD_PIECES = [b" ", b"\t", b"\r", b"\n", b"\x00", b"\x7f", b"\xe9", b"#frag", b"\\", b"\"", b"<", b"{", b"|"]


def _often(draw: st.DrawFn, good: st.SearchStrategy, bad: st.SearchStrategy, bad_one_in: int = 5):
    """Mostly well-formed, so that requests get past the parser and reach the proxy's own checks."""
    # sampled_from, not integers: hypothesis draws an integer range's bounds far more often than 1 in n.
    return draw(bad) if draw(st.sampled_from([False] * (bad_one_in - 1) + [True])) else draw(good)


_good_methods = st.sampled_from([b"GET", b"POST", b"PUT", b"HEAD", b"DELETE", b"OPTIONS", b"PATCH"])
_bad_methods = st.sampled_from([b"CONNECT", b"TRACE", b"get", b"G ET", b"", b"PRI", b"\xff", b"GET\t", b"FOO"])
_good_targets = st.lists(st.sampled_from(_GOOD_PIECES), max_size=8).map(lambda parts: b"/" + b"".join(parts))
_bad_targets = st.one_of(
    st.lists(st.sampled_from(_GOOD_PIECES + _BAD_PIECES), min_size=1, max_size=8).map(lambda p: b"/" + b"".join(p)),
    st.sampled_from([b"*", b"http://evil.test/", b"evil.test:443", b"", b"/" + b"a" * 3000, b"//evil.test/x"]))
_good_versions = st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0"])
_bad_versions = st.sampled_from([b"HTTP/0.9", b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.1 ", b""])
_good_values = st.one_of(
    st.sampled_from([b"close", b"keep-alive, X-Custom", b"X-Forwarded-For", b"x-forwarded-for, via", b"10.0.0.1",
                     b"1.2.3.4, 10.0.0.9", b"https", b"caf\xc3\xa9", b""]),
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=16).map(lambda t: t.strip(" ").encode()))
# Well-formed fields, hostile in meaning: hop-by-hop, forwarding, framing-looking, non-UTF-8.
_good_lines = st.one_of(
    st.tuples(_field_names.filter(lambda n: n.lower() not in (b"content-length", b"transfer-encoding", b"host")),
              _good_values).map(lambda nv: nv[0] + b": " + nv[1]),
    st.sampled_from([b"Expect: 100-continue", b"Connection: Upgrade", b"Upgrade: h2c", b"Upgrade: websocket",
                     b"Connection: close, X-Forwarded-For", b"TE: trailers", b"X-Forwarded-For: 1.2.3.4",
                     b"Cookie: strangler_cohort=abc", b"X-Request-ID: fuzz-1"]))
_bad_lines = st.one_of(
    st.sampled_from([b"Content-Length: 5", b"Content-Length: abc", b"Transfer-Encoding: chunked",
                     b"Transfer-Encoding: xchunked", b"Transfer-Encoding: chunked, identity", b" folded",
                     b"\tfolded", b"NoColon", b": novalue", b"X-A: a\rb", b"X-A: a\x00b", b"Host: other",
                     b"X-Big: " + b"x" * 5000, b"Content-Length: 0", b"Content-Length: 1"]),
    st.binary(max_size=20))


@st.composite
def _framed_body(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    """A body framed as a client would: by Content-Length, chunked (maybe with trailers), or none."""
    body = draw(st.binary(max_size=200))
    how = draw(st.sampled_from(["length", "chunked", "none"]))
    if how == "length":
        return [b"Content-Length: %d" % len(body)], body
    if how == "chunked":
        cuts = sorted(set(draw(st.lists(st.integers(0, len(body)), max_size=3))))
        parts = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)]) if body[a:b]]
        trailer = draw(st.sampled_from([b"", b"X-T: 1\r\n", b"Host: evil\r\n", b"Content-Length: 9\r\n"]))
        return [b"Transfer-Encoding: chunked"], b"".join(
            b"%x\r\n" % len(part) + part + b"\r\n" for part in parts) + b"0\r\n" + trailer + b"\r\n"
    return [], b""


_bad_bodies = st.one_of(st.binary(max_size=64),
                        st.sampled_from([b"0\r\n\r\n", b"zz\r\n", b"5\r\nhelloXX0\r\n\r\n", b"5\nhello\n0\n\n"]))
_SENTINEL = b"GET /fuzz/__end HTTP/1.1\r\nHost: fuzz.test\r\nConnection: close\r\n\r\n"


@st.composite
def raw_requests(draw: st.DrawFn) -> bytes:
    """One request, mostly well-formed, with a few things off (or none)."""
    bad = draw(st.sampled_from([0, 0, 1, 1, 2, 3]))          # how hard to push: 0 gives a well-formed request
    line = (_often(draw, _good_methods, _bad_methods, 8 - bad) + b" " + _often(draw, _good_targets, _bad_targets, 8 - bad)
            + b" " + _often(draw, _good_versions, _bad_versions, 10 - bad))
    headers = draw(st.lists(_good_lines, max_size=5))
    for _ in range(bad):
        headers.insert(draw(st.integers(0, len(headers))), draw(_bad_lines))
    if draw(st.sampled_from([True] * 9 + [False])):
        headers.insert(0, b"Host: fuzz.test")
    framing, body = draw(_framed_body())
    if not bad or draw(st.sampled_from([True] * 4 + [False])):
        headers += framing
    else:
        body = draw(_bad_bodies)
    eol = draw(st.sampled_from([b"\r\n"] * 9 + [b"\n", b"\r"]) if bad else st.just(b"\r\n"))
    return eol.join([line, *headers]) + eol + eol + body


class Running:
    def __init__(self, proxy: ProxyProcess, upstream: RecordingUpstream) -> None:
        self.proxy, self.upstream = proxy, upstream


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    rig = Rig(tmp_path_factory.mktemp("fuzz"))
    try:
        upstream = rig.upstream()
        proxy = rig.proxy(f"""
version: 1
upstreams:
  a: {{url: "{upstream.url}", timeout: 2s}}
  b: {{url: "{upstream.url}", timeout: 2s}}
limits: {{header_timeout: 500ms, body_idle_timeout: 500ms, max_url_length: 2048, max_header_size: 4KiB}}
routes:
  - name: split
    match: {{path: /api}}
    split: {{a: 50, b: 50}}
  - name: fuzz
    match: {{path: /}}
    to: a
""")
        yield Running(proxy, upstream)
    finally:
        rig.close()


def _exchange(port: int, data: bytes) -> bytes:
    """Send; read until the proxy closes or goes quiet (the sentinel asks it to close when it gets that far)."""
    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        try:
            sock.sendall(data + _SENTINEL)
        except OSError:
            pass                                     # refused halfway: read what it said
        deadline = time.monotonic() + 3
        sock.settimeout(1.5)
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            received += chunk
    return received


_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


@fuzz_settings(80)
@given(raw_requests())
@example(b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
@example(b"GET /x HTTP/1.1\r\nHost: a\r\nX-A: \xff\r\n\r\n")
@example(b"GET /x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
@example(b"POST /x HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 3\r\n\r\nabc")
@example(b"POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nHost: evil\r\n\r\n")
def test_raw_requests_never_get_a_500_nor_crash_the_proxy(running: Running, data: bytes):
    before = running.upstream.count
    received = _exchange(running.proxy.port, data)
    statuses = [int(status) for status in _STATUS.findall(received)]
    assert 500 not in statuses, received[:500]
    assert all(100 <= status < 600 for status in statuses)
    if received:
        assert received.startswith(b"HTTP/1.1 "), received[:200]
    assert running.proxy.process is not None and running.proxy.process.poll() is None, "the proxy died"
    for seen in running.upstream.requests()[before:]:
        framing = seen.framing
        assert len(framing) <= 1, framing
        assert len(seen.values("host")) <= 1


def test_after_the_fuzzing_the_proxy_logged_no_exception_and_counted_no_500(running: Running):
    assert scrape(running.proxy.admin_url).value("strangler_requests_total", code="500") == 0
    log = running.proxy.log()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log[-3000:]
    assert "returned without starting response" not in log
