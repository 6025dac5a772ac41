"""The outbox relay: delivers each written event to every subscriber, at least once, in order per aggregate.

One relay per process, started and stopped with the app. Each subscriber gets its
own ServiceClient (a breaker, a retry budget and timeouts) and its own
place in the outbox. A failed delivery waits with exponential backoff and jitter;
after `relay_max_attempts` failures, or at once when the subscriber rejects the
event (a 4xx), it becomes a dead letter and the log says why.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from resilience.errors import CallFailed, CircuitOpen
from resilience.policy import BreakerPolicy, RetryPolicy
from resilience.retry import backoff_s
from resilience.service_client import ServiceClient

from domain_events import outbox
from domain_events.metrics import EventMetrics
from domain_events.wiring import Wiring

log = logging.getLogger("strangler.outbox")

BATCH = 200            # heads looked at per subscriber and round
CONCURRENCY = 8        # deliveries in flight per subscriber (different aggregates)
_NOT_RETRIED = frozenset({408, 425, 429})   # 4xx answers that mean "later", not "never"


class OutboxRelay:
    """Polls the outbox and posts events to each subscriber's /events/."""

    def __init__(self, database: Any, *, source: str, wiring: Wiring, metrics: EventMetrics,
                 clock: Callable[[], float] = time.time) -> None:
        self.database = database
        self.source = source
        self.wiring = wiring
        self.metrics = metrics
        self.subscribers = dict(wiring.publish_to)
        self._clock = clock
        self._redelivery = RetryPolicy(backoff_initial_s=wiring.relay_backoff_initial_s,
                                       backoff_max_s=wiring.relay_backoff_max_s)
        self._clients: dict[str, ServiceClient] = {}
        self._floors = dict.fromkeys(self.subscribers, 0)   # every event at or below is finished
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._pruned_at: float | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start delivering (in the running event loop); a no-op while running."""
        if self.running or not self.subscribers:
            return
        self._floors = dict.fromkeys(self.subscribers, 0)   # a fresh start trusts only the database
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"outbox-relay-{self.source}")
        log.info("outbox.relay_started source=%s subscribers=%s", self.source, ",".join(self.subscribers))

    async def stop(self) -> None:
        """Stop delivering; events written meanwhile wait in the outbox for the next start."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            log.info("outbox.relay_stopped source=%s", self.source)

    async def close(self) -> None:
        await self.stop()
        for client in self._clients.values():
            await client.close()
        self._clients.clear()

    def wake(self) -> None:
        """Look for events now rather than at the next tick (call from the event loop)."""
        if self._wake is not None:
            self._wake.set()

    def rewind(self) -> None:
        """Look at the whole outbox again (after a dead letter was put back in the queue)."""
        self._floors = dict.fromkeys(self.subscribers, 0)
        self.wake()

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            try:
                await asyncio.gather(*(self._round(name) for name in self.subscribers))
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("outbox.relay_error source=%s", self.source)
            now = self._clock()
            if self._pruned_at is None or now - self._pruned_at >= self.wiring.prune_interval_s:
                self._pruned_at = now
                try:
                    await asyncio.to_thread(self._prune, now)
                except Exception:
                    log.exception("outbox.prune_error source=%s", self.source)
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.wiring.relay_interval_s)
            except TimeoutError:
                pass

    async def _round(self, subscriber: str) -> None:
        heads, unfinished, ceiling = await asyncio.to_thread(self._heads, subscriber)
        self.metrics.outbox_pending.labels(subscriber).set(unfinished)
        # The oldest unfinished event is always a head; nothing below it needs looking at again.
        self._floors[subscriber] = heads[0].seq - 1 if heads else ceiling
        now = self._clock()
        due = [event for event in heads if event.next_attempt_at <= now]
        if not due:
            return
        client = self._client(subscriber)
        slots = asyncio.Semaphore(CONCURRENCY)

        async def deliver(event: outbox.PendingEvent) -> None:
            async with slots:
                await self._deliver(client, subscriber, event)

        await asyncio.gather(*(deliver(event) for event in due))

    def _prune(self, now: float) -> None:
        before = datetime.fromtimestamp(now - self.wiring.retention_s, timezone.utc).isoformat(timespec="milliseconds")
        with self.database.transaction() as conn:
            events, processed = outbox.prune(conn, self.subscribers, before=before)
        if events or processed:
            self.metrics.outbox_pruned.labels("events").inc(events)
            self.metrics.outbox_pruned.labels("processed_ids").inc(processed)
            log.info("outbox.pruned source=%s events=%d processed_ids=%d before=%s", self.source, events, processed,
                     before)

    def _heads(self, subscriber: str) -> tuple[list[outbox.PendingEvent], int, int]:
        with self.database.reading() as conn:
            return outbox.pending_heads(conn, subscriber, floor=self._floors[subscriber], limit=BATCH)

    def _client(self, subscriber: str) -> ServiceClient:
        if subscriber not in self._clients:
            headers = [("Authorization", f"Bearer {self.wiring.events_token}")] if self.wiring.events_token else []
            self._clients[subscriber] = ServiceClient(
                subscriber, self.subscribers[subscriber], timeout_s=self.wiring.call_timeout_s,
                connect_timeout_s=self.wiring.call_connect_timeout_s,
                # The relay keeps its own, persistent schedule of retries; one attempt per round.
                retry=RetryPolicy(attempts=1),
                breaker=BreakerPolicy(recovery_timeout_s=self.wiring.breaker_recovery_timeout_s),
                headers=headers, on_attempt=self.metrics.client_observer(subscriber),
            )
        return self._clients[subscriber]

    async def _deliver(self, client: ServiceClient, subscriber: str, event: outbox.PendingEvent) -> None:
        try:
            status, body = await client.request_json("POST", "/events/", json=event.message(self.source),
                                                     idempotency_key=event.event_id)
        except CircuitOpen:
            return      # nothing was sent: not an attempt; the breaker's half-open trials probe for us
        except CallFailed as error:
            await self._failed(subscriber, event, error.reason.flag, error.detail)
            return
        if 200 <= status < 300:
            await asyncio.to_thread(self._write, outbox.mark_delivered, event, subscriber)
            self.metrics.outbox_delivered.labels(subscriber).inc()
        elif 400 <= status < 500 and status not in _NOT_RETRIED:
            await self._dead(subscriber, event, f"{subscriber} rejected it with HTTP {status}: {_detail(body)}")
        else:
            await self._failed(subscriber, event, f"http_{status}", f"HTTP {status}: {_detail(body)}")

    async def _failed(self, subscriber: str, event: outbox.PendingEvent, flag: str, detail: str) -> None:
        self.metrics.outbox_failures.labels(subscriber, flag).inc()
        attempts = event.attempts + 1
        if attempts >= self.wiring.relay_max_attempts:
            await self._dead(subscriber, event, f"{attempts} failed attempts, the last: {detail}")
            return
        delay_s = backoff_s(self._redelivery, attempts)
        await asyncio.to_thread(self._write, outbox.mark_failed, event, subscriber,
                                next_attempt_at=self._clock() + delay_s, error=detail)
        log.info("outbox.retry event=%s type=%s subscriber=%s attempt=%d in_s=%.2f error=%s",
                 event.event_id, event.type, subscriber, attempts, delay_s, detail)

    async def _dead(self, subscriber: str, event: outbox.PendingEvent, reason: str) -> None:
        await asyncio.to_thread(self._write, outbox.mark_dead, event, subscriber, source=self.source, reason=reason)
        self.metrics.outbox_dead_letters.labels(subscriber).inc()
        log.error("outbox.dead_letter event=%s type=%s aggregate=%s subscriber=%s reason=%s",
                  event.event_id, event.type, event.aggregate, subscriber, reason)

    def _write(self, mark: Callable[..., None], *args: Any, **kwargs: Any) -> None:
        with self.database.transaction() as conn:
            mark(conn, *args, **kwargs)


def _detail(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("error") or body)
    return str(body)[:200] if body is not None else "(no body)"
