"""The forwarding client: one connection pool per upstream, bodies streamed raw.

The only module that imports the HTTP client library. aiohttp was chosen by
measurement over httpx's default transport, which is several times slower at
64 concurrent requests (encode/httpx#3215); see bench/results/client-choice.md.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from .config.model import Upstream
from .errors import ClientDisconnected, ProxyError, Reason, UpstreamError

# httpx/aiohttp defaults the client never sent must not reach the upstream.
_SKIP_AUTO_HEADERS = frozenset({"Accept", "Accept-Encoding", "User-Agent", "Content-Type"})
# An idle pooled connection is dropped before typical upstream idle timeouts (often 5 s or more).
KEEPALIVE_EXPIRY_S = 4.0
MAX_RESPONSE_HEADER_BYTES = 64 * 1024


def translate(exc: BaseException, *, upstream: str, route: str | None = None) -> UpstreamError:
    """Map a client-library failure to the proxy's reason (and so its status)."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        reason = Reason.CONNECT_TIMEOUT
    elif isinstance(exc, aiohttp.ClientConnectorError):
        reason = Reason.CONNECT_ERROR
    elif isinstance(exc, (aiohttp.ServerTimeoutError, asyncio.TimeoutError, TimeoutError)):
        reason = Reason.TIMEOUT
    elif isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError, ConnectionError)):
        reason = Reason.UPSTREAM_RESET
    else:
        reason = Reason.PROTOCOL_ERROR
    return UpstreamError(f"{reason.title}: {type(exc).__name__}: {exc}".rstrip(": "),
                         reason=reason, route=route, upstream=upstream)


class UpstreamResponse:
    """An upstream's answer: status and raw headers now, the body streamed on demand."""

    __slots__ = ("status", "raw_headers", "_response", "_reusable", "_client", "_finished")

    def __init__(self, response: aiohttp.ClientResponse, client: "UpstreamClient", reusable: bool) -> None:
        self.status = response.status
        self.raw_headers = response.raw_headers
        self._response = response
        self._reusable = reusable
        self._client = client
        self._finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as the upstream sent it (still compressed, if it was)."""
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise _failure(exc, self._client.upstream.name, None) from exc

    def finish(self, *, complete: bool) -> None:
        """Return the connection to the pool only after a complete, well-framed exchange."""
        if self._finished:
            return
        self._finished = True
        self._client.in_flight -= 1
        self._client.close_if_retired_and_idle()
        if complete and self._reusable:
            self._response.release()
        else:
            self._response.close()


class UpstreamClient:
    """A pooled client for one upstream, kept across reloads while its settings hold."""

    def __init__(self, upstream: Upstream) -> None:
        self.upstream = upstream
        self.settings = (upstream.url, upstream.connect_timeout_s, upstream.timeout_s)
        self._origin = upstream.url
        self.in_flight = 0        # responses not yet finished; a retired client closes at 0
        self._retired = False
        self._session: aiohttp.ClientSession | None = None
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=None,
            sock_connect=upstream.connect_timeout_s, sock_read=upstream.timeout_s,
        )

    def _open(self) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_EXPIRY_S, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),     # one user's cookies must never reach another's request
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO_HEADERS,
            timeout=self._timeout,
            max_field_size=MAX_RESPONSE_HEADER_BYTES,
            max_line_size=MAX_RESPONSE_HEADER_BYTES,
        )
        # aiohttp resends GET/HEAD/OPTIONS/PUT/DELETE once, unseen, when the upstream resets before
        # answering. Every attempt must go through the route's retry policy (attempts, retry_on,
        # methods, budget) and be counted by breaker and metrics, so the proxy alone decides.
        # No public switch exists; aiohttp's own test client clears this same attribute.
        self._session._retry_connection = False
        return self._session

    async def send(
        self,
        method: str,
        target: str,
        headers: list[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        route: str | None = None,
    ) -> UpstreamResponse:
        """Send the request; return once the upstream's status and headers have arrived."""
        session = self._session or self._open()
        url = URL(self._origin + target, encoded=True)
        # Counted from before sending: a client retired by a reload must not close under a request
        # still waiting for its answer.
        self.in_flight += 1
        try:
            response = await session.request(
                method, url, headers=CIMultiDict(headers), data=body,
                allow_redirects=False, compress=None, proxy=None,
            )
        except BaseException as exc:
            self.in_flight -= 1
            if isinstance(exc, (aiohttp.ClientError, OSError, asyncio.TimeoutError)):
                raise _failure(exc, self.upstream.name, route) from exc
            raise
        # Stray bytes after a bodiless answer would become the next request's response.
        reusable = method != "HEAD" and response.status not in (204, 304)
        return UpstreamResponse(response, self, reusable)

    async def probe(self, path: str, timeout_s: float) -> tuple[bool, str]:
        """An active health check: GET `path`, healthy on a 2xx answer."""
        session = self._session or self._open()
        try:
            async with session.get(URL(self._origin + path, encoded=True), allow_redirects=False,
                                   timeout=aiohttp.ClientTimeout(total=timeout_s)) as response:
                await response.read()
                return 200 <= response.status < 300, f"HTTP {response.status}"
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            return False, translate(exc, upstream=self.upstream.name).detail

    def close_if_retired_and_idle(self) -> None:
        # A request that started on the old config may have reopened a retired pool.
        if self._retired and self.in_flight == 0 and self._session is not None:
            asyncio.ensure_future(self.close())

    async def close(self) -> None:
        self._retired = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()


def _failure(exc: BaseException, upstream: str, route: str | None) -> BaseException:
    """The error to raise: the request body's own failure if that caused it, else the upstream's."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (ClientDisconnected, ProxyError)):
            return seen
        seen = seen.__cause__ or seen.__context__
    return translate(exc, upstream=upstream, route=route)
