"""WebSockets through the proxy, with the `websockets` client against Starlette endpoints behind it.

The handshake is routed like any GET (split, sticky, breaker, bulkhead); after the upstream's 101
the proxy is a byte tunnel until either side closes. One proxy serves the module; tests that stop
it or change its limits start their own.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import connect as connect_async
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from strangler.split import SplitTable, bucket_of
from tests.support.metrics import scrape
from tests.support.servers import ProxyProcess, ThreadedServer, wait_until
from tests.support.wsraw import GarbageAfter101, frame, handshake, read_frame

MiB = 1024 * 1024


class Shop:
    """The upstream side: echo, who-am-I, a 200 answer to a handshake, and what each side saw close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed_with: dict[str, int] = {}      # ?id= -> the close code the upstream received
        self.handshakes = 0
        self.failing = False
        self.app = Starlette(routes=[
            WebSocketRoute("/ws/echo", self.echo),
            WebSocketRoute("/ws/who", self.who),
            WebSocketRoute("/ws/plain", self.plain),
            WebSocketRoute("/ws/narrow", self.echo),
            WebSocketRoute("/flaky/ws", self.echo),
            Route("/flaky/http", self.flaky),
        ])

    async def echo(self, websocket: WebSocket) -> None:
        self.handshakes += 1
        await websocket.accept()
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    self.closed_with[websocket.query_params.get("id", "-")] = message["code"]
                    return
                text = message.get("text")
                if text is not None and text.startswith("close:"):
                    await websocket.close(int(text.split(":")[1]), reason="server bye")
                    return
                if text is not None:
                    await websocket.send_text(text)
                else:
                    await websocket.send_bytes(message["bytes"])
        except WebSocketDisconnect:
            pass

    async def who(self, websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(self.name)
        await websocket.close()

    async def plain(self, websocket: WebSocket) -> None:
        await websocket.send_denial_response(PlainTextResponse("no websocket here", status_code=200))

    async def flaky(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("down", status_code=500 if self.failing else 200)


@dataclass
class Rig:
    proxy: ProxyProcess
    a: Shop
    b: Shop
    garbage: GarbageAfter101

    def ws(self, path: str) -> str:
        return self.proxy.url.replace("http://", "ws://") + path


CONFIG = """
version: 1
upstreams:
  a: {{url: "{a}", max_concurrent: 1000}}
  b: {{url: "{b}"}}
  narrow: {{url: "{a}", max_concurrent: 2}}
  flaky: {{url: "{a}"}}
  garbage: {{url: "{garbage}"}}
routes:
  - name: who
    match: {{path: /ws/who}}
    split: {{a: 50, b: 50}}
  - name: narrow
    match: {{path: /ws/narrow}}
    to: narrow
  - name: flaky
    match: {{path: /flaky}}
    to: flaky
    retry: {{attempts: 1}}
    circuit_breaker: {{failure_threshold: 2, recovery_timeout: 1h}}
  - name: garbage
    match: {{path: /ws/garbage}}
    to: garbage
  - name: echo
    match: {{path: /}}
    to: a
"""


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    a, b = Shop("a"), Shop("b")
    servers = [ThreadedServer(a.app).start(), ThreadedServer(b.app).start()]
    garbage = GarbageAfter101().start()
    path = tmp_path_factory.mktemp("websockets") / "routes.yaml"
    path.write_text(CONFIG.format(a=servers[0].url, b=servers[1].url, garbage=garbage.url))
    proxy = ProxyProcess(path).start()
    try:
        yield Rig(proxy, a, b, garbage)
    finally:
        proxy.terminate()
        garbage.stop()
        for server in servers:
            server.stop()


def _connect(url: str, **options: object):
    return connect(url, proxy=None, max_size=4 * MiB, open_timeout=5, close_timeout=5, **options)


def test_text_and_binary_frames_echo_through_the_tunnel(rig: Rig):
    with _connect(rig.ws("/ws/echo")) as ws:
        assert ws.response.status_code == 101
        assert ws.response.headers["x-strangler-route"] == "echo"
        for message in ("hello", "wörld", b"\x00\x01\xff" * 100, ""):
            ws.send(message)
            assert ws.recv(timeout=5) == message


def test_one_mib_messages_pass_both_ways(rig: Rig):
    big_text, big_binary = "x" * MiB, bytes(range(256)) * (MiB // 256)
    with _connect(rig.ws("/ws/echo")) as ws:
        ws.send(big_binary)
        assert ws.recv(timeout=10) == big_binary
        ws.send(big_text)
        assert ws.recv(timeout=10) == big_text


def test_ping_gets_its_pong_through_the_tunnel(rig: Rig):
    with _connect(rig.ws("/ws/echo"), compression=None) as ws:
        assert ws.ping(b"are you there").wait(timeout=5)


def test_close_codes_pass_both_ways(rig: Rig):
    with _connect(rig.ws("/ws/echo?id=client-closes")) as ws:
        ws.send("hello")
        ws.recv(timeout=5)
        ws.close(4001, "client bye")
    wait_until(lambda: "client-closes" in rig.a.closed_with, what="the upstream to see the close")
    assert rig.a.closed_with["client-closes"] == 4001

    with _connect(rig.ws("/ws/echo")) as ws:
        ws.send("close:4002")
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4002, "server bye")


def _cohort_on(side: str) -> str:
    """A cohort id that the `who` route's 50/50 split gives to `side`."""
    table = SplitTable("who", (("a", 50.0), ("b", 50.0)))
    for number in range(1000):
        cohort = f"{number:016x}"
        if table.owner(bucket_of("who", cohort)) == side:
            return cohort
    raise AssertionError("no cohort id for " + side)


@pytest.mark.parametrize("side", ["a", "b"])
def test_a_split_websocket_route_sends_each_cohort_to_its_side(rig: Rig, side: str):
    cohort = _cohort_on(side)
    for _ in range(3):
        with _connect(rig.ws("/ws/who"), additional_headers={"Cookie": f"strangler_cohort={cohort}"}) as ws:
            assert ws.recv(timeout=5) == side
            assert ws.response.headers["x-strangler-upstream"] == side


def test_a_handshake_without_a_cohort_gets_one_on_its_101(rig: Rig):
    with _connect(rig.ws("/ws/who")) as ws:
        side = ws.recv(timeout=5)
        cookie = ws.response.headers["set-cookie"]
    cohort = cookie.split(";")[0].split("=")[1]
    assert cookie.startswith("strangler_cohort=") and SplitTable("who", (("a", 50.0), ("b", 50.0))).owner(
        bucket_of("who", cohort)) == side


def test_an_open_breaker_lets_no_handshake_reach_its_upstream(rig: Rig):
    rig.a.failing = True
    try:
        for _ in range(2):
            assert httpx.get(rig.proxy.url + "/flaky/http").status_code == 500
    finally:
        rig.a.failing = False
    before = rig.a.handshakes
    with pytest.raises(InvalidStatus) as refused:
        _connect(rig.ws("/flaky/ws"))
    assert refused.value.response.status_code == 503
    assert rig.a.handshakes == before


def test_each_open_tunnel_holds_a_bulkhead_slot_until_it_ends(rig: Rig):
    with _connect(rig.ws("/ws/narrow")) as first, _connect(rig.ws("/ws/narrow")):
        with pytest.raises(InvalidStatus) as refused:
            _connect(rig.ws("/ws/narrow"))
        assert refused.value.response.status_code == 503
        assert b"bulkhead_full" in refused.value.response.body
        first.close()

        def another_fits() -> bool:
            try:
                with _connect(rig.ws("/ws/narrow")):
                    return True
            except InvalidStatus:
                return False

        wait_until(another_fits, what="the closed tunnel's slot to come back")


def test_an_upstream_answering_200_instead_of_101_has_its_answer_passed_through(rig: Rig):
    with pytest.raises(InvalidStatus) as answered:
        _connect(rig.ws("/ws/plain"))
    assert answered.value.response.status_code == 200
    assert answered.value.response.body == b"no websocket here"


def test_garbage_from_the_upstream_after_its_101_ends_only_that_tunnel_and_is_counted(rig: Rig):
    with _connect(rig.ws("/ws/garbage"), compression=None) as ws:
        assert ws.recv(timeout=5) == "hello"          # what came before the garbage went through
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    with _connect(rig.ws("/ws/echo")) as ws:          # the proxy and other tunnels carry on
        ws.send("still here")
        assert ws.recv(timeout=5) == "still here"
    wait_until(lambda: scrape(rig.proxy.admin_url).value(
        "strangler_websocket_closed_total", route="garbage", reason="upstream_protocol_error") == 1,
        what="the protocol error to be counted")


def test_an_unmasked_client_frame_ends_only_that_tunnel_and_is_counted(rig: Rig):
    sock, _ = handshake(rig.proxy.port, "/ws/echo?id=unmasked")
    with sock:
        sock.sendall(frame(1, b"masked", masked=True))
        assert read_frame(sock) == (1, b"masked")
        sock.sendall(frame(1, b"unmasked", masked=False))
        opcode, payload = read_frame(sock)
        assert (opcode, int.from_bytes(payload[:2], "big")) == (8, 1002)
        with pytest.raises(ConnectionError):
            read_frame(sock)
    wait_until(lambda: rig.a.closed_with.get("unmasked") == 1001, what="the upstream to be told its client went away")
    assert scrape(rig.proxy.admin_url).value("strangler_websocket_closed_total", route="echo",
                                             reason="client_protocol_error") == 1


def test_metrics_count_open_tunnels_and_their_durations(rig: Rig):
    def gauge() -> float:
        return scrape(rig.proxy.admin_url).value("strangler_websocket_connections", route="echo", upstream="a")

    wait_until(lambda: gauge() == 0, what="earlier tunnels to be closed")
    before = scrape(rig.proxy.admin_url).value("strangler_websocket_duration_seconds_count", route="echo")
    with _connect(rig.ws("/ws/echo")), _connect(rig.ws("/ws/echo")):
        assert gauge() == 2
    wait_until(lambda: gauge() == 0, what="the tunnels to be counted closed")
    found = scrape(rig.proxy.admin_url)
    assert found.value("strangler_websocket_duration_seconds_count", route="echo") == before + 2
    assert found.value("strangler_requests_total", route="echo", code="101") >= 2


async def test_500_concurrent_tunnels_cost_under_50_mib(rig: Rig):
    async def open_one(number: int):
        ws = await connect_async(rig.ws(f"/ws/echo?id=many-{number}"), proxy=None, compression=None,
                                 open_timeout=30, ping_interval=None)
        await ws.send(f"hi {number}")
        assert await asyncio.wait_for(ws.recv(), 30) == f"hi {number}"
        return ws

    warm = [await open_one(number) for number in range(10)]
    for ws in warm:
        await ws.close()
    before = rig.proxy.rss_bytes()
    opened = []
    try:
        for start in range(0, 500, 50):        # in waves, so that the backlogs stay small
            opened += await asyncio.gather(*(open_one(number) for number in range(start, start + 50)))
        grown = rig.proxy.rss_bytes() - before
        assert scrape(rig.proxy.admin_url).value("strangler_websocket_connections", route="echo") == 500
        assert grown < 50 * MiB, f"RSS grew {grown / MiB:.1f} MiB for 500 tunnels"
        await opened[123].send("still echoing")
        assert await asyncio.wait_for(opened[123].recv(), 10) == "still echoing"
    finally:
        await asyncio.gather(*(ws.close() for ws in opened), return_exceptions=True)


@pytest.fixture
def echo_with_limits(start_upstream, start_proxy):
    """A proxy of its own in front of an echo upstream, with the given `limits:` (a YAML flow mapping)."""
    server = start_upstream(Shop("a").app)

    def start(limits: str) -> ProxyProcess:
        return start_proxy(f"""
version: 1
upstreams: {{a: {{url: "{server.url}"}}}}
limits: {limits}
routes: [{{name: echo, match: {{path: /}}, to: a}}]
""")

    return start


def test_sigterm_closes_open_tunnels_with_a_close_frame_after_the_drain_time(echo_with_limits):
    proxy = echo_with_limits("{websocket_drain_timeout: 300ms}")
    url = proxy.url.replace("http://", "ws://") + "/ws/echo"
    with _connect(url) as first, _connect(url) as second:
        first.send("before")
        assert first.recv(timeout=5) == "before"
        proxy.process.send_signal(signal.SIGTERM)
        for ws in (first, second):
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=10)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert proxy.process.wait(timeout=15) == 0
    assert "Traceback" not in proxy.log()


def test_an_idle_tunnel_is_closed_after_the_idle_timeout(echo_with_limits):
    proxy = echo_with_limits("{websocket_idle_timeout: 500ms}")
    with _connect(proxy.url.replace("http://", "ws://") + "/ws/echo", ping_interval=None) as ws:
        ws.send("one message, then silence")
        ws.recv(timeout=5)
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
    assert scrape(proxy.admin_url).value("strangler_websocket_closed_total", reason="idle_timeout") == 1
