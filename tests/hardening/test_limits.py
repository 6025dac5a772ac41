"""Limits with clear answers: 431, 414, 413 (before the body is read, never a `100 Continue`), 408.

Raw sockets against `strangler run` (uvicorn's httptools through LimitedHttpToolsProtocol,
the only server implementation strangler supports). The limits come from the YAML
`limits:` section; the defaults are checked against the documented ones.
"""

from __future__ import annotations

import json
import time

import httpx
import pytest

from strangler.config.loader import ConfigError, parse_config
from strangler.config.model import Limits
from tests.hardening.conftest import Rig
from tests.hardening.wire import closes_after, converse
from tests.support.faults import RecordingUpstream
from tests.support.rawhttp import RawConnection
from tests.support.servers import ProxyProcess

HEADER_TIMEOUT_S = 1.0
BODY_IDLE_S = 1.0
# The paths the tests use; anything else has no route (404).
_PREFIX_ROUTES = "".join(f"""  - name: {name}
    match: {{path: /{name}}}
    to: a
""" for name in ("ok", "over", "over2", "big", "idle", "trickle", "slow"))


class Limited:
    def __init__(self, proxy: ProxyProcess, upstream: RecordingUpstream) -> None:
        self.proxy, self.upstream = proxy, upstream

    @property
    def port(self) -> int:
        return self.proxy.port

    def reached(self, marker: str) -> list:
        return [seen for seen in self.upstream.requests() if marker in seen.target]


@pytest.fixture(scope="module")
def limited(rig: Rig) -> Limited:
    upstream = rig.upstream()
    proxy = rig.proxy(f"""
version: 1
upstreams:
  a: {{url: "{upstream.url}"}}
limits:
  max_url_length: 1024
  max_header_size: 8KiB
  max_header_count: 30
  max_body_size: 1MiB
  header_timeout: {HEADER_TIMEOUT_S}s
  body_idle_timeout: {BODY_IDLE_S}s
routes:
  - name: small
    match: {{path: /small}}
    to: a
    max_body_size: 16
{_PREFIX_ROUTES}""")
    return Limited(proxy, upstream)


def _problem(response, status: int, reason: str) -> None:
    assert response.status == status, response.body
    assert response.header("content-type") == "application/problem+json"
    problem = json.loads(response.body)
    assert problem["status"] == status and problem["reason"] == reason


def _head(target: str, *lines: str) -> bytes:
    return ("\r\n".join([f"GET {target} HTTP/1.1", "Host: shop.test", *lines]) + "\r\n\r\n").encode()


# Header count and size: 431.

def test_header_count_at_the_limit_passes_and_one_more_is_431(limited: Limited, test_id: str):
    # Host plus 29 more is 30 fields: the limit.
    at_limit = [f"X-F{i}: v" for i in range(29)]
    assert converse(limited.port, _head(f"/ok/{test_id}", *at_limit)).statuses == [200]
    conversation = converse(limited.port, _head(f"/over/{test_id}", *at_limit, "X-One-More: v"))
    assert conversation.statuses == [431] and conversation.closed
    _problem(conversation.responses[0], 431, "headers_too_large")
    assert [seen.target for seen in limited.reached(test_id)] == [f"/ok/{test_id}"]


def test_header_bytes_over_the_limit_are_431(limited: Limited, test_id: str):
    assert converse(limited.port, _head(f"/ok/{test_id}", "X-Big: " + "a" * 7000)).statuses == [200]
    conversation = converse(limited.port, _head(f"/over/{test_id}", "X-Big: " + "a" * 9000))
    assert conversation.statuses == [431] and conversation.closed
    _problem(conversation.responses[0], 431, "headers_too_large")
    # Many small fields add up too.
    conversation = converse(limited.port, _head(f"/over2/{test_id}", *[f"X-F{i}: {'b' * 400}" for i in range(25)]))
    assert conversation.statuses == [431]
    assert [seen.target for seen in limited.reached(test_id)] == [f"/ok/{test_id}"]


# URL length: 414.

@pytest.mark.parametrize("where", ["path", "query"])
def test_a_target_over_max_url_length_is_414(limited: Limited, test_id: str, where: str):
    fits = f"/ok/{test_id}/" + "p" * 900 if where == "path" else f"/ok/{test_id}?q=" + "p" * 900
    assert converse(limited.port, _head(fits)).statuses == [200]
    over = f"/over/{test_id}/" + "p" * 1100 if where == "path" else f"/over/{test_id}?q=" + "p" * 1100
    conversation = converse(limited.port, _head(over))
    assert conversation.statuses == [414] and conversation.closed
    _problem(conversation.responses[0], 414, "uri_too_long")
    assert len(limited.reached(test_id)) == 1


# Body size: 413 before the body is read.

def test_a_declared_body_over_the_route_limit_is_413_before_any_byte_of_it(limited: Limited, test_id: str):
    with RawConnection(limited.port) as connection:
        # Only the head is sent: the answer must come without waiting for the body.
        connection.send(f"POST /small/{test_id} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 17\r\n\r\n".encode())
        connection.sock.settimeout(BODY_IDLE_S / 2)       # well before the body's idle timeout
        response = connection.read_response()
        _problem(response, 413, "body_too_large")
        assert response.header("connection") == "close"
        connection.sock.settimeout(3)
        assert closes_after(connection)
    assert limited.reached(test_id) == []
    # At the limit it passes; the limit is the route's own (16 bytes), not the global 1 MiB.
    body = b"x" * 16
    fits = converse(limited.port, f"POST /small/{test_id}-fits HTTP/1.1\r\nHost: shop.test\r\n"
                                  f"Content-Length: 16\r\n\r\n".encode() + body)
    assert fits.statuses == [200]
    assert [seen.body for seen in limited.reached(test_id)] == [body]


def test_expect_100_continue_over_the_limit_gets_413_and_never_100_continue(limited: Limited, test_id: str):
    with RawConnection(limited.port) as connection:
        connection.send(f"POST /small/{test_id} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 1000\r\n"
                        f"Expect: 100-continue\r\n\r\n".encode())
        response = connection.read_response()
        _problem(response, 413, "body_too_large")
        # The client may send the body or not: the connection is not reused either way.
        assert closes_after(connection)
        assert b"100 Continue" not in connection._buffer
    assert limited.reached(test_id) == []


def test_expect_100_continue_under_the_limit_gets_100_then_the_answer(limited: Limited, test_id: str):
    with RawConnection(limited.port) as connection:
        connection.send(f"POST /small/{test_id} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 5\r\n"
                        f"Expect: 100-continue\r\n\r\n".encode())
        interim = connection.read_response()
        assert interim.status == 100
        connection.send(b"hello")
        assert connection.read_response().status == 200
    assert [seen.body for seen in limited.reached(test_id)] == [b"hello"]
    assert not limited.reached(test_id)[0].values("expect"), "the proxy answers Expect itself"


def test_any_refusal_of_an_expect_100_continue_request_closes_the_connection(limited: Limited, test_id: str):
    # No route here is a 404 made without reading the body: the next bytes may or may not be it.
    with RawConnection(limited.port) as connection:
        connection.send(f"POST /nowhere/{test_id} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 100\r\n"
                        f"Expect: 100-continue\r\n\r\nGET /small/{test_id} HTTP/1.1\r\nHost: shop.test\r\n\r\n".encode())
        response = connection.read_response()
        assert response.status == 404
        assert response.header("connection") == "close"
        assert closes_after(connection)


def test_a_chunked_body_over_the_limit_is_413_and_never_arrives_whole(limited: Limited, test_id: str):
    chunk = b"y" * 64 * 1024
    body = b"".join(b"%x\r\n" % len(chunk) + chunk + b"\r\n" for _ in range(20)) + b"0\r\n\r\n"   # 1.25 MiB
    conversation = converse(limited.port, f"POST /big/{test_id} HTTP/1.1\r\nHost: shop.test\r\n"
                                          f"Transfer-Encoding: chunked\r\n\r\n".encode() + body)
    assert conversation.statuses == [413] and conversation.closed
    _problem(conversation.responses[0], 413, "body_too_large")
    assert limited.reached(test_id) == [], "a body cut at the limit was delivered as a whole request"


# Deadlines: 408.

@pytest.mark.parametrize("partial", [b"GET /slow", b"GET /slow HTTP/1.1\r\nHost: shop.test\r\nX-A: b"],
                         ids=["request-line", "headers"])
def test_headers_not_complete_within_header_timeout_get_408(limited: Limited, partial: bytes):
    started = time.monotonic()
    conversation = converse(limited.port, partial, timeout_s=HEADER_TIMEOUT_S + 4)
    elapsed = time.monotonic() - started
    assert conversation.statuses == [408] and conversation.closed
    _problem(conversation.responses[0], 408, "request_timeout")
    assert HEADER_TIMEOUT_S * 0.9 <= elapsed < HEADER_TIMEOUT_S + 2, elapsed


def test_a_connection_that_sends_nothing_is_closed_quietly_after_header_timeout(limited: Limited):
    with RawConnection(limited.port) as connection:
        started = time.monotonic()
        assert closes_after(connection, timeout_s=HEADER_TIMEOUT_S + 3)
        assert time.monotonic() - started >= HEADER_TIMEOUT_S * 0.9
        assert connection._buffer == b""


@pytest.mark.parametrize("framing,first", [
    (b"Content-Length: 10", b"abc"),
    (b"Transfer-Encoding: chunked", b"3\r\nabc\r\n"),
    (b"Content-Length: 200000", b"z" * 70000),          # over the replay buffer: already streaming upstream
], ids=["content-length", "chunked", "streaming"])
def test_a_request_body_idle_past_body_idle_timeout_gets_408_not_500(limited: Limited, test_id: str, framing, first):
    started = time.monotonic()
    conversation = converse(limited.port, f"POST /idle/{test_id} HTTP/1.1\r\nHost: shop.test\r\n".encode()
                            + framing + b"\r\n\r\n" + first, timeout_s=BODY_IDLE_S + 4)
    assert conversation.statuses == [408] and conversation.closed, conversation.statuses
    _problem(conversation.responses[0], 408, "request_timeout")
    assert time.monotonic() - started >= BODY_IDLE_S * 0.9
    assert limited.reached(test_id) == [], "a partial body reached the upstream as a whole request"


def test_a_slow_body_whose_pauses_stay_under_body_idle_timeout_passes(limited: Limited, test_id: str):
    # The idle timeout bounds each pause, not the whole upload (0.4 s pauses, 1.2 s in all).
    with RawConnection(limited.port) as connection:
        connection.send(f"POST /trickle/{test_id} HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 3\r\n\r\n".encode())
        for byte in b"slo":
            connection.sock.settimeout(BODY_IDLE_S * 0.4)          # the slow client's pause is the fault
            try:
                connection.sock.recv(1)
                raise AssertionError("the proxy answered before the body was complete")
            except TimeoutError:
                pass
            connection.send(bytes([byte]))
        connection.sock.settimeout(5)
        assert connection.read_response().status == 200
    assert [seen.body for seen in limited.reached(test_id)] == [b"slo"]


# The YAML section.

def test_limits_are_read_from_yaml_and_default_safely():
    config = parse_config("""
version: 1
upstreams: {a: {url: "http://127.0.0.1:9"}}
limits:
  max_url_length: 2048
  max_header_size: 16KiB
  max_header_count: 50
  max_body_size: 5MiB
  header_timeout: 2500ms
  body_idle_timeout: 7s
  max_concurrent_requests: 99
routes: [{name: r, match: {path: /}, to: a}]
""")
    assert config.limits == Limits(max_url_bytes=2048, max_header_bytes=16 * 1024, max_header_count=50,
                                   max_body_bytes=5 * 1024 * 1024, header_timeout_s=2.5, body_idle_timeout_s=7.0,
                                   max_concurrent_requests=99)
    defaults = parse_config("""
version: 1
upstreams: {a: {url: "http://127.0.0.1:9"}}
routes: [{name: r, match: {path: /}, to: a}]
""").limits
    assert defaults == Limits()
    # Bounded by default, each of them: no limit is "off" unless a user sets it high on purpose.
    assert defaults.max_url_bytes == 8192 and defaults.max_header_bytes == 64 * 1024
    assert defaults.max_header_count == 100 and defaults.max_body_bytes == 100 * 1024 * 1024
    assert defaults.header_timeout_s == 10 and defaults.body_idle_timeout_s == 30
    assert defaults.max_concurrent_requests == 4096


@pytest.mark.parametrize("bad", ["max_url_length: 0", "header_timeout: -1s", "max_body_size: lots",
                                 "max_header_count: 1.5", "max_headers: 10", "body_idle_timeout: yes"])
def test_invalid_limits_are_config_errors_naming_the_field(bad: str):
    with pytest.raises(ConfigError) as error:
        parse_config(f"""
version: 1
upstreams: {{a: {{url: "http://127.0.0.1:9"}}}}
limits:
  {bad}
routes: [{{name: r, match: {{path: /}}, to: a}}]
""")
    assert "limits" in str(error.value)


def test_limits_follow_a_reload(limited: Limited, test_id: str):
    path = limited.proxy.config_path
    original = path.read_text()
    target = f"/ok/{test_id}/" + "r" * 900
    assert converse(limited.port, _head(target)).statuses == [200]
    try:
        path.write_text(original.replace("max_url_length: 1024", "max_url_length: 512"))
        assert httpx.post(limited.proxy.admin_url + "/reload", timeout=10).status_code == 200
        assert converse(limited.port, _head(target)).statuses == [414]
    finally:
        path.write_text(original)
        assert httpx.post(limited.proxy.admin_url + "/reload", timeout=10).status_code == 200
    assert converse(limited.port, _head(target)).statuses == [200]
