"""Shipments of paid orders. The list joins orders for the customer: more shared-table coupling."""

from __future__ import annotations

from typing import Any

from domain_events.outbox import record_event
from legacy_monolith.db import Database

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE shipping_shipment (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL REFERENCES orders_order (id),
            carrier TEXT NOT NULL,
            tracking_number TEXT NOT NULL,
            status TEXT NOT NULL,
            shipped_at TEXT NOT NULL
        )
        """,
    ),
]

Shipment = dict[str, Any]
_SHIPMENT = (
    "SELECT s.id, s.order_id, s.carrier, s.tracking_number, s.status, s.shipped_at, o.customer_email"
    " FROM shipping_shipment s JOIN orders_order o ON o.id = s.order_id"
)


class UnknownShipment(LookupError):
    def __init__(self, shipment_id: int) -> None:
        super().__init__(f"No shipment with id {shipment_id}")


def list_shipments(database: Database, *, order_id: int | None = None) -> list[Shipment]:
    where, params = ("WHERE s.order_id = ?", (order_id,)) if order_id is not None else ("", ())
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(f"{_SHIPMENT} {where} ORDER BY s.id", params)]


def get_shipment(database: Database, shipment_id: int) -> Shipment:
    with database.reading() as conn:
        row = conn.execute(f"{_SHIPMENT} WHERE s.id = ?", (shipment_id,)).fetchone() if shipment_id < 2**63 else None
    if row is None:
        raise UnknownShipment(shipment_id)
    return dict(row)


def ship_order(database: Database, *, order_id: int, carrier: str, tracking_number: str, shipped_at: str) -> int:
    """Hand an order to a carrier: the shipment row, the order's new status and OrderShipped commit together."""
    with database.transaction() as conn:
        cursor = conn.execute(
            "INSERT INTO shipping_shipment (order_id, carrier, tracking_number, status, shipped_at)"
            " VALUES (?, ?, ?, 'in_transit', ?)",
            (order_id, carrier, tracking_number, shipped_at),
        )
        conn.execute("UPDATE orders_order SET status = 'shipped' WHERE id = ?", (order_id,))
        record_event(conn, "OrderShipped", f"order:{order_id}", {"order_id": order_id})
        return cursor.lastrowid
