"""The data path, in the order a request meets it:

match route -> choose upstream (split, sticky) -> breaker open? fallback
  -> bulkhead -> breaker permit -> retry -> forward -> stream -> record
"""

from __future__ import annotations

import asyncio
from typing import Any

from resilience.retry import call_with_retries

from .body import RequestBody
from .config.model import Config
from .errors import (
    BulkheadFull, CircuitOpen, ClientDisconnected, NoRoute, ProxyError, Reason, UpstreamError,
)
from .exchange import Exchange
from .forward import InterimHandler, UpstreamResponse
from .headers import (
    EARLY_HINTS_EXTENSION, check_host, client_address, client_response_headers, is_trusted, request_framing,
    upstream_request_headers,
)
from .paths import normalize_path, strip_prefix
from .routing import RequestHead, check_method
from .runtime import RouteRuntime, Runtime, UpstreamState
from .sticky import cohort_set_cookie, sticky_key

_BODYLESS_STATUS = frozenset({204, 304})
_REFUSALS = (CircuitOpen, BulkheadFull)


class ResponseAborted(Exception):
    """The upstream failed mid-body: the client's response must end as broken, never as complete."""


async def handle(runtime: Runtime, scope: dict[str, Any], receive: Any, send: Any, exchange: Exchange) -> None:
    """Proxy one HTTP request. Proxy-made answers are raised as ProxyError for the caller to render."""
    config = runtime.config
    raw_path: bytes = scope.get("raw_path") or scope["path"].encode("utf-8")
    query: bytes = scope.get("query_string", b"")
    raw_headers = scope["headers"]
    check_method(scope["method"])
    check_host(raw_headers, scope.get("http_version", "1.1"))
    head = RequestHead(scope["method"], normalize_path(raw_path), raw_headers)

    route_rt = runtime.match(head)
    if route_rt is None:
        raise NoRoute(f"no route matches {head.method} {head.path}")
    route = route_rt.route
    exchange.route = route.name

    framing = request_framing(raw_headers)
    max_body = route.max_body_bytes if route.max_body_bytes is not None else config.limits.max_body_bytes
    if framing.content_length is not None and framing.content_length > max_body:
        raise ProxyError(f"request body of {framing.content_length} bytes is over the limit of {max_body}",
                         reason=Reason.BODY_TOO_LARGE, route=route.name)

    peer = scope["client"][0] if scope.get("client") else None
    trusted = is_trusted(peer, config.trusted_proxies)
    client_ip = client_address(peer, raw_headers, config.trusted_proxies) if trusted else peer
    if route_rt.split.is_split:
        key = sticky_key(route.sticky, head, client_ip)
        assignment = route_rt.split.choose(key.key)
        exchange.new_cohort = key.new_cohort
        exchange.sticky_bucket = assignment.bucket
    else:
        assignment = route_rt.split.choose(None)

    # X-Forwarded-For gets the hop the proxy saw (the peer), not the client address resolved from
    # the header itself: that would repeat the last hop and drop the trusted proxy's address.
    upstream_headers = upstream_request_headers(
        raw_headers, client_ip=peer, scheme=scope.get("scheme", "http"), trusted_client=trusted,
    )
    # One X-Request-ID, the proxy's (the client's own when it was sane): headers.py drops the client's.
    upstream_headers.append((b"X-Request-ID", exchange.request_id.encode("ascii")))
    if framing.content_length is not None:
        upstream_headers.append((b"Content-Length", b"%d" % framing.content_length))
    path = strip_prefix(head.path, route.match.path) if route.strip_prefix else head.path
    target = path + "?" + query.decode("latin-1") if query else path

    body = RequestBody(receive, framing, max_bytes=max_body, idle_timeout_s=config.limits.body_idle_timeout_s)
    if body.small and framing.content_length:
        await body.read_small()

    forwarder = _Forwarder(runtime, route_rt, head.method, target, upstream_headers, body, exchange,
                           _early_hints_relay(scope))
    response = await forwarder.run(assignment.upstream)
    secure = scope.get("scheme") == "https" or (trusted and head.header("x-forwarded-proto") == "https")
    await _stream(response, head.method, config, send, receive, exchange, secure)


class _Forwarder:
    """Sends one request to its chosen upstream, with retries, and to the fallback when that is safe."""

    __slots__ = ("runtime", "route_rt", "route", "method", "target", "headers", "body", "exchange", "_holding",
                 "early_hints")

    def __init__(self, runtime: Runtime, route_rt: RouteRuntime, method: str, target: str,
                 headers: list[tuple[bytes, bytes]], body: RequestBody, exchange: Exchange,
                 early_hints: InterimHandler | None = None) -> None:
        self.runtime = runtime
        self.route_rt = route_rt
        self.route = route_rt.route
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.exchange = exchange
        self.early_hints = early_hints

    async def run(self, chosen: str) -> UpstreamResponse:
        timeout_s = self.route.timeout_s
        if timeout_s is None:
            return await self._with_fallback(chosen)
        try:
            async with asyncio.timeout(timeout_s):
                return await self._with_fallback(chosen)
        except TimeoutError:
            raise UpstreamError(f"no response within the route's timeout of {timeout_s:g}s", reason=Reason.TIMEOUT,
                                route=self.route.name, upstream=self.exchange.upstream) from None

    async def _with_fallback(self, chosen: str) -> UpstreamResponse:
        fallback = self.route.fallback
        if fallback is None or fallback == chosen:
            return await self._try_upstream(chosen)
        if self.route_rt.breakers[chosen].is_open():
            self._count_fallback(chosen, fallback, Reason.CIRCUIT_OPEN.flag)
            return await self._try_upstream(fallback)
        # The fallback runs after the except blocks, so that its own errors do not carry this one.
        try:
            response = await self._try_upstream(chosen)
        except _REFUSALS as refusal:
            reason = refusal.reason.flag
        except UpstreamError as failure:
            if not self._replayable(failure.reached_upstream):
                raise
            reason = failure.reason.flag
        else:
            if response.status not in self.route.retry.retry_on_statuses or not self._replayable(True):
                return response
            response.finish(complete=False)
            reason = "http_5xx"
        self._count_fallback(chosen, fallback, reason)
        return await self._try_upstream(fallback)

    def _replayable(self, reached_upstream: bool) -> bool:
        # A request the upstream may have acted on goes elsewhere only if repeating it is harmless.
        if reached_upstream and self.method not in self.route.retry.methods:
            return False
        return self.body.replayable

    def _count_fallback(self, from_upstream: str, to_upstream: str, reason: str) -> None:
        self.exchange.metrics.fallbacks.labels(self.route.name, from_upstream, to_upstream, reason).inc()
        self.exchange.fallback_reason = reason

    async def _try_upstream(self, name: str) -> UpstreamResponse:
        exchange = self.exchange
        exchange.release_upstream()
        exchange.upstream = name
        state = self.runtime.upstreams[name]
        breaker = self.route_rt.breakers[name]
        if breaker.is_open():
            raise CircuitOpen(f"circuit open for {name}", route=self.route.name, upstream=name,
                              retry_after_s=breaker.retry_after_s())
        if not state.bulkhead.try_acquire():
            exchange.metrics.bulkhead_rejections.labels(name).inc()
            raise BulkheadFull(f"{name} has {state.bulkhead.max_concurrent} requests in flight",
                               route=self.route.name, upstream=name, retry_after_s=1)
        exchange.hold_upstream(state)
        state.budget.record_request()
        return await call_with_retries(
            lambda number: self._attempt(state, number),
            self.route.retry,
            lambda result, error: self._should_retry(state, result, error),
        )

    async def _attempt(self, state: UpstreamState, number: int) -> UpstreamResponse:
        name = state.upstream.name
        pair = self.route_rt.pairs[name]
        permit = self.route_rt.breakers[name].try_acquire()
        if permit is None:
            raise CircuitOpen(f"circuit open for {name}", route=self.route.name, upstream=name,
                              retry_after_s=self.route_rt.breakers[name].retry_after_s())
        self.exchange.count_attempt()
        if number > 1:
            pair.retries.inc()
        try:
            response = await state.client.send(self.method, self.target, self.headers, self.body.for_attempt(),
                                               route=self.route.name, on_interim=self.early_hints)
        except UpstreamError as error:
            permit.record_failure()
            pair.attempt(_attempt_outcome(error.reason))
            error.route = self.route.name
            raise
        except asyncio.CancelledError:
            # The route's deadline ran out while this attempt waited.
            permit.record_failure()
            pair.attempt("timeout")
            raise
        except BaseException:
            permit.release()      # the client's doing (gone, body too large): not the upstream's fault
            raise
        if response.status >= 500:
            permit.record_failure()
            pair.attempt("http_5xx")
        else:
            # Success is only known once the body has arrived whole: an upstream that
            # dies mid-body must still open its breaker.
            self.exchange.permit = permit
            pair.attempt("ok")
        return response

    def _should_retry(self, state: UpstreamState, result: UpstreamResponse | None, error: BaseException | None) -> bool:
        policy = self.route.retry
        if self.exchange.upstream_attempts >= policy.attempts:
            return False
        if error is not None:
            if not isinstance(error, UpstreamError):
                return False
            if error.reason in (Reason.CONNECT_ERROR, Reason.UPSTREAM_RESET):
                # A reset before any answer is mostly a pooled connection the upstream had
                # just closed; as the request may have reached it, only replayable methods retry.
                wanted = policy.retry_on_connect_error
            elif error.reason in (Reason.TIMEOUT, Reason.CONNECT_TIMEOUT):
                wanted = policy.retry_on_timeout
            else:
                wanted = False
            if not wanted or not self._replayable(error.reached_upstream):
                return False
        elif result is None or result.status not in policy.retry_on_statuses or not self._replayable(True):
            return False
        if self.route_rt.breakers[state.upstream.name].is_open() or not state.budget.try_spend():
            return False
        if result is not None:
            result.finish(complete=False)      # an answer we will not use
        return True


def _attempt_outcome(reason: Reason) -> str:
    if reason is Reason.CONNECT_ERROR:
        return "connect_error"
    if reason in (Reason.TIMEOUT, Reason.CONNECT_TIMEOUT):
        return "timeout"
    return reason.flag


async def _stream(response: UpstreamResponse, method: str, config: Config, send: Any, receive: Any,
                  exchange: Exchange, secure: bool) -> None:
    status = response.status
    # Upstreams often echo X-Request-ID: headers.py drops theirs, the client gets it once, as logged.
    headers = client_response_headers(response.raw_headers, status)
    if config.expose_headers:
        headers.append((b"x-strangler-route", exchange.route.encode()))
        headers.append((b"x-strangler-upstream", exchange.upstream.encode()))
    headers.append((b"x-request-id", exchange.request_id.encode()))
    if exchange.new_cohort is not None:
        headers.append((b"set-cookie", cohort_set_cookie(exchange.new_cohort, secure)))
    complete = False
    watcher: asyncio.Task[None] | None = None
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        exchange.status = status
        bodiless = method == "HEAD" or status in _BODYLESS_STATUS or status < 200
        whole = b"" if bodiless else response.whole_body()
        if whole is not None:
            await send({"type": "http.response.body", "body": whole, "more_body": False})
            complete = True
            return
        chunks = response.chunks()
        try:
            async for chunk in chunks:
                if watcher is None:
                    # Only a body of several chunks can outlive its client; watch for that from here.
                    watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
                elif watcher.done():
                    raise ClientDisconnected("client went away during the response body")
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except UpstreamError as failure:
            exchange.error = failure
            if exchange.permit is not None:
                exchange.permit.record_failure()
            raise ResponseAborted(f"{failure.reason.flag} from {exchange.upstream} mid-body") from failure
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        complete = True
    finally:
        if exchange.permit is not None:
            if complete:
                exchange.permit.record_success()
            exchange.permit.release()     # resolves once: neutral only if nothing above settled it
        if watcher is not None:
            watcher.cancel()
        exchange.body_complete = complete
        response.finish(complete=complete)


def _early_hints_relay(scope: dict[str, Any]) -> InterimHandler | None:
    """Passes an upstream's 103 Early Hints on to the client, when the listener can send them."""
    send_hints = scope.get("extensions", {}).get(EARLY_HINTS_EXTENSION)
    if send_hints is None:
        return None

    def relay(status: int, raw_headers: list[tuple[bytes, bytes]]) -> None:
        send_hints(scope, client_response_headers(raw_headers, status))

    return relay


async def _wait_for_disconnect(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
