"""Sending one request upstream: retries on the chosen upstream, then the fallback when that is safe.

Each upstream tried is an UpstreamLease (lease.py). `run()` returns the lease that holds the
answer, still open, for the pipeline to stream and close; a lease that yields no answer is
closed here, whatever ended it (an error, a refusal, the route's deadline, a cancellation).
"""

from __future__ import annotations

import asyncio

from resilience.retry import call_with_retries

from .body import RequestBody
from .errors import BulkheadFull, CircuitOpen, Reason, UpstreamError
from .forward import InterimHandler, UpstreamResponse
from .lease import UpstreamLease
from .outcome import RequestTrace
from .recorder import Recorder
from .runtime import RouteRuntime, Runtime

_REFUSALS = (CircuitOpen, BulkheadFull)


class Forwarder:
    __slots__ = ("runtime", "route_rt", "route", "method", "target", "headers", "body", "trace", "recorder",
                 "early_hints", "abandoned", "upgrade")

    def __init__(self, runtime: Runtime, route_rt: RouteRuntime, method: str, target: str,
                 headers: list[tuple[bytes, bytes]], body: RequestBody, trace: RequestTrace, recorder: Recorder,
                 early_hints: InterimHandler | None = None) -> None:
        self.runtime = runtime
        self.route_rt = route_rt
        self.route = route_rt.route
        self.method = method
        self.target = target
        self.headers = headers
        self.body = body
        self.trace = trace
        self.recorder = recorder
        self.early_hints = early_hints
        # Set before cancelling a request whose answer is no longer wanted (a composite answer that
        # another part decided): its upstream is not to blame, as it is for the route's deadline.
        self.abandoned = False
        self.upgrade = False         # a WebSocket handshake: a 101 is an answer

    async def run(self, chosen: str) -> UpstreamLease:
        """Send under the route's deadline."""
        timeout_s = self.route.timeout_s
        if timeout_s is None:
            return await self.send(chosen)
        try:
            async with asyncio.timeout(timeout_s):
                return await self.send(chosen)
        except TimeoutError:
            raise UpstreamError(f"no response within the route's timeout of {timeout_s:g}s", reason=Reason.TIMEOUT,
                                route=self.route.name, upstream=self.trace.upstream) from None

    async def send(self, chosen: str) -> UpstreamLease:
        """Send to `chosen`, then the fallback when that is safe, under the caller's own deadline."""
        fallback = self.route.fallback
        if fallback is None or fallback == chosen:
            return await self._try_upstream(chosen)
        if self.route_rt.breakers[chosen].is_open():
            self._count_fallback(chosen, fallback, Reason.CIRCUIT_OPEN.flag)
            return await self._try_upstream(fallback)
        # The fallback runs after the except blocks, so that its own errors do not carry this one.
        try:
            lease = await self._try_upstream(chosen)
        except _REFUSALS as refusal:
            reason = refusal.reason.flag
        except UpstreamError as failure:
            if not self._replayable(failure.reached_upstream):
                raise
            reason = failure.reason.flag
        else:
            status = lease.response.status if lease.response is not None else 0
            if status not in self.route.retry.retry_on_statuses or not self._replayable(True):
                return lease
            lease.close()
            reason = "http_5xx"
        self._count_fallback(chosen, fallback, reason)
        return await self._try_upstream(fallback)

    def _replayable(self, reached_upstream: bool) -> bool:
        # A request the upstream may have acted on goes elsewhere only if repeating it is harmless.
        if reached_upstream and self.method not in self.route.retry.methods:
            return False
        return self.body.replayable

    def _count_fallback(self, from_upstream: str, to_upstream: str, reason: str) -> None:
        self.recorder.fallback(self.route.name, from_upstream, to_upstream, reason)
        self.trace.fallback_reason = reason

    async def _try_upstream(self, name: str) -> UpstreamLease:
        trace = self.trace
        trace.upstream = name
        trace.upstream_attempts = 0
        lease = UpstreamLease.acquire(self.runtime.upstreams[name], self.route_rt.breakers[name], self.recorder,
                                      self.route.name)
        try:
            lease.state.budget.record_request()
            await call_with_retries(
                lambda number: self._attempt(lease, number),
                self.route.retry,
                lambda result, error: self._should_retry(lease, result, error),
            )
        except BaseException:
            lease.close()
            raise
        return lease

    async def _attempt(self, lease: UpstreamLease, number: int) -> UpstreamResponse:
        state = lease.state
        pair = self.route_rt.pairs[state.upstream.name]
        permit = lease.begin_attempt(self.route.name)
        self.trace.attempts += 1
        self.trace.upstream_attempts += 1
        retry = number > 1
        try:
            if self.upgrade:
                response = await state.client.send(self.method, self.target, self.headers, self.body.for_attempt(),
                                                   route=self.route.name, on_interim=self.early_hints, upgrade=True)
            else:
                response = await state.client.send(self.method, self.target, self.headers, self.body.for_attempt(),
                                                   route=self.route.name, on_interim=self.early_hints)
        except UpstreamError as error:
            permit.record_failure()
            self.recorder.attempt(pair, _attempt_outcome(error.reason), retry=retry)
            error.route = self.route.name
            raise
        except asyncio.CancelledError:
            if self.abandoned:
                permit.release()
                raise
            # The route's deadline ran out while this attempt waited.
            permit.record_failure()
            self.recorder.attempt(pair, "timeout", retry=retry)
            raise
        except BaseException:
            permit.release()      # the client's doing (gone, body too large): not the upstream's fault
            raise
        lease.response = response
        if response.status >= 500:
            permit.record_failure()
            self.recorder.attempt(pair, "http_5xx", retry=retry)
        else:
            # Success is only known once the body has arrived whole (the lease settles it then):
            # an upstream that dies mid-body must still open its breaker.
            self.recorder.attempt(pair, "ok", retry=retry)
        return response

    def _should_retry(self, lease: UpstreamLease, result: UpstreamResponse | None, error: BaseException | None) -> bool:
        policy = self.route.retry
        if self.trace.upstream_attempts >= policy.attempts:
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
        if lease.breaker.is_open() or not lease.state.budget.try_spend():
            return False
        lease.discard_response()       # an answer we will not use
        return True


def _attempt_outcome(reason: Reason) -> str:
    if reason is Reason.CONNECT_ERROR:
        return "connect_error"
    if reason in (Reason.TIMEOUT, Reason.CONNECT_TIMEOUT):
        return "timeout"
    return reason.flag
