"""The byte tunnel a WebSocket becomes after the upstream's 101: both ways, until either side ends.

Bytes pass as they come and are never re-encoded. Each direction's frame headers are read
(RFC 6455 section 5.2), not changed, so that the tunnel knows where frames begin: it ends a
tunnel whose client sends an unmasked frame or whose upstream sends something that is not a
frame, and it can close with a close frame of its own (idle timeout, shutdown) where one fits,
at a frame boundary.

The tunnel takes both transports over (`set_protocol`); `on_end(reason)` is told once, when it
ends, with one of END_REASONS.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable

# The scope extension through which the pipeline opens a tunnel on a handshake's connection: the
# listener (protocol.py) gives it to WebSocket handshakes only, as a callable (see websocket.py).
TUNNEL_EXTENSION = "strangler.websocket_tunnel"
END_REASONS = ("client_closed", "upstream_closed", "idle_timeout", "shutdown", "client_protocol_error",
               "upstream_protocol_error")
GOING_AWAY = 1001
PROTOCOL_ERROR = 1002
INTERNAL_ERROR = 1011
_CONTROL_MAX = 125


class FrameReader:
    """Follows the frames of one direction: where each one starts, and whether its header is allowed."""

    __slots__ = ("_masked", "_reserved_bits", "_partial", "_payload_left", "_in_message")

    def __init__(self, *, from_client: bool, extensions: bool) -> None:
        self._masked = 0x80 if from_client else 0      # clients mask every frame, servers none
        # RSV1-3 mean something only to a negotiated extension (permessage-deflate sets RSV1).
        self._reserved_bits = 0 if extensions else 0x70
        self._partial = b""          # the start of a frame header that has not all arrived
        self._payload_left = 0       # payload bytes of the current frame still to come
        self._in_message = False     # a fragmented data message is open: continuation frames follow

    @property
    def at_boundary(self) -> bool:
        """Everything passed on so far ends with a whole frame: a frame of the tunnel's own may follow."""
        return self._payload_left == 0 and not self._partial

    def feed(self, data: bytes) -> tuple[bytes, str | None]:
        """The bytes that may be passed on now, and what is wrong with the frame after them, if anything.

        A frame header that has not all arrived is held back until it has, so that nothing is passed on
        ahead of a header that turns out to be wrong.
        """
        if self._partial:
            data, self._partial = self._partial + data, b""
        size = len(data)
        at = 0
        left = self._payload_left
        while True:
            if left:
                if size - at <= left:
                    self._payload_left = left - (size - at)
                    return data, None
                at += left
                left = 0
            if at == size:
                self._payload_left = 0
                return data, None
            if size - at < 2:
                break
            first, second = data[at], data[at + 1]
            length = second & 0x7F
            head = 2 + (2 if length == 126 else 8 if length == 127 else 0) + (4 if second & 0x80 else 0)
            if size - at < head:
                break
            if length == 126:
                length = int.from_bytes(data[at + 2:at + 4], "big")
            elif length == 127:
                length = int.from_bytes(data[at + 2:at + 10], "big")
            error = self._check(first, second, length)
            if error is not None:
                self._payload_left = 0
                return data[:at], error
            at += head
            left = length
        self._partial = data[at:]
        self._payload_left = 0
        return data[:at], None

    def _check(self, first: int, second: int, length: int) -> str | None:
        opcode = first & 0x0F
        if (second & 0x80) != self._masked:
            return "an unmasked frame from the client" if self._masked else "a masked frame from the upstream"
        if first & self._reserved_bits:
            return "reserved bits set without an extension"
        if opcode >= 8:
            if opcode > 10:
                return f"reserved opcode {opcode}"
            if not first & 0x80 or length > _CONTROL_MAX:
                return "a fragmented or oversized control frame"
            return None
        if opcode > 2:
            return f"reserved opcode {opcode}"
        if length >> 63:
            return "a payload length with its top bit set"
        if (opcode == 0) != self._in_message:
            return "a continuation frame outside a message" if opcode == 0 else "a new message inside a fragmented one"
        self._in_message = not first & 0x80
        return None


def close_frame(code: int, reason: str, *, masked: bool) -> bytes:
    """A close frame; `masked` for one sent to the upstream (as a client sends it)."""
    payload = code.to_bytes(2, "big") + reason.encode("utf-8")[:_CONTROL_MAX - 2]
    if not masked:
        return bytes((0x88, len(payload))) + payload
    mask = os.urandom(4)
    return bytes((0x88, 0x80 | len(payload))) + mask + bytes(byte ^ mask[i & 3] for i, byte in enumerate(payload))


class _End(asyncio.Protocol):
    """One side's transport inside a tunnel: what it sends goes to the other side."""

    __slots__ = ("tunnel", "transport", "reader", "peer", "name", "eof", "_half_close")

    def __init__(self, tunnel: Tunnel, transport: asyncio.Transport, reader: FrameReader, name: str) -> None:
        self.tunnel: Tunnel | None = tunnel
        self.transport = transport
        self.reader = reader
        self.peer: _End = self
        self.name = name
        self.eof = False
        # TLS cannot half-close: its end of input closes the connection.
        self._half_close = transport.get_extra_info("sslcontext") is None

    def data_received(self, data: bytes) -> None:
        tunnel = self.tunnel
        if tunnel is None:
            return
        tunnel.last_activity = tunnel.loop.time()
        passed, error = self.reader.feed(data)
        if passed:
            self.peer.transport.write(passed)
        if error is not None:
            tunnel.protocol_error(self, error)

    def eof_received(self) -> bool:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.half_closed(self)
        return self._half_close

    def connection_lost(self, exc: Exception | None) -> None:
        tunnel = self.tunnel
        if tunnel is not None:
            tunnel.end(f"{self.name}_closed")

    def pause_writing(self) -> None:
        # This side reads slower than the other sends: stop reading the other until it catches up.
        peer = self.peer.transport
        if not peer.is_closing():
            peer.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer.transport
        if not peer.is_closing():
            peer.resume_reading()


class Tunnel:
    """Owns a client's and an upstream's transport from the 101 until either side ends."""

    def __init__(self, client: asyncio.Transport, upstream: asyncio.Transport, *, extensions: bool,
                 idle_timeout_s: float, drain_timeout_s: float, on_end: Callable[[str], None]) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = _End(self, client, FrameReader(from_client=True, extensions=extensions), "client")
        self.upstream = _End(self, upstream, FrameReader(from_client=False, extensions=extensions), "upstream")
        self.client.peer, self.upstream.peer = self.upstream, self.client
        self.last_activity = self.loop.time()
        self.reason: str | None = None       # why it ended, once it has
        self.detail = ""                      # what was wrong, for a protocol error
        self._idle_timeout_s = idle_timeout_s
        self._drain_timeout_s = drain_timeout_s
        self._on_end = on_end
        self._timer: asyncio.TimerHandle | None = None
        self._drain: asyncio.TimerHandle | None = None

    def start(self, client_early: bytes = b"", upstream_early: bytes = b"") -> None:
        """Take both transports over; `*_early` are bytes each side sent before the tunnel existed."""
        for end in (self.client, self.upstream):
            end.transport.set_protocol(end)
        for end, early in ((self.client, client_early), (self.upstream, upstream_early)):
            if early:
                end.data_received(early)
        for end in (self.client, self.upstream):
            if end.transport.is_closing():
                self.end(f"{end.name}_closed")      # gone before the tunnel existed (or just now)
                return
            end.transport.resume_reading()
        self._timer = self.loop.call_at(self.last_activity + self._idle_timeout_s, self._on_timer)

    # --- how it ends -------------------------------------------------------------------------------

    def half_closed(self, end: _End) -> None:
        """`end` sent its last byte: the other side is told (or closed, over TLS); both done ends it."""
        end.eof = True
        peer = end.peer
        if peer.eof or not peer.transport.can_write_eof():
            self.end(f"{end.name}_closed")
        else:
            peer.transport.write_eof()

    def protocol_error(self, end: _End, detail: str) -> None:
        """`end` broke the WebSocket framing (`detail` says how): only this tunnel ends.

        It gets 1002; the other side learns that its peer went away (1001), or, for a client
        whose upstream failed, that the server side did (1011).
        """
        self.detail = detail
        if end is self.client:
            self.close(PROTOCOL_ERROR, GOING_AWAY, "client_protocol_error")
        else:
            self.close(INTERNAL_ERROR, PROTOCOL_ERROR, "upstream_protocol_error")

    def shutdown(self) -> None:
        """The server stops (uvicorn calls this on SIGTERM): close after the drain timeout."""
        if self._drain is None and self.reason is None:
            self._drain = self.loop.call_later(self._drain_timeout_s, self.close, GOING_AWAY, GOING_AWAY, "shutdown")

    def close(self, client_code: int, upstream_code: int, reason: str) -> None:
        """End with a close frame to each side whose stream is at a frame boundary, then close both."""
        if self.reason is not None:
            return
        detail = "proxy: " + reason.replace("_", " ")
        if self.upstream.reader.at_boundary and not self.client.transport.is_closing():
            self.client.transport.write(close_frame(client_code, detail, masked=False))
        if self.client.reader.at_boundary and not self.upstream.transport.is_closing():
            self.upstream.transport.write(close_frame(upstream_code, detail, masked=True))
        self.end(reason)

    def end(self, reason: str) -> None:
        """Close both transports (after what they still have to send) and tell on_end, once."""
        if self.reason is not None:
            return
        self.reason = reason
        for timer in (self._timer, self._drain):
            if timer is not None:
                timer.cancel()
        self._timer = self._drain = None
        for end in (self.client, self.upstream):
            end.tunnel = None                  # no reference cycle outlives the tunnel
            if not end.transport.is_closing():
                end.transport.close()
        self._on_end(reason)

    def _on_timer(self) -> None:
        # One lazy timer: it looks at the time of the last byte and sets itself again.
        self._timer = None
        if self.reason is not None:
            return
        deadline = self.last_activity + self._idle_timeout_s
        if self.loop.time() >= deadline:
            self.close(GOING_AWAY, GOING_AWAY, "idle_timeout")
        else:
            self._timer = self.loop.call_at(deadline, self._on_timer)
