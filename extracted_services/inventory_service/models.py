"""Products and reservations in the inventory service's own database."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from domain_events.outbox import SCHEMA as OUTBOX_SCHEMA
from domain_events.outbox import now_iso, record_event
from extracted_services.common.db import Database, next_service_id

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
    (
        "0002_idempotent_reservations",
        """
        ALTER TABLE reservations ADD COLUMN idempotency_key TEXT;
        ALTER TABLE reservations ADD COLUMN released_at TEXT;
        CREATE UNIQUE INDEX reservations_idempotency_key ON reservations (idempotency_key);
        CREATE TABLE cancelled_reservation_keys (
            idempotency_key TEXT PRIMARY KEY,
            cancelled_at TEXT NOT NULL
        )
        """,
    ),
    ("0003_outbox", OUTBOX_SCHEMA),
]
TABLES = ("cancelled_reservation_keys", "reservations", "products")

Product = dict[str, Any]
_RESERVATION = "SELECT id, sku, quantity, order_id, released_at FROM reservations"
_PRODUCT = "SELECT sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available FROM products"


class UnknownProduct(LookupError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with SKU {sku}")


class InsufficientStock(Exception):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"Only {available} of {sku} available, {requested} requested")


class KeyReused(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key} was already used for a different reservation")


class ReservationCancelled(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"The reservation with Idempotency-Key {key} was released; use a new key")


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


def _reservation(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    available = _product(conn, row["sku"])["available"]
    return {"id": row["id"], "sku": row["sku"], "quantity": row["quantity"], "order_id": row["order_id"],
            "available": available, "status": "released" if row["released_at"] else "held"}


def reserve_stock(database: Database, sku: str, quantity: int, *, order_id: int | None,
                  idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
    """Hold stock for an order, with StockReserved in the same transaction; (reservation, replayed).

    With an idempotency key, a repeat returns the first reservation instead of holding stock again.
    """
    with database.transaction() as conn:
        if idempotency_key is not None:
            earlier = conn.execute(f"{_RESERVATION} WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            if earlier is not None:
                if (earlier["sku"], earlier["quantity"], earlier["order_id"]) != (sku, quantity, order_id):
                    raise KeyReused(idempotency_key)
                return _reservation(conn, earlier), True
            if conn.execute("SELECT 1 FROM cancelled_reservation_keys WHERE idempotency_key = ?",
                            (idempotency_key,)).fetchone():
                raise ReservationCancelled(idempotency_key)
        available = _product(conn, sku)["available"]
        if quantity > available:
            raise InsufficientStock(sku, quantity, available)
        conn.execute("UPDATE products SET reserved = reserved + ? WHERE sku = ?", (quantity, sku))
        reservation = {"id": next_service_id(conn, "reservations"), "sku": sku, "quantity": quantity,
                       "order_id": order_id, "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "idempotency_key": idempotency_key}
        conn.execute("INSERT INTO reservations (id, sku, quantity, order_id, created_at, idempotency_key)"
                     " VALUES (:id, :sku, :quantity, :order_id, :created_at, :idempotency_key)", reservation)
        record_event(conn, "StockReserved", f"product:{sku}", {"reservation": reservation})
        row = conn.execute(f"{_RESERVATION} WHERE id = ?", (reservation["id"],)).fetchone()
        return _reservation(conn, row), False


def release_reservation(database: Database, idempotency_key: str) -> dict[str, Any] | None:
    """Give back the stock held under this key, with StockReleased; None if nothing was held.

    Either way the key is finished: a reservation arriving later under it is refused,
    so a compensation can never be overtaken by the step it undoes.
    """
    with database.transaction() as conn:
        row = conn.execute(f"{_RESERVATION} WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO cancelled_reservation_keys (idempotency_key, cancelled_at)"
                         " VALUES (?, ?)", (idempotency_key, now_iso()))
            return None
        if row["released_at"] is None:
            released_at = now_iso()
            conn.execute("UPDATE reservations SET released_at = ? WHERE id = ?", (released_at, row["id"]))
            conn.execute("UPDATE products SET reserved = reserved - ? WHERE sku = ?", (row["quantity"], row["sku"]))
            record_event(conn, "StockReleased", f"product:{row['sku']}",
                         {"reservation_id": row["id"], "sku": row["sku"], "quantity": row["quantity"],
                          "released_at": released_at})
            row = conn.execute(f"{_RESERVATION} WHERE id = ?", (row["id"],)).fetchone()
        return _reservation(conn, row)


# Events from the monolith: its reservations, applied to our copy (no events of our own: no echo).

def apply_stock_reserved(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    r = payload["reservation"]
    if conn.execute("SELECT 1 FROM reservations WHERE id = ?", (r["id"],)).fetchone():
        return      # already here (copied by import-from-legacy)
    conn.execute("INSERT INTO reservations (id, sku, quantity, order_id, created_at, idempotency_key)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (r["id"], r["sku"], r["quantity"], r["order_id"], r["created_at"], r.get("idempotency_key")))
    conn.execute("UPDATE products SET reserved = reserved + ? WHERE sku = ?", (r["quantity"], r["sku"]))


def apply_stock_released(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    row = conn.execute("SELECT sku, quantity, released_at FROM reservations WHERE id = ?",
                       (payload["reservation_id"],)).fetchone()
    if row is None or row["released_at"] is not None:
        return
    conn.execute("UPDATE reservations SET released_at = ? WHERE id = ?", (payload["released_at"],
                                                                          payload["reservation_id"]))
    conn.execute("UPDATE products SET reserved = reserved - ? WHERE sku = ?", (row["quantity"], row["sku"]))


EVENT_HANDLERS = {"StockReserved": apply_stock_reserved, "StockReleased": apply_stock_released}
