"""The order saga's persistent state: every transition commits before the next remote call.

    started --stock reserved--> stock_reserved --charged--> charged --confirmed--> completed
       \\________________________________\\___ a step fails ___> compensating --> compensated
                                                                     \\-- cannot --> dead (dead letter)

A transition commits with the order's change and its event (OrderCreated,
OrderConfirmed, OrderCancelled) in one transaction; a process killed anywhere
resumes from the last committed state, and the steps' idempotency keys make
running a step again harmless.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

from domain_events.outbox import add_dead_letter, now_iso, record_event
from extracted_services.common.db import Database, next_service_id
from extracted_services.orders_service.models import Order, now_seconds, order_in

STARTED, STOCK_RESERVED, CHARGED = "started", "stock_reserved", "charged"
COMPENSATING, COMPLETED, COMPENSATED, DEAD = "compensating", "completed", "compensated", "dead"
FINISHED = frozenset({COMPLETED, COMPENSATED, DEAD})
CURRENCY = "EUR"


@dataclass(frozen=True, slots=True)
class Saga:
    order_id: int
    state: str
    payment_method: str
    amount_cents: int
    currency: str
    lines: tuple[tuple[str, int], ...]      # (sku, quantity), in the order they are reserved
    payment_id: int | None
    failed_in: str | None
    failure_kind: str | None
    failure: str | None
    step_failures: int

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def reservation_key(self, sku: str) -> str:
        return f"order-{self.order_id}-reserve-{sku}"

    @property
    def charge_key(self) -> str:
        return f"order-{self.order_id}-charge"


class StaleSaga(Exception):
    """The saga moved on meanwhile (another runner got there first); read it again."""


def create(database: Database, *, customer_email: str, lines: list[dict[str, Any]], payment_method: str,
           request_key: str | None) -> tuple[int, bool]:
    """A pending order and its saga, with OrderCreated: (order id, True), or (id, False) for a repeated key."""
    with database.transaction() as conn:
        if request_key is not None:
            row = conn.execute("SELECT order_id FROM sagas WHERE request_key = ?", (request_key,)).fetchone()
            if row is not None:
                return row["order_id"], False
        order_id = next_service_id(conn, "orders")
        created_at = now_seconds()
        total = sum(line["unit_price_cents"] * line["quantity"] for line in lines)
        conn.execute("INSERT INTO orders (id, customer_email, status, currency, total_cents, created_at)"
                     " VALUES (?, ?, 'pending', ?, ?, ?)", (order_id, customer_email.lower(), CURRENCY, total, created_at))
        conn.executemany("INSERT INTO order_lines (order_id, sku, product_name, quantity, unit_price_cents)"
                         " VALUES (?, ?, ?, ?, ?)", [(order_id, line["sku"], line["product_name"], line["quantity"],
                                                      line["unit_price_cents"]) for line in lines])
        conn.execute("INSERT INTO sagas (order_id, state, payment_method, request_key, created_at, updated_at)"
                     " VALUES (?, ?, ?, ?, ?, ?)", (order_id, STARTED, payment_method, request_key, created_at, created_at))
        record_event(conn, "OrderCreated", f"order:{order_id}", {"order": order_in(conn, order_id)})
        return order_id, True


def load(database: Database, order_id: int) -> Saga:
    with database.reading() as conn:
        return _saga(conn, order_id)


def _saga(conn: sqlite3.Connection, order_id: int) -> Saga:
    row = conn.execute("SELECT s.*, o.total_cents, o.currency FROM sagas s JOIN orders o ON o.id = s.order_id"
                       " WHERE s.order_id = ?", (order_id,)).fetchone()
    if row is None:
        raise LookupError(f"No saga for order {order_id}")
    lines = conn.execute("SELECT sku, quantity FROM order_lines WHERE order_id = ? ORDER BY id", (order_id,))
    return Saga(order_id=order_id, state=row["state"], payment_method=row["payment_method"],
                amount_cents=row["total_cents"], currency=row["currency"],
                lines=tuple((line["sku"], line["quantity"]) for line in lines), payment_id=row["payment_id"],
                failed_in=row["failed_in"], failure_kind=row["failure_kind"], failure=row["failure"],
                step_failures=row["step_failures"])


def unfinished(database: Database) -> list[int]:
    with database.reading() as conn:
        return [row[0] for row in conn.execute(
            f"SELECT order_id FROM sagas WHERE state NOT IN ({','.join('?' * len(FINISHED))}) ORDER BY order_id",
            tuple(FINISHED))]


def describe(database: Database, *, state: str | None = None) -> list[dict[str, Any]]:
    """Sagas for operators: state, why it failed, how often its current step failed."""
    where, params = ("WHERE state = ?", (state,)) if state else ("", ())
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(
            "SELECT order_id, state, payment_method, payment_id, failed_in, failure_kind, failure, step_failures,"
            f" created_at, updated_at FROM sagas {where} ORDER BY order_id", params)]


def _move(conn: sqlite3.Connection, saga: Saga, state: str, **fields: Any) -> None:
    sets = ", ".join(f"{name} = :{name}" for name in ("state", "updated_at", *fields))
    updated = conn.execute(f"UPDATE sagas SET {sets} WHERE order_id = :order_id AND state = :expected",
                           {**fields, "state": state, "updated_at": now_seconds(), "order_id": saga.order_id,
                            "expected": saga.state}).rowcount
    if not updated:
        raise StaleSaga(f"saga {saga.order_id} is no longer {saga.state}")


def advance(database: Database, saga: Saga, state: str, *, payment_id: int | None = None) -> None:
    """A forward step succeeded: its effect is known, the failures of the step before are forgotten."""
    with database.transaction() as conn:
        _move(conn, saga, state, step_failures=0, payment_id=payment_id or saga.payment_id)


def step_failed(database: Database, saga: Saga, detail: str) -> None:
    """The current step could not run (a service unavailable); the saga stays where it is."""
    with database.transaction() as conn:
        _move(conn, saga, saga.state, step_failures=saga.step_failures + 1, failure=detail)


def begin_compensation(database: Database, saga: Saga, kind: str, detail: str) -> None:
    with database.transaction() as conn:
        _move(conn, saga, COMPENSATING, failed_in=saga.state, failure_kind=kind, failure=detail, step_failures=0)


def complete(database: Database, saga: Saga) -> Order:
    """Confirm the order (paid, or awaiting payment for invoices), with OrderConfirmed."""
    status = "paid" if saga.payment_method == "card" else "awaiting_payment"
    with database.transaction() as conn:
        _move(conn, saga, COMPLETED)
        conn.execute("UPDATE orders SET status = ?, payment_id = ? WHERE id = ?", (status, saga.payment_id,
                                                                                   saga.order_id))
        record_event(conn, "OrderConfirmed", f"order:{saga.order_id}",
                     {"order_id": saga.order_id, "status": status, "payment_id": saga.payment_id})
        return order_in(conn, saga.order_id)


def compensated(database: Database, saga: Saga, *, payment_id: int | None) -> None:
    """Everything done is undone: the order is cancelled, with OrderCancelled."""
    with database.transaction() as conn:
        _move(conn, saga, COMPENSATED, payment_id=payment_id)
        conn.execute("UPDATE orders SET status = 'cancelled', payment_id = ? WHERE id = ?", (payment_id,
                                                                                            saga.order_id))
        record_event(conn, "OrderCancelled", f"order:{saga.order_id}",
                     {"order_id": saga.order_id, "reason": saga.failure_kind, "payment_id": payment_id})


def dead(database: Database, saga: Saga, reason: str) -> None:
    """Neither finished nor undone: a dead letter for people to resolve; the order stays pending."""
    with database.transaction() as conn:
        _move(conn, saga, DEAD, failure=reason)
        add_dead_letter(conn, kind="saga", ref=str(saga.order_id), reason=reason,
                        detail={"order_id": saga.order_id, "failed_in": saga.failed_in,
                                "failure_kind": saga.failure_kind, "failure": saga.failure,
                                "lines": saga.lines, "payment_method": saga.payment_method})


def retry_dead(database: Database, order_id: int) -> bool:
    """Put a dead saga back into compensation, its failure count from zero; False if it is not dead.

    Compensation is what a saga dies in, and every undo carries the idempotency key of the step
    it undoes, so running it again releases and refunds at most once.
    """
    with database.transaction() as conn:
        moved = conn.execute("UPDATE sagas SET state = ?, step_failures = 0, updated_at = ? WHERE order_id = ?"
                             " AND state = ?", (COMPENSATING, now_seconds(), order_id, DEAD)).rowcount
        if moved:
            conn.execute("UPDATE dead_letters SET replayed_at = ? WHERE kind = 'saga' AND ref = ?"
                         " AND replayed_at IS NULL", (now_iso(), str(order_id)))
        return bool(moved)
