"""WebSockets on raw sockets, for what a well-behaved library will not send: a client's unmasked
frame, an upstream's garbage after its 101. Frames are built and read per RFC 6455 section 5.2."""

from __future__ import annotations

import base64
import hashlib
import os
import socket
import threading

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key.strip() + _GUID).digest())


def frame(opcode: int, payload: bytes, *, masked: bool) -> bytes:
    """One final frame (payloads under 126 bytes)."""
    assert len(payload) < 126
    if not masked:
        return bytes((0x80 | opcode, len(payload))) + payload
    mask = os.urandom(4)
    return bytes((0x80 | opcode, 0x80 | len(payload))) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def read_frame(sock: socket.socket) -> tuple[int, bytes]:
    """(opcode, payload) of the next unmasked frame; ConnectionError when the connection ends first."""
    first, second = _read(sock, 2)
    length = second & 0x7F
    if length == 126:
        length = int.from_bytes(_read(sock, 2), "big")
    elif length == 127:
        length = int.from_bytes(_read(sock, 8), "big")
    return first & 0x0F, _read(sock, length)


def _read(sock: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise ConnectionError("the connection ended")
        data += chunk
    return data


def handshake(port: int, path: str, *, timeout_s: float = 5.0) -> tuple[socket.socket, bytes]:
    """A client socket past a 101 for `path`, and the response head (fails on any other answer)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    key = base64.b64encode(os.urandom(16))
    sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: shop.test\r\nConnection: Upgrade\r\n"
                 b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: " + key + b"\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"no answer to the handshake: {head!r}")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101 "), head
    assert accept_key(key) in head, head
    return sock, head


class GarbageAfter101:
    """An upstream that completes the handshake, sends one good text frame, then bytes that are no frame."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.handshakes = 0
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def start(self) -> GarbageAfter101:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._sock.accept()
            except OSError:
                return
            if self._stopping:
                connection.close()
                return
            with connection:
                connection.settimeout(5)
                try:
                    head = b""
                    while b"\r\n\r\n" not in head:
                        chunk = connection.recv(4096)
                        if not chunk:
                            break
                        head += chunk
                    key = next(line.split(b":", 1)[1] for line in head.split(b"\r\n")
                               if line.lower().startswith(b"sec-websocket-key:"))
                    self.handshakes += 1
                    connection.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                       b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
                                       + frame(1, b"hello", masked=False) + b"\x8f\xff" + b"no frame at all")
                    while connection.recv(4096):        # until the proxy hangs up
                        pass
                except (OSError, StopIteration):
                    pass

    def stop(self) -> None:
        self._stopping = True
        with socket.create_connection(("127.0.0.1", self.port), timeout=2):    # wakes accept()
            pass
        self._thread.join(timeout=5)
        self._sock.close()
