"""A fault-injecting TCP proxy in the manner of Shopify's Toxiproxy, in-process and loopback only.

Put one between strangler and a real upstream, point the upstream's `url` at
`toxiproxy.url`, and add or remove *toxics* while the test runs. Every toxic
acts on one direction of the byte stream (Toxiproxy's names):

- `upstream`    bytes from the client (strangler) towards the upstream server
- `downstream`  bytes from the upstream server back towards strangler

Toxics (each may apply to only a share of connections, `toxicity` 0..1):

- `Latency(seconds, jitter)`          every chunk waits before it is passed on
- `Slicer(size, delay, variation)`    chunks cut into slices of about `size` bytes, `delay` apart (trickle)
- `LimitData(n, reset=False)`         the connection is closed once `n` bytes have passed (FIN, or RST)
- `ResetPeer(after=0)`                the first chunk is not passed on: the connection is reset `after` seconds later
- `Timeout(after=0)`                  data is swallowed; the connection is closed `after` seconds later (0: held open)
- `CloseOnReuse(reset=False)`         a connection that has carried an answer is closed (not passed on) when
                                      the next request's first bytes arrive: a keep-alive close racing reuse

and the proxy itself can be `disable()`d (the listener closes: connections
are refused; existing ones are dropped) and `enable()`d again on the same port.

Toxics are read for every chunk, so adding or removing one affects open
connections at once, as in Toxiproxy. `stop()` closes everything and joins the
thread. The only sleeps are the faults themselves (latency, slicing, delays).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
import threading
from dataclasses import dataclass, field
from typing import Literal

from tests.support.loopserver import LoopServer
from tests.support.loopserver import reset as _reset

Stream = Literal["upstream", "downstream"]
_READ_SIZE = 64 * 1024


@dataclass(eq=False)
class Toxic:
    stream: Stream = "downstream"
    toxicity: float = 1.0                  # share of connections it applies to, decided once per connection
    name: str = ""

    def __post_init__(self) -> None:
        if self.stream not in ("upstream", "downstream"):
            raise ValueError(f"stream must be upstream or downstream, not {self.stream!r}")
        if not 0.0 <= self.toxicity <= 1.0:
            raise ValueError("toxicity is a share between 0 and 1")
        self.name = self.name or type(self).__name__.lower()


@dataclass(eq=False)
class Latency(Toxic):
    seconds: float = 0.0
    jitter: float = 0.0


@dataclass(eq=False)
class Slicer(Toxic):
    size: int = 1
    delay: float = 0.0
    variation: int = 0


@dataclass(eq=False)
class LimitData(Toxic):
    bytes: int = 0
    reset: bool = False


@dataclass(eq=False)
class ResetPeer(Toxic):
    after: float = 0.0


@dataclass(eq=False)
class Timeout(Toxic):
    after: float = 0.0


@dataclass(eq=False)
class CloseOnReuse(Toxic):
    stream: Stream = "upstream"
    reset: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.stream != "upstream":
            raise ValueError("CloseOnReuse watches the requests: stream must be upstream")


@dataclass(eq=False)
class _Link:
    """One client connection and its connection to the upstream."""

    number: int
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    passed: dict[Stream, int] = field(default_factory=lambda: {"upstream": 0, "downstream": 0})
    limit_counts: dict[int, int] = field(default_factory=dict)     # id(LimitData) -> bytes passed under it
    affected: dict[int, bool] = field(default_factory=dict)        # id(toxic) -> applies to this link
    closing: bool = False
    closed_by: str | None = None
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def close(self, *, reset: bool, why: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.closed_by = why
        for timer in self.timers:
            timer.cancel()
        for writer in (self.client, self.server):
            if reset:
                _reset(writer)
            else:
                writer.transport.close()


class Toxiproxy(LoopServer):
    """A TCP proxy on 127.0.0.1 to `127.0.0.1:upstream_port`, with toxics toggled per test."""

    def __init__(self, upstream_port: int, *, name: str = "toxiproxy", seed: int | None = None) -> None:
        self.name = name
        self.upstream_port = upstream_port
        probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.url = f"http://127.0.0.1:{self.port}"
        self._random = random.Random(seed)
        self._toxics: tuple[Toxic, ...] = ()
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._links: dict[int, _Link] = {}
        super().__init__(f"{name}:{self.port}")
        self.connections = 0           # accepted client connections, in all
        self.closed_by_toxic: list[tuple[int, str]] = []   # (link number, toxic) for links a toxic closed

    # Life cycle (start, stop: LoopServer) --------------------------------------------------------

    def start(self) -> "Toxiproxy":
        return super().start()

    async def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(512)
        self._server = await asyncio.start_server(self._accept, sock=sock)

    async def _shutdown(self) -> None:
        for link in list(self._links.values()):
            link.close(reset=False, why="stop")
        await super()._shutdown()

    # Control ------------------------------------------------------------------------------------

    def add(self, toxic: Toxic) -> Toxic:
        with self._lock:
            self._toxics = (*self._toxics, toxic)
        return toxic

    def remove(self, toxic: Toxic) -> None:
        with self._lock:
            self._toxics = tuple(t for t in self._toxics if t is not toxic)

    def clear(self) -> None:
        """Remove every toxic (open connections carry on unharmed)."""
        with self._lock:
            self._toxics = ()

    @property
    def toxics(self) -> tuple[Toxic, ...]:
        return self._toxics

    def disable(self) -> None:
        """Close the listener (new connections are refused) and drop every open connection."""
        async def down() -> None:
            if self._server is not None:
                self._server.close()          # the listening socket closes now: connections are refused
                self._server = None
            for link in list(self._links.values()):
                link.close(reset=True, why="disabled")
        self._call(down)

    def enable(self) -> None:
        """Listen again on the same port."""
        async def up() -> None:
            if self._server is None:
                await self._listen()
        self._call(up)

    @property
    def enabled(self) -> bool:
        return self._server is not None

    @property
    def open_connections(self) -> int:
        return sum(1 for link in list(self._links.values()) if not link.closing)

    def drop_connections(self) -> None:
        """Close every open connection gracefully (FIN both ways), as an upstream's idle timeout would."""
        async def drop() -> None:
            for link in list(self._links.values()):
                link.close(reset=False, why="dropped")
        self._call(drop)

    # Data path ----------------------------------------------------------------------------------

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        with self._tracked():
            self.connections += 1
            try:
                try:
                    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
                except OSError:
                    _reset(client_writer)          # the upstream refused: so does the proxy
                    return
                link = _Link(next(self._numbers), client_writer, server_writer)
                self._links[link.number] = link
                try:
                    await asyncio.gather(
                        self._pump(link, "upstream", client_reader, server_writer),
                        self._pump(link, "downstream", server_reader, client_writer),
                    )
                finally:
                    link.close(reset=False, why=link.closed_by or "eof")
                    del self._links[link.number]
            except asyncio.CancelledError:
                pass            # stop(): a cancelled handler task would make asyncio log an error

    def _active(self, link: _Link, stream: Stream) -> list[Toxic]:
        active = []
        for toxic in self._toxics:
            if toxic.stream != stream:
                continue
            key = id(toxic)
            if key not in link.affected:
                link.affected[key] = toxic.toxicity >= 1.0 or self._random.random() < toxic.toxicity
            if link.affected[key]:
                active.append(toxic)
        return active

    async def _pump(self, link: _Link, stream: Stream, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            while not link.closing:
                data = await reader.read(_READ_SIZE)
                if not data:
                    break
                await self._pass(link, stream, data, writer)
        except (ConnectionError, OSError):
            pass
        finally:
            # One side is done: the exchange is over for both (HTTP/1.1 needs no half-close here).
            link.close(reset=False, why=link.closed_by or f"{stream} eof")

    async def _pass(self, link: _Link, stream: Stream, data: bytes, writer: asyncio.StreamWriter) -> None:
        toxics = self._active(link, stream)
        for toxic in toxics:
            if isinstance(toxic, Timeout):
                if toxic.after > 0 and not any(t for t in link.timers if not t.cancelled()):
                    loop = asyncio.get_running_loop()
                    link.timers.append(loop.call_later(toxic.after, self._close_by, link, toxic, False))
                return                                   # swallowed
            if isinstance(toxic, ResetPeer):
                if toxic.after > 0:
                    await asyncio.sleep(toxic.after)
                self._close_by(link, toxic, True)
                return
            if isinstance(toxic, CloseOnReuse) and link.passed["downstream"] > 0:
                self._close_by(link, toxic, toxic.reset)
                return
        limit: LimitData | None = None
        for toxic in toxics:
            if isinstance(toxic, LimitData):
                allowed = toxic.bytes - link.limit_counts.get(id(toxic), 0)
                if len(data) >= allowed:
                    data, limit = data[:max(allowed, 0)], toxic
                link.limit_counts[id(toxic)] = link.limit_counts.get(id(toxic), 0) + len(data)
        for toxic in toxics:
            if isinstance(toxic, Latency):
                await asyncio.sleep(toxic.seconds + (self._random.uniform(0, toxic.jitter) if toxic.jitter else 0))
        slicer = next((t for t in toxics if isinstance(t, Slicer)), None)
        if slicer is None or slicer.size <= 0:
            await self._write(link, stream, data, writer)
        else:
            offset = 0
            while offset < len(data) and not link.closing:
                size = max(1, slicer.size + (self._random.randint(-slicer.variation, slicer.variation)
                                             if slicer.variation else 0))
                await self._write(link, stream, data[offset:offset + size], writer)
                offset += size
                if offset < len(data) and slicer.delay:
                    await asyncio.sleep(slicer.delay)
        if limit is not None:
            self._close_by(link, limit, limit.reset)

    async def _write(self, link: _Link, stream: Stream, data: bytes, writer: asyncio.StreamWriter) -> None:
        if not data or link.closing:
            return
        writer.write(data)
        link.passed[stream] += len(data)
        await writer.drain()

    def _close_by(self, link: _Link, toxic: Toxic, reset: bool) -> None:
        if not link.closing:
            self.closed_by_toxic.append((link.number, toxic.name))
        link.close(reset=reset, why=toxic.name)

