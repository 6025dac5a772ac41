"""Payments in the payments service's own database."""

from __future__ import annotations

from typing import Any

from extracted_services.common.db import Database

MIGRATIONS = [
    (
        "0001_payments",
        """
        CREATE TABLE payments (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            order_id INTEGER NOT NULL,
            amount_cents INTEGER NOT NULL CHECK (amount_cents >= 0),
            currency TEXT NOT NULL,
            method TEXT NOT NULL,
            status TEXT NOT NULL,
            created_at TEXT NOT NULL
        );
        CREATE INDEX payments_order ON payments (order_id)
        """,
    ),
]
TABLES = ("payments",)

Payment = dict[str, Any]
_PAYMENT = "SELECT id, order_id, amount_cents, currency, method, status, created_at FROM payments"


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
