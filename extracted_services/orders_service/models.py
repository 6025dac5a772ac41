"""Orders in the orders service's own database.

Lines keep the product name and orders keep the payment id as copies: the monolith
joined the inventory and payments tables for them, which a service cannot do.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from domain_events.outbox import SCHEMA as OUTBOX_SCHEMA
from extracted_services.common.db import Database

MIGRATIONS = [
    (
        "0001_orders",
        """
        CREATE TABLE orders (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            customer_email TEXT NOT NULL,
            status TEXT NOT NULL,
            currency TEXT NOT NULL,
            total_cents INTEGER NOT NULL,
            created_at TEXT NOT NULL,
            payment_id INTEGER
        );
        CREATE TABLE order_lines (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL REFERENCES orders (id),
            sku TEXT NOT NULL,
            product_name TEXT NOT NULL,
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            unit_price_cents INTEGER NOT NULL
        );
        CREATE INDEX orders_customer ON orders (customer_email);
        CREATE INDEX order_lines_order ON order_lines (order_id)
        """,
    ),
    (
        "0002_sagas",
        """
        CREATE TABLE sagas (
            order_id INTEGER PRIMARY KEY REFERENCES orders (id),
            state TEXT NOT NULL,
            payment_method TEXT NOT NULL,
            request_key TEXT UNIQUE,        -- the Idempotency-Key of the POST that placed the order
            payment_id INTEGER,
            failed_in TEXT,                 -- the state a definitive failure happened in
            failure_kind TEXT,
            failure TEXT,
            step_failures INTEGER NOT NULL DEFAULT 0,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL
        );
        CREATE INDEX sagas_state ON sagas (state)
        """,
    ),
    ("0003_outbox", OUTBOX_SCHEMA),
]
TABLES = ("sagas", "order_lines", "orders")
# pending: an order whose saga (stock, payment, confirmation) has not finished yet.
STATUSES = ("pending", "paid", "awaiting_payment", "shipped", "cancelled")

Order = dict[str, Any]
_COLUMNS = "id, customer_email, status, currency, total_cents, created_at"
_SUMMARY = f"SELECT {_COLUMNS} FROM orders"
_DETAIL = f"SELECT {_COLUMNS}, payment_id FROM orders"


class UnknownOrder(LookupError):
    def __init__(self, order_id: int) -> None:
        super().__init__(f"No order with id {order_id}")


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
        row = conn.execute(f"{_DETAIL} WHERE id = ?", (order_id,)).fetchone()
        if row is None:
            raise UnknownOrder(order_id)
        lines = conn.execute(
            "SELECT sku, product_name, quantity, unit_price_cents, quantity * unit_price_cents AS line_total_cents"
            " FROM order_lines WHERE order_id = ? ORDER BY id",
            (order_id,),
        ).fetchall()
    return {**dict(row), "lines": [dict(line) for line in lines]}


def order_in(conn: sqlite3.Connection, order_id: int) -> Order:
    """The order as get_order shows it, inside a caller's transaction (for event payloads)."""
    row = conn.execute(f"{_DETAIL} WHERE id = ?", (order_id,)).fetchone()
    lines = conn.execute("SELECT sku, product_name, quantity, unit_price_cents FROM order_lines"
                         " WHERE order_id = ? ORDER BY id", (order_id,)).fetchall()
    return {**dict(row), "lines": [dict(line) for line in lines]}


def now_seconds() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# Events from the monolith: orders placed or changed there, applied to our copy (no echo).

def apply_order_created(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    order = payload["order"]
    if conn.execute("SELECT 1 FROM orders WHERE id = ?", (order["id"],)).fetchone():
        return      # already here (copied by import-from-legacy)
    conn.execute("INSERT INTO orders (id, customer_email, status, currency, total_cents, created_at, payment_id)"
                 " VALUES (:id, :customer_email, :status, :currency, :total_cents, :created_at, :payment_id)", order)
    conn.executemany("INSERT INTO order_lines (order_id, sku, product_name, quantity, unit_price_cents)"
                     " VALUES (?, ?, ?, ?, ?)",
                     [(order["id"], line["sku"], line["product_name"], line["quantity"], line["unit_price_cents"])
                      for line in order["lines"]])


def _set_status(conn: sqlite3.Connection, order_id: int, status: str, payment_id: int | None = None) -> None:
    updated = conn.execute("UPDATE orders SET status = ?, payment_id = coalesce(?, payment_id) WHERE id = ?",
                           (status, payment_id, order_id)).rowcount
    if not updated:
        raise ValueError(f"no order {order_id} here to mark {status}")


def apply_order_confirmed(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    _set_status(conn, payload["order_id"], payload["status"], payload.get("payment_id"))


def apply_order_cancelled(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    _set_status(conn, payload["order_id"], "cancelled", payload.get("payment_id"))


def apply_order_shipped(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    _set_status(conn, payload["order_id"], "shipped")


EVENT_HANDLERS = {"OrderCreated": apply_order_created, "OrderConfirmed": apply_order_confirmed,
                  "OrderCancelled": apply_order_cancelled, "OrderShipped": apply_order_shipped}
