"""A lean HTTP/1.1 client: one asyncio.Protocol per connection, a LIFO keep-alive pool per upstream.

Written for exactly what a reverse proxy needs and nothing else: the request head
goes out as the caller built it (plus one framing header), the response comes back
as status, raw header pairs and raw body bytes. No cookies, no automatic headers,
no decompression, no redirects, no retries (the proxy's retry policy decides those).
Responses are parsed by httptools (llhttp, in C).

A connection goes back to the pool only after a complete, well-framed exchange that
leaves nothing unknown on the wire: never after an error, a cut or unread body, a
request body that failed, `Connection: close`, HTTP/1.0 without keep-alive, a
HEAD/204/304 answer, or bytes after the end of the response.

A connection is in one `State` at a time:

    FREE              --request()----------------------> AWAITING_HEAD
    AWAITING_HEAD     --final head, framed body--------> READING_BODY
                      --final head, body to the close--> READING_TO_CLOSE
                      --final head of a HEAD answer----> COMPLETE
                      --101 to a request that asked----> UPGRADED (the transport then goes, detach())
    READING_BODY      --last byte----------------------> COMPLETE
    READING_TO_CLOSE  --clean close--------------------> COMPLETE
    any exchange      --finish_exchange()--------------> FREE (then parked, or closed)
    FREE              --park()-------------------------> IDLE --unpark()--> FREE

An error keeps the state and records the error (a complete answer stays readable);
beside the state a connection keeps what rules its reuse out (`Spent`), the task
still writing a streamed request body, and its transport until it is lost: a
response can end with the connection, and a body the caller is still reading
outlives it. `reusable` is: COMPLETE, nothing spent, no body still going out.

A pool opens its connections with a connector: `open_tcp` (the loop's create_connection)
unless it is given another, such as a scripted fake upstream in tests.

forward.py is the only module that uses this one.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence

import httptools

# An idle pooled connection is dropped before typical upstream idle timeouts (often 5 s or more).
KEEPALIVE_EXPIRY_S = 4.0
MAX_RESPONSE_HEADER_BYTES = 64 * 1024
# Reading from the upstream pauses while this much of the body waits for the caller.
READ_BUFFER_HIGH = 256 * 1024
# Buffered body pieces are joined into one only while small; larger ones go out one by one (no copy).
_JOIN_BELOW = 64 * 1024
# A bytes body up to this size goes out in the same write as the head.
_COALESCE_BODY_BYTES = 64 * 1024

Headers = Sequence[tuple[bytes, bytes]]
# Told of an interim (1xx) answer: its status and raw header pairs.
InterimHandler = Callable[[int, list[tuple[bytes, bytes]]], None]
# Opens a connection: (protocol_factory, host, port, ssl_context, server_hostname) -> the protocol it made,
# connected. OSError means refused or unreachable; the pool bounds the wait with its connect timeout.
Connector = Callable[[Callable[[], asyncio.Protocol], str, int, "ssl.SSLContext | None", "str | None"],
                     Awaitable[asyncio.Protocol]]


async def open_tcp(protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int,
                   ssl_context: ssl.SSLContext | None, server_hostname: str | None) -> asyncio.Protocol:
    """The default connector: a TCP connection (TLS with a context) on the running loop."""
    _, protocol = await asyncio.get_running_loop().create_connection(
        protocol_factory, host, port, ssl=ssl_context, server_hostname=server_hostname)
    return protocol


class State(enum.Enum):
    """Where a connection is: between exchanges, or how far into one."""

    FREE = "free"                          # no exchange: just connected, or just finished and not parked
    IDLE = "idle"                          # parked in the pool for the next exchange
    AWAITING_HEAD = "awaiting head"        # the request went out (a streamed body may still be going)
    READING_BODY = "reading body"          # the head is handed out; the body is framed by length or chunks
    READING_TO_CLOSE = "reading to close"  # the head is handed out; the body ends with the connection
    COMPLETE = "complete"                  # the whole response is in (the caller may still read the buffer)
    UPGRADED = "upgraded"                  # a 101: the connection speaks another protocol now, never HTTP again


# Module names for the members: on the hot path a global read costs a fraction of `State.X` (CPython 3.11).
FREE, IDLE, AWAITING_HEAD, READING_BODY, READING_TO_CLOSE, COMPLETE, UPGRADED = State


class Spent(enum.Enum):
    """Why a connection must not carry another exchange."""

    NO_KEEP_ALIVE = "the answer said Connection: close, or was HTTP/1.0 without keep-alive"
    BODILESS = "an answer to HEAD, a 204 or a 304: bytes after it would be read as the next response"
    STRAY_BYTES = "bytes came after the end of the response"
    FAILED = "the exchange failed: timeout, reset, or a malformed answer"
    BODY_FAILED = "the request body failed"
    LOST = "the connection is gone"
    SWITCHED = "the upstream switched protocols (101): the connection belongs to a tunnel"


class HTTPError(Exception):
    """A transport failure talking to the upstream."""


class ConnectError(HTTPError):
    """The connection could not be made (refused, unreachable, TLS handshake failed)."""


class TLSError(ConnectError):
    """The TLS handshake failed: the upstream's certificate did not check out, or no common protocol."""


class ConnectTimeout(HTTPError):
    """The connection was not made within the connect timeout."""


class ReadTimeout(HTTPError):
    """The upstream sent nothing for longer than the read timeout."""


class RemoteDisconnected(HTTPError):
    """The upstream closed or reset the connection before the response was complete."""


class ProtocolError(HTTPError):
    """The upstream answered something that is not a well-framed HTTP/1.1 response."""


class RequestBodyLengthError(ValueError):
    """A streamed body did not match the Content-Length the caller declared."""


class _Stop(Exception):
    """Raised from a parser callback to stop parsing (the response is over)."""


def build_head(method: str, target: bytes, headers: Headers, default_host: bytes,
               body: bytes | AsyncIterable[bytes] | None) -> tuple[bytes, int | None]:
    """The request head, and the body length to hold a streamed body to (None: chunked).

    The caller's headers go out as given, except framing headers: exactly one is added,
    `Content-Length` for a bytes body or when the caller declared one, else
    `Transfer-Encoding: chunked` for a streamed body, none without a body.
    """
    lines = [method.encode("ascii") + b" " + target + b" HTTP/1.1"]
    append = lines.append
    has_host = False
    declared: bytes | None = None
    for name, value in headers:
        size = len(name)
        if size == 4 or size == 14 or size == 17:
            lower = name.lower()
            if lower == b"host":
                has_host = True
            elif lower == b"content-length":
                declared = value.strip()
                continue
            elif lower == b"transfer-encoding":
                continue
        append(name + b": " + value)
    if not has_host:
        lines.insert(1, b"Host: " + default_host)
    length: int | None = None
    if body is None:
        if declared is not None:
            append(b"Content-Length: " + declared)
    elif type(body) is bytes or isinstance(body, (bytes, bytearray, memoryview)):
        if declared is not None and declared != b"%d" % len(body):
            raise RequestBodyLengthError(f"Content-Length {declared!r} for a body of {len(body)} bytes")
        append(b"Content-Length: %d" % len(body))
    elif declared is not None:
        if not declared.isdigit():
            raise RequestBodyLengthError(f"invalid Content-Length {declared!r}")
        length = int(declared)
        append(b"Content-Length: " + declared)
    else:
        append(b"Transfer-Encoding: chunked")
    append(b"\r\n")
    return b"\r\n".join(lines), length


def _framing(headers: Headers) -> tuple[int, bool]:
    """How a response's body ends, from one pass over its headers.

    (its length when one plain Content-Length frames it, else 0 and the parser decides;
    whether it ends only with the connection: neither Content-Length nor chunked)
    """
    length = 0
    lengths = 0
    chunked = False
    encoded = False
    for name, value in headers:
        size = len(name)
        if size == 14 and name.lower() == b"content-length":
            lengths += 1
            value = value.strip()
            length = int(value) if value.isdigit() and len(value) <= 18 else -1
        elif size == 17 and name.lower() == b"transfer-encoding":
            encoded = True
            chunked = value.rsplit(b",", 1)[-1].strip().lower() == b"chunked"
    plain = lengths == 1 and not encoded and length > 0
    return (length if plain else 0), (lengths == 0 and not chunked)


class Connection(asyncio.Protocol):
    """One upstream connection: one exchange at a time, its response parsed as it arrives."""

    __slots__ = (
        "_pool", "_loop", "_timeout", "_transport", "_parser", "_state", "_spent", "idle_since",
        "_is_head", "status", "raw_headers", "_headers", "_body", "_buffered", "_head_bytes", "_error",
        "_body_error", "_waiter", "_drain_waiter", "_write_paused", "_read_paused", "_timer",
        "_last_activity", "_awaiting_source", "_writer", "_raw_left", "_parser_stale",
        "_on_interim", "_unparsed_bytes", "_upgrade", "_early",
    )

    def __init__(self, pool: Pool, loop: asyncio.AbstractEventLoop, read_timeout_s: float) -> None:
        self._pool = pool
        self._loop = loop
        self._timeout = read_timeout_s
        # Set by connection_made, None again once the connection is lost.
        self._transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self._state = FREE
        # What rules out reuse, set during an exchange (the first reason is kept); None: nothing known.
        self._spent: Spent | None = None
        self.idle_since = 0.0
        self._is_head = False
        self.status = 0
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._buffered = 0
        self._head_bytes = 0
        self._error: BaseException | None = None
        self._body_error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._drain_waiter: asyncio.Future[None] | None = None
        self._write_paused = False
        self._read_paused = False
        self._timer: asyncio.TimerHandle | None = None
        self._last_activity = 0.0
        self._awaiting_source = False
        # The task writing a streamed request body: None without one, and once all of it went out.
        self._writer: asyncio.Task[None] | None = None
        # Body bytes of a Content-Length response still to come. Once the head is parsed they are
        # taken straight from the socket, sparing the parser's copy; the parser is then behind and
        # is replaced before the next exchange.
        self._raw_left = 0
        self._parser_stale = False
        self._on_interim: InterimHandler | None = None
        self._unparsed_bytes = 0
        self._upgrade = False        # the request asks to switch protocols (a WebSocket handshake)
        self._early = b""            # bytes after a 101's head: the new protocol's first

    # --- the exchange, as the pool and the response see it -------------------------------------

    async def request(self, head: bytes, body: bytes | AsyncIterable[bytes] | None, length: int | None,
                      is_head: bool, on_interim: InterimHandler | None = None, upgrade: bool = False) -> None:
        """Send the request; return once the final response's status and headers are in.

        `on_interim` is told of each 103 Early Hints answer that comes before the final one. With
        `upgrade` (a request that asks to switch protocols), a 101 is a final answer too: the
        connection is then UPGRADED, its transport for the caller to take (`detach()`).
        """
        transport = self._transport
        if transport is None or transport.is_closing():
            raise RemoteDisconnected("the connection closed before the request was sent")
        if self._parser_stale:
            self._parser = httptools.HttpResponseParser(self)
            self._parser_stale = False
        self._raw_left = 0
        self._unparsed_bytes = 0
        self._on_interim = on_interim
        self._upgrade = upgrade
        self._state = AWAITING_HEAD
        self._spent = None
        self._is_head = is_head
        self._head_bytes = 0
        if body is None:
            transport.write(head)
        elif type(body) is bytes or isinstance(body, (bytes, bytearray, memoryview)):
            if len(body) <= _COALESCE_BODY_BYTES:
                transport.write(head + body)
            else:
                transport.write(head)
                transport.write(body)
        else:
            transport.write(head)
            self._writer = self._loop.create_task(self._send_body(body, length))
        while self._state is AWAITING_HEAD:
            if self._body_error is not None:
                raise self._body_error
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """The body's next bytes as they came (all that is buffered), b"" once it is complete."""
        while True:
            if self._body:
                return self._take_buffered()
            if self._body_error is not None:
                raise self._body_error
            if self._state is COMPLETE:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    def whole_body(self) -> bytes | None:
        """The whole body if it has already arrived intact (most small answers), else None."""
        if self._state is not COMPLETE or self._error is not None or self._body_error is not None:
            return None
        return self._take_buffered(everything=True) if self._body else b""

    def _take_buffered(self, everything: bool = False) -> bytes:
        body = self._body
        if len(body) == 1 or (not everything and self._buffered > _JOIN_BELOW):
            data = body.pop(0)
            self._buffered -= len(data)
        else:
            data = b"".join(body)
            body.clear()
            self._buffered = 0
        if self._read_paused and self._buffered <= READ_BUFFER_HIGH:
            self._read_paused = False
            if self._transport is not None:
                self._transport.resume_reading()
        return data

    @property
    def reusable(self) -> bool:
        """A complete, well-framed exchange that left nothing unknown on the wire."""
        return self._state is COMPLETE and self._spent is None and self._writer is None

    def finish_exchange(self) -> bool:
        """End the exchange: True when the connection may carry another one, else close it.

        It closes cleanly after a complete answer, and at once otherwise.
        """
        writer = self._writer
        if writer is not None:
            # The request body is still going out, or stopped short: the connection is spent.
            self._writer = None
            if not writer.done():
                writer.cancel()
        elif self.reusable:
            self._state = FREE
            return True
        clean = self._state is COMPLETE and self._error is None and self._body_error is None
        self._state = FREE
        if clean:
            self.close()
        else:
            self.abort()
        # Unread body bytes go now: the connection itself is freed only by the cycle collector (its
        # parser refers back to it), which may run much later.
        self._body.clear()
        self._buffered = 0
        return False

    def park(self, now: float) -> None:
        self._state = IDLE
        self.idle_since = now
        self._on_interim = None
        self._body.clear()
        self._buffered = 0
        self._headers = []
        if self._read_paused:
            self._read_paused = False
            self._transport.resume_reading()  # type: ignore[union-attr]  # reusable: still connected

    def unpark(self) -> None:
        if self._state is IDLE:
            self._state = FREE

    def usable(self) -> bool:
        transport = self._transport
        return transport is not None and not transport.is_closing()

    @property
    def _closed(self) -> bool:
        """The connection is lost."""
        return self._transport is None

    def close(self) -> None:
        """Close after what was written (a clean end of the conversation)."""
        if self._transport is not None:
            self._transport.close()

    def abort(self) -> None:
        """Close at once: the upstream must see an incomplete request, never a complete one."""
        if self._transport is not None:
            self._transport.abort()

    # --- waiting, with the read timeout ----------------------------------------------------------

    async def _wait(self) -> None:
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        self._last_activity = loop.time()
        if self._timer is None:
            self._timer = loop.call_at(self._last_activity + self._timeout, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self) -> None:
        # One lazy timer per connection: it checks the time of the last progress and re-arms,
        # rather than a timer set and cancelled for every wait.
        self._timer = None
        if self._transport is None or (self._waiter is None and self._drain_waiter is None):
            return
        now = self._loop.time()
        if self._awaiting_source:
            # Waiting for the client's request body: not the upstream's delay.
            self._last_activity = now
        deadline = self._last_activity + self._timeout
        if now >= deadline:
            self._fail(ReadTimeout(f"nothing from the upstream for {self._timeout:g}s"))
        else:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _spend(self, reason: Spent) -> None:
        if self._spent is None:
            self._spent = reason

    def _fail(self, error: BaseException) -> None:
        if self._error is None:
            self._error = error
        self._spend(Spent.FAILED)
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        self.abort()

    # --- the request body, streamed with flow control ---------------------------------------------

    async def _send_body(self, body: AsyncIterable[bytes], length: int | None) -> None:
        transport: asyncio.Transport = self._transport  # type: ignore[assignment]  # set when the request went out
        loop = self._loop
        iterator = body.__aiter__()
        sent = 0
        finished = False
        try:
            while True:
                self._awaiting_source = True
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    raise
                except BaseException as error:        # the body's own failure (client gone, too large)
                    finished = True
                    self._body_failed(error)
                    return
                finally:
                    self._awaiting_source = False
                if self._transport is None or self._error is not None:
                    return                            # the response side reports why
                if not chunk:
                    continue
                sent += len(chunk)
                if length is None:
                    # One write, never writelines: the selector transport's writelines in Python
                    # 3.12.0-3.12.8 and 3.13.0-3.13.1 does not pause the protocol at the high-water
                    # mark (gh-127655), and the body would pile up in memory without bound. The
                    # copy costs what writelines cost on 3.11, which joined the pieces itself.
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                elif sent > length:
                    self._body_failed(RequestBodyLengthError(f"request body longer than its Content-Length {length}"))
                    return
                else:
                    transport.write(chunk)
                self._last_activity = loop.time()
                if self._write_paused:
                    await self._drain()
            finished = True
            if self._transport is None or self._error is not None:
                return
            if length is None:
                transport.write(b"0\r\n\r\n")
            elif sent != length:
                self._body_failed(RequestBodyLengthError(f"request body of {sent} bytes, not its Content-Length {length}"))
                return
            self._writer = None               # all of it went out
        finally:
            if not finished:
                aclose = getattr(iterator, "aclose", None)
                if aclose is not None:
                    try:
                        await aclose()
                    except BaseException:   # noqa: BLE001 - closing an abandoned body; nothing to report
                        pass

    async def _drain(self) -> None:
        while self._write_paused and self._transport is not None and self._error is None:
            waiter = self._drain_waiter = self._loop.create_future()
            if self._timer is None:
                self._last_activity = self._loop.time()
                self._timer = self._loop.call_at(self._last_activity + self._timeout, self._on_timer)
            try:
                await waiter
            finally:
                self._drain_waiter = None

    def _body_failed(self, error: BaseException) -> None:
        self._body_error = error
        self._spend(Spent.BODY_FAILED)
        self._wake()
        self.abort()

    # --- asyncio.Protocol ----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._pool._connections.add(self)

    def data_received(self, data: bytes) -> None:
        state = self._state
        if self._raw_left and state is READING_BODY:
            self._raw_body(data)
            return
        if state is not AWAITING_HEAD and state is not READING_BODY and state is not READING_TO_CLOSE:
            if state is UPGRADED:
                self._early += data       # the new protocol's, until the transport is taken
                return
            # Bytes nobody asked for: they would become the next request's response.
            self._spend(Spent.STRAY_BYTES)
            if state is IDLE:
                self._pool._discard(self)
                self.abort()
            return
        self._last_activity = self._loop.time()
        if state is AWAITING_HEAD:
            self._head_bytes += len(data)
        else:
            # Bytes that yield no body: chunk lines, trailers. httptools grows an unfinished trailer
            # field by concatenation, so an endless one is stopped by its raw size.
            self._unparsed_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            if self._state is AWAITING_HEAD and self._upgrade and self._parser.get_status_code() == 101:
                self._switched(data[upgrade.args[0]:])
            elif self._state is not COMPLETE:
                self._fail(ProtocolError("the upstream switched protocols unasked"))
            else:
                self._spend(Spent.STRAY_BYTES)
        except httptools.HttpParserError as error:
            if self._state is COMPLETE:
                self._spend(Spent.STRAY_BYTES)
            else:
                self._fail(ProtocolError(f"malformed response: {error}"))
        else:
            state = self._state
            if state is AWAITING_HEAD and self._head_bytes > MAX_RESPONSE_HEADER_BYTES:
                self._fail(ProtocolError(f"response head over {MAX_RESPONSE_HEADER_BYTES} bytes"))
            elif state is READING_BODY and self._unparsed_bytes > MAX_RESPONSE_HEADER_BYTES:
                self._fail(ProtocolError(f"response trailers or chunk lines over {MAX_RESPONSE_HEADER_BYTES} bytes"))

    def _switched(self, early: bytes) -> None:
        """A 101 to a request that asked for it: nothing is read until the new owner takes the transport."""
        self._state = UPGRADED
        self._early = early
        self._spend(Spent.SWITCHED)
        self._transport.pause_reading()  # type: ignore[union-attr]  # data is arriving: still connected
        self._wake()

    def detach(self) -> tuple[asyncio.Transport, bytes] | None:
        """An UPGRADED connection's transport and the bytes that came after the 101, for their new
        owner; None if the upstream closed meanwhile. The pool forgets the connection."""
        transport, self._transport = self._transport, None
        early, self._early = self._early, b""
        self._pool._connections.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._state is not UPGRADED or transport is None or transport.is_closing():
            return None
        return transport, early

    def _raw_body(self, data: bytes) -> None:
        self._last_activity = self._loop.time()
        self._parser_stale = True
        left = self._raw_left
        if len(data) > left:
            data = data[:left]
            self._spend(Spent.STRAY_BYTES)      # bytes past Content-Length: the connection is not reused
        self._raw_left = left - len(data)
        if self._raw_left == 0:
            self._state = COMPLETE
        self._buffer(data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._spend(Spent.LOST)
        state = self._state
        pool = self._pool
        pool._connections.discard(self)
        if state is IDLE:
            pool._discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if (state is AWAITING_HEAD or state is READING_BODY or state is READING_TO_CLOSE) and self._error is None:
            if state is READING_TO_CLOSE and exc is None:
                self._state = COMPLETE             # a body delimited by the end of the connection
            else:
                where = "before the response head" if state is AWAITING_HEAD else "mid-body"
                cause = f": {exc}" if exc is not None else ""
                self._error = RemoteDisconnected(f"the upstream closed the connection {where}{cause}")
        self._wake()
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        waiter = self._drain_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- httptools callbacks -----------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._state is COMPLETE:
            raise _Stop()        # a second response nobody asked for
        self._headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._state is not AWAITING_HEAD:
            # A trailer field: never merged into the head already handed out (RFC 9110 6.5.1), and
            # not forwarded (the client's response is framed anew); bounded in data_received.
            return
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        parser = self._parser
        status = parser.get_status_code()
        if status < 100 or status > 599:
            # No status line for it on the client's side (RFC 9110 15: 100-599): a 502, not a crash.
            self._fail(ProtocolError(f"response status {status} is outside 100-599"))
            raise _Stop()
        if status < 200:
            # Interim answers: the final one follows (a 101 ends the parse: see data_received).
            # 103 Early Hints is passed on; 100 Continue is this hop's own business.
            if status == 103 and self._on_interim is not None:
                self._on_interim(status, self._headers)
            elif status == 101:
                self.status = status
                self.raw_headers = self._headers
            return
        headers = self._headers
        if self._head_bytes > MAX_RESPONSE_HEADER_BYTES and (
                sum(len(name) + len(value) + 4 for name, value in headers) > MAX_RESPONSE_HEADER_BYTES):
            self._fail(ProtocolError(f"response head over {MAX_RESPONSE_HEADER_BYTES} bytes"))
            raise _Stop()
        self.status = status
        self.raw_headers = headers
        if self._is_head:
            # httptools does not know the request method: the answer to HEAD ends with its head,
            # whatever Content-Length says, and the connection is not used again.
            self._state = COMPLETE
            self._spend(Spent.BODILESS)
            self._wake()
            raise _Stop()
        bodiless = status == 204 or status == 304
        self._raw_left, until_eof = (0, False) if bodiless else _framing(headers)
        if not parser.should_keep_alive():
            self._spend(Spent.NO_KEEP_ALIVE)
            self._state = READING_TO_CLOSE if until_eof else READING_BODY
        else:
            self._state = READING_BODY
            if bodiless:
                self._spend(Spent.BODILESS)   # stray bytes after a bodiless answer would be the next response
        self._wake()

    def on_body(self, body: bytes) -> None:
        self._unparsed_bytes = 0
        if self._raw_left:
            self._raw_left -= len(body)
        self._buffer(body)

    def _buffer(self, data: bytes) -> None:
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > READ_BUFFER_HIGH and not self._read_paused and self._state is not COMPLETE:
            self._read_paused = True
            self._transport.pause_reading()  # type: ignore[union-attr]  # data is arriving: still connected
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_message_complete(self) -> None:
        if self._state is AWAITING_HEAD:
            return       # an interim answer's end
        self._state = COMPLETE
        self._raw_left = 0
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Pool:
    """Keep-alive connections to one origin, most recently used first.

    No limit and no waiting for a free connection: the caller's bulkhead bounds concurrency.
    """

    def __init__(self, host: str, port: int, *, connect_timeout_s: float, read_timeout_s: float,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 connector: Connector | None = None) -> None:
        self.host = host
        self.port = port
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._ssl = ssl_context
        self._server_hostname = server_hostname if ssl_context is not None else None
        self._connector: Connector = connector or open_tcp
        self._idle: deque[Connection] = deque()
        self._connections: set[Connection] = set()
        self._sweeper: asyncio.TimerHandle | None = None
        self.closed = False

    @property
    def idle_count(self) -> int:
        return len(self._idle)

    @property
    def open_count(self) -> int:
        return len(self._connections)

    async def request(self, head: bytes, body: bytes | AsyncIterable[bytes] | None, length: int | None,
                      is_head: bool, on_interim: InterimHandler | None = None, upgrade: bool = False) -> Connection:
        """Send a request on an idle connection or a new one; return it once the response head is in."""
        connection = self._take_idle() or await self._connect()
        try:
            await connection.request(head, body, length, is_head, on_interim, upgrade)
        except BaseException:
            # An error, a failed request body, a cancellation: what is on the wire is unknown.
            connection.abort()
            connection.finish_exchange()
            raise
        return connection

    def release(self, connection: Connection) -> None:
        """The exchange is over: keep the connection for the next one if it is clean, else close it."""
        if not connection.finish_exchange():
            return
        if self.closed:
            connection.close()
            return
        loop = connection._loop
        connection.park(loop.time())
        self._idle.append(connection)
        if self._sweeper is None:
            self._sweeper = loop.call_later(KEEPALIVE_EXPIRY_S + 0.05, self._sweep)

    def _take_idle(self) -> Connection | None:
        idle = self._idle
        while idle:
            connection = idle.pop()
            connection.unpark()
            if not connection.usable():
                continue
            if connection._loop.time() - connection.idle_since < KEEPALIVE_EXPIRY_S:
                return connection
            # The most recent one has expired, so have all the older ones.
            connection.close()
            while idle:
                older = idle.pop()
                older.unpark()
                older.close()
        return None

    def _discard(self, connection: Connection) -> None:
        connection.unpark()
        try:
            self._idle.remove(connection)
        except ValueError:
            pass

    def _sweep(self) -> None:
        self._sweeper = None
        idle = self._idle
        if not idle:
            return
        loop = idle[0]._loop
        now = loop.time()
        while idle and now - idle[0].idle_since >= KEEPALIVE_EXPIRY_S:
            connection = idle.popleft()
            connection.unpark()
            connection.close()
        if idle:
            self._sweeper = loop.call_at(idle[0].idle_since + KEEPALIVE_EXPIRY_S + 0.05, self._sweep)

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        factory: Callable[[], Connection] = lambda: Connection(self, loop, self._read_timeout_s)  # noqa: E731
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                connection = await self._connector(factory, self.host, self.port, self._ssl, self._server_hostname)
        except TimeoutError:
            raise ConnectTimeout(f"no connection to {self.host}:{self.port} within {self._connect_timeout_s:g}s") from None
        except ssl.SSLError as error:     # an OSError too: checked first
            raise TLSError(f"TLS with {self.host}:{self.port} failed: {error.reason or error}") from error
        except OSError as error:
            raise ConnectError(f"cannot connect to {self.host}:{self.port}: {error.strerror or error}") from error
        return connection  # type: ignore[return-value]  # the protocol the factory made

    def close(self) -> None:
        """Close every connection, idle or in use."""
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        self._idle.clear()
        for connection in list(self._connections):
            connection.unpark()
            connection.abort()
