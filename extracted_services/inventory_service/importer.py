"""Copies products and reservations out of the monolith's inventory tables."""

from __future__ import annotations

import sqlite3

from extracted_services.common.legacy import copy_sequence


def copy_from_legacy(conn: sqlite3.Connection) -> dict[str, int]:
    products = conn.execute(
        "INSERT INTO products (sku, name, price_cents, on_hand, reserved)"
        " SELECT sku, name, price_cents, on_hand, reserved FROM legacy.inventory_product"
    ).rowcount
    reservations = conn.execute(
        "INSERT INTO reservations (id, sku, quantity, order_id, created_at, idempotency_key, released_at)"
        " SELECT id, sku, quantity, order_id, created_at, idempotency_key, released_at FROM legacy.inventory_reservation"
    ).rowcount
    copy_sequence(conn, legacy_table="inventory_reservation", table="reservations")
    return {"products": products, "reservations": reservations}
