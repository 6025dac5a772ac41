"""Products and stock. Orders reserve stock here inside their own transaction (shared tables)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from legacy_monolith.db import Database

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE inventory_product (
            sku TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
            on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
            reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand)
        );
        CREATE TABLE inventory_reservation (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sku TEXT NOT NULL REFERENCES inventory_product (sku),
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            order_id INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX inventory_reservation_sku ON inventory_reservation (sku)
        """,
    ),
]

Product = dict[str, Any]
_PRODUCT = "SELECT sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available FROM inventory_product"


class UnknownProduct(LookupError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with SKU {sku}")
        self.sku = sku


class InsufficientStock(Exception):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"Only {available} of {sku} available, {requested} requested")
        self.sku, self.requested, self.available = sku, requested, available


def list_products(database: Database) -> list[Product]:
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(f"{_PRODUCT} ORDER BY sku")]


def get_product(database: Database, sku: str) -> Product:
    with database.reading() as conn:
        return product_in(conn, sku)


def product_in(conn: sqlite3.Connection, sku: str) -> Product:
    row = conn.execute(f"{_PRODUCT} WHERE sku = ?", (sku,)).fetchone()
    if row is None:
        raise UnknownProduct(sku)
    return dict(row)


def reserve_stock(database: Database, sku: str, quantity: int, *, order_id: int | None = None) -> dict[str, Any]:
    """Hold `quantity` units for an order; one transaction, the unit a later outbox row joins."""
    with database.transaction() as conn:
        return add_reservation(conn, sku, quantity, order_id=order_id)


def add_reservation(conn: sqlite3.Connection, sku: str, quantity: int, *, order_id: int | None,
                    created_at: str | None = None) -> dict[str, Any]:
    """The reservation inside a caller's transaction (order placement reserves several at once)."""
    product = product_in(conn, sku)
    if quantity > product["available"]:
        raise InsufficientStock(sku, quantity, product["available"])
    conn.execute("UPDATE inventory_product SET reserved = reserved + ? WHERE sku = ?", (quantity, sku))
    created_at = created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    cursor = conn.execute(
        "INSERT INTO inventory_reservation (sku, quantity, order_id, created_at) VALUES (?, ?, ?, ?)",
        (sku, quantity, order_id, created_at),
    )
    return {"id": cursor.lastrowid, "sku": sku, "quantity": quantity, "order_id": order_id,
            "available": product["available"] - quantity}
