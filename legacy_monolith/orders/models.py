"""Orders and their lines. Placing one reserves stock and records payment in one transaction.

That transaction also records the events the other sides copy from (OrderCreated,
StockReserved, PaymentCaptured); orders placed through orders_service's saga reach
these tables the other way, as its events.

The reads join inventory and payments tables directly: the shared-database coupling
that the orders service undoes by keeping its own copy of names and payment ids.
"""

from __future__ import annotations

from datetime import datetime, timezone
import sqlite3
from typing import Any

from domain_events.outbox import record_event
from legacy_monolith import settings
from legacy_monolith.db import Database, next_id
from legacy_monolith.inventory import models as inventory
from legacy_monolith.payments import models as payments

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE orders_order (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            customer_email TEXT NOT NULL,
            status TEXT NOT NULL,
            currency TEXT NOT NULL,
            total_cents INTEGER NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE TABLE orders_orderline (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL REFERENCES orders_order (id),
            sku TEXT NOT NULL REFERENCES inventory_product (sku),
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            unit_price_cents INTEGER NOT NULL
        );
        CREATE INDEX orders_order_customer ON orders_order (customer_email);
        CREATE INDEX orders_orderline_order ON orders_orderline (order_id)
        """,
    ),
]

# pending: placed through orders_service, whose saga has not finished yet.
STATUSES = ("pending", "paid", "awaiting_payment", "shipped", "cancelled")
Order = dict[str, Any]
_SUMMARY = "SELECT id, customer_email, status, currency, total_cents, created_at FROM orders_order"


class UnknownOrder(LookupError):
    def __init__(self, order_id: int) -> None:
        super().__init__(f"No order with id {order_id}")


class InvalidOrder(ValueError):
    """The request cannot become an order as it stands (bad email, no lines, unknown SKU)."""


def list_orders(database: Database, *, status: str | None = None, customer_email: str | None = None) -> list[Order]:
    clauses, params = [], []
    if status is not None:
        clauses.append("status = ?")
        params.append(status)
    if customer_email is not None:
        clauses.append("customer_email = ?")
        params.append(customer_email.lower())
    where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(f"{_SUMMARY} {where} ORDER BY id", params)]


def get_order(database: Database, order_id: int) -> Order:
    if not 0 < order_id < 2**63:  # SQLite integers are 64-bit; larger ids cannot exist
        raise UnknownOrder(order_id)
    with database.reading() as conn:
        return order_in(conn, order_id)


def order_in(conn: sqlite3.Connection, order_id: int) -> Order:
    """The order as the API shows it, read inside a caller's transaction."""
    row = conn.execute(f"{_SUMMARY} WHERE id = ?", (order_id,)).fetchone()
    if row is None:
        raise UnknownOrder(order_id)
    lines = conn.execute(
        "SELECT l.sku, p.name AS product_name, l.quantity, l.unit_price_cents,"
        " l.quantity * l.unit_price_cents AS line_total_cents"
        " FROM orders_orderline l JOIN inventory_product p ON p.sku = l.sku WHERE l.order_id = ? ORDER BY l.id",
        (order_id,),
    ).fetchall()
    payment = conn.execute("SELECT max(id) FROM payments_payment WHERE order_id = ?", (order_id,)).fetchone()
    return {**dict(row), "lines": [dict(line) for line in lines], "payment_id": payment[0]}


def _validated(customer_email: str, lines: list[tuple[str, int]]) -> dict[str, int]:
    if "@" not in customer_email:
        raise InvalidOrder("customer_email must be an email address")
    if not lines:
        raise InvalidOrder("an order needs at least one line")
    quantities: dict[str, int] = {}
    for sku, quantity in lines:
        quantities[sku] = quantities.get(sku, 0) + quantity
    return quantities


def place_order(database: Database, *, customer_email: str, lines: list[tuple[str, int]], payment_method: str,
                created_at: str | None = None) -> Order:
    """Reserve every line's stock, write the order, take the payment: all of it or none of it."""
    quantities = _validated(customer_email, lines)
    if payment_method not in payments.METHODS:
        raise InvalidOrder(f"payment_method must be one of {', '.join(payments.METHODS)}")
    created_at = created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    with database.transaction() as conn:
        try:
            prices = {sku: inventory.product_in(conn, sku)["price_cents"] for sku in quantities}
        except inventory.UnknownProduct as exc:
            raise InvalidOrder(str(exc)) from None
        total = sum(prices[sku] * quantity for sku, quantity in quantities.items())
        status = "paid" if payment_method == "card" else "awaiting_payment"
        order_id = next_id(conn, "orders_order")
        conn.execute(
            "INSERT INTO orders_order (id, customer_email, status, currency, total_cents, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (order_id, customer_email.lower(), status, settings.CURRENCY, total, created_at),
        )
        for sku, quantity in quantities.items():
            # InsufficientStock raised here rolls back the lines and reservations before it.
            inventory.add_reservation(conn, sku, quantity, order_id=order_id, created_at=created_at)
            conn.execute(
                "INSERT INTO orders_orderline (order_id, sku, quantity, unit_price_cents) VALUES (?, ?, ?, ?)",
                (order_id, sku, quantity, prices[sku]),
            )
        payments.add_payment(conn, order_id=order_id, amount_cents=total, currency=settings.CURRENCY,
                             method=payment_method, created_at=created_at)
        order = order_in(conn, order_id)
        record_event(conn, "OrderCreated", f"order:{order_id}",
                     {"order": {**order, "lines": [{key: line[key] for key in _EVENT_LINE} for line in order["lines"]]}})
    return order


_EVENT_LINE = ("sku", "product_name", "quantity", "unit_price_cents")


# Events from orders_service: orders its saga placed, and how they ended (no echo).

def apply_order_created(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    order = payload["order"]
    if conn.execute("SELECT 1 FROM orders_order WHERE id = ?", (order["id"],)).fetchone():
        return
    conn.execute("INSERT INTO orders_order (id, customer_email, status, currency, total_cents, created_at)"
                 " VALUES (:id, :customer_email, :status, :currency, :total_cents, :created_at)", order)
    conn.executemany("INSERT INTO orders_orderline (order_id, sku, quantity, unit_price_cents) VALUES (?, ?, ?, ?)",
                     [(order["id"], line["sku"], line["quantity"], line["unit_price_cents"]) for line in order["lines"]])


def _set_status(conn: sqlite3.Connection, order_id: int, status: str) -> None:
    if not conn.execute("UPDATE orders_order SET status = ? WHERE id = ?", (status, order_id)).rowcount:
        raise ValueError(f"no order {order_id} here to mark {status}")


def apply_order_confirmed(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    _set_status(conn, payload["order_id"], payload["status"])


def apply_order_cancelled(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    _set_status(conn, payload["order_id"], "cancelled")


def apply_order_shipped(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    _set_status(conn, payload["order_id"], "shipped")
