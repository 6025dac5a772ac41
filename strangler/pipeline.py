"""The data path, in the order a request meets it:

match route -> choose upstream (split, sticky) -> copy to the shadow? (shadow.py, off this path)
  -> breaker open? fallback -> bulkhead -> breaker permit -> retry -> forward (forwarder.py, lease.py)
  -> stream (through the copy's tee) -> record

A composite route (compose.py) branches off after the match: its parts go the same way, at once.

Everything the client receives for a proxied request is sent from here: the upstream's
answer, streamed, or the proxy's own problem+json refusal.
"""

from __future__ import annotations

import asyncio
from typing import Any

from . import compose
from .body import RequestBody
from .errors import ClientDisconnected, NoRoute, ProxyError, Reason, ResponseAborted, UpstreamError
from .forward import InterimHandler
from .forwarder import Forwarder
from .headers import (
    EARLY_HINTS_EXTENSION, check_host, client_address, client_response_headers, is_trusted, request_framing,
    upstream_request_headers,
)
from .lease import UpstreamLease
from .outcome import RequestTrace
from .paths import forwarded_path, normalize_path, path_forms
from .problem import problem_body, problem_headers
from .recorder import Recorder
from .routing import REFUSED_METHODS, RequestHead, check_method
from .runtime import Runtime
from .shadow import start_copy
from .tee import NO_COPY, Copy
from .sticky import cohort_set_cookie, sticky_key
from .tunnel import TUNNEL_EXTENSION
from .websocket import add_handshake_headers, open_tunnel

_BODYLESS_STATUS = frozenset({204, 304})
_NO_EXTENSIONS: dict[str, Any] = {}


async def handle(runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, trace: RequestTrace,
                 recorder: Recorder) -> None:
    """Proxy one HTTP request, or answer it with the proxy's own refusal (ResponseAborted when too late)."""
    try:
        await _proxy(runtime, scope, receive, send, trace, recorder)
    except ProxyError as error:
        trace.error = error
        if error.route is None:
            error.route = trace.route or None
        if error.upstream is None:
            error.upstream = trace.upstream or None
        if trace.status is not None:
            raise ResponseAborted(error.detail) from error
        await refuse(send, trace, error, runtime.config.expose_headers, close=_expects_continue(scope))
    except ClientDisconnected as gone:
        trace.error = gone


async def refuse(send: Any, trace: RequestTrace, error: ProxyError, expose: bool, *, close: bool = False) -> None:
    """Answer with the proxy's own problem+json."""
    trace.error = error
    body = problem_body(error)
    headers = problem_headers(error, body, expose=expose)
    if close and not any(name == b"connection" for name, _ in headers):
        headers.append((b"connection", b"close"))
    headers.append((b"x-request-id", trace.request_id.encode()))
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
    trace.status = error.status


def _expects_continue(scope: dict[str, Any]) -> bool:
    """A client that sent `Expect: 100-continue` may or may not send its body after a refusal
    made without reading it: the connection's next bytes are ambiguous, so it is not reused."""
    return any(name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"])


async def _proxy(runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, trace: RequestTrace,
                 recorder: Recorder) -> None:
    config = runtime.config
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    raw_headers = scope["headers"]
    if scope["method"] in REFUSED_METHODS:
        check_method(scope["method"])
    check_host(raw_headers, scope.get("http_version", "1.1"))
    if runtime.keeps_encoded_slash:     # a second form of the path, only when a route keeps encoded slashes
        forms = path_forms(raw_path)
        head = RequestHead(scope["method"], forms.matched, raw_headers)
    else:
        forms = None
        head = RequestHead(scope["method"], normalize_path(raw_path), raw_headers)

    route_rt = runtime.match(head)
    if route_rt is None:
        raise NoRoute(f"no route matches {head.method} {head.path}")
    route = route_rt.route
    trace.route = route.name
    path = forwarded_path(head.path, forms, route) if forms is not None or route.strip_prefix else head.path

    framing = request_framing(raw_headers)
    max_body = route.max_body_bytes if route.max_body_bytes is not None else config.limits.max_body_bytes
    if framing.content_length is not None and framing.content_length > max_body:
        raise ProxyError(f"request body of {framing.content_length} bytes is over the limit of {max_body}",
                         reason=Reason.BODY_TOO_LARGE, route=route.name)

    peer = scope["client"][0] if scope.get("client") else None
    trusted = is_trusted(peer, config.trusted_proxies)
    # X-Forwarded-For gets the hop the proxy saw (the peer), not the client address resolved from
    # the header itself: that would repeat the last hop and drop the trusted proxy's address.
    upstream_headers = upstream_request_headers(
        raw_headers, client_ip=peer, scheme=scope.get("scheme", "http"), trusted_client=trusted,
    )
    # One X-Request-ID, the proxy's (the client's own when it was sane): headers.py drops the client's.
    upstream_headers.append((b"X-Request-ID", trace.request_id.encode("ascii")))
    if route.compose:
        # Its parts say which upstreams answer, all of them at once, as one JSON object.
        await compose.answer(runtime, route_rt, head, upstream_headers, receive, send, trace, recorder)
        return

    client_ip = client_address(peer, raw_headers, config.trusted_proxies) if trusted else peer
    if route_rt.split.is_split:
        key = sticky_key(route.sticky, head, client_ip)
        assignment = route_rt.split.choose(key.key)
        trace.new_cohort = key.new_cohort
    else:
        assignment = route_rt.split.choose(None)

    extensions = scope.get("extensions") or _NO_EXTENSIONS
    tunnel = extensions.get(TUNNEL_EXTENSION)       # a WebSocket handshake's only: its 101 opens a tunnel
    if tunnel is not None:
        add_handshake_headers(upstream_headers)
    if framing.content_length is not None:
        upstream_headers.append((b"Content-Length", b"%d" % framing.content_length))
    target = path + "?" + query.decode("latin-1") if query else path

    body = RequestBody(receive, framing, max_bytes=max_body, idle_timeout_s=config.limits.body_idle_timeout_s)
    if body.small and framing.content_length:
        await body.read_small()

    forwarder = Forwarder(runtime, route_rt, head.method, target, upstream_headers, body, trace, recorder,
                          _early_hints_relay(scope, extensions))
    if tunnel is not None:
        forwarder.upgrade = True        # a 101 is an answer
        copy = NO_COPY                  # a tunnel's bytes are no answer to compare
    else:
        # A sampled request's copy runs beside this one; it only ever reads the answer streamed below.
        copy = start_copy(runtime, route_rt, head.method, target, upstream_headers, body, assignment.upstream,
                          trace, recorder)
    try:
        lease = await forwarder.run(assignment.upstream)
        response = lease.response
        assert response is not None
        # The answer's headers: the upstream's (hop-by-hop out, and its X-Request-ID, which upstreams
        # often echo: the client gets the one logged) and the proxy's own.
        headers = client_response_headers(response.raw_headers, response.status)
        if config.expose_headers:
            headers.append((b"x-strangler-route", trace.route.encode()))
            headers.append((b"x-strangler-upstream", trace.upstream.encode()))
        headers.append((b"x-request-id", trace.request_id.encode()))
        if trace.new_cohort is not None:
            secure = scope.get("scheme") == "https" or (trusted and head.header("x-forwarded-proto") == "https")
            headers.append((b"set-cookie", cohort_set_cookie(trace.new_cohort, secure)))
        if tunnel is not None and response.status == 101:
            open_tunnel(lease, tunnel, scope, headers, trace, recorder, config.limits)
            return
        try:
            await _stream(lease, headers, head.method, send, receive, trace, copy)
        finally:
            lease.close()
    finally:
        copy.abandon()


async def _stream(lease: UpstreamLease, headers: list[tuple[bytes, bytes]], method: str, send: Any, receive: Any,
                  trace: RequestTrace, copy: Copy) -> None:
    """Send the upstream's answer; the lease learns whether it went out whole, or the upstream broke it."""
    response = lease.response
    assert response is not None
    status = response.status
    copy.head(trace.upstream, status, response.raw_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    trace.status = status
    bodiless = method == "HEAD" or status in _BODYLESS_STATUS or status < 200
    whole = b"" if bodiless else response.whole_body()
    if whole is not None:
        copy.keep(whole)
        await send({"type": "http.response.body", "body": whole, "more_body": False})
        lease.body_complete = True
        copy.complete()
        return
    watcher: asyncio.Task[None] | None = None
    try:
        async for chunk in response.chunks():
            if watcher is None:
                # Only a body of several chunks can outlive its client; watch for that from here.
                watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
            elif watcher.done():
                raise ClientDisconnected("client went away during the response body")
            copy.keep(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        lease.body_complete = True
        copy.complete()
    except UpstreamError as failure:
        trace.error = failure
        lease.upstream_failed = True
        raise ResponseAborted(f"{failure.reason.flag} from {trace.upstream} mid-body") from failure
    finally:
        if watcher is not None:
            watcher.cancel()


def _early_hints_relay(scope: dict[str, Any], extensions: dict[str, Any]) -> InterimHandler | None:
    """Passes an upstream's 103 Early Hints on to the client, when the listener can send them."""
    if EARLY_HINTS_EXTENSION not in extensions:
        return None
    return _EarlyHints(scope, extensions[EARLY_HINTS_EXTENSION]).relay


class _EarlyHints:
    __slots__ = ("scope", "send_hints")

    def __init__(self, scope: dict[str, Any], send_hints: Any) -> None:
        self.scope = scope
        self.send_hints = send_hints

    def relay(self, status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        self.send_hints(self.scope, client_response_headers(raw_headers, status))


async def _wait_for_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
