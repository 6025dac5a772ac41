"""Broken upstreams: each fault gets the right status or an aborted response, and the pool recovers.

strangler -> Toxiproxy (tests/support/toxiproxy.py) -> a real HTTP/1.1 upstream that
records every request and the connection it came on. Network faults are toxics
(refused, reset before or mid-response, hang, trickle, close after N bytes, close
just as a pooled connection is reused); protocol faults come from the upstream
itself (garbage, more bytes than its Content-Length, a body on HEAD/204/304).

After each fault, the next request must get the right answer, and a connection
the fault left in an unknown state must never carry another request: the
upstream's connection numbers show which connection each request came on, and
a stray response the broken upstream left on the wire (`X-Stray`, `STRAY!`)
would show if a later request had read it.
"""

from __future__ import annotations

import json

import pytest

from tests.hardening.conftest import Rig
from tests.hardening.wire import Fetched, fetch
from tests.support.faults import Received, RecordingUpstream
from tests.support.procnet import established_to_port
from tests.support.rawhttp import RawConnection
from tests.support.servers import ProxyProcess, wait_until
from tests.support.toxiproxy import CloseOnReuse, Latency, LimitData, ResetPeer, Slicer, Timeout, Toxiproxy

READ_TIMEOUT_S = 1.0


class Faulty:
    def __init__(self, proxy: ProxyProcess, upstream: RecordingUpstream, toxiproxy: Toxiproxy) -> None:
        self.proxy, self.upstream, self.toxiproxy = proxy, upstream, toxiproxy

    def get(self, target: str, test_id: str, method: str = "GET", body: bytes = b"") -> Fetched:
        return fetch(self.proxy.port, method, target, test_id=test_id, body=body)

    def seen(self, test_id: str) -> list[Received]:
        return self.upstream.with_id(test_id)

    def next_is_fine(self, test_id: str, *, not_on: set[int] = frozenset(), times: int = 3) -> None:
        """The requests after a fault get their own right answers, never on connections in `not_on`."""
        for n in range(times):
            marker = f"{test_id}-next{n}"
            after = self.get(f"/once/{marker}", marker)
            assert (after.status, after.complete) == (200, True), after
            assert after.header("x-echo-id") == marker and after.header("x-stray") is None
            [seen] = self.seen(marker)
            assert after.body == f"id={marker} conn={seen.conn}".encode()
            assert seen.conn not in not_on, f"request after the fault went on broken connection {seen.conn}"


@pytest.fixture(scope="module")
def faulty(rig: Rig) -> Faulty:
    upstream = rig.upstream()
    toxiproxy = rig.toxiproxy(upstream, name="flaky")
    proxy = rig.proxy(f"""
version: 1
upstreams:
  flaky: {{url: "{toxiproxy.url}", timeout: {READ_TIMEOUT_S}s, connect_timeout: 1s}}
defaults:
  retry: {{attempts: 3, backoff: {{initial: 10ms, max: 20ms}}, budget: 100%}}
  circuit_breaker: {{failure_threshold: 100000}}
routes:
  - name: once
    match: {{path: /once}}
    to: flaky
    retry: {{attempts: 1}}
  - name: retried
    match: {{path: /}}
    to: flaky
""")
    return Faulty(proxy, upstream, toxiproxy)


@pytest.fixture(autouse=True)
def _healthy_again(faulty: Faulty):
    yield
    faulty.toxiproxy.clear()
    if not faulty.toxiproxy.enabled:
        faulty.toxiproxy.enable()


def _problem(fetched: Fetched, status: int, reason: str) -> None:
    assert fetched.status == status, fetched
    assert fetched.header("content-type") == "application/problem+json"
    problem = json.loads(fetched.body)
    assert (problem["status"], problem["reason"], problem["upstream"]) == (status, reason, "flaky")


def test_healthy_exchanges_reuse_the_pooled_connection(faulty: Faulty, test_id: str):
    # The control for every "never reused" check below: without a fault, the connection is reused.
    first, second = faulty.get(f"/once/{test_id}-1", f"{test_id}-1"), faulty.get(f"/once/{test_id}-2", f"{test_id}-2")
    assert first.status == second.status == 200
    assert faulty.seen(f"{test_id}-1")[0].conn == faulty.seen(f"{test_id}-2")[0].conn


# Refused, reset, hang: the proxy's own 502/504.

def test_refused_connections_are_502_connect_error_and_retried(faulty: Faulty, test_id: str):
    faulty.toxiproxy.disable()
    _problem(faulty.get(f"/once/{test_id}", test_id), 502, "connect_error")
    _problem(faulty.get(f"/retried/{test_id}-r", f"{test_id}-r"), 502, "connect_error")
    assert faulty.seen(test_id) == [] and faulty.seen(f"{test_id}-r") == []
    faulty.toxiproxy.enable()
    faulty.next_is_fine(test_id)


def test_a_reset_before_the_answer_is_502_upstream_reset(faulty: Faulty, test_id: str):
    faulty.toxiproxy.add(ResetPeer(stream="downstream"))          # the upstream answers; the answer is reset
    _problem(faulty.get(f"/once/{test_id}", test_id), 502, "upstream_reset")
    [seen] = faulty.seen(test_id)
    # A POST that reached the upstream is not replayed, even on the retrying route.
    _problem(faulty.get(f"/retried/{test_id}-post", f"{test_id}-post", "POST", b"pay 10"), 502, "upstream_reset")
    assert [s.body for s in faulty.seen(f"{test_id}-post")] == [b"pay 10"]
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id, not_on={seen.conn})


def test_a_reset_as_the_request_is_sent_never_reaches_the_upstream(faulty: Faulty, test_id: str):
    faulty.toxiproxy.add(ResetPeer(stream="upstream"))
    _problem(faulty.get(f"/once/{test_id}", test_id), 502, "upstream_reset")
    assert faulty.seen(test_id) == []
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id)


def test_an_upstream_that_hangs_is_504_and_its_connection_is_dropped(faulty: Faulty, test_id: str):
    faulty.toxiproxy.add(Timeout(stream="downstream"))             # answers are swallowed, the line held open
    _problem(faulty.get(f"/once/{test_id}", test_id), 504, "timeout")
    [seen] = faulty.seen(test_id)
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id, not_on={seen.conn})


@pytest.mark.parametrize("seconds,status", [(0.2, 200), (READ_TIMEOUT_S * 1.5, 504)], ids=["under", "over"])
def test_latency_under_the_read_timeout_passes_and_over_it_is_504(faulty: Faulty, test_id: str, seconds, status):
    faulty.toxiproxy.add(Latency(seconds=seconds))
    fetched = faulty.get(f"/once/{test_id}", test_id)
    assert fetched.status == status
    if status == 200:
        assert fetched.complete and fetched.header("x-echo-id") == test_id
    else:
        _problem(fetched, 504, "timeout")
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id, not_on=set() if status == 200 else {s.conn for s in faulty.seen(test_id)})


# Mid-response faults: the client's response is aborted, never presented as complete.

@pytest.mark.parametrize("reset", [False, True], ids=["close", "reset"])
@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_connection_cut_mid_body_aborts_the_clients_response(faulty: Faulty, test_id: str, reset, chunked):
    faulty.toxiproxy.add(LimitData(stream="downstream", bytes=4000, reset=reset))
    target = f"/once/{test_id}?size=100000" + ("&chunked=1" if chunked else "")
    fetched = faulty.get(target, test_id)
    assert fetched.status == 200                      # the status was on its way before the cut
    assert not fetched.complete, "a truncated body was presented as complete"
    assert len(fetched.body) < 100_000
    [seen] = faulty.seen(test_id)
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id, not_on={seen.conn})


def test_a_connection_cut_inside_the_head_is_502(faulty: Faulty, test_id: str):
    faulty.toxiproxy.add(LimitData(stream="downstream", bytes=20))
    _problem(faulty.get(f"/once/{test_id}", test_id), 502, "upstream_reset")
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id)


def test_a_trickling_answer_within_the_read_timeout_arrives_whole(faulty: Faulty, test_id: str):
    faulty.toxiproxy.add(Slicer(size=1000, delay=0.005, variation=200))
    fetched = faulty.get(f"/once/{test_id}?size=60000", test_id)
    [seen] = faulty.seen(test_id)
    assert (fetched.status, fetched.complete) == (200, True)
    assert fetched.body == f"id={test_id} conn={seen.conn}".encode().ljust(60000, b".")
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id)


def test_an_answer_that_stalls_mid_body_past_the_read_timeout_is_aborted(faulty: Faulty, test_id: str):
    # The head and a first slice come at once; the rest waits longer than the read timeout.
    faulty.toxiproxy.add(Slicer(size=3000, delay=READ_TIMEOUT_S * 3))
    fetched = faulty.get(f"/once/{test_id}?size=60000", test_id)
    assert fetched.status == 200 and not fetched.complete
    [seen] = faulty.seen(test_id)
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id, not_on={seen.conn})


# Keep-alive connections the upstream closes.

def test_an_idle_pooled_connection_the_upstream_closed_is_not_used(faulty: Faulty, test_id: str):
    assert faulty.get(f"/once/{test_id}-warm", f"{test_id}-warm").status == 200
    faulty.toxiproxy.drop_connections()               # as an upstream's idle timeout would (FIN)
    wait_until(lambda: established_to_port(faulty.proxy.pid, faulty.toxiproxy.port) == 0,
               what="the proxy to notice the upstream closed its idle connection")
    faulty.next_is_fine(test_id, not_on={faulty.seen(f"{test_id}-warm")[0].conn}, times=2)


def test_a_pooled_connection_closed_just_as_it_is_reused(faulty: Faulty, test_id: str):
    assert faulty.get(f"/once/{test_id}-warm", f"{test_id}-warm").status == 200
    warm = faulty.seen(f"{test_id}-warm")[0].conn
    faulty.toxiproxy.add(CloseOnReuse())              # the close races the next request on that connection
    # A GET never reached the upstream: retried on a fresh connection, received exactly once.
    got = faulty.get(f"/retried/{test_id}", test_id)
    assert (got.status, got.complete, got.header("x-echo-id")) == (200, True, test_id)
    [seen] = faulty.seen(test_id)
    assert seen.conn != warm
    # A POST may have reached it, as far as the proxy can tell: never replayed, a 502 instead.
    _problem(faulty.get(f"/retried/{test_id}-post", f"{test_id}-post", "POST", b"pay 10"), 502, "upstream_reset")
    assert faulty.seen(f"{test_id}-post") == []
    faulty.toxiproxy.clear()
    faulty.next_is_fine(test_id, not_on={warm, seen.conn})


# Protocol faults from the upstream itself.

def test_garbage_instead_of_an_answer_is_502_protocol_error(faulty: Faulty, test_id: str):
    _problem(faulty.get(f"/once/{test_id}/bad/garbage", test_id), 502, "protocol_error")
    [seen] = faulty.seen(test_id)
    faulty.next_is_fine(test_id, not_on={seen.conn})


def test_more_bytes_than_content_length_never_reach_the_next_request(faulty: Faulty, test_id: str):
    fetched = faulty.get(f"/once/{test_id}/bad/extra", test_id)
    assert (fetched.status, fetched.complete, fetched.body) == (200, True, b"hello")
    [seen] = faulty.seen(test_id)
    faulty.next_is_fine(test_id, not_on={seen.conn})


@pytest.mark.parametrize("method,path,status", [
    ("HEAD", "bad/head-body", 200), ("GET", "bad/204-body", 204), ("GET", "bad/304-body", 304),
], ids=["head", "204", "304"])
def test_a_body_on_a_bodiless_answer_never_reaches_the_next_request(faulty: Faulty, test_id: str,
                                                                   method, path, status):
    fetched = faulty.get(f"/once/{test_id}/{path}", test_id, method)
    # Either the bodiless answer as sent, or, when the stray bytes came with it, a 502 for garbage.
    if fetched.status == 502:
        assert fetched.header("content-type") == "application/problem+json"
        if method != "HEAD":                       # a HEAD's answer has no body, the problem's either
            _problem(fetched, 502, "protocol_error")
    else:
        assert fetched.status == status and fetched.body == b""
        assert fetched.header("x-stray") is None
    [seen] = faulty.seen(test_id)
    faulty.next_is_fine(test_id, not_on={seen.conn})


def test_a_304_with_content_length_and_no_body_is_passed_on(faulty: Faulty, test_id: str):
    fetched = faulty.get(f"/once/{test_id}/status/304", test_id)
    assert fetched.status == 304 and fetched.body == b""
    head = faulty.get(f"/once/{test_id}-head", f"{test_id}-head", "HEAD")
    assert head.status == 200
    faulty.next_is_fine(test_id)


def test_response_trailers_never_reach_the_client_as_headers(faulty: Faulty, test_id: str):
    """RFC 9110 6.5.1: trailer fields are never merged into the head (here a forged cookie)."""
    for n in range(5):                    # whatever the timing of the trailer against the head
        marker = f"{test_id}-{n}"
        fetched = faulty.get(f"/once/{marker}/bad/trailers", marker)
        assert (fetched.status, fetched.complete, fetched.body) == (200, True, b"{}")
        assert fetched.header("set-cookie") is None, fetched.headers
        assert fetched.header("x-strangler-upstream") == "flaky", fetched.headers
        assert b"attacker" not in fetched.body and b"forged" not in fetched.body
    faulty.next_is_fine(test_id)


def test_an_upstream_status_outside_100_to_599_is_502_protocol_error(faulty: Faulty, test_id: str):
    _problem(faulty.get(f"/once/{test_id}/bad/status-999", test_id), 502, "protocol_error")
    [seen] = faulty.seen(test_id)
    faulty.next_is_fine(test_id, not_on={seen.conn})


def test_an_upstream_status_outside_100_to_599_leaves_pipelined_requests_answered(faulty: Faulty, test_id: str):
    with RawConnection(faulty.proxy.port, timeout_s=10.0) as connection:
        connection.send(
            f"GET /once/{test_id}-a/bad/status-999 HTTP/1.1\r\nHost: x\r\nX-Test-Id: {test_id}-a\r\n\r\n"
            f"GET /once/{test_id}-b HTTP/1.1\r\nHost: x\r\nX-Test-Id: {test_id}-b\r\n\r\n".encode())
        first, second = connection.read_response(), connection.read_response()
    assert (first.status, second.status) == (502, 200)
    assert second.header("x-echo-id") == f"{test_id}-b"


def test_103_early_hints_reach_an_http11_client_before_the_answer(faulty: Faulty, test_id: str):
    with RawConnection(faulty.proxy.port, timeout_s=10.0) as connection:
        connection.send(f"GET /once/{test_id}/early-hints HTTP/1.1\r\nHost: x\r\nX-Test-Id: {test_id}\r\n\r\n".encode())
        hints = connection.read_response()
        final = connection.read_response()
    assert hints.status == 103
    assert hints.header_values("link") == ["</style.css>; rel=preload; as=style", "</app.js>; rel=preload; as=script"]
    assert hints.header("x-hop") is None and hints.header("connection") is None
    assert (final.status, final.header("x-echo-id")) == (200, test_id)


def test_103_early_hints_are_not_sent_to_an_http10_client(faulty: Faulty, test_id: str):
    with RawConnection(faulty.proxy.port, timeout_s=10.0) as connection:
        connection.send(f"GET /once/{test_id}/early-hints HTTP/1.0\r\nHost: x\r\nX-Test-Id: {test_id}\r\n\r\n".encode())
        final = connection.read_response()
    assert (final.status, final.header("x-echo-id")) == (200, test_id)


def test_an_upstream_trailer_that_never_ends_is_cut_off_and_the_answer_aborted(faulty: Faulty, test_id: str):
    fetched = faulty.get(f"/once/{test_id}/bad/endless-trailer", test_id)
    assert fetched.status == 200 and not fetched.complete       # the head had gone out: aborted, not ended
    # Cut off by its size (a protocol error), long before the upstream's 4 MiB were in.
    wait_until(lambda: f"protocol_error from flaky mid-body" in faulty.proxy.log(), timeout_s=5,
               what="the proxy to log the cut-off answer")
    [seen] = faulty.seen(test_id)
    faulty.next_is_fine(test_id, not_on={seen.conn})
