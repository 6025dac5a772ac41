"""The forwarding client: one connection pool per upstream, bodies streamed raw.

The only module the rest of the proxy imports for forwarding; the client itself is
strangler/http1.py, an HTTP/1.1 client written for what a reverse proxy needs
(httptools for parsing, one asyncio.Protocol per connection, a LIFO keep-alive
pool). The measurements behind that choice are in bench/results/client-choice.md
and the README's Design section.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from urllib.parse import urlsplit

from . import http1
from .config.model import Upstream
from .errors import ClientDisconnected, ProxyError, Reason, UpstreamError
from .tls import upstream_context
# Part of this module's interface:
from .http1 import KEEPALIVE_EXPIRY_S, MAX_RESPONSE_HEADER_BYTES, Connector, InterimHandler  # noqa: F401

__all__ = ["KEEPALIVE_EXPIRY_S", "MAX_RESPONSE_HEADER_BYTES", "Connector", "InterimHandler", "UpstreamClient",
           "UpstreamResponse", "translate"]


def translate(exc: BaseException, *, upstream: str, route: str | None = None) -> UpstreamError:
    """Map a transport failure to the proxy's reason (and so its status)."""
    if isinstance(exc, http1.ConnectTimeout):
        reason = Reason.CONNECT_TIMEOUT
    elif isinstance(exc, http1.TLSError):
        reason = Reason.TLS_ERROR
    elif isinstance(exc, http1.ConnectError):
        reason = Reason.CONNECT_ERROR
    elif isinstance(exc, (http1.ReadTimeout, TimeoutError)):
        reason = Reason.TIMEOUT
    elif isinstance(exc, (http1.RemoteDisconnected, OSError)):
        reason = Reason.UPSTREAM_RESET
    else:
        reason = Reason.PROTOCOL_ERROR
    return UpstreamError(f"{reason.title}: {type(exc).__name__}: {exc}".rstrip(": "),
                         reason=reason, route=route, upstream=upstream)


class UpstreamResponse:
    """An upstream's answer: status and raw headers now, the body streamed on demand."""

    __slots__ = ("status", "raw_headers", "_connection", "_client", "_finished")

    def __init__(self, connection: http1.Connection, client: UpstreamClient) -> None:
        self.status = connection.status
        self.raw_headers = connection.raw_headers      # (name, value) bytes pairs as received
        self._connection = connection
        self._client = client
        self._finished = False

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as the upstream sent it (still compressed, if it was)."""
        read = self._connection.read
        try:
            while True:
                chunk = await read()
                if not chunk:
                    return
                yield chunk
        except http1.HTTPError as exc:
            raise _failure(exc, self._client.upstream.name, None) from exc

    def whole_body(self) -> bytes | None:
        """The body at once if it arrived whole with the head, sparing a small answer the stream."""
        return self._connection.whole_body()

    def take_transport(self, upstream: str) -> tuple[asyncio.Transport, bytes]:
        """A 101's connection for the tunnel that follows (with the bytes that came after the 101):
        it leaves the pool for good, and the response is finished."""
        taken = self._connection.detach()
        self.finish(complete=False)
        if taken is None:
            raise translate(http1.RemoteDisconnected("the upstream closed the connection after its 101"),
                            upstream=upstream)
        return taken

    def finish(self, *, complete: bool) -> None:
        """Return the connection to the pool only after a complete, well-framed exchange.

        The connection itself knows whether the exchange was complete on the wire; a body the
        caller stopped reading leaves it incomplete, and it is closed.
        """
        if self._finished:
            return
        self._finished = True
        client = self._client
        client.in_flight -= 1
        client._release(self._connection)
        client.close_if_retired_and_idle()


class UpstreamClient:
    """A pooled client for one upstream, kept across reloads while its settings hold.

    `connector` opens its connections (`http1.Connector`; by default TCP, or TLS for https).
    """

    def __init__(self, upstream: Upstream, *, connector: Connector | None = None) -> None:
        self.upstream = upstream
        self._connector = connector
        self.settings = (upstream.url, upstream.connect_timeout_s, upstream.timeout_s, upstream.tls)
        url = urlsplit(upstream.url)
        self._https = url.scheme == "https"
        self._hostname = url.hostname or ""
        # SNI and the name the certificate must carry (set explicitly: a url by IP would send none).
        self._server_name = upstream.tls.server_name or self._hostname
        self._port = url.port or (443 if self._https else 80)
        self._host_header = url.netloc.rpartition("@")[2].encode("idna" if not url.netloc.isascii() else "ascii")
        self._prefix = url.path.rstrip("/").encode("ascii")
        self.in_flight = 0        # responses not yet finished; a retired client closes at 0
        self._retired = False
        self._pool: http1.Pool | None = None

    def _open(self) -> http1.Pool:
        self._pool = http1.Pool(
            self._hostname, self._port,
            connect_timeout_s=self.upstream.connect_timeout_s, read_timeout_s=self.upstream.timeout_s,
            ssl_context=upstream_context(self.upstream.tls) if self._https else None,
            server_hostname=self._server_name,
            connector=self._connector,
        )
        return self._pool

    async def send(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[bytes, bytes]] | Sequence[tuple[str, str]],
        body: bytes | AsyncIterable[bytes] | None,
        *,
        route: str | None = None,
        on_interim: http1.InterimHandler | None = None,
        upgrade: bool = False,
    ) -> UpstreamResponse:
        """Send the request; return once the upstream's status and headers have arrived.

        `target` goes out as given (already normalized); `headers` as given, bytes pairs
        (text pairs are encoded, values as UTF-8), plus one framing header for the body.
        With `upgrade` (a WebSocket handshake), a 101 is an answer: see `take_transport()`.
        """
        pool = self._pool or self._open()
        if headers and type(headers[0][0]) is str:
            headers = _encode_text_headers(headers)  # type: ignore[arg-type]
        head, length = http1.build_head(method, self._prefix + target.encode("latin-1"), headers,  # type: ignore[arg-type]
                                        self._host_header, body)
        # Counted from before sending: a client retired by a reload must not close under a request
        # still waiting for its answer.
        self.in_flight += 1
        try:
            connection = await pool.request(head, body, length, method == "HEAD", on_interim, upgrade)
        except http1.HTTPError as exc:
            self.in_flight -= 1
            raise _failure(exc, self.upstream.name, route) from exc
        except BaseException:
            self.in_flight -= 1
            raise
        return UpstreamResponse(connection, self)

    def _release(self, connection: http1.Connection) -> None:
        connection._pool.release(connection)

    async def probe(self, path: str, timeout_s: float) -> tuple[bool, str]:
        """An active health check: GET `path`, healthy on a 2xx answer (its body read and dropped)."""
        pool = self._pool or self._open()
        head, _ = http1.build_head("GET", self._prefix + path.encode("latin-1"), (), self._host_header, None)
        try:
            async with asyncio.timeout(timeout_s):
                connection = await pool.request(head, None, None, False)
                status = connection.status
                try:
                    while await connection.read():
                        pass
                finally:
                    pool.release(connection)
        except (http1.HTTPError, OSError, TimeoutError) as exc:
            return False, translate(exc, upstream=self.upstream.name).detail
        return 200 <= status < 300, f"HTTP {status}"

    def close_if_retired_and_idle(self) -> None:
        # A request that started on the old config may have reopened a retired pool.
        if self._retired and self.in_flight == 0 and self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()

    async def close(self) -> None:
        self._retired = True
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close()


def _encode_text_headers(headers: Sequence[tuple[str, str]]) -> list[tuple[bytes, bytes]]:
    encoded = []
    for name, value in headers:
        if "\r" in value or "\n" in value or "\0" in value:
            raise ValueError(f"header {name!r} has a line break or NUL in its value")
        encoded.append((name.encode("ascii"), value.encode("utf-8")))
    return encoded


# What the client's request body raises while it is streamed upstream (body.py).
_BODY_FAILURES = frozenset({Reason.BODY_TOO_LARGE, Reason.BAD_REQUEST, Reason.REQUEST_TIMEOUT})


def _failure(exc: BaseException, upstream: str, route: str | None) -> BaseException:
    """The error to raise: the request body's own failure if that caused it, else the upstream's.

    Only the body's failures count: an earlier attempt's UpstreamError can sit in the chain too
    (a fallback runs while that error is handled), and taking it would make a request that
    reached this upstream look unsent, so that a POST would be sent again.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ClientDisconnected) or (
                isinstance(seen, ProxyError) and seen.reason in _BODY_FAILURES):
            return seen
        seen = seen.__cause__ or seen.__context__
    return translate(exc, upstream=upstream, route=route)
