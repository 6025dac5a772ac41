"""Orders in the orders service's own database.

Lines keep the product name and orders keep the payment id as copies: the monolith
joined the inventory and payments tables for them, which a service cannot do.
"""

from __future__ import annotations

from typing import Any

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
]
TABLES = ("order_lines", "orders")
STATUSES = ("paid", "awaiting_payment", "shipped", "cancelled")

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
