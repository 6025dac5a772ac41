"""Products and reservations in the inventory service's own database."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from extracted_services.common.db import Database

MIGRATIONS = [
    (
        "0001_products_and_reservations",
        """
        CREATE TABLE products (
            sku TEXT PRIMARY KEY,
            name TEXT NOT NULL,
            price_cents INTEGER NOT NULL CHECK (price_cents >= 0),
            on_hand INTEGER NOT NULL CHECK (on_hand >= 0),
            reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0 AND reserved <= on_hand)
        );
        CREATE TABLE reservations (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            sku TEXT NOT NULL REFERENCES products (sku),
            quantity INTEGER NOT NULL CHECK (quantity > 0),
            order_id INTEGER,
            created_at TEXT NOT NULL
        );
        CREATE INDEX reservations_sku ON reservations (sku)
        """,
    ),
]
TABLES = ("reservations", "products")

Product = dict[str, Any]
_PRODUCT = "SELECT sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available FROM products"


class UnknownProduct(LookupError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with SKU {sku}")


class InsufficientStock(Exception):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"Only {available} of {sku} available, {requested} requested")


def list_products(database: Database) -> list[Product]:
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(f"{_PRODUCT} ORDER BY sku")]


def _product(conn: sqlite3.Connection, sku: str) -> Product:
    row = conn.execute(f"{_PRODUCT} WHERE sku = ?", (sku,)).fetchone()
    if row is None:
        raise UnknownProduct(sku)
    return dict(row)


def get_product(database: Database, sku: str) -> Product:
    with database.reading() as conn:
        return _product(conn, sku)


def reserve_stock(database: Database, sku: str, quantity: int, *, order_id: int | None) -> dict[str, Any]:
    """Hold stock for an order. One transaction: where a `stock.reserved` outbox row will go."""
    with database.transaction() as conn:
        available = _product(conn, sku)["available"]
        if quantity > available:
            raise InsufficientStock(sku, quantity, available)
        conn.execute("UPDATE products SET reserved = reserved + ? WHERE sku = ?", (quantity, sku))
        cursor = conn.execute(
            "INSERT INTO reservations (sku, quantity, order_id, created_at) VALUES (?, ?, ?, ?)",
            (sku, quantity, order_id, datetime.now(timezone.utc).isoformat(timespec="seconds")),
        )
        return {"id": cursor.lastrowid, "sku": sku, "quantity": quantity, "order_id": order_id,
                "available": available - quantity}
