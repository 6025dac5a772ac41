"""The forwarding client (forward.py over http1.py) against real loopback servers.

Each upstream here is an asyncio server that plays a script byte for byte and records
what arrived on which connection, so the tests see the wire as the upstream does:
the exact request head, the framing, whether a connection was reused, and whether a
request ended complete or cut.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from strangler import http1
from strangler.body import BodyTooLarge
from strangler.config.model import Upstream, UpstreamTls
from strangler.errors import ClientDisconnected, Reason, UpstreamError
from strangler.forward import UpstreamClient

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"



@dataclass
class Seen:
    conn: int
    head: bytes
    body: bytes = b""
    complete: bool = False       # the whole body arrived, as framed

    @property
    def lines(self) -> list[bytes]:
        return self.head.split(b"\r\n")

    def values(self, name: bytes) -> list[bytes]:
        return [line.split(b":", 1)[1].strip() for line in self.lines[1:]
                if line.split(b":", 1)[0].lower() == name.lower()]


Respond = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Script:
    """An upstream that answers each request with `respond` and records what it saw."""

    respond: Respond
    read_body: bool = True
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    closed: list[int] = field(default_factory=list)    # connection numbers the proxy closed (EOF seen)
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> Script:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    self.closed.append(conn)
                    return
                seen = Seen(conn, head[:-4])
                self.seen.append(seen)
                if self.read_body:
                    await _read_body(reader, seen)
                await self.respond(seen, writer)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            self.closed.append(conn)
        except asyncio.CancelledError:
            pass              # the test is over
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def _read_body(reader: asyncio.StreamReader, seen: Seen) -> None:
    lengths = seen.values(b"content-length")
    chunked = seen.values(b"transfer-encoding") == [b"chunked"]
    try:
        if chunked:
            while True:
                size = int((await reader.readuntil(b"\r\n"))[:-2], 16)
                if size == 0:
                    await reader.readexactly(2)
                    break
                seen.body += await reader.readexactly(size)
                await reader.readexactly(2)
        elif lengths:
            seen.body = await reader.readexactly(int(lengths[0]))
        seen.complete = True
    except asyncio.IncompleteReadError as error:
        seen.body += error.partial
        raise


def answer(*parts: bytes, close: bool = False, delay: float = 0.0, gap: float = 0.0) -> Respond:
    """Write `parts` after `delay`, `gap` seconds apart."""
    async def respond(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if delay:
            await asyncio.sleep(delay)
        for number, part in enumerate(parts):
            if gap and number:
                await asyncio.sleep(gap)
            writer.write(part)
            await writer.drain()
        if close:
            writer.close()
    return respond


@pytest.fixture
async def upstreams() -> AsyncIterator[Callable[..., Awaitable[Script]]]:
    started: list[Script] = []

    async def start(respond: Respond = answer(OK), **kwargs: object) -> Script:
        script = await Script(respond, **kwargs).start()   # type: ignore[arg-type]
        started.append(script)
        return script

    yield start
    for script in started:
        await script.stop()


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., UpstreamClient]]:
    made: list[UpstreamClient] = []

    def make(url: str, *, timeout_s: float = 5.0, connect_timeout_s: float = 2.0,
             tls: UpstreamTls = UpstreamTls()) -> UpstreamClient:
        client = UpstreamClient(Upstream(name="up", url=url, timeout_s=timeout_s, connect_timeout_s=connect_timeout_s,
                                         tls=tls))
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


HOST = [(b"Host", b"shop.test")]


async def fetch(client: UpstreamClient, method: str = "GET", target: str = "/", headers=HOST, body=None):
    response = await client.send(method, target, list(headers), body)
    data = b""
    complete = False
    try:
        async for chunk in response.chunks():
            data += chunk
        complete = True
    finally:
        response.finish(complete=complete)
    return response, data


async def wait_for(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.01)


async def stream(*chunks: bytes, then: BaseException | None = None, pause: float = 0.0) -> AsyncIterator[bytes]:
    for chunk in chunks:
        if pause:
            await asyncio.sleep(pause)
        yield chunk
    if then is not None:
        raise then


# --- the request on the wire -------------------------------------------------------------------

async def test_the_head_goes_out_as_given_with_nothing_added(upstreams, clients):
    up = await upstreams()
    client = clients(up.url)
    headers = [(b"Host", b"Shop.Example:8443"), (b"X-Tag", b"one"), (b"x-tag", b"two"),
               (b"Cookie", b"a=1"), (b"X-Utf8", "café".encode())]
    response, body = await fetch(client, "GET", "/a/%2e%41/b?q=%41&q=%zz", headers)
    assert (response.status, body) == (200, b"ok")
    [seen] = up.seen
    assert seen.head == (b"GET /a/%2e%41/b?q=%41&q=%zz HTTP/1.1\r\nHost: Shop.Example:8443\r\nX-Tag: one\r\n"
                         b"x-tag: two\r\nCookie: a=1\r\nX-Utf8: caf\xc3\xa9")


async def test_host_comes_from_the_upstream_url_when_the_caller_has_none(upstreams, clients):
    up = await upstreams()
    client = clients(up.url)
    await fetch(client, headers=[("Accept", "application/json")])       # text pairs, as service_client sends
    assert up.seen[0].lines[1:] == [f"Host: 127.0.0.1:{up.port}".encode(), b"Accept: application/json"]


@pytest.mark.parametrize("kind", ["none", "bytes", "bytes-declared", "stream", "stream-declared", "none-declared-0"])
async def test_exactly_one_framing_header(upstreams, clients, kind):
    up = await upstreams()
    client = clients(up.url)
    headers = list(HOST) + [(b"Transfer-Encoding", b"gzip")]         # never the caller's own
    body: object = None
    if kind.startswith("bytes"):
        body = b"hello"
    elif kind.startswith("stream"):
        body = stream(b"hel", b"", b"lo")
    if kind.endswith("declared"):
        headers.append((b"Content-Length", b"5"))
    if kind == "none-declared-0":
        headers.append((b"Content-Length", b"0"))
    response, _ = await fetch(client, "POST", "/", headers, body)
    assert response.status == 200
    [seen] = up.seen
    framing = (seen.values(b"content-length"), seen.values(b"transfer-encoding"))
    expected = {
        "none": ([], []), "none-declared-0": ([b"0"], []),
        "bytes": ([b"5"], []), "bytes-declared": ([b"5"], []), "stream-declared": ([b"5"], []),
        "stream": ([], [b"chunked"]),
    }[kind]
    assert framing == expected
    assert seen.complete and seen.body == (b"" if kind.startswith("none") else b"hello")


async def test_a_large_bytes_body_arrives_whole(upstreams, clients):
    up = await upstreams()
    payload = bytes(range(256)) * 4096           # 1 MiB: written after the head, not joined to it
    await fetch(clients(up.url), "PUT", "/", HOST, payload)
    assert up.seen[0].complete and up.seen[0].body == payload


# --- keep-alive ----------------------------------------------------------------------------------

async def test_connections_are_reused_most_recent_first(upstreams, clients):
    up = await upstreams(answer(OK, delay=0.05))
    client = clients(up.url)
    await asyncio.gather(fetch(client), fetch(client))          # two at once: two connections
    assert up.connections == 2
    for _ in range(3):
        await fetch(client)
    assert up.connections == 2 and [s.conn for s in up.seen[2:]] == [up.seen[2].conn] * 3


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" + b"HTTP/1.1 200 OK\r\nX-Stray: 1\r\nContent-Length: 5\r\n\r\nSTRAY",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY!",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nX-Stray: 1\r\nContent-Length: 5\r\n\r\nSTRAY",
], ids=["connection-close", "http-1.0", "second-response", "extra-bytes", "204", "304", "204-with-stray"])
async def test_never_reused_after(upstreams, clients, response):
    up = await upstreams(answer(response))
    client = clients(up.url)
    first, body = await fetch(client)
    second, _ = await fetch(client)
    assert first.status in (200, 204, 304) and body in (b"ok", b"")
    assert second.status == first.status and not second.raw_headers[:1] == [(b"X-Stray", b"1")]
    assert up.connections == 2


async def test_extra_bytes_in_a_later_packet_drop_the_idle_connection(upstreams, clients):
    up = await upstreams(answer(OK, b"STRAY", gap=0.05))
    client = clients(up.url)
    await fetch(client)
    await asyncio.sleep(0.2)
    response, body = await fetch(client)
    assert body == b"ok" and up.connections == 2


# Bodies that come after their head in later packets are taken straight from the socket.

async def test_a_body_in_later_packets_arrives_whole_and_the_connection_serves_the_next_answer(upstreams, clients):
    payload = bytes(range(256)) * 1024
    parts = [payload[i:i + 70_000] for i in range(0, len(payload), 70_000)]
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload), *parts, gap=0.01))
    client = clients(up.url)
    for _ in range(3):
        response, body = await fetch(client)
        assert (response.status, body) == (200, payload)
    assert up.connections == 1


async def test_bytes_past_content_length_in_a_later_packet_are_cut_off_and_end_the_connection(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n", b"ok", b"ok" + b"HTTP/1.1 200 OK\r\n",
                                gap=0.02))
    client = clients(up.url)
    assert (await fetch(client))[1] == b"okok"
    assert (await fetch(client))[1] == b"okok"
    assert up.connections == 2


async def test_a_body_cut_short_in_a_later_packet_is_an_error_from_chunks(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"only", b" some",
                                close=True, gap=0.02))
    upstream_response = await clients(up.url).send("GET", "/", HOST, None)
    with pytest.raises(UpstreamError) as caught:
        async for _ in upstream_response.chunks():
            pass
    upstream_response.finish(complete=False)
    assert caught.value.reason is Reason.UPSTREAM_RESET


async def test_head_answers_end_with_their_head_and_the_connection_is_not_reused(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nETag: x\r\n\r\n"))
    client = clients(up.url)
    response = await client.send("HEAD", "/", HOST, None)
    assert response.status == 200 and (b"Content-Length", b"1000") in response.raw_headers
    assert [chunk async for chunk in response.chunks()] == []
    response.finish(complete=True)
    assert (await client.send("HEAD", "/", HOST, None)).status == 200
    assert up.connections == 2


async def test_an_unread_body_is_never_reused(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4000000\r\n\r\n" + b"x" * 4_000_000))
    client = clients(up.url)
    response = await client.send("GET", "/", HOST, None)
    async for _ in response.chunks():
        break
    response.finish(complete=False)
    await wait_for(lambda: up.closed == [1])
    assert client.in_flight == 0


async def test_a_complete_answer_the_caller_did_not_read_keeps_the_connection(upstreams, clients):
    up = await upstreams()
    client = clients(up.url)
    response = await client.send("GET", "/", HOST, None)
    await asyncio.sleep(0.05)
    response.finish(complete=False)           # a 503 the retry policy discards, say
    await fetch(client)
    assert up.connections == 1


async def test_an_idle_connection_expires(upstreams, clients, monkeypatch):
    monkeypatch.setattr(http1, "KEEPALIVE_EXPIRY_S", 0.2)
    up = await upstreams()
    client = clients(up.url)
    await fetch(client)
    await wait_for(lambda: up.closed == [1])         # closed by the pool's sweep, not only skipped
    await fetch(client)
    assert up.connections == 2


async def test_an_idle_connection_the_upstream_closed_is_dropped(upstreams, clients):
    up = await upstreams(answer(OK, close=True))
    client = clients(up.url)
    await fetch(client)
    pool = client._pool
    await wait_for(lambda: pool.open_count == 0)
    assert pool.idle_count == 0
    response, body = await fetch(client)
    assert body == b"ok" and up.connections == 2


# --- responses -------------------------------------------------------------------------------------

async def test_interim_answers_are_skipped_and_headers_kept_as_received(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n",
                                b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1; Path=/\r\nX-Case: MiXeD\r\n"
                                b"set-cookie: b=2\r\nContent-Length: 3\r\n\r\nnew", gap=0.01))
    client = clients(up.url)
    response, body = await fetch(client)
    assert (response.status, body) == (201, b"new")
    assert response.raw_headers == [(b"Set-Cookie", b"a=1; Path=/"), (b"X-Case", b"MiXeD"),
                                    (b"set-cookie", b"b=2"), (b"Content-Length", b"3")]
    await fetch(client)
    assert up.connections == 1


async def test_chunked_and_gzip_bodies_pass_raw(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n",
                                b"3\r\n\x1f\x8b\x08\r\n", b"2\r\nzz\r\n0\r\n\r\n", gap=0.01))
    client = clients(up.url)
    response, body = await fetch(client)
    assert body == b"\x1f\x8b\x08zz"
    await fetch(client)
    assert up.connections == 1


async def test_a_body_read_until_close(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\n\r\nuntil ", b"the end", close=True, gap=0.01))
    response, body = await fetch(clients(up.url))
    assert (response.status, body) == (200, b"until the end")


@pytest.mark.parametrize("response", [
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly some",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
], ids=["content-length", "chunked"])
async def test_a_body_cut_short_is_an_error_from_chunks(upstreams, clients, response):
    up = await upstreams(answer(response, close=True))
    client = clients(up.url)
    upstream_response = await client.send("GET", "/", HOST, None)
    assert upstream_response.status == 200
    with pytest.raises(UpstreamError) as caught:
        async for _ in upstream_response.chunks():
            pass
    upstream_response.finish(complete=False)
    assert caught.value.reason in (Reason.UPSTREAM_RESET, Reason.PROTOCOL_ERROR)
    assert caught.value.upstream == "up"


@pytest.mark.parametrize("response", [
    b"garbage, not HTTP\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (70 * 1024) + b"\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n" * 2500 + b"Content-Length: 2\r\n\r\nok",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
], ids=["garbage", "cl-and-te", "huge-header", "headers-over-64k", "unasked-101"])
async def test_garbage_is_a_protocol_error(upstreams, clients, response):
    up = await upstreams(answer(response))
    client = clients(up.url)
    with pytest.raises(UpstreamError) as caught:
        await client.send("GET", "/", HOST, None)
    assert caught.value.reason is Reason.PROTOCOL_ERROR and caught.value.reached_upstream
    assert client.in_flight == 0
    await wait_for(lambda: up.closed == [1])


async def test_a_101_to_a_request_that_asked_hands_the_connection_over(upstreams, clients):
    """A WebSocket handshake's 101: the head is the answer, the bytes after it are the new protocol's,
    and the transport leaves the pool for its new owner; the upstream sees the owner's bytes."""
    switched = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
    up = await upstreams(answer(switched + b"\x81\x02hi"))
    client = clients(up.url)
    response = await client.send("GET", "/ws", [*HOST, (b"Connection", b"Upgrade"), (b"Upgrade", b"websocket")],
                                 None, upgrade=True)
    assert response.status == 101 and (b"Upgrade", b"websocket") in response.raw_headers
    transport, early = response.take_transport("up")
    assert early == b"\x81\x02hi" and client.in_flight == 0
    assert client._pool is not None and client._pool.open_count == client._pool.idle_count == 0
    transport.close()
    await wait_for(lambda: up.closed == [1])


async def test_an_unconsumed_body_pauses_reading(upstreams, clients):
    size = 16 * 1024 * 1024
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, b"x" * size))
    client = clients(up.url)
    response = await client.send("GET", "/", HOST, None)
    await asyncio.sleep(0.3)
    connection = response._connection
    assert connection._read_paused and connection._buffered < http1.READ_BUFFER_HIGH + 2 * 1024 * 1024
    total = 0
    async for chunk in response.chunks():
        total += len(chunk)
    response.finish(complete=True)
    assert total == size


# --- failures -------------------------------------------------------------------------------------

async def test_a_refused_connection_never_reached_the_upstream(clients, unused_port):
    with pytest.raises(UpstreamError) as caught:
        await clients(f"http://127.0.0.1:{unused_port}").send("POST", "/", HOST, b"pay")
    assert caught.value.reason is Reason.CONNECT_ERROR and not caught.value.reached_upstream


async def test_a_connect_that_hangs_is_a_connect_timeout(clients, monkeypatch):
    loop = asyncio.get_running_loop()

    async def hang(*args, **kwargs):
        await asyncio.sleep(10)

    monkeypatch.setattr(loop, "create_connection", hang)
    client = clients("http://127.0.0.1:9", connect_timeout_s=0.1)
    with pytest.raises(UpstreamError) as caught:
        await client.send("GET", "/", HOST, None)
    assert caught.value.reason is Reason.CONNECT_TIMEOUT and not caught.value.reached_upstream


async def test_an_upstream_that_does_not_answer_times_out_and_its_connection_is_dropped(upstreams, clients):
    up = await upstreams(answer(OK, delay=1.0))
    client = clients(up.url, timeout_s=0.2)
    with pytest.raises(UpstreamError) as caught:
        await client.send("GET", "/", HOST, None)
    assert caught.value.reason is Reason.TIMEOUT
    await wait_for(lambda: up.closed == [1])
    assert client.in_flight == 0


async def test_a_body_that_stalls_past_the_read_timeout_is_an_error(upstreams, clients):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"defghij", gap=0.15))
    client = clients(up.url, timeout_s=0.4)
    response, body = await fetch(client)            # 0.15 s between pieces: under the read timeout
    assert body == b"abcdefghij"
    up.respond = answer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", b"defghij", gap=0.6)
    response = await client.send("GET", "/", HOST, None)
    with pytest.raises(UpstreamError) as caught:
        async for _ in response.chunks():
            pass
    response.finish(complete=False)
    assert caught.value.reason is Reason.TIMEOUT


async def test_a_reset_before_the_answer(upstreams, clients):
    async def reset(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()
    up = await upstreams(reset)
    with pytest.raises(UpstreamError) as caught:
        await clients(up.url).send("GET", "/", HOST, None)
    assert caught.value.reason is Reason.UPSTREAM_RESET and caught.value.reached_upstream


async def test_cancellation_closes_the_connection_and_propagates(upstreams, clients):
    up = await upstreams(answer(OK, delay=5))
    client = clients(up.url)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):           # the route's deadline
            await client.send("GET", "/", HOST, None)
    await wait_for(lambda: client._pool.open_count == 0)
    assert client.in_flight == 0 and client._pool.idle_count == 0


# --- request bodies that fail ---------------------------------------------------------------------

@pytest.mark.parametrize("error", [ClientDisconnected("gone"), BodyTooLarge("too large")], ids=["gone", "too-large"])
@pytest.mark.parametrize("declared", [False, True], ids=["chunked", "content-length"])
async def test_a_failing_body_propagates_as_itself_and_the_upstream_sees_an_incomplete_request(
        upstreams, clients, error, declared):
    up = await upstreams()
    client = clients(up.url)
    headers = list(HOST) + ([(b"Content-Length", b"100")] if declared else [])
    with pytest.raises(type(error)) as caught:
        await client.send("POST", "/", headers, stream(b"part one,", b"part two", then=error, pause=0.05))
    assert caught.value is error
    await wait_for(lambda: up.closed == [1])
    [seen] = up.seen
    assert not seen.complete and seen.body.startswith(b"part one")
    assert client.in_flight == 0


async def test_a_streamed_body_waits_for_a_slow_upstream(upstreams, clients):
    produced = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal produced
        chunk = b"x" * 65536
        while produced < 64 * 1024 * 1024:      # bounded: without flow control this fails, not hangs
            produced += len(chunk)
            yield chunk

    up = await upstreams(read_body=False, respond=answer(OK, delay=30))    # reads the head, never the body
    client = clients(up.url, timeout_s=0.5)
    with pytest.raises(UpstreamError) as caught:
        await client.send("POST", "/", HOST, endless())
    assert caught.value.reason is Reason.TIMEOUT         # no progress either way: the upstream's fault
    assert produced < 64 * 1024 * 1024                   # flow control held the body back


class UnreadTransport(asyncio.Transport):
    """A connection whose upstream reads nothing until told to, with asyncio's flow control.

    `write` pauses the protocol above the high-water mark and `resume` resumes it, as every
    asyncio transport does. `writelines` never pauses, as the selector transport's of Python
    3.12.0-3.12.8 and 3.13.0-3.13.1 (gh-127655): a client must not rely on it.
    """

    HIGH = 64 * 1024

    def __init__(self, protocol: asyncio.Protocol) -> None:
        super().__init__()
        self._protocol = protocol
        self._buffered = 0
        self._paused = False
        self._closing = False

    def write(self, data: bytes) -> None:
        self._buffered += len(data)
        if not self._paused and self._buffered > self.HIGH:
            self._paused = True
            self._protocol.pause_writing()

    def writelines(self, list_of_data) -> None:
        self._buffered += sum(len(data) for data in list_of_data)

    def get_write_buffer_size(self) -> int:
        return self._buffered

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self.HIGH // 4, self.HIGH

    def resume(self) -> None:
        """The upstream reads everything written so far."""
        self._buffered = 0
        if self._paused:
            self._paused = False
            self._protocol.resume_writing()

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self._protocol.connection_lost, None)


async def test_a_chunked_body_stops_at_the_high_water_mark_whatever_writelines_does():
    """Pulling the body stops while the write buffer is over the transport's high-water mark."""
    chunk_size = 16 * 1024
    pulled = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal pulled
        while pulled < 1000:         # a bound, so that a body never held back still ends
            pulled += 1
            yield b"x" * chunk_size

    loop = asyncio.get_running_loop()
    pool = http1.Pool("127.0.0.1", 9, connect_timeout_s=1.0, read_timeout_s=60.0)
    connection = http1.Connection(pool, loop, 60.0)
    transport = UnreadTransport(connection)
    connection.connection_made(transport)
    writer = loop.create_task(connection._send_body(body(), None))
    held = lambda: writer.done() or connection._drain_waiter is not None    # noqa: E731
    try:
        most = UnreadTransport.HIGH // chunk_size + 1
        await wait_for(held)
        assert pulled <= most and not writer.done()
        assert transport.get_write_buffer_size() > UnreadTransport.HIGH
        transport.resume()                                   # the upstream reads: the body goes on
        await wait_for(lambda: pulled > most)
        await wait_for(held)
        assert pulled <= 2 * most and not writer.done()
    finally:
        connection.abort()
        await writer
    assert connection._closed and pulled < 1000


async def test_a_slow_client_body_is_not_the_upstreams_timeout(upstreams, clients):
    up = await upstreams()
    client = clients(up.url, timeout_s=0.2)
    response, body = await fetch(client, "POST", "/", HOST, stream(b"a", b"b", b"c", pause=0.15))
    assert body == b"ok" and up.seen[0].body == b"abc"


async def test_an_early_answer_is_returned_while_the_body_still_streams(upstreams, clients):
    async def refuse(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nnope")
        await writer.drain()

    up = await upstreams(refuse, read_body=False)

    async def slow() -> AsyncIterator[bytes]:
        for _ in range(100):
            await asyncio.sleep(0.05)
            yield b"x" * 1000

    client = clients(up.url)
    response, body = await fetch(client, "POST", "/", HOST, slow())
    assert (response.status, body) == (413, b"nope")
    assert client._pool.idle_count == 0


# --- probes, closing, TLS --------------------------------------------------------------------------

async def test_probe(upstreams, clients, unused_port):
    up = await upstreams(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nready"))
    client = clients(up.url)
    assert await client.probe("/health", 1.0) == (True, "HTTP 200")
    assert up.seen[0].head == f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{up.port}".encode()
    up.respond = answer(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")
    assert await client.probe("/health", 1.0) == (False, "HTTP 503")
    up.respond = answer(OK, delay=2)
    healthy, detail = await client.probe("/health", 0.2)
    assert not healthy and "did not answer in time" in detail
    healthy, detail = await clients(f"http://127.0.0.1:{unused_port}").probe("/health", 1.0)
    assert not healthy and "refused" in detail


async def test_close_drops_idle_connections_and_a_retired_client_closes_when_idle(upstreams, clients):
    up = await upstreams()
    client = clients(up.url)
    await fetch(client)
    await client.close()                        # a reload retired it
    await wait_for(lambda: up.closed == [1])
    # A request that started on the old config reopens the pool; its end closes it again.
    response = await client.send("GET", "/", HOST, None)
    assert [chunk async for chunk in response.chunks()] == [b"ok"]
    response.finish(complete=True)
    await wait_for(lambda: up.closed == [1, 2])
    assert client.in_flight == 0 and client._pool is None


async def test_text_headers_with_line_breaks_are_refused(upstreams, clients):
    up = await upstreams()
    with pytest.raises(ValueError):
        await clients(up.url).send("GET", "/", [("X-Evil", "a\r\nX-Injected: 1")], None)
    assert up.seen == []


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_https_upstreams_verify_the_certificate(tmp_path, clients):
    cert, key = _self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(OK)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(UpstreamError) as caught:        # not trusted by the default context
            await clients(f"https://localhost:{port}").send("GET", "/", HOST, None)
        assert caught.value.reason is Reason.TLS_ERROR and not caught.value.reached_upstream
        response, body = await fetch(clients(f"https://localhost:{port}", tls=UpstreamTls(ca_file=str(cert))))
        assert (response.status, body) == (200, b"ok")
        # By IP, with the name the certificate carries set explicitly (SNI and the name checked).
        by_ip = clients(f"https://127.0.0.1:{port}", tls=UpstreamTls(ca_file=str(cert), server_name="localhost"))
        assert (await fetch(by_ip))[1] == b"ok"
        with pytest.raises(UpstreamError) as caught:        # the certificate does not name the IP
            await clients(f"https://127.0.0.1:{port}", tls=UpstreamTls(ca_file=str(cert))).send("GET", "/", HOST, None)
        assert caught.value.reason is Reason.TLS_ERROR
        unchecked = clients(f"https://127.0.0.1:{port}", tls=UpstreamTls(verify=False))
        assert (await fetch(unchecked))[1] == b"ok"
    finally:
        server.close()


@pytest.fixture
def unused_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_same_on_uvloop():
    """The proxy runs uvloop, whose transports differ from asyncio's in the details."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        size = 8 * 1024 * 1024
        big = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * size
        up = await Script(answer(OK)).start()
        client = UpstreamClient(Upstream(name="up", url=up.url, timeout_s=0.3))
        try:
            for _ in range(3):
                assert (await fetch(client))[1] == b"ok"
            assert up.connections == 1
            response, _ = await fetch(client, "POST", "/", HOST, stream(b"a" * 100_000, b"b" * 100_000))
            assert up.seen[-1].complete and len(up.seen[-1].body) == 200_000 and up.connections == 1
            up.respond = answer(big)
            response = await client.send("GET", "/", HOST, None)
            await asyncio.sleep(0.2)
            assert response._connection._read_paused
            total = 0
            async for chunk in response.chunks():
                total += len(chunk)
            response.finish(complete=True)
            assert total == size
            up.respond = answer(OK + b"STRAY")
            await fetch(client)
            connections = up.connections
            await fetch(client)
            assert up.connections == connections + 1
            up.respond = answer(OK, delay=1)
            with pytest.raises(UpstreamError) as caught:
                await client.send("GET", "/", HOST, None)
            assert caught.value.reason is Reason.TIMEOUT and client.in_flight == 0
            with pytest.raises(ClientDisconnected):
                await client.send("POST", "/", HOST, stream(b"part", then=ClientDisconnected("gone")))
        finally:
            await client.close()
            await up.stop()

    uvloop.run(scenario())
