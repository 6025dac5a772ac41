"""Products and stock. Orders reserve stock here inside their own transaction (shared tables).

Every change to stock records StockReserved or StockReleased in the same transaction.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from domain_events.outbox import now_iso, record_event
from legacy_monolith.db import Database, next_id

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
    (
        "0002_idempotent_reservations",
        """
        ALTER TABLE inventory_reservation ADD COLUMN idempotency_key TEXT;
        ALTER TABLE inventory_reservation ADD COLUMN released_at TEXT;
        CREATE UNIQUE INDEX inventory_reservation_idempotency_key ON inventory_reservation (idempotency_key);
        CREATE TABLE inventory_cancelledreservationkey (
            idempotency_key TEXT PRIMARY KEY,
            cancelled_at TEXT NOT NULL
        )
        """,
    ),
]

Product = dict[str, Any]
_RESERVATION = "SELECT id, sku, quantity, order_id, released_at FROM inventory_reservation"
_PRODUCT = "SELECT sku, name, price_cents, on_hand, reserved, on_hand - reserved AS available FROM inventory_product"


class UnknownProduct(LookupError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"No product with SKU {sku}")
        self.sku = sku


class InsufficientStock(Exception):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(f"Only {available} of {sku} available, {requested} requested")
        self.sku, self.requested, self.available = sku, requested, available


class KeyReused(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(f"Idempotency-Key {key} was already used for a different reservation")


class ReservationCancelled(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(f"The reservation with Idempotency-Key {key} was released; use a new key")


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


def _reservation(conn: sqlite3.Connection, row: sqlite3.Row) -> dict[str, Any]:
    return {"id": row["id"], "sku": row["sku"], "quantity": row["quantity"], "order_id": row["order_id"],
            "available": product_in(conn, row["sku"])["available"],
            "status": "released" if row["released_at"] else "held"}


def reserve_stock(database: Database, sku: str, quantity: int, *, order_id: int | None = None,
                  idempotency_key: str | None = None) -> tuple[dict[str, Any], bool]:
    """Hold `quantity` units for an order, with StockReserved; (reservation, replayed).

    With an idempotency key, a repeat returns the first reservation instead of holding stock again.
    """
    with database.transaction() as conn:
        if idempotency_key is not None:
            earlier = conn.execute(f"{_RESERVATION} WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
            if earlier is not None:
                if (earlier["sku"], earlier["quantity"], earlier["order_id"]) != (sku, quantity, order_id):
                    raise KeyReused(idempotency_key)
                return _reservation(conn, earlier), True
            if conn.execute("SELECT 1 FROM inventory_cancelledreservationkey WHERE idempotency_key = ?",
                            (idempotency_key,)).fetchone():
                raise ReservationCancelled(idempotency_key)
        reservation = add_reservation(conn, sku, quantity, order_id=order_id, idempotency_key=idempotency_key)
        return _reservation(conn, conn.execute(f"{_RESERVATION} WHERE id = ?", (reservation["id"],)).fetchone()), False


def add_reservation(conn: sqlite3.Connection, sku: str, quantity: int, *, order_id: int | None,
                    created_at: str | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
    """The reservation inside a caller's transaction (order placement reserves several at once)."""
    product = product_in(conn, sku)
    if quantity > product["available"]:
        raise InsufficientStock(sku, quantity, product["available"])
    conn.execute("UPDATE inventory_product SET reserved = reserved + ? WHERE sku = ?", (quantity, sku))
    reservation = {"id": next_id(conn, "inventory_reservation"), "sku": sku, "quantity": quantity,
                   "order_id": order_id, "idempotency_key": idempotency_key,
                   "created_at": created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")}
    conn.execute("INSERT INTO inventory_reservation (id, sku, quantity, order_id, created_at, idempotency_key)"
                 " VALUES (:id, :sku, :quantity, :order_id, :created_at, :idempotency_key)", reservation)
    record_event(conn, "StockReserved", f"product:{sku}", {"reservation": reservation})
    return {"id": reservation["id"], "sku": sku, "quantity": quantity, "order_id": order_id,
            "available": product["available"] - quantity}


def release_reservation(database: Database, idempotency_key: str) -> dict[str, Any] | None:
    """Give back the stock held under this key, with StockReleased; None if nothing was held.

    Either way the key is finished: a reservation arriving later under it is refused.
    """
    with database.transaction() as conn:
        row = conn.execute(f"{_RESERVATION} WHERE idempotency_key = ?", (idempotency_key,)).fetchone()
        if row is None:
            conn.execute("INSERT OR IGNORE INTO inventory_cancelledreservationkey (idempotency_key, cancelled_at)"
                         " VALUES (?, ?)", (idempotency_key, now_iso()))
            return None
        if row["released_at"] is None:
            released_at = now_iso()
            conn.execute("UPDATE inventory_reservation SET released_at = ? WHERE id = ?", (released_at, row["id"]))
            conn.execute("UPDATE inventory_product SET reserved = reserved - ? WHERE sku = ?",
                         (row["quantity"], row["sku"]))
            record_event(conn, "StockReleased", f"product:{row['sku']}",
                         {"reservation_id": row["id"], "sku": row["sku"], "quantity": row["quantity"],
                          "released_at": released_at})
            row = conn.execute(f"{_RESERVATION} WHERE id = ?", (row["id"],)).fetchone()
        return _reservation(conn, row)


# Events from inventory_service: its reservations, applied to the shared tables (no echo).

def apply_stock_reserved(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    r = payload["reservation"]
    if conn.execute("SELECT 1 FROM inventory_reservation WHERE id = ?", (r["id"],)).fetchone():
        return
    conn.execute("INSERT INTO inventory_reservation (id, sku, quantity, order_id, created_at, idempotency_key)"
                 " VALUES (?, ?, ?, ?, ?, ?)",
                 (r["id"], r["sku"], r["quantity"], r["order_id"], r["created_at"], r.get("idempotency_key")))
    conn.execute("UPDATE inventory_product SET reserved = reserved + ? WHERE sku = ?", (r["quantity"], r["sku"]))


def apply_stock_released(conn: sqlite3.Connection, payload: dict[str, Any]) -> None:
    row = conn.execute("SELECT sku, quantity, released_at FROM inventory_reservation WHERE id = ?",
                       (payload["reservation_id"],)).fetchone()
    if row is None or row["released_at"] is not None:
        return
    conn.execute("UPDATE inventory_reservation SET released_at = ? WHERE id = ?",
                 (payload["released_at"], payload["reservation_id"]))
    conn.execute("UPDATE inventory_product SET reserved = reserved - ? WHERE sku = ?", (row["quantity"], row["sku"]))
