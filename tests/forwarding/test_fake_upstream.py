"""The forwarding client through scripted fake upstreams, in-process (tests/support/fake_upstream.py).

These prove the seam: a connector handed to UpstreamClient, build_runtime or ConfigHolder
carries every connection, the client behaves on the fake as on a socket (reuse, no reuse
after a fault, each fault's reason), and what the upstream received is recorded.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from strangler.config.model import Upstream
from strangler.errors import ClientDisconnected, Reason, UpstreamError
from strangler.forward import UpstreamClient, UpstreamResponse
from strangler.metrics import Metrics
from strangler.reload import ConfigHolder
from tests.support.configs import one_route
from tests.support.fake_upstream import CLOSE, GARBAGE, HANG, RESET, FakeUpstreams, Raw, Received, Reply

URL = "http://orders.internal:8080"
HOST = [(b"Host", b"shop.test")]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstreams]:
    async with FakeUpstreams() as upstreams:
        yield upstreams


@pytest.fixture
async def client(fake: FakeUpstreams) -> AsyncIterator[Callable[..., UpstreamClient]]:
    made: list[UpstreamClient] = []

    def make(url: str = URL, *, timeout_s: float = 5.0, connect_timeout_s: float = 5.0) -> UpstreamClient:
        made.append(UpstreamClient(Upstream(name="orders", url=url, timeout_s=timeout_s,
                                            connect_timeout_s=connect_timeout_s), connector=fake))
        return made[-1]

    yield make
    for each in made:
        await each.close()


async def fetch(client: UpstreamClient, method: str = "GET", target: str = "/", body=None,
                headers=HOST) -> tuple[UpstreamResponse, bytes]:
    response = await client.send(method, target, list(headers), body)
    data, complete = b"", False
    try:
        async for chunk in response.chunks():
            data += chunk
        complete = True
    finally:
        response.finish(complete=complete)
    return response, data


async def stream(*chunks: bytes, then: BaseException | None = None) -> AsyncIterator[bytes]:
    for chunk in chunks:
        await asyncio.sleep(0)
        yield chunk
    if then is not None:
        raise then


async def settle() -> None:
    """Let the callbacks the fake scheduled run (each hop is a turn of the loop)."""
    for _ in range(10):
        await asyncio.sleep(0)


# --- exchanges and reuse -----------------------------------------------------------------------------

async def test_sequential_requests_share_one_pooled_connection(fake, client):
    orders = fake.upstream(URL).script(Reply(200, [("Content-Type", "text/plain")], b"first"),
                                       Reply(201, body=[b"sec", b"ond"]), Reply(204))
    orders_client = client()
    answers = [await fetch(orders_client, "POST", f"/orders/{n}", b"{}") for n in range(3)]
    assert [(response.status, body) for response, body in answers] == [(200, b"first"), (201, b"second"), (204, b"")]
    assert [request.conn for request in orders.requests] == [1, 1, 1]
    first = orders.requests[0]
    assert first.head == b"POST /orders/0 HTTP/1.1\r\nHost: shop.test\r\nContent-Length: 2"
    assert (first.method, first.target, first.body, first.complete) == ("POST", "/orders/0", b"{}", True)
    await settle()
    [connection] = orders.connections
    assert connection.closed_by == "proxy" and not connection.aborted     # a 204 is never reused: closed cleanly


async def test_concurrent_requests_open_a_connection_each_then_reuse_the_latest(fake, client):
    gate = asyncio.Event()
    orders = fake.upstream(URL).script(Reply(hold=gate), Reply(hold=gate))
    orders_client = client()
    both = asyncio.gather(fetch(orders_client), fetch(orders_client))
    await settle()
    assert len(orders.connections) == 2 and len(orders.requests) == 2
    gate.set()
    await both
    await fetch(orders_client)
    assert [request.conn for request in orders.requests] == [1, 2, 2]      # most recently used first


async def test_a_held_answer_waits_for_the_test(fake, client):
    gate = asyncio.Event()
    fake.upstream(URL).script(Reply(200, body=[b"head and ", gate, b"tail"]))
    response = await client().send("GET", "/", HOST, None)
    chunks = response.chunks()
    assert await chunks.__anext__() == b"head and "
    later = asyncio.ensure_future(chunks.__anext__())
    await settle()
    assert not later.done()
    gate.set()
    assert await later == b"tail"
    await chunks.aclose()
    response.finish(complete=True)


async def test_a_streamed_body_arrives_chunked_and_whole(fake, client):
    orders = fake.upstream(URL)
    await fetch(client(), "PUT", "/", stream(b"hel", b"", b"lo"))
    [request] = orders.requests
    assert request.values("transfer-encoding") == [b"chunked"] and (request.body, request.complete) == (b"hello", True)


async def test_dynamic_steps_see_the_request(fake, client):
    fake.upstream(URL, default=lambda request: Reply(200, body=request.target.encode()))
    assert (await fetch(client(), target="/echo?x=1"))[1] == b"/echo?x=1"


async def test_an_address_nobody_scripted_refuses(client):
    with pytest.raises(UpstreamError) as caught:
        await client("http://nowhere.internal").send("GET", "/", HOST, None)
    assert caught.value.reason is Reason.CONNECT_ERROR and "not scripted" in caught.value.detail


# --- faults: each one's reason, and never a reuse after it -------------------------------------------

def cut_mid_body() -> Reply:
    return Reply(200, body=b"only some", length=100, then=RESET)


FAULTS = {
    "reset-before-head": (RESET, Reason.UPSTREAM_RESET, "send"),
    "garbage": (GARBAGE, Reason.PROTOCOL_ERROR, "send"),
    "hang": (HANG, Reason.TIMEOUT, "send"),
    "bad-status": (Raw(b"HTTP/1.1 999 Nine\r\nContent-Length: 0\r\n\r\n"), Reason.PROTOCOL_ERROR, "send"),
    "reset-mid-body": (cut_mid_body(), Reason.UPSTREAM_RESET, "body"),
    "close-mid-body": (Reply(200, body=b"only some", length=100, then=CLOSE), Reason.UPSTREAM_RESET, "body"),
    "chunked-cut": (Raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", then=RESET),
                    Reason.UPSTREAM_RESET, "body"),
}


@pytest.mark.parametrize("name", FAULTS)
async def test_a_fault_is_translated_and_the_connection_is_not_reused(fake, client, name):
    step, reason, where = FAULTS[name]
    orders = fake.upstream(URL).script(step, Reply(200, body=b"fine"))
    orders_client = client(timeout_s=0.05)
    with pytest.raises(UpstreamError) as caught:
        await fetch(orders_client)
    assert caught.value.reason is reason and caught.value.upstream == "orders"
    assert caught.value.reached_upstream
    if where == "body":
        assert orders.requests[0].complete       # the head came (a 200), then the cut
    assert orders_client.in_flight == 0
    assert (await fetch(orders_client))[1] == b"fine"
    assert [request.conn for request in orders.requests] == [1, 2]
    await settle()
    assert orders.connections[0].closed_by is not None


@pytest.mark.parametrize("answer", [
    Reply(200, body=b"okSTRAY", length=2),                      # more bytes than Content-Length
    Reply(200, body=[b"ok", b"STRAY"], length=2),                # ... in a later packet
    Raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),   # says close, stays open
    Raw(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),      # HTTP/1.0 without keep-alive
    Reply(204),
    Reply(304, [("Content-Length", "1234")]),
    Raw(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 0.01, b"late"),   # stray bytes while parked
], ids=["extra-bytes", "extra-bytes-later", "connection-close", "http-1.0", "204", "304", "stray-while-idle"])
async def test_an_answer_that_leaves_doubt_is_read_and_its_connection_never_reused(fake, client, answer):
    orders = fake.upstream(URL).script(answer, Reply(200, body=b"fine"))
    orders_client = client()
    response, body = await fetch(orders_client)
    assert body in (b"ok", b"")
    await asyncio.sleep(0.02)
    assert (await fetch(orders_client))[1] == b"fine"
    assert [request.conn for request in orders.requests] == [1, 2]


async def test_a_head_answer_ends_with_its_head_and_is_not_reused(fake, client):
    orders = fake.upstream(URL, default=Reply(200, body=b"a body HEAD does not get"))
    orders_client = client()
    response, body = await fetch(orders_client, "HEAD")
    assert (response.status, body) == (200, b"") and (b"Content-Length", b"24") in response.raw_headers
    await fetch(orders_client, "HEAD")
    assert [request.conn for request in orders.requests] == [1, 2]


async def test_refused_connections_never_reached_the_upstream(fake, client):
    orders = fake.upstream(URL).refuse(times=1)
    orders_client = client()
    with pytest.raises(UpstreamError) as caught:
        await orders_client.send("POST", "/", HOST, b"pay")
    assert caught.value.reason is Reason.CONNECT_ERROR and not caught.value.reached_upstream
    assert orders.requests == [] and orders.connections == []
    assert (await fetch(orders_client))[1] == b"ok"                       # the next attempt connects


async def test_a_connect_that_hangs_is_a_connect_timeout(fake, client):
    fake.upstream(URL).hold_connects(asyncio.Event())
    with pytest.raises(UpstreamError) as caught:
        await client(connect_timeout_s=0.02).send("GET", "/", HOST, None)
    assert caught.value.reason is Reason.CONNECT_TIMEOUT and not caught.value.reached_upstream


async def test_a_failing_request_body_propagates_and_the_upstream_sees_it_cut(fake, client):
    orders = fake.upstream(URL)
    orders_client = client()
    gone = ClientDisconnected("gone")
    with pytest.raises(ClientDisconnected) as caught:
        await orders_client.send("POST", "/", HOST + [(b"Content-Length", b"100")], stream(b"part", then=gone))
    assert caught.value is gone and orders_client.in_flight == 0
    await settle()
    [request] = orders.requests
    [connection] = orders.connections
    assert (request.body, request.complete) == (b"part", False)
    assert connection.closed_by == "proxy" and connection.aborted


async def test_an_early_answer_comes_back_while_the_body_still_streams(fake, client):
    orders = fake.upstream(URL).script(Reply(413, body=b"nope", close=True, early=True))
    gate = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        yield b"x" * 10
        await gate.wait()
        yield b"never sent"

    orders_client = client()
    response, body = await fetch(orders_client, "POST", "/", slow())
    assert (response.status, body) == (413, b"nope")
    await settle()
    assert not orders.requests[0].complete and orders_client._pool.idle_count == 0


async def test_an_upstream_that_stops_reading_holds_the_body_back_until_the_read_timeout(fake, client):
    fake.upstream(URL).stop_reading()
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        while produced < 16 * 1024 * 1024:
            produced += 65536
            yield b"x" * 65536

    with pytest.raises(UpstreamError) as caught:
        await client(timeout_s=0.05).send("POST", "/", HOST, endless())
    assert caught.value.reason is Reason.TIMEOUT and produced <= 4 * 65536


# --- the seam through the runtime ------------------------------------------------------------------------

async def test_config_holder_clients_connect_through_the_connector_across_reloads(fake, tmp_path: Path):
    new = fake.upstream("http://new.internal:9000")
    legacy = fake.upstream("http://legacy.internal:9000")
    path = tmp_path / "routes.yaml"
    path.write_text(one_route("http://new.internal:9000", "http://legacy.internal:9000"))
    holder = ConfigHolder(str(path), Metrics(), connector=fake)
    try:
        runtime = holder.reload()
        kept = runtime.upstreams["legacy"].client
        await fetch(runtime.upstreams["new"].client)
        path.write_text(one_route("http://new.internal:9000", "http://legacy.internal:9000", new_options="timeout: 2s"))
        runtime = holder.reload()
        assert runtime.upstreams["legacy"].client is kept              # unchanged settings: carried over
        for name in ("new", "legacy"):
            await fetch(runtime.upstreams[name].client)
        assert [len(new.requests), len(legacy.requests)] == [2, 1]
        assert len(new.connections) == 2                               # the new client opened its own
    finally:
        await holder.close()


async def test_the_fakes_records_span_every_upstream_in_order(fake, client):
    fake.upstream(URL)
    fake.upstream("http://other.internal")
    await fetch(client())
    await fetch(client("http://other.internal"), target="/b")
    assert [(request.upstream, request.target) for request in fake.requests] == [
        ("orders.internal:8080", "/"), ("other.internal:80", "/b")]
    assert isinstance(fake.requests[0], Received) and fake["orders.internal:8080"].requests == fake.requests[:1]


async def test_an_upstream_that_reads_again_gets_the_whole_body(fake, client):
    orders = fake.upstream(URL).stop_reading()
    payload = b"x" * (256 * 1024)
    sending = asyncio.ensure_future(fetch(client(), "POST", "/", stream(payload[:100_000], payload[100_000:])))
    await settle()
    assert not sending.done() and orders.requests == []
    orders.resume_reading()
    response, body = await sending
    assert body == b"ok" and (orders.requests[0].body, orders.requests[0].complete) == (payload, True)
