"""Copies orders and their lines out of the monolith, denormalising what it used to join."""

from __future__ import annotations

import sqlite3

from extracted_services.common.legacy import copy_sequence


def copy_from_legacy(conn: sqlite3.Connection) -> dict[str, int]:
    orders = conn.execute(
        "INSERT INTO orders (id, customer_email, status, currency, total_cents, created_at, payment_id)"
        " SELECT o.id, o.customer_email, o.status, o.currency, o.total_cents, o.created_at,"
        " (SELECT max(p.id) FROM legacy.payments_payment p WHERE p.order_id = o.id)"
        " FROM legacy.orders_order o"
    ).rowcount
    lines = conn.execute(
        "INSERT INTO order_lines (id, order_id, sku, product_name, quantity, unit_price_cents)"
        " SELECT l.id, l.order_id, l.sku, p.name, l.quantity, l.unit_price_cents"
        " FROM legacy.orders_orderline l JOIN legacy.inventory_product p ON p.sku = l.sku"
    ).rowcount
    copy_sequence(conn, legacy_table="orders_order", table="orders")
    copy_sequence(conn, legacy_table="orders_orderline", table="order_lines")
    return {"orders": orders, "order_lines": lines}
