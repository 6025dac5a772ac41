"""One upstream's share of a request: its bulkhead slot, a breaker permit per attempt, the answer's connection.

A lease is taken when a request is sent to an upstream (the chosen one, then maybe the
fallback) and closed once, by whoever holds it last: the forwarder when no answer comes
of it, the pipeline when the answer's body has been streamed (or not). `close()` settles
all three on every path (success, upstream error, client gone, cancellation), so no stage
releases anything itself.

    acquire ──> attempt (permit) ──> failed: permit settled as failure, maybe another attempt
       │                        └──> answered: response kept (a 5xx's permit already failed)
       └──────────────────────────────> close(): permit (success / failure / neutral),
                                        connection (pooled only when complete), slot
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from resilience.breaker import BreakerPermit, CircuitBreaker

from .errors import BulkheadFull, CircuitOpen
from .forward import UpstreamResponse

if TYPE_CHECKING:
    from .recorder import Recorder
    from .runtime import UpstreamState


class UpstreamLease:
    """Owns what one upstream lends a request; `close()` gives all of it back, exactly once."""

    __slots__ = ("state", "breaker", "response", "body_complete", "upstream_failed", "_permit", "_recorder",
                 "_closed")

    def __init__(self, state: UpstreamState, breaker: CircuitBreaker, recorder: Recorder) -> None:
        self.state = state
        self.breaker = breaker
        self.response: UpstreamResponse | None = None
        self.body_complete = False       # the answer reached the client whole
        self.upstream_failed = False     # the upstream failed after its head (mid-body)
        self._permit: BreakerPermit | None = None
        self._recorder = recorder
        self._closed = False

    @classmethod
    def acquire(cls, state: UpstreamState, breaker: CircuitBreaker, recorder: Recorder, route: str) -> UpstreamLease:
        """Take the upstream's bulkhead slot, unless its breaker is open or the bulkhead is full."""
        name = state.upstream.name
        if breaker.is_open():
            raise CircuitOpen(f"circuit open for {name}", route=route, upstream=name,
                              retry_after_s=breaker.retry_after_s())
        if not state.bulkhead.try_acquire():
            recorder.bulkhead_rejected(name)
            raise BulkheadFull(f"{name} has {state.bulkhead.max_concurrent} requests in flight",
                               route=route, upstream=name, retry_after_s=1)
        recorder.upstream_busy(name, 1)
        return cls(state, breaker, recorder)

    def begin_attempt(self, route: str) -> BreakerPermit:
        """The breaker's leave for one more attempt (the previous attempt's permit is settled by now)."""
        permit = self.breaker.try_acquire()
        if permit is None:
            name = self.state.upstream.name
            raise CircuitOpen(f"circuit open for {name}", route=route, upstream=name,
                              retry_after_s=self.breaker.retry_after_s())
        self._permit = permit
        return permit

    def discard_response(self) -> None:
        """An answer that will not be used (retried, or handed to the fallback): its connection is not reused."""
        response, self.response = self.response, None
        if response is not None:
            response.finish(complete=False)

    def take_upgraded(self) -> tuple[asyncio.Transport, bytes]:
        """After a 101: the connection leaves for its tunnel, and the breaker counts the handshake a
        success now (a tunnel may stay open for hours; a half-open breaker must not wait for it).
        The bulkhead slot stays taken until close(), at the tunnel's end."""
        response, self.response = self.response, None
        assert response is not None and response.status == 101
        try:
            taken = response.take_transport(self.state.upstream.name)
        except BaseException:
            self.upstream_failed = True
            raise
        self.body_complete = True
        permit, self._permit = self._permit, None
        if permit is not None:
            permit.record_success()
            permit.release()
        return taken

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        permit, self._permit = self._permit, None
        if permit is not None:
            # A permit settled at its attempt (an error, a 5xx) ignores these.
            if self.upstream_failed:
                permit.record_failure()
            elif self.body_complete:
                permit.record_success()
            permit.release()          # neutral when nothing above settled it: the client went away
        response, self.response = self.response, None
        if response is not None:
            response.finish(complete=self.body_complete)
        self.state.bulkhead.release()
        self._recorder.upstream_busy(self.state.upstream.name, -1)

