"""Payments taken for orders. Recorded inside the order's transaction, in the shared database."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from typing import Any

from legacy_monolith.db import Database

MIGRATIONS = [
    (
        "0001_initial",
        """
        CREATE TABLE payments_payment (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL,
            amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
            currency TEXT NOT NULL,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX payments_payment_order ON payments_payment (order_id)
        """,
    ),
]

METHODS = ("card", "invoice")
Payment = dict[str, Any]
_PAYMENT = "SELECT id, order_id, amount_cents, currency, method, status, created_at FROM payments_payment"


class UnknownPayment(LookupError):
    def __init__(self, payment_id: int) -> None:
        super().__init__(f"No payment with id {payment_id}")


def list_payments(database: Database, *, order_id: int | None = None) -> list[Payment]:
    where, params = ("WHERE order_id = ?", (order_id,)) if order_id is not None else ("", ())
    with database.reading() as conn:
        return [dict(row) for row in conn.execute(f"{_PAYMENT} {where} ORDER BY id", params)]


def get_payment(database: Database, payment_id: int) -> Payment:
    if not 0 < payment_id < 2**63:  # SQLite integers are 64-bit; larger ids cannot exist
        raise UnknownPayment(payment_id)
    with database.reading() as conn:
        row = conn.execute(f"{_PAYMENT} WHERE id = ?", (payment_id,)).fetchone()
    if row is None:
        raise UnknownPayment(payment_id)
    return dict(row)


def add_payment(conn: sqlite3.Connection, *, order_id: int, amount_cents: int, currency: str, method: str,
                created_at: str | None = None) -> Payment:
    """Record a payment inside the caller's transaction. Cards capture at once; invoices wait."""
    if method not in METHODS:
        raise ValueError(f"payment method must be one of {', '.join(METHODS)}")
    status = "captured" if method == "card" else "pending"
    created_at = created_at or datetime.now(timezone.utc).isoformat(timespec="seconds")
    cursor = conn.execute(
        "INSERT INTO payments_payment (order_id, amount_cents, currency, method, status, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (order_id, amount_cents, currency, method, status, created_at),
    )
    return dict(conn.execute(f"{_PAYMENT} WHERE id = ?", (cursor.lastrowid,)).fetchone())
