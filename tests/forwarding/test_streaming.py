"""Bodies are streamed both ways, never buffered, and a client that leaves frees the upstream."""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
from collections.abc import Iterator

import httpx
import pytest

from tests.support.procnet import established_to_port
from tests.support.rawhttp import RawConnection, ThreadedEvent
from tests.support.servers import Recorder, wait_until

MiB = 1024 * 1024
CHUNK = 256 * 1024
BIG = 200 * MiB
RSS_GROWTH_LIMIT = 50 * MiB
_BLOCK = random.Random(20240601).randbytes(CHUNK)


def _chunk(index: int, size: int = CHUNK) -> bytes:
    # Every chunk differs (its index leads it), so lost, repeated or reordered chunks change the hash.
    return (index.to_bytes(8, "big") + _BLOCK[8:])[:size]


def _chunks(total: int) -> Iterator[bytes]:
    for index in range((total + CHUNK - 1) // CHUNK):
        yield _chunk(index, min(CHUNK, total - index * CHUNK))


def _config(upstream_url: str, *, extra_route: str = "") -> str:
    return f"""
version: 1
upstreams:
  legacy: {{url: "{upstream_url}", timeout: 10s}}
routes:
  - name: big
    match: {{path: /}}
    to: legacy
    max_body_size: 1GiB
{extra_route}"""


async def _read_body(receive) -> bytes:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ConnectionError("client went away")
        body += message.get("body", b"")
        if not message.get("more_body"):
            return bytes(body)


def _streaming_app(recorder: Recorder, gate: ThreadedEvent):
    async def app(scope, receive, send):
        path = scope["path"]
        if path == "/small":
            await _read_body(receive)
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
        elif path == "/download":
            # Generated as it goes: never the whole body in memory, here or (we check) in the proxy.
            digest = hashlib.sha256()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/octet-stream"), (b"content-length", str(BIG).encode())]})
            for chunk in _chunks(BIG):
                digest.update(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            recorder.add(kind="download", sha256=digest.hexdigest())
        elif path == "/upload":
            digest, size = hashlib.sha256(), 0
            framing = {k.decode().lower(): v.decode() for k, v in scope["headers"]
                       if k.lower() in (b"content-length", b"transfer-encoding")}
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    recorder.add(kind="upload-aborted", bytes=size)
                    return
                chunk = message.get("body", b"")
                digest.update(chunk)
                size += len(chunk)
                if not message.get("more_body"):
                    break
            answer = json.dumps({"sha256": digest.hexdigest(), "bytes": size, "framing": framing}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]})
            await send({"type": "http.response.body", "body": answer})
        elif path == "/chunked":
            # No Content-Length: uvicorn sends it chunked. The rest waits for the test to see part one.
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
            await send({"type": "http.response.body", "body": b"part one;", "more_body": True})
            await gate.wait()
            await send({"type": "http.response.body", "body": b"part two;", "more_body": True})
            await send({"type": "http.response.body", "body": b"part three.", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        elif path == "/endless":
            # Up to 1 GiB, stopping when the proxy's connection goes away.
            gone = asyncio.Event()

            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()

            watcher = asyncio.create_task(watch())
            sent = 0
            await send({"type": "http.response.start", "status": 200, "headers": [
                (b"content-type", b"application/octet-stream"), (b"content-length", str(1024 * MiB).encode())]})
            try:
                while sent < 1024 * MiB and not gone.is_set():
                    await send({"type": "http.response.body", "body": _BLOCK[:64 * 1024], "more_body": True})
                    sent += 64 * 1024
                    # uvicorn's send returns at once on a closed connection: let the watcher run.
                    await asyncio.sleep(0)
            finally:
                watcher.cancel()
            recorder.add(kind="endless", stopped_early=gone.is_set(), sent=sent)
            if not gone.is_set():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            await send({"type": "http.response.start", "status": 404, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
    return app


@pytest.fixture
def gate(start_upstream) -> Iterator[ThreadedEvent]:
    """Set at teardown (before the upstreams stop), so no upstream request waits forever."""
    event = ThreadedEvent()
    yield event
    event.set()


@pytest.fixture
def streaming(start_upstream, start_proxy, gate):
    recorder = Recorder()
    upstream = start_upstream(_streaming_app(recorder, gate))
    proxy = start_proxy(_config(upstream.url))
    return recorder, upstream, proxy


def _warm_baseline(proxy) -> int:
    """The proxy's RSS once it has served a few requests (imports, pools and buffers in place)."""
    with httpx.Client(timeout=10) as client:
        for _ in range(5):
            assert client.post(proxy.url + "/small", content=b"x" * 1000).status_code == 200
    return proxy.rss_bytes()


def test_200_mib_download_streams_through_with_bounded_proxy_memory(streaming):
    recorder, _, proxy = streaming
    baseline = _warm_baseline(proxy)
    peak = baseline
    digest, size = hashlib.sha256(), 0
    with httpx.Client(timeout=30) as client, client.stream("GET", proxy.url + "/download") as response:
        assert response.status_code == 200
        assert response.headers["content-length"] == str(BIG)
        for index, chunk in enumerate(response.iter_raw(CHUNK)):
            digest.update(chunk)
            size += len(chunk)
            if index % 16 == 0:
                peak = max(peak, proxy.rss_bytes())
    peak = max(peak, proxy.rss_bytes())
    assert size == BIG
    wait_until(lambda: len(recorder) == 1, what="upstream finished the download")
    assert digest.hexdigest() == recorder.requests[0]["sha256"]
    assert peak - baseline < RSS_GROWTH_LIMIT, f"proxy RSS grew by {(peak - baseline) / MiB:.1f} MiB"


def test_200_mib_upload_streams_through_with_bounded_proxy_memory(streaming):
    _, _, proxy = streaming
    baseline = _warm_baseline(proxy)
    peak = baseline
    sent = hashlib.sha256()

    def body() -> Iterator[bytes]:
        nonlocal peak
        for index, chunk in enumerate(_chunks(BIG)):
            sent.update(chunk)
            if index % 16 == 0:
                peak = max(peak, proxy.rss_bytes())
            yield chunk

    with httpx.Client(timeout=30) as client:
        response = client.post(proxy.url + "/upload", content=body())
    peak = max(peak, proxy.rss_bytes())
    assert response.status_code == 200, response.text
    received = response.json()
    assert received["bytes"] == BIG
    assert received["sha256"] == sent.hexdigest()
    # The client sent it chunked; the upstream got one framing, never both.
    assert list(received["framing"]) in (["transfer-encoding"], ["content-length"])
    assert peak - baseline < RSS_GROWTH_LIMIT, f"proxy RSS grew by {(peak - baseline) / MiB:.1f} MiB"


def test_chunked_upstream_response_streams_through(streaming, gate):
    _, _, proxy = streaming
    with httpx.Client(timeout=5) as client, client.stream("GET", proxy.url + "/chunked") as response:
        assert response.status_code == 200
        assert response.headers.get("transfer-encoding") == "chunked"
        assert "content-length" not in response.headers
        chunks = response.iter_raw()
        received = b""
        while received != b"part one;":
            # Arrives before the upstream has written the rest: streamed, not buffered.
            received += next(chunks)
            assert b"part one;".startswith(received)
        gate.set()
        received += b"".join(chunks)
    assert received == b"part one;part two;part three."


def test_client_abort_mid_download_leaves_no_upstream_connection(streaming):
    recorder, upstream, proxy = streaming
    connection = RawConnection(proxy.port)
    connection.send(b"GET /endless HTTP/1.1\r\nHost: test.local\r\n\r\n")
    received = 0
    while received < 4 * MiB:
        data = connection.sock.recv(1024 * 1024)
        assert data, "proxy closed the download early"
        received += len(data)
    # The helper sees the proxy's upstream connection while the download runs...
    assert established_to_port(proxy.pid, upstream.port) >= 1
    connection.close()
    # ...and the client's hang-up must cut it: the upstream is told, and the proxy holds nothing open.
    wait_until(lambda: len(recorder) == 1, timeout_s=10, what="upstream saw the proxy hang up")
    assert recorder.requests[0]["stopped_early"], recorder.requests[0]
    assert recorder.requests[0]["sent"] < 1024 * MiB
    wait_until(lambda: established_to_port(proxy.pid, upstream.port) == 0, timeout_s=10,
               what="no open connection from the proxy to the upstream")
    # The proxy is fine afterwards.
    assert httpx.post(proxy.url + "/small", content=b"x", timeout=10).text == "ok"
