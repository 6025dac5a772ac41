"""WebSockets: the handshake forwarded with an upgrade's hop-by-hop rules, and the tunnel after a 101.

The listener (protocol.py) gives a WebSocket handshake (GET, HTTP/1.1, `Connection: upgrade`,
`Upgrade: websocket`, no body) the scope extension tunnel.TUNNEL_EXTENSION, an OpenTunnel. Until the answer it is a
request like any other: routed, split, sticky, breaker, bulkhead, retries and fallback. The
upstream's 101 opens a tunnel, which takes over the request's lease (its bulkhead slot) for as
long as it is open and closes it at its end; any other answer goes to the client as it is.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from .config.model import Limits
from .errors import ClientDisconnected
from .lease import UpstreamLease
from .outcome import RequestTrace
from .recorder import Recorder

log = logging.getLogger("strangler.websocket")

Headers = list[tuple[bytes, bytes]]


class OpenTunnel(Protocol):
    """The listener's TUNNEL_EXTENSION: answer 101 with `headers` and tunnel to `upstream`; False
    when the client's side cannot (then nothing was done); once True, `on_end` is told the end."""

    def __call__(self, scope: dict[str, Any], headers: Headers, upstream: asyncio.Transport, upstream_early: bytes,
                 *, extensions: bool, idle_timeout_s: float, drain_timeout_s: float,
                 on_end: Callable[[str], None]) -> bool: ...


def add_handshake_headers(upstream_headers: Headers) -> None:
    """`Connection: Upgrade` and `Upgrade: websocket`, hop-by-hop, go to the upstream for this request only
    (headers.py has dropped the client's, with every other field its Connection named)."""
    upstream_headers.append((b"Connection", b"Upgrade"))
    upstream_headers.append((b"Upgrade", b"websocket"))


def open_tunnel(lease: UpstreamLease, opener: OpenTunnel, scope: dict[str, Any], headers: Headers,
                trace: RequestTrace, recorder: Recorder, limits: Limits) -> None:
    """Answer the 101 and tunnel; from here the tunnel owns `lease` and closes it when it ends.

    `headers` are the client's answer headers as the pipeline made them (hop-by-hop dropped).
    """
    response = lease.response
    assert response is not None
    upgrade = b"websocket"
    extensions = False
    for name, value in response.raw_headers:
        lower = name.lower()
        if lower == b"upgrade":
            upgrade = value
        elif lower == b"sec-websocket-extensions":
            extensions = True
    try:
        upstream, early = lease.take_upgraded()
    except BaseException:
        lease.close()
        raise
    route, name = trace.route, trace.upstream
    started = time.perf_counter()

    def ended(reason: str) -> None:
        lease.close()
        duration_s = time.perf_counter() - started
        recorder.websocket_closed(route, name, reason, duration_s)
        level = logging.WARNING if reason.endswith("protocol_error") else logging.DEBUG
        log.log(level, "websocket.ended rid=%s route=%s upstream=%s reason=%s s=%.1f",
                trace.request_id, route, name, reason, duration_s)

    recorder.websocket_opened(route, name)
    try:
        opened = opener(scope, [*headers, (b"connection", b"Upgrade"), (b"upgrade", upgrade)], upstream, early,
                        extensions=extensions, idle_timeout_s=limits.websocket_idle_timeout_s,
                        drain_timeout_s=limits.websocket_drain_timeout_s, on_end=ended)
    except BaseException:
        upstream.abort()
        ended("client_closed")
        raise
    if not opened:
        upstream.abort()
        ended("client_closed")
        raise ClientDisconnected("client went away before its 101")
    trace.status = 101
