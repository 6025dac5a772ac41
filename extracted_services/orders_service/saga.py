"""The order saga: reserve stock in inventory_service, charge through the payments API, confirm.

A step that fails for good (no stock, payment declined) compensates the steps
before it in reverse: release the stock, refund the charge. A step whose service is
unavailable runs again after a pause, up to `saga_step_attempts` rounds, then
compensates; compensation keeps trying for `saga_compensation_attempts` rounds,
then the saga is dead-lettered. Every call carries an idempotency key derived from
the order, so running a step again after a crash or a timeout never reserves or
charges twice, and undoing is by key too: a late step can never overtake its undo.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from resilience.errors import CallError
from resilience.policy import BreakerPolicy, RetryPolicy
from resilience.retry import backoff_s
from resilience.service_client import ServiceClient

from domain_events.metrics import EventMetrics
from domain_events.wiring import Wiring
from extracted_services.orders_service import sagas
from extracted_services.orders_service.sagas import Saga

log = logging.getLogger("strangler.saga")

# Until payments is extracted, charges go to the monolith's payments API.
DEFAULT_PEERS = {"inventory": "http://127.0.0.1:8102", "payments": "http://127.0.0.1:8001"}


class StepFailed(Exception):
    """A definitive refusal: the saga compensates. `kind` names why (insufficient_stock, payment_declined...)."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind, self.detail = kind, detail


class Unavailable(Exception):
    """The service could not be asked (down, breaker open, 5xx): the step may run again later."""


class SagaRunner:
    """Runs each saga as a task of its own; resumes the unfinished ones when the service starts."""

    def __init__(self, database: Any, wiring: Wiring, metrics: EventMetrics) -> None:
        self.database = database
        self.wiring = wiring
        self.metrics = metrics
        self.inventory = self._client("inventory")
        self.payments = self._client("payments")
        self._step_retry = RetryPolicy(backoff_initial_s=wiring.saga_retry_initial_s,
                                       backoff_max_s=wiring.saga_retry_max_s)
        self._tasks: dict[int, asyncio.Task[Saga]] = {}
        self.on_transition: Callable[[Saga], None] = lambda saga: None   # after each step (the app wakes its relay)

    def _client(self, peer: str) -> ServiceClient:
        w = self.wiring
        return ServiceClient(peer, w.peer(peer, DEFAULT_PEERS[peer]), timeout_s=w.call_timeout_s,
                             connect_timeout_s=w.call_connect_timeout_s,
                             retry=RetryPolicy(attempts=w.call_attempts, backoff_initial_s=0.05, backoff_max_s=0.5),
                             breaker=BreakerPolicy(recovery_timeout_s=w.breaker_recovery_timeout_s),
                             on_attempt=self.metrics.client_observer(peer))

    def run(self, order_id: int) -> asyncio.Task[Saga]:
        """The saga's task, started if it is not running already."""
        task = self._tasks.get(order_id)
        if task is None or task.done():
            task = asyncio.get_running_loop().create_task(self._drive(order_id), name=f"saga-{order_id}")
            self._tasks[order_id] = task
            task.add_done_callback(lambda done: self._tasks.pop(order_id, None) if self._tasks.get(order_id) is done
                                   else None)
        return task

    async def recover(self) -> list[int]:
        """Resume every saga a previous process left unfinished."""
        order_ids = await asyncio.to_thread(sagas.unfinished, self.database)
        for order_id in order_ids:
            log.warning("saga.resumed order=%d", order_id)
            self.run(order_id)
        return order_ids

    async def close(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.inventory.close()
        await self.payments.close()

    async def _drive(self, order_id: int) -> Saga:
        while True:
            saga = await asyncio.to_thread(sagas.load, self.database, order_id)
            if saga.finished:
                return saga
            try:
                await self._step(saga)
            except StepFailed as failure:
                self.metrics.saga_step_failures.labels(saga.state, failure.kind).inc()
                log.warning("saga.compensating order=%d failed_in=%s kind=%s reason=%s", order_id, saga.state,
                            failure.kind, failure.detail)
                await asyncio.to_thread(sagas.begin_compensation, self.database, saga, failure.kind, failure.detail)
            except Unavailable as unavailable:
                await self._unavailable(saga, str(unavailable))
            except sagas.StaleSaga:
                continue
            self.on_transition(saga)

    async def _step(self, saga: Saga) -> None:
        if saga.state == sagas.STARTED:
            await self._reserve_stock(saga)
            await asyncio.to_thread(sagas.advance, self.database, saga, sagas.STOCK_RESERVED)
        elif saga.state == sagas.STOCK_RESERVED:
            payment_id = await self._charge(saga)
            await asyncio.to_thread(sagas.advance, self.database, saga, sagas.CHARGED, payment_id=payment_id)
        elif saga.state == sagas.CHARGED:
            await asyncio.to_thread(sagas.complete, self.database, saga)
            self._finished(saga, "completed")
        elif saga.state == sagas.COMPENSATING:
            payment_id = await self._compensate(saga)
            await asyncio.to_thread(sagas.compensated, self.database, saga, payment_id=payment_id)
            self._finished(saga, "compensated", saga.failure or "")

    def _finished(self, saga: Saga, outcome: str, reason: str = "") -> None:
        self.metrics.saga_completed.labels(outcome).inc()
        log.info("saga.%s order=%d%s", outcome, saga.order_id, f" reason={reason}" if reason else "")

    async def _unavailable(self, saga: Saga, detail: str) -> None:
        failures = saga.step_failures + 1
        compensating = saga.state == sagas.COMPENSATING
        self.metrics.saga_step_failures.labels(saga.state, "unavailable").inc()
        limit = self.wiring.saga_compensation_attempts if compensating else self.wiring.saga_step_attempts
        if failures >= limit:
            if compensating:
                reason = f"compensation failed {failures} times, the last: {detail}"
                await asyncio.to_thread(sagas.dead, self.database, saga, reason)
                self.metrics.saga_dead_letters.inc()
                self.metrics.saga_completed.labels("dead").inc()
                log.error("saga.dead_letter order=%d failed_in=%s reason=%s", saga.order_id, saga.failed_in, reason)
            else:
                log.warning("saga.compensating order=%d failed_in=%s kind=unavailable reason=%s", saga.order_id,
                            saga.state, detail)
                await asyncio.to_thread(sagas.begin_compensation, self.database, saga, "unavailable",
                                        f"{saga.state}: tried {failures} times, the last: {detail}")
            return
        await asyncio.to_thread(sagas.step_failed, self.database, saga, detail)
        pause_s = backoff_s(self._step_retry, failures)
        log.info("saga.retry order=%d state=%s failures=%d in_s=%.2f reason=%s", saga.order_id, saga.state,
                 failures, pause_s, detail)
        await asyncio.sleep(pause_s)

    # The steps. Each returns normally, or raises StepFailed or Unavailable.

    async def _reserve_stock(self, saga: Saga) -> None:
        for sku, quantity in saga.lines:
            status, body = await call_service(
                self.inventory, "POST", f"/api/inventory/{quote(sku, safe='')}/reserve/",
                {"quantity": quantity, "order_id": saga.order_id}, idempotency_key=saga.reservation_key(sku))
            if status == 404:
                raise StepFailed("unknown_product", _detail(body))
            if status == 409:
                raise StepFailed(_error(body, "insufficient_stock"), _detail(body))
            if status != 201:
                raise StepFailed("rejected", f"inventory answered HTTP {status}: {_detail(body)}")

    async def _charge(self, saga: Saga) -> int:
        status, body = await call_service(self.payments, "POST", "/api/payments/",
                                          {"order_id": saga.order_id, "amount_cents": saga.amount_cents,
                                           "currency": saga.currency, "method": saga.payment_method},
                                          idempotency_key=saga.charge_key)
        if status == 201 and isinstance(body, dict) and isinstance(body.get("id"), int):
            return body["id"]
        if status == 402:
            raise StepFailed("payment_declined", _detail(body))
        raise StepFailed(_error(body, "payment_rejected"), f"payments answered HTTP {status}: {_detail(body)}")

    async def _compensate(self, saga: Saga) -> int | None:
        """Undo by key, newest first: refund the charge (if one was tried), release each line's stock."""
        payment_id = None
        if saga.failed_in != sagas.STARTED:
            status, body = await call_service(self.payments, "POST", "/api/payments/refund/",
                                              {"charge_key": saga.charge_key},
                                              idempotency_key=f"{saga.charge_key}-refund")
            if status == 200 and isinstance(body, dict):
                payment_id = body.get("id")
            elif status != 404:        # 404: nothing was charged, and now nothing can be under this key
                raise Unavailable(f"refund answered HTTP {status}: {_detail(body)}")
        for sku, _ in reversed(saga.lines):
            key = saga.reservation_key(sku)
            status, body = await call_service(self.inventory, "POST", "/api/inventory/reservations/release/",
                                              {"reservation_key": key}, idempotency_key=f"{key}-release")
            if status not in (200, 404):
                raise Unavailable(f"release answered HTTP {status}: {_detail(body)}")
        return payment_id


async def call_service(client: ServiceClient, method: str, path: str, json: Any = None, *,
                       idempotency_key: str | None = None) -> tuple[int, Any]:
    """One call; an answer below 500 comes back, anything that leaves the outcome unknown is Unavailable."""
    try:
        status, body = await client.request_json(method, path, json=json, idempotency_key=idempotency_key)
    except CallError as error:          # CircuitOpen, CallFailed: the outcome is unknown, try again later
        raise Unavailable(f"{client.name}: {error.detail}") from None
    if status >= 500:
        raise Unavailable(f"{client.name} answered HTTP {status}: {_detail(body)}")
    return status, body


def _detail(body: Any) -> str:
    return str(body.get("detail") or body) if isinstance(body, dict) else str(body)[:200]


def _error(body: Any, default: str) -> str:
    return body.get("error") or default if isinstance(body, dict) else default
