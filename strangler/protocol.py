"""uvicorn's httptools protocol with the limits uvicorn lacks: header deadline, header and URL size.

Without these a client can hold a connection open by trickling headers
(slowloris) or send unbounded headers. Refusals are made while parsing, before
the request reaches the app, and close the connection.

A connection closed while the client is still sending (a refusal, a 413 or 408
before the body was read) closes lingering: half-close after the answer, read
the rest away for a while, then close. A plain close with unread bytes makes
the kernel send a reset, which can destroy the answer before the client reads it.

Upgrades are handled here, before uvicorn's own WebSocket protocols could take over and
re-encode frames (the proxy runs uvicorn with `ws="none"`). llhttp stops at an upgrade
request. A WebSocket handshake is served like any request, with TUNNEL_EXTENSION in its
scope: the upstream's 101 opens a byte tunnel (tunnel.py) on this connection, any other
answer ends it. Any other upgrade (h2c) is not taken: the request is served as HTTP/1.1
and a new parser reads on, the request's body first when it has one.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus
from collections.abc import Callable
from typing import Any, Protocol

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .config.model import Limits
from .errors import ProxyError, Reason
from .headers import EARLY_HINTS_EXTENSION
from .problem import problem_body, problem_headers
from .tunnel import TUNNEL_EXTENSION, Tunnel



class ListenerPolicy(Protocol):
    """What the listener asks of the app it serves (ProxyApp.listener): read per request, never cached."""

    @property
    def limits(self) -> Limits:
        """The current config's limits (each request is parsed under those in force when it began)."""

    def refused(self, error: ProxyError, client: str | None) -> None:
        """Told of every refusal made here, before any app sees the request (metrics, access log)."""


class _DefaultPolicy:
    limits = Limits()

    def refused(self, error: ProxyError, client: str | None) -> None:
        pass


def listener_policy_of(app: Any) -> ListenerPolicy:
    """The app's ListenerPolicy, looking through the wrappers uvicorn may put around it."""
    for _ in range(8):
        policy = getattr(app, "listener", None)
        if policy is not None:
            return policy
        app = getattr(app, "app", None)
        if app is None:
            break
    return _DefaultPolicy()



# How long a lingering close reads what the client still sends before closing anyway.
LINGER_S = 2.0
_BODY_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
# Bytes a client may send after its WebSocket handshake before the answer (they are the tunnel's);
# a client that sends more before it was answered is cut off.
MAX_EARLY_TUNNEL_BYTES = 64 * 1024


def _section_limit(limits: Limits) -> int:
    """Raw bytes a request line and header section (or a trailer section) may take before it ends."""
    return limits.max_url_bytes + limits.max_header_bytes + 1024


def _oversized_section(in_head: bool) -> ProxyError:
    where = "request header section" if in_head else "request trailer section or chunk line"
    return ProxyError(f"{where} over the limit", reason=Reason.HEADERS_TOO_LARGE)


class _Refused(Exception):
    def __init__(self, error: ProxyError) -> None:
        self.error = error


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener_policy_of(self.app)
        self._limits = self._listener.limits
        self._header_deadline: asyncio.TimerHandle | None = None
        self._header_bytes = 0
        self._header_count = 0
        self._url_bytes = 0
        # Bytes fed to the parser since it last completed something (a head, body bytes, a message).
        # httptools grows an unfinished field by concatenation, so an endless header or trailer
        # must be stopped by its raw size, before on_header ever sees it.
        self._unparsed_bytes = 0
        self._in_head = False                          # a request line/headers are being parsed
        self._pending_refusal: ProxyError | None = None  # waits for the responses ahead of it
        self._declares_body = False                    # the request being parsed frames a body
        self._lingering: asyncio.TimerHandle | None = None  # closes a lingering connection at last
        # Given to the app in each request's scope (one dict per connection, never changed).
        self._extensions = {EARLY_HINTS_EXTENSION: self._send_early_hints}
        # Bytes after an upgrade request that no parser may read: a tunnel's first bytes, or bytes
        # read away until the answer ends the connection. None: the parser reads everything.
        self._held: bytearray | None = None
        self._shutting_down = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        if self._lingering is not None:
            self._lingering.cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._pending_refusal is not None or self._lingering is not None:
            return      # the parser stopped at a bad request, or the answer is out: read away
        if self._held is not None:
            self._hold(data)
            return
        self._unset_keepalive_if_required()
        self._unparsed_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self._after_upgrade_request(data[upgrade.args[0]:])
        except httptools.HttpParserError as error:
            refused = error.__context__ if isinstance(error.__context__, _Refused) else None
            if refused is None:
                self._refuse(ProxyError("malformed HTTP request", reason=Reason.BAD_REQUEST))
            else:
                self._refuse(refused.error)
        else:
            if self._unparsed_bytes > _section_limit(self._limits):
                self._refuse(_oversized_section(self._in_head))

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.scope["extensions"] = self._extensions
        self._limits = self._listener.limits      # a reload applies from the next request on
        self._unparsed_bytes = 0
        self._header_bytes = self._header_count = self._url_bytes = 0
        self._in_head = True
        self._declares_body = False
        if self._header_deadline is None:
            self._arm_header_deadline()

    def on_url(self, url: bytes) -> None:
        if self._url_bytes == 0 and self.parser.get_method() == b"CONNECT":
            # A tunnel is never opened, whatever the target's form (405 like CONNECT /path gets).
            raise _Refused(ProxyError("CONNECT is not forwarded", reason=Reason.METHOD_NOT_ALLOWED))
        if self._url_bytes == 0 and not url.startswith(b"/"):
            # Absolute-form or authority-form: a proxy for one site must never let the
            # request line pick the upstream host.
            raise _Refused(ProxyError("request target must be a path starting with '/'", reason=Reason.BAD_REQUEST))
        self._url_bytes += len(url)
        if self._url_bytes > self._limits.max_url_bytes:
            raise _Refused(ProxyError(f"request target over {self._limits.max_url_bytes} bytes",
                                      reason=Reason.URI_TOO_LONG))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        self._header_bytes += len(name) + len(value) + 4
        limits = self._limits
        if self._header_count > limits.max_header_count or self._header_bytes > limits.max_header_bytes:
            raise _Refused(ProxyError("request header fields over the limit", reason=Reason.HEADERS_TOO_LARGE))
        if not self._in_head:
            # A trailer field after a chunked body: uvicorn would append it to the request's
            # headers (which may not have been read yet). Never merged into the header section.
            return
        if (len(name) == 14 or len(name) == 17) and name.lower() in _BODY_FRAMING:
            self._declares_body = True
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        version = self.parser.get_http_version()
        if version != "1.1" and version != "1.0":
            # A request line without a version (HTTP/0.9) or claiming 2.0 would be served as 1.x,
            # with framing and Host rules the client did not mean.
            raise _Refused(ProxyError(f"HTTP/{version} requests are not served; use HTTP/1.1",
                                      reason=Reason.HTTP_VERSION))
        self._in_head = False
        self._unparsed_bytes = 0
        self._disarm_header_deadline()
        super().on_headers_complete()
        cycle = self.cycle
        if self._declares_body and cycle is not None and cycle.transport is self.transport:
            # Only requests with a body can leave bytes unread when their answer closes the connection.
            cycle.transport = _LingeringCloseTransport(self)

    def _after_upgrade_request(self, rest: bytes) -> None:
        """llhttp stopped after an upgrade request (`rest` is what came after it): a WebSocket
        handshake may become a tunnel; any other upgrade is served as HTTP/1.1 and a new parser
        reads on.

        This runs in the same data_received as the request's head: its app has not started yet,
        and self.cycle and self.scope are still this request's.
        """
        framing = _body_framing(self.headers) if self._declares_body else None
        if self._declares_body and framing is None:
            # Framing the pipeline refuses anyway (both headers, an unknown coding): answered, and
            # the connection ends; llhttp's early end of the message stands (on_message_complete).
            self.cycle.keep_alive = False
            super().on_message_complete()
            self._held = bytearray()
            self._hold(rest)
            return
        if (framing is None and self.scope["method"] == "GET" and self.scope["http_version"] == "1.1"
                and _asks_for_websocket(self.headers)):
            # Its answer either opens the tunnel or is the last on this connection: bytes after
            # the handshake are the tunnel's, never another request.
            self.cycle.keep_alive = False
            self.scope["extensions"] = {**self._extensions, TUNNEL_EXTENSION: self._open_tunnel}
            self._held = bytearray()
            self._hold(rest)
            return
        # Not taken (h2c and the like: the pipeline drops Upgrade as hop-by-hop): the connection goes
        # on as HTTP/1.1, from the request's body, when it has one.
        parser = httptools.HttpRequestParser(self if framing is None else _BodyAfterUpgrade(self))
        parser.set_dangerous_leniencies(lenient_data_after_close=True)
        self.parser = parser
        if framing is not None:
            parser.feed_data(b"PUT / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
        if rest:
            self.data_received(rest)

    def _hold(self, data: bytes) -> None:
        held = self._held
        assert held is not None
        held += data
        if len(held) > MAX_EARLY_TUNNEL_BYTES and not self.transport.is_closing():
            self.transport.close()

    def _open_tunnel(self, scope: dict[str, Any], headers: list[tuple[bytes, bytes]], upstream: asyncio.Transport,
                     upstream_early: bytes, *, extensions: bool, idle_timeout_s: float, drain_timeout_s: float,
                     on_end: Callable[[str], None]) -> bool:
        """Answer the handshake 101 and hand this connection and `upstream` to a tunnel (TUNNEL_EXTENSION).

        False when the client's side cannot take it (gone, answered otherwise): nothing was done,
        and the caller still owns `upstream`. Once True, `on_end(reason)` is told when the tunnel ends.
        """
        cycle = self.cycle
        transport = self.transport
        held = self._held
        if (cycle is None or cycle.scope is not scope or cycle.response_started or cycle.disconnected
                or held is None or transport.is_closing() or self._lingering is not None):
            return False
        cycle.response_started = cycle.response_complete = True     # uvicorn sends nothing more for it
        self._held = None
        self._disarm_header_deadline()
        self._unset_keepalive_if_required()
        head = [b"HTTP/1.1 101 Switching Protocols\r\n"]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"\r\n")
        transport.write(b"".join(head))
        # The tunnel stands in for this protocol among uvicorn's connections: a SIGTERM reaches
        # it (Tunnel.shutdown), and the server waits for it to end.
        connections = self.connections

        def ended(reason: str) -> None:
            connections.discard(tunnel)
            on_end(reason)

        graceful_s = self.config.timeout_graceful_shutdown
        if graceful_s is not None:
            # Closed with its close frames a second before the server's own drain (--drain-timeout) ends.
            drain_timeout_s = min(drain_timeout_s, max(graceful_s - 1.0, 0.0))
        tunnel = Tunnel(transport, upstream, extensions=extensions, idle_timeout_s=idle_timeout_s,
                        drain_timeout_s=drain_timeout_s, on_end=ended)
        connections.discard(self)
        connections.add(tunnel)
        tunnel.start(bytes(held), upstream_early)
        if self._shutting_down:
            tunnel.shutdown()
        return True

    def shutdown(self) -> None:
        self._shutting_down = True
        super().shutdown()

    def on_body(self, body: bytes) -> None:
        self._unparsed_bytes = 0
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._unparsed_bytes = 0
        if self._declares_body and self.parser.should_upgrade():
            return      # llhttp's early end of an upgrade request: its body is read after (_after_upgrade_request)
        super().on_message_complete()

    def on_response_complete(self) -> None:
        last = not self.pipeline
        super().on_response_complete()
        # A refused pipelined request is answered in its turn, after the responses ahead of it.
        if self._pending_refusal is not None and last:
            error, self._pending_refusal = self._pending_refusal, None
            if not self.transport.is_closing() and self._lingering is None:
                self._write_refusal(error)

    def _send_early_hints(self, scope: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> None:
        """Write a 103 answer ahead of the final one, while that has not started (HTTP/1.1 clients only)."""
        cycle = self.cycle
        if (cycle is None or cycle.scope is not scope or cycle.response_started or cycle.disconnected
                or scope.get("http_version") != "1.1" or self._lingering is not None
                or self.transport.is_closing()):
            return
        head = [b"HTTP/1.1 103 Early Hints\r\n"]
        for name, value in headers:
            head.append(name + b": " + value + b"\r\n")
        head.append(b"\r\n")
        self.transport.write(b"".join(head))

    def _arm_header_deadline(self) -> None:
        self._header_deadline = self.loop.call_later(self._limits.header_timeout_s, self._headers_too_slow)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        if self.cycle is not None and not self.cycle.response_complete:
            # The head of a pipelined request has begun while earlier ones are served (reading may
            # be paused meanwhile): judge it a full deadline after they are out, not never.
            self._arm_header_deadline()
            return
        if self._header_count == 0 and self._url_bytes == 0:
            self.transport.close()   # nothing sent at all: an idle connection, close quietly
            return
        self._refuse(ProxyError("request headers not received in time", reason=Reason.REQUEST_TIMEOUT))

    def _refuse(self, error: ProxyError) -> None:
        if self._pending_refusal is not None:
            return
        if self._in_head:
            if self.cycle is not None and not self.cycle.response_complete:
                # Requests ahead of this one are still being answered: the refusal must not
                # overtake their responses (the client would take it for theirs).
                self._pending_refusal = error
                return
        elif self.pipeline:
            # The body of a queued request is broken: it is never served; refused in its turn.
            self.pipeline.popleft()
            self._pending_refusal = error
            return
        elif self.cycle is not None and self.cycle.response_started:
            # Its own answer is already on the wire (maybe whole, if it came before the body did):
            # a second answer would be read as the next request's. The connection can only end.
            self.transport.close()
            return
        self._write_refusal(error)

    def _write_refusal(self, error: ProxyError) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_started:
            # The refused request's app may still answer: nothing may follow the refusal.
            cycle.disconnected = True
            cycle.message_event.set()
        self._listener.refused(error, self.client[0] if self.client else None)
        status = error.status
        body = problem_body(error)
        head = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
        for name, value in problem_headers(error, body, expose=False):
            if name != b"connection":
                head.append(name + b": " + value + b"\r\n")
        head.append(b"connection: close\r\n\r\n")
        self.transport.write(b"".join(head) + body)
        self.close_lingering()

    def close_lingering(self) -> None:
        """Half-close after what was written, read away what the client still sends, then close."""
        transport = self.transport
        if self._lingering is not None or transport.is_closing():
            return
        self._disarm_header_deadline()
        if not transport.can_write_eof():       # TLS cannot half-close
            transport.close()
            return
        transport.write_eof()
        transport.resume_reading()              # uvicorn pauses reading while a body waits unread
        self._lingering = self.loop.call_later(LINGER_S, transport.close)


def _asks_for_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    """`Upgrade: websocket` (with `Connection: upgrade`, which llhttp has checked)."""
    return any(name == b"upgrade" and b"websocket" in [token.strip() for token in value.lower().split(b",")]
               for name, value in headers)


def _body_framing(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The one framing header of a body (`Content-Length: N` or `Transfer-Encoding: chunked`), else None."""
    found = [(name, value.strip()) for name, value in headers if name in _BODY_FRAMING]
    if len(found) != 1:
        return None
    name, value = found[0]
    if name == b"content-length" and value.isdigit() and len(value) <= 18:
        return b"Content-Length: " + value
    if name == b"transfer-encoding" and value.lower() == b"chunked":
        return b"Transfer-Encoding: chunked"
    return None


class _BodyAfterUpgrade:
    """Parser callbacks for the body llhttp left behind an upgrade request, then the protocol's own.

    The new parser is fed a head that frames the same body; its head is ignored, its body goes
    to the request being served, and from the end of that message on every callback is the
    protocol's.
    """

    __slots__ = ("_protocol", "_in_body")

    def __init__(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self._in_body = True

    def on_message_begin(self) -> None:
        if not self._in_body:
            self._protocol.on_message_begin()

    def on_url(self, url: bytes) -> None:
        if not self._in_body:
            self._protocol.on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_body:
            self._protocol.on_header(name, value)

    def on_headers_complete(self) -> None:
        if not self._in_body:
            self._protocol.on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._protocol.on_body(body)

    def on_message_complete(self) -> None:
        self._in_body = False
        self._protocol.on_message_complete()


class _LingeringCloseTransport:
    """The transport a request with a body is answered on (all uvicorn's cycle uses of it).

    A close after a complete answer while the body is still coming closes lingering; a close
    of a broken answer stays abrupt.
    """

    # No reference to the cycle itself: cycle -> transport -> cycle would keep every request (and its
    # body) alive until the garbage collector ran. The protocol's current cycle is the one closing:
    # a request parsed after it means its own body was read whole, and then a plain close is right.
    __slots__ = ("_protocol", "_transport")

    def __init__(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self._transport = protocol.transport

    def write(self, data: bytes) -> None:
        if self._protocol._lingering is None:      # after the half-close nothing more is sent
            self._transport.write(data)

    def is_closing(self) -> bool:
        return self._protocol._lingering is not None or self._transport.is_closing()

    def close(self) -> None:
        cycle = self._protocol.cycle
        if cycle is not None and cycle.response_complete and cycle.more_body:
            self._protocol.close_lingering()
        else:
            self._transport.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)
