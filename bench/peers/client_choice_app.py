"""A minimal raw-ASGI proxy whose only variable is the forwarding client.

BENCH_ORIGIN is the origin's base URL; BENCH_CLIENT picks the client:

- httpx-defaults   httpx.AsyncClient, default transport, default pool limits (100, keep-alive 20)
- httpx            httpx.AsyncClient, default transport, pool without limits
- httpx-aiohttp    httpx.AsyncClient over httpx-aiohttp's AiohttpTransport, pool without limits
- aiohttp          aiohttp.ClientSession directly, pool without limits

Every variant forwards the request's method, path, query, headers (less Host and hop-by-hop
fields) and body, and streams the response body back chunk by chunk, undecoded.
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

ORIGIN = os.environ["BENCH_ORIGIN"].rstrip("/")
CLIENT = os.environ.get("BENCH_CLIENT", "aiohttp")

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
                        b"transfer-encoding", b"upgrade", b"host"})

_state: dict[str, Any] = {}


def _aiohttp_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), cookie_jar=aiohttp.DummyCookieJar(),
                                 auto_decompress=False)


def _open() -> Any:
    unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    if CLIENT == "httpx-defaults":
        return httpx.AsyncClient()
    if CLIENT == "httpx":
        return httpx.AsyncClient(limits=unlimited)
    if CLIENT == "httpx-aiohttp":
        return httpx.AsyncClient(transport=AiohttpTransport(client=_aiohttp_session), limits=unlimited)
    if CLIENT == "aiohttp":
        return _aiohttp_session()
    raise SystemExit(f"unknown BENCH_CLIENT {CLIENT!r}")


async def _body(receive: Any) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _forwarded_headers(scope: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    return [(name, value) for name, value in scope["headers"] if name.lower() not in HOP_BY_HOP]


def _client_headers(raw: Any) -> list[tuple[bytes, bytes]]:
    return [(bytes(name), bytes(value)) for name, value in raw if bytes(name).lower() not in HOP_BY_HOP]


async def _via_httpx(client: httpx.AsyncClient, scope: dict[str, Any], body: bytes, send: Any) -> None:
    request = client.build_request(scope["method"], _target(scope), headers=_forwarded_headers(scope),
                                   content=body or None)
    response = await client.send(request, stream=True)
    try:
        await send({"type": "http.response.start", "status": response.status_code,
                    "headers": _client_headers(response.headers.raw)})
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        await response.aclose()


async def _via_aiohttp(session: aiohttp.ClientSession, scope: dict[str, Any], body: bytes, send: Any) -> None:
    headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in _forwarded_headers(scope)]
    response = await session.request(scope["method"], _target(scope), headers=headers, data=body or None,
                                     allow_redirects=False, skip_auto_headers=("Accept-Encoding", "User-Agent"))
    try:
        await send({"type": "http.response.start", "status": response.status,
                    "headers": _client_headers(response.raw_headers)})
        async for chunk in response.content.iter_any():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        response.release()


def _target(scope: dict[str, Any]) -> str:
    target = ORIGIN + scope.get("raw_path", scope["path"].encode()).decode("latin-1")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    return target


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                _state["client"] = _open()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                client = _state.pop("client", None)
                if client is not None:
                    await (client.aclose() if isinstance(client, httpx.AsyncClient) else client.close())
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = await _body(receive)
    client = _state["client"]
    if isinstance(client, httpx.AsyncClient):
        await _via_httpx(client, scope, body, send)
    else:
        await _via_aiohttp(client, scope, body, send)
