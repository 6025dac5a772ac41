"""Scripted upstreams inside the test's event loop: the forwarding client's connector, faked.

`FakeUpstreams` is an `http1.Connector`. Hand it to the proxy wherever connections are
opened, and every upstream answers from a script instead of a socket, in the same loop,
in milliseconds:

    fake = FakeUpstreams()
    orders = fake.upstream("http://orders.internal:8080")    # a URL, "host:port" or "host"
    orders.script(Reply(503), Reply(200, [("Content-Type", "application/json")], b"{}"))
    client = UpstreamClient(upstream, connector=fake)         # or build_runtime(..., connector=fake),
                                                              # ConfigHolder(path, metrics, connector=fake)
    ...
    assert [r.status for r in ...] and orders.requests[1].conn == 1    # the connection was reused
    fake.close()                                              # or `async with FakeUpstreams() as fake:`

Each request an upstream receives takes the next step of its script; once the script
is used up, its `default` answers (200 "ok" unless told otherwise). A step is one of:

- `Reply(status, headers, body, ...)`  a well-formed answer; `body` is bytes or a list of
  pieces, each written on its own. Framing is added: `Content-Length` (or `length=` to
  declare another, e.g. more bytes than it says, or fewer before a reset), or
  `chunked=True`. `close=True` says `Connection: close` and closes after; `then=RESET`
  resets after the answer (with a short `length`: a reset mid-body). An answer to HEAD
  sends the head only.
- `RESET`      the connection is reset once the request is in, before any answer.
- `HANG`       the request is read and never answered (the client's read timeout).
- `GARBAGE`    bytes that are not HTTP; `Raw(*pieces, then=...)` for any other bytes.
- a callable taking the `Received` request and returning one of the above.

Pacing is the test's: `Reply(hold=event)` waits for the event before the head, and a
piece of a body (or of `Raw`) may be an `asyncio.Event` to wait for, or a number of
seconds to sleep. Faults of the connection itself: `upstream.refuse(times)` refuses
connection attempts, `upstream.hold_connects(event)` keeps them waiting (the connect
timeout), an address nobody scripted refuses, and `upstream.stop_reading()` leaves what
the client writes unread (its flow control then pauses the request body) until
`upstream.resume_reading()`.

What each upstream received is recorded as it arrives: `upstream.requests` (and
`fake.requests`, every upstream in order) holds `Received` records with the exact head,
the body (de-chunked), whether it was `complete` or cut, and the number of the
connection (`conn`, from 1) it came on; `upstream.connections` holds `FakeConnection`
records saying who closed each one and whether it was aborted.

The transport is a real `asyncio.Transport`: the client's protocol hears of it through
`loop.call_soon` (connection_made, data_received, eof_received, connection_lost), as
from a socket; writes arrive at the upstream a loop turn later (an abort loses only what
flow control still holds back while the upstream is not reading).
"""

from __future__ import annotations

import asyncio
import enum
import errno
import ssl
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union
from urllib.parse import urlsplit

Piece = bytes | asyncio.Event | float
HeaderPairs = Sequence[tuple[bytes | str, bytes | str]]


class Then(enum.Enum):
    """What the upstream does with the connection after an answer."""

    KEEP = "keep it open for the next request"
    CLOSE = "close it (FIN)"
    RESET = "reset it (RST); as a step of its own, before any answer"


KEEP, CLOSE, RESET = Then


@dataclass(frozen=True)
class Reply:
    """A well-formed answer, framed by the fake unless `length` says otherwise."""

    status: int = 200
    headers: HeaderPairs = ()
    body: bytes | Sequence[Piece] = b""
    length: int | None = None         # the Content-Length to declare; None: the body's own length
    chunked: bool = False
    close: bool = False               # say `Connection: close`, and close after the answer
    then: Then = KEEP
    hold: asyncio.Event | None = None  # wait for it before sending anything
    early: bool = False               # answer once the head is in, without waiting for the body
    reason: str = ""


@dataclass(frozen=True)
class Raw:
    """Exactly these bytes (pieces, events and pauses as in a Reply's body), then `then`."""

    pieces: tuple[Piece, ...]
    then: Then = KEEP

    def __init__(self, *pieces: Piece, then: Then = KEEP) -> None:
        object.__setattr__(self, "pieces", pieces)
        object.__setattr__(self, "then", then)


class _Hang:
    def __repr__(self) -> str:
        return "HANG"


HANG = _Hang()
GARBAGE = Raw(b"this is not HTTP at all\r\n\r\n")

# A callable step is called with the request once it is to be answered (its body in, unless early).
Step = Union[Reply, Raw, Then, _Hang, Callable[["Received"], Any]]


@dataclass
class Received:
    """One request as the upstream received it, recorded from its head on."""

    upstream: str                               # "host:port"
    conn: int                                   # the connection it came on, from 1
    method: str
    target: str
    headers: list[tuple[bytes, bytes]]          # as on the wire, in order
    head: bytes                                 # request line and header lines, without the blank line
    body: bytes = b""                           # de-chunked
    complete: bool = False                      # the whole body arrived, as framed

    def values(self, name: str) -> list[bytes]:
        lower = name.lower().encode()
        return [value for key, value in self.headers if key.lower() == lower]

    def header(self, name: str) -> str | None:
        """The first value of `name`, as text, or None."""
        found = self.values(name)
        return found[0].decode("latin-1") if found else None


@dataclass(eq=False)
class FakeConnection:
    """One connection as the upstream saw it."""

    number: int
    server_hostname: str | None = None
    requests: list[Received] = field(default_factory=list)
    closed_by: Literal["proxy", "upstream"] | None = None
    aborted: bool = False                       # ended at once (an abort or a reset), not closed cleanly

    @property
    def open(self) -> bool:
        return self.closed_by is None


class FakeUpstream:
    """One scripted upstream at one host:port."""

    def __init__(self, address: str, owner: FakeUpstreams, default: Step) -> None:
        self.address = address
        self.default = default
        self.requests: list[Received] = []
        self.connections: list[FakeConnection] = []
        self.reading = True                     # False: what the client writes piles up unread (stop_reading)
        self._owner = owner
        self._steps: deque[Step] = deque()
        self._refusals: int | None = 0          # None: refuse every attempt
        self._connect_hold: asyncio.Event | None = None
        self._links: list[_Link] = []

    def script(self, *steps: Step) -> FakeUpstream:
        """Answer the next requests with these steps, in order (after any still queued)."""
        self._steps.extend(steps)
        return self

    def refuse(self, times: int | None = None) -> FakeUpstream:
        """Refuse the next `times` connection attempts (every one, if None, until `accept()`)."""
        self._refusals = times
        return self

    def accept(self) -> FakeUpstream:
        self._refusals = 0
        return self

    def hold_connects(self, until: asyncio.Event | None) -> FakeUpstream:
        """Keep connection attempts waiting until `until` is set (None: stop holding)."""
        self._connect_hold = until
        return self

    def stop_reading(self) -> FakeUpstream:
        """Leave what the client writes unread: its transport's buffer fills and pauses its writing."""
        self.reading = False
        return self

    def resume_reading(self) -> None:
        """Read what the client wrote, and go on reading."""
        self.reading = True
        for link in self._links:
            link.transport._flush_outbox()

    @property
    def pending(self) -> int:
        """Script steps not used yet."""
        return len(self._steps)

    def _take_step(self) -> Step:
        return self._steps.popleft() if self._steps else self.default

    async def _connect(self, protocol_factory: Callable[[], asyncio.Protocol], ssl_context: ssl.SSLContext | None,
                       server_hostname: str | None) -> asyncio.Protocol:
        if self._connect_hold is not None:
            await self._connect_hold.wait()
        await asyncio.sleep(0)                    # a connect takes a turn of the loop, refused or not
        if self._refusals is None or self._refusals > 0:
            if self._refusals:
                self._refusals -= 1
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"Connection refused ({self.address}, scripted)")
        loop = asyncio.get_running_loop()
        connection = FakeConnection(len(self.connections) + 1, server_hostname)
        self.connections.append(connection)
        protocol = protocol_factory()
        transport = FakeTransport(loop, protocol, self, connection, ssl_context)
        transport._link = link = _Link(self, connection, transport)
        self._links.append(link)
        made = loop.create_future()

        def connection_made() -> None:
            protocol.connection_made(transport)
            made.set_result(None)

        loop.call_soon(connection_made)
        await made
        return protocol


class FakeUpstreams:
    """A connector whose upstreams answer from scripts; see the module docstring."""

    def __init__(self) -> None:
        self._upstreams: dict[str, FakeUpstream] = {}
        self.requests: list[Received] = []

    def upstream(self, address: str, *, default: Step | None = None) -> FakeUpstream:
        """The upstream at `address` (a URL, "host:port" or "host"), scripted from now on."""
        key = _address(address)
        found = self._upstreams.get(key)
        if found is None:
            found = self._upstreams[key] = FakeUpstream(key, self, Reply(200, body=b"ok"))
        if default is not None:
            found.default = default
        return found

    def __getitem__(self, address: str) -> FakeUpstream:
        return self._upstreams[_address(address)]

    async def __call__(self, protocol_factory: Callable[[], asyncio.Protocol], host: str, port: int,
                       ssl_context: ssl.SSLContext | None, server_hostname: str | None) -> asyncio.Protocol:
        upstream = self._upstreams.get(f"{host}:{port}")
        if upstream is None:
            await asyncio.sleep(0)
            raise ConnectionRefusedError(errno.ECONNREFUSED, f"Connection refused ({host}:{port} is not scripted)")
        return await upstream._connect(protocol_factory, ssl_context, server_hostname)

    def close(self) -> None:
        """Drop every connection still open and stop every answer under way."""
        for upstream in self._upstreams.values():
            for link in list(upstream._links):
                link.transport.abort()
                link.stop()

    async def __aenter__(self) -> FakeUpstreams:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
        await asyncio.sleep(0)


def _address(address: str) -> str:
    if "://" in address:
        url = urlsplit(address)
        return f"{url.hostname}:{url.port or (443 if url.scheme == 'https' else 80)}"
    host, _, port = address.rpartition(":") if ":" in address else (address, "", "80")
    return f"{host}:{port}"


class FakeTransport(asyncio.Transport):
    """The client's end of a fake connection, with asyncio's calling conventions and flow control."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.Protocol, upstream: FakeUpstream,
                 connection: FakeConnection, ssl_context: ssl.SSLContext | None) -> None:
        super().__init__(extra={
            "peername": (upstream.address.rpartition(":")[0], int(upstream.address.rpartition(":")[2])),
            "sockname": ("127.0.0.1", 40000 + connection.number),
            "sslcontext": ssl_context,
            "socket": None,
        })
        self._loop = loop
        self._protocol = protocol
        self._upstream = upstream
        self._link: _Link
        self._outbox: deque[bytes] = deque()    # written by the client, not yet read by the upstream
        self._outbox_bytes = 0
        self._flush_scheduled = False
        self._inbox: deque[tuple[str, bytes]] = deque()   # from the upstream: data, eof or reset
        self._pump_scheduled = False
        self._closing = False
        self._aborted = False
        self._lost = False
        self._reading = True
        self._writing_paused = False
        self._high = 64 * 1024
        self._low = 16 * 1024

    # --- the client's side -------------------------------------------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._closing:
            return                              # as asyncio: writes after close are dropped
        if not data:
            return
        self._outbox.append(bytes(data))
        self._outbox_bytes += len(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush_outbox)
        if not self._writing_paused and self._outbox_bytes > self._high:
            self._writing_paused = True
            self._protocol.pause_writing()      # type: ignore[attr-defined]

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        self._loop.call_soon(self._link.client_eof)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Close after what was written reaches the upstream."""
        if self._closing:
            return
        self._closing = True
        self._loop.call_soon(self._end, False)

    def abort(self) -> None:
        """Close at once: what flow control still holds back (the upstream not reading) is lost."""
        if self._lost:
            return
        self._closing = self._aborted = True
        if not self._upstream.reading:
            self._outbox.clear()
            self._outbox_bytes = 0
        self._loop.call_soon(self._end, True)

    def get_write_buffer_size(self) -> int:
        return self._outbox_bytes

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._low, self._high

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._high = 64 * 1024 if high is None else high
        self._low = self._high // 4 if low is None else low

    def pause_reading(self) -> None:
        self._reading = False

    def resume_reading(self) -> None:
        if not self._reading:
            self._reading = True
            self._schedule_pump()

    def is_reading(self) -> bool:
        return self._reading and not self._closing

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol

    def _flush_outbox(self) -> None:
        self._flush_scheduled = False
        if not self._upstream.reading or self._lost:
            return
        while self._outbox:
            data = self._outbox.popleft()
            self._outbox_bytes -= len(data)
            self._link.client_data(data)
        if self._writing_paused and self._outbox_bytes <= self._low:
            self._writing_paused = False
            self._protocol.resume_writing()     # type: ignore[attr-defined]

    def _end(self, aborted: bool) -> None:
        if self._lost:
            return
        self._flush_outbox()                    # what was written before is on the wire
        self._link.client_closed(aborted or self._aborted)
        self._lose(None)

    def _lose(self, exc: Exception | None) -> None:
        if self._lost:
            return
        self._lost = self._closing = True
        self._inbox.clear()
        self._protocol.connection_lost(exc)

    # --- the upstream's side -----------------------------------------------------------------------

    def _deliver(self, kind: str, data: bytes = b"") -> None:
        if self._lost:
            return
        if kind == "reset":
            self._inbox.clear()                 # a reset overtakes what the client has not read
        self._inbox.append((kind, data))
        self._schedule_pump()

    def _schedule_pump(self) -> None:
        if not self._pump_scheduled:
            self._pump_scheduled = True
            self._loop.call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        inbox = self._inbox
        while inbox and not self._lost:
            kind, data = inbox[0]
            if kind == "data":
                if not self._reading:
                    return                      # resume_reading pumps again
                inbox.popleft()
                self._protocol.data_received(data)  # type: ignore[attr-defined]
            elif kind == "eof":
                inbox.popleft()
                if not self._protocol.eof_received():  # type: ignore[attr-defined]
                    self.close()
            else:
                inbox.popleft()
                self._closing = True
                self._lose(ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"))


class _Link:
    """The upstream's end of one fake connection: reads requests, answers them in order."""

    def __init__(self, upstream: FakeUpstream, connection: FakeConnection, transport: FakeTransport) -> None:
        self.upstream = upstream
        self.connection = connection
        self.transport = transport
        self.reader = _RequestReader(upstream.address, connection.number)
        self.answers: asyncio.Queue[tuple[Received, Step]] = asyncio.Queue()
        self.waiting_for_body: tuple[Received, Step] | None = None
        self.ended = False
        self.worker = asyncio.get_running_loop().create_task(self._serve())

    def client_data(self, data: bytes) -> None:
        if self.ended:
            return
        try:
            arrived = self.reader.feed(data)
        except ValueError:
            self.upstream_end(reset=True)       # what a server does with a request it cannot parse
            return
        for received, whole in arrived:
            if not whole:
                # The step is taken when the head is in: requests take steps in the order they arrive.
                self.connection.requests.append(received)
                self.upstream.requests.append(received)
                self.upstream._owner.requests.append(received)
                step = self.upstream._take_step()
                if isinstance(step, Reply) and step.early:
                    self.answers.put_nowait((received, step))
                else:
                    self.waiting_for_body = (received, step)
            elif self.waiting_for_body is not None and self.waiting_for_body[0] is received:
                self.answers.put_nowait(self.waiting_for_body)
                self.waiting_for_body = None

    def client_eof(self) -> None:
        pass                                    # a half-close: the answers still go out

    def client_closed(self, aborted: bool) -> None:
        if self.connection.closed_by is None:
            self.connection.closed_by = "proxy"
            self.connection.aborted = aborted
        self.stop()

    def upstream_end(self, *, reset: bool) -> None:
        if self.ended:
            return
        if self.connection.closed_by is None:
            self.connection.closed_by = "upstream"
            self.connection.aborted = reset
        self.ended = True
        self.transport._deliver("reset" if reset else "eof")

    def stop(self) -> None:
        self.ended = True
        if self.worker is not asyncio.current_task():
            self.worker.cancel()
        if self in self.upstream._links:
            self.upstream._links.remove(self)

    async def _serve(self) -> None:
        while True:
            received, step = await self.answers.get()
            while callable(step):
                step = step(received)
            await self._answer(received, step)

    async def _answer(self, received: Received, step: Step) -> None:
        if step is RESET:
            self.upstream_end(reset=True)
        elif isinstance(step, _Hang):
            await asyncio.Event().wait()        # until the connection ends and this task is cancelled
        elif isinstance(step, Raw):
            await self._send(step.pieces)
            self._then(step.then)
        elif isinstance(step, Reply):
            if step.hold is not None:
                await step.hold.wait()
            head, body = _render(step, received.method)
            await self._send((head, *body))
            self._then(CLOSE if step.close and step.then is KEEP else step.then)
        else:
            raise TypeError(f"not a step: {step!r}")

    async def _send(self, pieces: Sequence[Piece]) -> None:
        for piece in pieces:
            if isinstance(piece, asyncio.Event):
                await piece.wait()
            elif isinstance(piece, (int, float)):
                await asyncio.sleep(piece)
            elif piece and not self.ended:
                self.transport._deliver("data", piece)
                await asyncio.sleep(0)          # each piece on its own turn, as separate packets

    def _then(self, then: Then) -> None:
        if then is CLOSE:
            self.upstream_end(reset=False)
        elif then is RESET:
            self.upstream_end(reset=True)


def _render(reply: Reply, method: str) -> tuple[bytes, list[Piece]]:
    """The answer's head (with its framing) and the pieces of its body as they go out."""
    pieces: list[Piece] = [reply.body] if isinstance(reply.body, bytes) else list(reply.body)
    lines = [b"HTTP/1.1 %d %s" % (reply.status, (reply.reason or _REASONS.get(reply.status, "Whatever")).encode())]
    names = set()
    for name, value in reply.headers:
        name = name.encode("latin-1") if isinstance(name, str) else name
        value = value.encode("latin-1") if isinstance(value, str) else value
        names.add(name.lower())
        lines.append(name + b": " + value)
    if reply.close and b"connection" not in names:
        lines.append(b"Connection: close")
    bodiless = reply.status in (204, 304) or reply.status < 200
    if reply.chunked:
        lines.append(b"Transfer-Encoding: chunked")
        pieces = [b"%x\r\n%b\r\n" % (len(piece), piece) if isinstance(piece, bytes) else piece
                  for piece in pieces if not isinstance(piece, bytes) or piece] + [b"0\r\n\r\n"]
    elif b"content-length" not in names and b"transfer-encoding" not in names and (
            reply.length is not None or not bodiless):
        length = reply.length if reply.length is not None else sum(len(p) for p in pieces if isinstance(p, bytes))
        lines.append(b"Content-Length: %d" % length)
    head = b"\r\n".join(lines) + b"\r\n\r\n"
    return head, ([] if bodiless or method == "HEAD" else pieces)


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified", 400: "Bad Request",
            404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error", 502: "Bad Gateway",
            503: "Service Unavailable", 504: "Gateway Timeout"}


class _RequestReader:
    """Splits what the client writes into requests: each head, then each body as framed."""

    def __init__(self, upstream: str, conn: int) -> None:
        self._upstream = upstream
        self._conn = conn
        self._buffer = bytearray()
        self._current: Received | None = None
        self._left = 0                  # body bytes (or chunk bytes) still to come
        self._chunked = False
        self._chunk_phase = "size"      # size, data, crlf, trailers

    def feed(self, data: bytes) -> list[tuple[Received, bool]]:
        """(request, whole) for each head that arrived (whole False) and each request now complete."""
        self._buffer += data
        arrived: list[tuple[Received, bool]] = []
        while True:
            if self._current is None:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    return arrived
                head = bytes(self._buffer[:end])
                del self._buffer[:end + 4]
                self._current = self._start(head)
                arrived.append((self._current, False))
            if not self._read_body():
                return arrived
            done, self._current = self._current, None
            done.complete = True
            arrived.append((done, True))

    def _start(self, head: bytes) -> Received:
        line, *header_lines = head.split(b"\r\n")
        method, target, _version = line.split(b" ", 2)
        headers = []
        for header_line in header_lines:
            name, sep, value = header_line.partition(b":")
            if not sep:
                raise ValueError(f"malformed header line {header_line!r}")
            headers.append((name, value.strip()))
        received = Received(self._upstream, self._conn, method.decode("latin-1"), target.decode("latin-1"),
                            headers, head)
        encodings = received.values("transfer-encoding")
        self._chunked = bool(encodings) and encodings[-1].strip().lower() == b"chunked"
        self._chunk_phase = "size"
        lengths = received.values("content-length")
        self._left = 0 if self._chunked or not lengths else int(lengths[0])
        return received

    def _read_body(self) -> bool:
        """Take what the buffer holds of the current body; True once it is all in."""
        current, buffer = self._current, self._buffer
        assert current is not None
        if not self._chunked:
            taken = bytes(buffer[:self._left])
            del buffer[:len(taken)]
            current.body += taken
            self._left -= len(taken)
            return self._left == 0
        while True:
            if self._chunk_phase == "data":
                taken = bytes(buffer[:self._left])
                del buffer[:len(taken)]
                current.body += taken
                self._left -= len(taken)
                if self._left:
                    return False
                self._chunk_phase = "crlf"
            elif self._chunk_phase == "crlf":
                if len(buffer) < 2:
                    return False
                del buffer[:2]
                self._chunk_phase = "size"
            else:
                end = buffer.find(b"\r\n")
                if end < 0:
                    return False
                line = bytes(buffer[:end])
                del buffer[:end + 2]
                if self._chunk_phase == "trailers":
                    if not line:
                        return True
                    continue
                self._left = int(line.split(b";", 1)[0], 16)
                self._chunk_phase = "data" if self._left else "trailers"
