"""Copies payment records out of the monolith's payments table."""

from __future__ import annotations

import sqlite3

from extracted_services.common.legacy import copy_sequence


def copy_from_legacy(conn: sqlite3.Connection) -> dict[str, int]:
    payments = conn.execute(
        "INSERT INTO payments (id, order_id, amount_cents, currency, method, status, created_at, idempotency_key)"
        " SELECT id, order_id, amount_cents, currency, method, status, created_at, idempotency_key"
        " FROM legacy.payments_payment"
    ).rowcount
    copy_sequence(conn, legacy_table="payments_payment", table="payments")
    return {"payments": payments}
